//! End-to-end tests of the gateway core on real sockets.

#[path = "../support/mod.rs"]
mod support;

mod authn;
mod canonical;
mod connections;
mod differential;
mod garbage;
mod headers;
mod limits;
mod protocols;
mod proxy;
mod refusals;
mod router;
mod upstream_failures;
mod upstream_tls;
mod websocket;

use support::*;

#[tokio::test]
async fn api_key_route_forwards_identity_and_strips_the_key() {
    let up = upstream_ok().await;
    let hash = "sha256:a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873";
    let gw = start(&desk_config(&up.url(), "desk", hash)).await;
    let ok = get(&gw.url("/api/x"), &[("api_access_token", "demo-key-123")]).await;
    assert_eq!(ok.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-consumer"], "desk");
    assert!(!seen.headers.contains_key("api_access_token"));

    let missing = get(&gw.url("/api/x"), &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.reason(), "credentials.missing");
    assert_eq!(missing.json()["request_id"], missing.header("x-request-id"));
    gw.stop().await;
}
