//! Direct WebSocket routes: the F3 incident (an upstream that refuses a handshake without its
//! token) fixed by `inject`; a client's token forwarded when the route says so; the Kubernetes
//! bearer subprotocol; `query:access_token`; cookies and `Origin`; refusals as close frames;
//! connections that close when their token expires or their session is signed out; the
//! upstream closed when the client vanishes; shutdown closing them.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::support::*;
use crate::{Behaviour, Ws, WsUpstream, ws_upstream};

const KEY: &str = "f3-dashboard-key";
const SECRET: &str = "f3-consumer-secret-0123456789abcdef";
const CLUSTER: &str = "Bearer cluster-token";

fn gateway_config(pods: &WsUpstream, tokens: &WsUpstream, extra_routes: &str) -> String {
    format!(
        r#"
upstreams:
  pods:
    url: "{pods}"
    inject: {{Authorization: "{CLUSTER}"}}
  pods-plain: {{url: "{pods}"}}
  tokens: {{url: "{tokens}"}}
consumers:
  - {{name: dashboard, groups: [ops], api_keys: ["{hash}"], jwt: {{key: dash, secret: "{SECRET}"}}}}
authenticators:
  keys: {{type: api_key}}
  cookie-key: {{type: api_key, from: ["cookie:kw_key"]}}
  jwt: {{type: jwt, leeway: 0s, from: ["header:Authorization", "query:access_token"]}}
  jwt-header-only: {{type: jwt, leeway: 0s}}
routes:
  - {{name: pods, match: {{path_prefix: /ws/pods}}, upstream: pods, auth: [keys, jwt]}}
  - {{name: plain, match: {{path_prefix: /ws/plain}}, upstream: pods-plain, auth: [keys]}}
  - {{name: forwarded, match: {{path_prefix: /ws/tokens}}, upstream: tokens, auth: [jwt], forward_client_credentials: true}}
  - {{name: header-only, match: {{path_prefix: /ws/header-only}}, upstream: pods, auth: [jwt-header-only]}}
  - {{name: cookies, match: {{path_prefix: /ws/cookies}}, upstream: pods, auth: [cookie-key]}}
  - {{name: listed, match: {{path_prefix: /ws/listed}}, upstream: pods, auth: [cookie-key], websocket: {{allowed_origins: ["https://app.example.com"]}}}}
  - {{name: closing, match: {{path_prefix: /ws/closing}}, upstream: pods, auth: [keys], websocket: {{refuse_with: close}}}}
{extra_routes}"#,
        pods = pods.url(),
        tokens = tokens.url(),
        hash = keyway::pipeline::authn::api_key::hashed_form(KEY),
    )
}

fn token(ttl: i64) -> String {
    crate::dash_token(SECRET, ttl)
}

/// A handshake to `url` with `headers`: the connection, or the refusal.
async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<(Ws, http::HeaderMap), Answer> {
    let mut request = url.into_client_request().unwrap();
    for (n, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake timed out")
    {
        Ok((ws, response)) => Ok((ws, response.headers().clone())),
        Err(Error::Http(response)) => Err(Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.body().clone().unwrap_or_default().into(),
        }),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text(text));
}

