//! The decision page in Debian's chromium: it asks for the admin token once, shows a refusal
//! with its reason as it happens, filters by reason, and runs explain from its form. The
//! screenshot it takes is the README's docs/decision-page.png.

use std::path::Path;

use serde_json::{Value, json};

use super::api::{TOKEN, admin_url, config};
use crate::support::idp::browser;
use crate::support::{self, get, start};

fn results(out: &Value) -> &Vec<Value> {
    out["results"].as_array().expect("results")
}

#[tokio::test]
async fn the_page_shows_refusals_live_filters_them_and_explains() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    assert_eq!(
        get(
            &gw.url("/api/tickets"),
            &[("api_access_token", "demo-key-123")]
        )
        .await
        .status,
        200
    );
    assert_eq!(get(&gw.url("/public/index.html"), &[]).await.status, 200);
    assert_eq!(get(&gw.url("/nowhere"), &[]).await.status, 404);
    let page = admin_url(&gw, "/");
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/decision-page.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let rows =
        "Array.from(document.querySelectorAll('#decisions tbody tr')).map(r => r.dataset.reason)";
    // The refusal is sent (from outside the browser) only after the table has been read once, so
    // it can appear only if the page updates live.
    let scenario = json!({"timeoutMs": 15000, "steps": [
        {"goto": page},
        {"waitForText": "admin token required"},
        {"fill": {"selector": "#token", "value": TOKEN}},
        {"click": "#token-form button"},
        {"waitForText": "route.none"},
        {"evaluate": rows},
        {"request": gw.url("/api/tickets")},
        {"waitForText": "credentials.missing"},
        {"click": "button.count[data-reason='credentials.missing']"},
        {"evaluate": rows},
        {"click": "button.count[data-reason='credentials.missing']"},
        {"evaluate": rows},
        {"fill": {"selector": "#ex-url", "value": gw.url("/api/tickets")}},
        {"fill": {"selector": "#ex-headers", "value": "api-access-token: not-a-valid-key"}},
        {"click": "#ex-run"},
        {"waitForText": "looked in"},
        {"evaluate": "document.querySelector('#explain-result').innerText"},
        {"evaluate": "[location.href, document.cookie, sessionStorage.getItem('keyway-admin-token') !== null]"},
        {"screenshot": screenshot.to_str().unwrap()},
    ]});
    let out = browser(scenario).await;
    assert_eq!(out["ok"], true, "{out:#}");
    let r = results(&out);
    let first: Vec<String> = serde_json::from_value(r[5]["result"].clone()).unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(!first.contains(&"credentials.missing".to_owned()));
    assert_eq!(r[6]["status"], 401, "{out:#}");
    // Filtered: only the refusal's rows; unfiltered: every decision again.
    assert_eq!(r[9]["result"], json!(["credentials.missing"]), "{out:#}");
    let all: Vec<String> = serde_json::from_value(r[11]["result"].clone()).unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&"route.none".to_owned()) && all.contains(&String::new()));
    let explained = r[16]["result"].as_str().unwrap();
    for needle in [
        "REFUSE 401",
        "api_key.invalid",
        "Steps",
        "authn",
        "looked in header api_access_token",
    ] {
        assert!(explained.contains(needle), "{needle} not in {explained}");
    }
    assert!(!explained.contains("not-a-valid-key"), "{explained}");
    // The token went in a header, never in the URL or a cookie.
    assert_eq!(r[17]["result"], json!([page, "", true]));
    assert!(screenshot.exists());
    gw.stop().await;
}
