//! A real browser (Debian's chromium): a page opens a cookie-authenticated WebSocket to
//! keyway and talks through it; a page from another origin, whose WebSocket the browser also
//! sends the cookie with, is refused (cross-site WebSocket hijacking); and a refusal sent as a
//! close frame is something the page can read.

use http::Response;
use serde_json::json;

use crate::support::idp::browser;
use crate::support::*;
use crate::{Behaviour, ws_upstream};

const KEY: &str = "f3-browser-key";

/// A plain HTML page, from any path.
async fn page() -> Upstream {
    upstream(|_| {
        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"<!doctype html><html><head><title>page</title></head><body>page</body></html>",
        )));
        r.headers_mut()
            .insert("content-type", "text/html".parse().unwrap());
        r
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_uses_a_cookie_websocket_and_another_origins_page_cannot() {
    let echo = ws_upstream(None, Behaviour::Echo).await;
    let app = page().await;
    let evil = page().await;
    let gw = start(&format!(
        r#"
upstreams:
  app: {{url: "{app}"}}
  echo: {{url: "{echo}"}}
consumers:
  - {{name: web, api_keys: ["{hash}"]}}
authenticators:
  cookie-key: {{type: api_key, from: ["cookie:kw_key"]}}
routes:
  - {{name: page, match: {{path_prefix: /}}, upstream: app, auth: []}}
  - {{name: live, match: {{path_prefix: /live}}, upstream: echo, auth: [cookie-key]}}
  - {{name: strict, match: {{path_prefix: /strict}}, upstream: echo, auth: [cookie-key], websocket: {{refuse_with: close}}}}
"#,
        app = app.url(),
        echo = echo.url(),
        hash = keyway::pipeline::authn::api_key::hashed_form(KEY),
    ))
    .await;
    let ws = format!("ws://{}", gw.addr);
    let report = browser(json!({
        "timeoutMs": 60000,
        "steps": [
            {"goto": gw.url("/")},
            // A refusal as a close frame: the page can read why.
            {"websocket": {"url": format!("{ws}/strict"), "send": "x"}},
            {"evaluate": format!("document.cookie = 'kw_key={KEY}; path=/'; 'set'")},
            {"websocket": {"url": format!("{ws}/live"), "send": "hello from the page"}},
            // Another origin (another port: the browser still sends the cookie).
            {"goto": evil.url()},
            {"websocket": {"url": format!("{ws}/live"), "send": "hijack"}}
        ]
    }))
    .await;
    assert_eq!(report["ok"], true, "{report:#}");
    let results = report["results"].as_array().unwrap();
    let strict = &results[1];
    assert_eq!(strict["closeCode"], 4401, "{strict:#}");
    assert_eq!(strict["closeReason"], "credentials.missing");
    let own = &results[3];
    assert_eq!(own["opened"], true, "{own:#}");
    assert_eq!(own["message"], "hello from the page");
    let hijack = &results[5];
    assert_eq!(hijack["opened"], false, "{hijack:#}");
    // The cookie did reach keyway, which refused the origin; the upstream saw one handshake.
    assert_eq!(echo.handshakes.lock().unwrap().len(), 1);
    gw.stop().await;
}