/// The close frame the connection ends with, waited for at most `limit`.
async fn closed_with(ws: &mut Ws, limit: Duration) -> (u16, String) {
    let got = tokio::time::timeout(limit, async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            if msg.is_err() {
                return None;
            }
        }
        None
    })
    .await
    .expect("the connection was not closed in time");
    got.expect("closed without a close frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_the_upstream_handshake_carries_the_routes_credential() {
    // The incident: the pods upstream refuses any handshake without the cluster token.
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    // Without inject (the route most gateways have), the upstream says "bad handshake".
    let refused = connect(
        &format!("ws://{}/ws/plain/x", gw.addr),
        &[("x-api-key", KEY)],
    )
    .await
    .expect_err("the upstream accepted a handshake without its token");
    assert_eq!(refused.status, 401);
    // With inject: the handshake reaches the upstream with the cluster token, not the key.
    let (mut ws, headers) = connect(
        &format!("ws://{}/ws/pods/logs?follow=1", gw.addr),
        &[("x-api-key", KEY)],
    )
    .await
    .expect("refused");
    assert!(headers.contains_key("x-request-id"));
    echo(&mut ws, "hello").await;
    let seen = pods.last_handshake();
    assert_eq!(seen["authorization"], CLUSTER);
    assert!(!seen.contains_key("x-api-key"));
    assert_eq!(seen["x-keyway-consumer"], "dashboard");
    // A route that forwards the client's token: the upstream gets exactly that token.
    let t = token(3600);
    let (mut ws2, _) = connect(
        &format!("ws://{}/ws/tokens", gw.addr),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await
    .expect("refused");
    echo(&mut ws2, "t").await;
    assert_eq!(
        tokens.last_handshake()["authorization"],
        format!("Bearer {t}")
    );
    // A refused handshake is the problem body.
    let refused = connect(&format!("ws://{}/ws/pods", gw.addr), &[])
        .await
        .unwrap_err();
    assert_problem(&refused, 401, "credentials.missing");
    gw.stop().await;
}

fn bearer_protocol(token: &str) -> String {
    format!(
        "base64url.bearer.authorization.k8s.io.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_bearer_subprotocol_and_query_tokens() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    let t = token(3600);
    // A browser's WebSocket cannot set Authorization: the token rides in a subprotocol.
    let offered = format!("{}, v4.channel.k8s.io", bearer_protocol(&t));
    let (mut ws, headers) = connect(
        &format!("ws://{}/ws/tokens/exec", gw.addr),
        &[("sec-websocket-protocol", &offered)],
    )
    .await
    .expect("refused");
    echo(&mut ws, "ls").await;
    let seen = tokens.last_handshake();
    // Authenticated and forwarded as Authorization; the subprotocol is never forwarded or echoed.
    assert_eq!(seen["authorization"], format!("Bearer {t}"));
    assert_eq!(seen["sec-websocket-protocol"], "v4.channel.k8s.io");
    assert!(
        !headers
            .get("sec-websocket-protocol")
            .is_some_and(|p| p.to_str().unwrap().contains("bearer"))
    );
    for bad in [
        format!("{}, {}", bearer_protocol(&t), bearer_protocol(&token(60))),
        "base64url.bearer.authorization.k8s.io.not+base64/".to_owned(),
        "base64url.bearer.authorization.k8s.io.dG9r==".to_owned(),
    ] {
        let refused = connect(
            &format!("ws://{}/ws/tokens", gw.addr),
            &[("sec-websocket-protocol", &bad)],
        )
        .await
        .unwrap_err();
        assert_problem(&refused, 400, "websocket.bad_subprotocol");
    }
    // query:access_token only where the authenticator lists it, and removed before forwarding.
    let (mut ws, _) = connect(
        &format!("ws://{}/ws/pods/q?access_token={t}&tail=10", gw.addr),
        &[],
    )
    .await
    .expect("refused");
    echo(&mut ws, "q").await;
    let refused = connect(
        &format!("ws://{}/ws/header-only?access_token={t}", gw.addr),
        &[],
    )
    .await
    .unwrap_err();
    assert_problem(&refused, 401, "credentials.missing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_handshakes_must_come_from_an_allowed_origin() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    let cookie = format!("kw_key={KEY}");
    let own = format!("http://{}", gw.addr);
    for (path, origin, allowed) in [
        ("/ws/cookies", Some(own.as_str()), true),
        ("/ws/cookies", None, true),
        ("/ws/cookies", Some("https://evil.example"), false),
        ("/ws/listed", Some("https://app.example.com"), true),
        ("/ws/listed", Some(own.as_str()), false),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let result = connect(&format!("ws://{}{path}", gw.addr), &headers).await;
        match (result, allowed) {
            (Ok((mut ws, _)), true) => echo(&mut ws, "hi").await,
            (Err(refused), false) => {
                assert_problem(&refused, 403, "websocket.origin_denied");
            }
            (Ok(_), false) => panic!("{path} from {origin:?} was accepted"),
            (Err(r), true) => panic!("{path} from {origin:?} was refused: {r:?}"),
        }
    }
    // A header credential from any origin is not a hijack.
    let (mut ws, _) = connect(
        &format!("ws://{}/ws/pods", gw.addr),
        &[("x-api-key", KEY), ("origin", "https://evil.example")],
    )
    .await
    .expect("refused");
    echo(&mut ws, "ok").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_with_close_completes_the_handshake_and_closes_with_the_reason() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    let (mut ws, _) = connect(&format!("ws://{}/ws/closing", gw.addr), &[])
        .await
        .expect("a 101");
    assert_eq!(
        closed_with(&mut ws, Duration::from_secs(5)).await,
        (4401, "credentials.missing".to_owned())
    );
    let (mut ws, _) = connect(
        &format!("ws://{}/ws/closing", gw.addr),
        &[("x-api-key", "wrong")],
    )
    .await
    .expect("a 101");
    assert_eq!(
        closed_with(&mut ws, Duration::from_secs(5)).await,
        (4401, "api_key.invalid".to_owned())
    );
    assert!(pods.handshakes.lock().unwrap().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_when_its_token_expires() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    let t = token(2);
    let (mut ws, _) = connect(
        &format!("ws://{}/ws/pods", gw.addr),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await
    .expect("refused");
    echo(&mut ws, "before expiry").await;
    assert_eq!(pods.open_now(), 1);
    let (code, reason) = closed_with(&mut ws, Duration::from_secs(10)).await;
    assert_eq!((code, reason.as_str()), (4401, "jwt.expired"));
    let gone = wait_until(Duration::from_secs(5), || async { pods.open_now() == 0 }).await;
    assert!(gone, "the upstream side stayed open");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_side_closes_when_the_client_vanishes_and_shutdown_closes_the_rest() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    // A byte tunnel (API key) and a frame-aware relay (a token with exp), each dropped
    // without a close frame.
    for auth in [
        ("x-api-key", KEY.to_owned()),
        ("authorization", format!("Bearer {}", token(3600))),
    ] {
        let (mut ws, _) = connect(&format!("ws://{}/ws/pods", gw.addr), &[(auth.0, &auth.1)])
            .await
            .expect("refused");
        echo(&mut ws, "x").await;
        assert_eq!(pods.open_now(), 1);
        drop(ws);
        let gone = wait_until(Duration::from_secs(5), || async { pods.open_now() == 0 }).await;
        assert!(gone, "{}: the upstream side outlived its client", auth.0);
    }
    // Shutdown: open connections are told (1001) and waited for.
    let (mut ws, _) = connect(
        &format!("ws://{}/ws/pods", gw.addr),
        &[("authorization", &format!("Bearer {}", token(3600)))],
    )
    .await
    .expect("refused");
    echo(&mut ws, "y").await;
    let app = gw.app.clone();
    let stopping = tokio::spawn(gw.stop());
    let (code, _) = closed_with(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, u16::from(CloseCode::Away));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown hung")
        .unwrap();
    assert_eq!(app.tunnels.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_with_a_session_closes_when_the_session_is_signed_out() {
    use crate::support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, sign_in};
    let idp = Idp::start(json!({"keySeed": "f3"})).await;
    let live = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&format!(
        r#"
upstreams:
  echo: {{url: "{echo}"}}
authenticators:
  sso:
    type: oidc
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    client_secret: {CLIENT_SECRET}
    session: {{secret: "f3-session-secret-0123456789abcdef-0123"}}
routes:
  - {{name: live, match: {{path_prefix: /}}, upstream: echo, auth: [sso]}}
"#,
        echo = live.url(),
        issuer = idp.issuer
    ))
    .await;
    // Signing in ends on a WebSocket route: the page answer does not matter, the cookie does.
    let signed = sign_in(&gw.url("/app"), Some("alice"), None).await;
    let cookie = signed.cookie_header();
    assert!(cookie.starts_with("keyway_session="), "{:#}", signed.json);
    let (mut ws, _) = connect(&format!("ws://{}/live", gw.addr), &[("cookie", &cookie)])
        .await
        .expect("refused");
    echo(&mut ws, "signed in").await;
    let signed_out = get(&gw.url("/_keyway/signout"), &[("cookie", &cookie)]).await;
    assert_eq!(signed_out.status, 302);
    let (code, reason) = closed_with(&mut ws, Duration::from_secs(15)).await;
    assert_eq!((code, reason.as_str()), (4401, "session.revoked"));
    gw.stop().await;
}

/// The frame-aware relay moves each direction on its own: 40 MiB sent to an echoing upstream
/// while the echoes are read back never deadlocks (an echo stops reading while its writes
/// wait; a relay that waited on one side while not reading the other froze here at ~4 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frame_aware_relay_never_deadlocks_with_an_echoing_upstream() {
    let pods = ws_upstream(Some(CLUSTER), Behaviour::Echo).await;
    let tokens = ws_upstream(None, Behaviour::Echo).await;
    let gw = start(&gateway_config(&pods, &tokens, "")).await;
    // A JWT with an expiry makes the relay frame-aware.
    let t = token(3600);
    let (ws, _) = connect(
        &format!("ws://{}/ws/pods/exec", gw.addr),
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await
    .expect("handshake");
    let (mut tx, mut rx) = ws.split();
    const COUNT: usize = 640;
    let payload = vec![b'x'; 64 * 1024];
    let writer = tokio::spawn(async move {
        for _ in 0..COUNT {
            tx.send(Message::binary(payload.clone())).await.unwrap();
        }
        tx
    });
    let mut echoed = 0usize;
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while echoed < COUNT {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) => {
                    assert_eq!(b.len(), 64 * 1024);
                    echoed += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("the relay ended after {echoed} echoes: {other:?}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "only {echoed} of {COUNT} echoes within 30 s");
    let mut tx = writer.await.unwrap();
    tx.send(Message::Close(None)).await.ok();
    gw.stop().await;
}
