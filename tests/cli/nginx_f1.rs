//! F1 (SPEC §1) reproduced with a real nginx in its default header settings in front of keyway:
//! nginx silently drops `api_access_token`, keyway says which header it looked for, and the hyphen
//! twin `api-access-token` survives nginx and is accepted.

use std::net::SocketAddr;

use crate::support::nginx::Nginx;
use crate::support::*;

/// A plain reverse proxy to `backend`. Header handling is nginx's default: no
/// `underscores_in_headers`, no `ignore_invalid_headers`, so names with `_` are dropped.
async fn nginx_in_front_of(backend: SocketAddr) -> Nginx {
    Nginx::start(|port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{backend};
            proxy_set_header Host $host;
        }}
    }}
"#
        )
    })
    .await
}

const KEY: &str = "desk-key-f1-8c1e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_behind_default_nginx_the_underscore_header_vanishes_and_keyway_says_where_it_looked() {
    let up = upstream_ok().await;
    let hashed = keyway::pipeline::authn::api_key::hashed_form(KEY);
    let gw = start(&desk_config(&up.url(), "support-desk", &hashed)).await;
    let nginx = nginx_in_front_of(gw.addr).await;

    // The incident: the client sends a valid key in `api_access_token`; nginx drops the header.
    let via_nginx = get(
        &nginx.url("/api/conversations"),
        &[("api_access_token", KEY)],
    )
    .await;
    assert_eq!(via_nginx.status, 401, "{:?}", via_nginx.body);
    assert_eq!(via_nginx.reason(), "credentials.missing");
    let problem = via_nginx.json();
    let detail = problem["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("api_access_token (or api-access-token)"),
        "the refusal must name the header keyway looked for: {detail}"
    );
    let hint = problem["hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("api-access-token") && hint.contains("nginx"),
        "the hint must point at the hyphen twin: {hint}"
    );
    assert!(
        !String::from_utf8_lossy(&via_nginx.body).contains(KEY),
        "the key must not be echoed"
    );
    assert!(
        up.requests().is_empty(),
        "nothing reaches the upstream without a credential"
    );

    // The hyphen twin survives nginx and is accepted.
    let twin = get(
        &nginx.url("/api/conversations"),
        &[("api-access-token", KEY)],
    )
    .await;
    assert_eq!(twin.status, 200, "{:?}", twin.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-consumer"], "support-desk");
    assert!(
        !seen.headers.contains_key("api-access-token"),
        "the consumed credential is not forwarded"
    );

    // Without nginx in front, keyway passes and accepts the underscore header itself.
    let direct = get(&gw.url("/api/conversations"), &[("api_access_token", KEY)]).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    assert_eq!(up.requests().len(), 2);
    assert_eq!(up.last().headers["x-keyway-consumer"], "support-desk");

    drop(nginx);
    gw.stop().await;
}
