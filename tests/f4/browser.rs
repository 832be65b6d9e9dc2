//! A person's browser (Debian's chromium, driven by playwright-core): a protected page sends
//! it through the provider's real login and consent pages and back; a script on that page that
//! calls an API route gets 401 JSON, not a redirect; signing out ends the session.

use http::Response;
use serde_json::json;

use crate::support::idp::{Idp, browser};
use crate::support::*;
use crate::{config, idp_config, sso};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_its_scripts_get_401_json_and_signs_out() {
    let idp = Idp::start(idp_config()).await;
    // The application: a page that greets whoever keyway says it is.
    let up = upstream(|seen| {
        let who = seen
            .headers
            .get("x-keyway-subject")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(format!(
            "<!doctype html><html><head><title>app</title></head><body><h1>hello {who}</h1></body></html>"
        ))));
        r.headers_mut().insert("content-type", "text/html".parse().unwrap());
        r
    })
    .await;
    let authenticators = format!(
        "{}  api-jwt: {{type: jwt, issuer: \"{i}\", jwks_url: \"{i}/jwks\", audience: keyway}}\n",
        sso(&idp, "store: cookie", ""),
        i = idp.issuer
    );
    let gw = start(&config(
        &up.url(),
        &authenticators,
        "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}\n  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [api-jwt]}\n",
        "",
    ))
    .await;
    let report = browser(json!({
        "timeoutMs": 60000,
        "steps": [
            {"goto": gw.url("/app")},
            {"login": {"login": "alice", "password": "pw"}},
            {"waitForText": "hello alice"},
            {"cookies": true},
            {"fetch": {"url": gw.url("/api/data"), "method": "GET", "headers": {"accept": "application/json"}}},
            {"goto": gw.url("/_keyway/signout")},
            {"cookies": true},
            {"goto": gw.url("/app")}
        ]
    }))
    .await;
    assert_eq!(report["ok"], true, "{report:#}");
    let results = report["results"].as_array().unwrap();
    // Back on the page after the provider's pages.
    assert!(
        results[2]["url"]
            .as_str()
            .unwrap()
            .starts_with(&gw.url("/app")),
        "{report:#}"
    );
    let session = results[3]["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keyway_session")
        .cloned()
        .unwrap_or_else(|| panic!("no session cookie: {report:#}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["path"], "/");
    // The page's script calling an API route: 401 JSON with the reason, no redirect followed.
    let fetched = &results[4];
    assert_eq!(fetched["status"], 401, "{fetched:#}");
    assert_eq!(fetched["redirected"], false);
    assert!(
        fetched["contentType"]
            .as_str()
            .unwrap()
            .contains("problem+json")
    );
    assert!(
        fetched["body"]
            .as_str()
            .unwrap()
            .contains("credentials.missing")
    );
    // Signed out: no session cookie, and the page asks for a login again.
    let after = results[6]["cookies"].as_array().unwrap();
    assert!(
        after.iter().all(|c| c["name"] != "keyway_session"),
        "{report:#}"
    );
    let last_url = results[7]["url"].as_str().unwrap();
    assert!(last_url.starts_with(&idp.issuer), "{report:#}");
    assert!(
        up.requests()
            .iter()
            .all(|s| s.headers["x-keyway-subject"] == "alice")
    );
    gw.stop().await;
}
