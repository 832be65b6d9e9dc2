//! The multiplexer (keyway.mux.v1): three streams over one connection, each upstream
//! handshake with its own route's credential; a stream refused (403) while the others flow;
//! one upstream dying closes only its stream; `auth` renewal after the token expires; bad
//! input of every kind answered on the connection, which stays up where SPEC §11 says; the
//! client vanishing closes every upstream connection; a slow reader pauses its upstream.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;
use crate::{Behaviour, Ws, WsUpstream, ws_upstream};

const KEY: &str = "f3-mux-key";
const SECRET: &str = "f3-mux-secret-0123456789abcdef-0123";
const CLUSTER: &str = "Bearer cluster-token";

struct Upstreams {
    pods: WsUpstream,
    tokens: WsUpstream,
    admin: WsUpstream,
    fragile: WsUpstream,
    flood: WsUpstream,
    deaf: WsUpstream,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        pods: ws_upstream(Some(CLUSTER), Behaviour::Echo).await,
        tokens: ws_upstream(None, Behaviour::Echo).await,
        admin: ws_upstream(None, Behaviour::Echo).await,
        fragile: ws_upstream(None, Behaviour::DieAfterFirst).await,
        flood: ws_upstream(None, Behaviour::Flood).await,
        deaf: ws_upstream(None, Behaviour::Deaf).await,
    }
}

fn config(u: &Upstreams) -> String {
    format!(
        r#"
admin: {{listen: 127.0.0.1:0}}
upstreams:
  pods: {{url: "{pods}", inject: {{Authorization: "{CLUSTER}"}}}}
  tokens: {{url: "{tokens}"}}
  admin: {{url: "{admin}"}}
  fragile: {{url: "{fragile}"}}
  flood: {{url: "{flood}"}}
  echo: {{builtin: echo}}
  deaf: {{url: "{deaf}"}}
consumers:
  - {{name: dashboard, groups: [ops], api_keys: ["{hash}"], jwt: {{key: dash, secret: "{SECRET}"}}}}
authenticators:
  keys: {{type: api_key}}
  jwt: {{type: jwt, leeway: 0s}}
routes:
  - {{name: mux, match: {{path: /mux}}, mux: true, auth: [keys, jwt]}}
  - {{name: mux-short, match: {{path: /mux-short}}, mux: {{grace: 1s}}, auth: [jwt]}}
  - {{name: pods, match: {{path_prefix: /ws/pods}}, upstream: pods, auth: [keys, jwt]}}
  - {{name: tokens, match: {{path_prefix: /ws/tokens}}, upstream: tokens, auth: [jwt], forward_client_credentials: true}}
  - {{name: admin, match: {{path_prefix: /ws/admin}}, upstream: admin, auth: [keys, jwt], allow: {{groups: [admin]}}}}
  - {{name: fragile, match: {{path_prefix: /ws/fragile}}, upstream: fragile, auth: [keys, jwt]}}
  - {{name: flood, match: {{path_prefix: /ws/flood}}, upstream: flood, auth: [keys, jwt]}}
  - {{name: echo, match: {{path_prefix: /ws/echo}}, upstream: echo, auth: [keys, jwt]}}
  - {{name: deaf, match: {{path_prefix: /ws/deaf}}, upstream: deaf, auth: [keys, jwt]}}
"#,
        deaf = u.deaf.url(),
        pods = u.pods.url(),
        tokens = u.tokens.url(),
        admin = u.admin.url(),
        fragile = u.fragile.url(),
        flood = u.flood.url(),
        hash = keyway::pipeline::authn::api_key::hashed_form(KEY),
    )
}

fn token(ttl: i64) -> String {
    crate::dash_token(SECRET, ttl)
}

/// A mux client connection.
struct Mux {
    ws: Ws,
}

impl Mux {
    async fn connect(gw: &Gateway, path: &str, credential: (&str, &str)) -> Mux {
        let mut request = format!("ws://{}{path}", gw.addr)
            .into_client_request()
            .unwrap();
        let h = request.headers_mut();
        h.insert("sec-websocket-protocol", "keyway.mux.v1".parse().unwrap());
        h.insert(
            http::HeaderName::from_bytes(credential.0.as_bytes()).unwrap(),
            credential.1.parse().unwrap(),
        );
        let (ws, response) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("handshake timed out")
        .expect("mux handshake refused");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "keyway.mux.v1"
        );
        Mux { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    async fn raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next frame: JSON for text, `{"binary": [id, payload]}` for binary.
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s")
                .expect("the connection ended")
                .expect("a frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Binary(b) => {
                    let n = b[0] as usize;
                    let id = String::from_utf8(b[1..1 + n].to_vec()).unwrap();
                    return json!({"binary": [id, String::from_utf8_lossy(&b[1 + n..])]});
                }
                Message::Close(f) => {
                    return json!({"close": f.map(|f| (u16::from(f.code), f.reason.to_string()))});
                }
                _ => continue,
            }
        }
    }

    /// The next frame concerning stream `id` (others are skipped).
    async fn next_for(&mut self, id: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["id"] == id || v["binary"][0] == id || v.get("close").is_some() {
                return v;
            }
        }
    }

    async fn open(&mut self, id: &str, path: &str) -> Value {
        self.send(json!({"type": "open", "id": id, "path": path}))
            .await;
        self.next_for(id).await
    }

    async fn echo(&mut self, id: &str, text: &str) {
        self.send(json!({"type": "data", "id": id, "data": text}))
            .await;
        let v = self.next_for(id).await;
        assert_eq!(v, json!({"type": "data", "id": id, "data": text}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_three_streams_each_carry_their_routes_credential_and_fail_alone() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let t = token(3600);
    let mut mux = Mux::connect(&gw, "/mux", ("authorization", &format!("Bearer {t}"))).await;
    assert_eq!(
        mux.open("logs", "/ws/pods/logs?follow=1").await,
        json!({"type": "opened", "id": "logs"})
    );
    assert_eq!(
        mux.open("exec", "/ws/tokens/exec").await,
        json!({"type": "opened", "id": "exec"})
    );
    // An admin-only route: this stream alone is refused, with its reason and request id.
    let refused = mux.open("admin", "/ws/admin/x").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["reason"], "authz.denied");
    assert!(
        refused["request_id"]
            .as_str()
            .is_some_and(|r| r.len() >= 16)
    );
    assert!(u.admin.handshakes.lock().unwrap().is_empty());
    // The others flow, text and binary.
    mux.echo("logs", "tail").await;
    mux.echo("exec", "ls").await;
    let mut frame = vec![4u8];
    frame.extend_from_slice(b"logs");
    frame.extend_from_slice(b"\x00bytes\xff");
    mux.raw(Message::binary(frame)).await;
    let v = mux.next_for("logs").await;
    assert_eq!(v["binary"][0], "logs");
    // Each upstream handshake carried its own route's credential.
    let pods = u.pods.last_handshake();
    assert_eq!(pods["authorization"], CLUSTER);
    assert_eq!(pods["x-keyway-consumer"], "dashboard");
    let tokens = u.tokens.last_handshake();
    assert_eq!(tokens["authorization"], format!("Bearer {t}"));
    // A stream closed by the client; another id is then unknown.
    mux.send(json!({"type": "close", "id": "exec", "code": 1000}))
        .await;
    let closed = mux.next_for("exec").await;
    assert_eq!(closed["type"], "closed");
    mux.send(json!({"type": "data", "id": "exec", "data": "late"}))
        .await;
    assert_eq!(mux.next_for("exec").await["reason"], "mux.unknown_stream");
    // Every stream's decision is a request like any other: counted by route and status.
    let metrics = metrics(&gw).await;
    assert!(
        sample(
            &metrics,
            "keyway_requests_total{route=\"admin\",status=\"403\",reason=\"authz.denied\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "keyway_mux_streams_total{event=\"opened\",reason=\"\"}"
        ) >= 2.0,
        "{metrics}"
    );
    gw.stop().await;
}

/// The builtin echo answers a stream like a WebSocket upstream (what `keyway demo` uses):
/// first what it received, then every message back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_the_builtin_echo_is_greeted_then_echoed() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(
        mux.open("e", "/ws/echo/room?x=1").await,
        json!({"type": "opened", "id": "e"})
    );
    let greeting = mux.next_for("e").await;
    let described: Value = serde_json::from_str(greeting["data"].as_str().unwrap()).unwrap();
    assert_eq!(described["path"], "/ws/echo/room");
    assert_eq!(described["query"], "x=1");
    assert_eq!(described["identity"]["consumer"], "dashboard");
    assert!(
        described["headers"].get("x-api-key").is_none(),
        "{described}"
    );
    mux.echo("e", "hello").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_dying_closes_only_its_stream() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(mux.open("a", "/ws/pods/a").await["type"], "opened");
    assert_eq!(mux.open("b", "/ws/fragile/b").await["type"], "opened");
    // b's upstream answers once, then its connection drops.
    mux.echo("b", "last words").await;
    let closed = mux.next_for("b").await;
    assert_eq!(closed["type"], "closed", "{closed}");
    assert_eq!(closed["code"], 1006);
    mux.send(json!({"type": "data", "id": "b", "data": "gone"}))
        .await;
    assert_eq!(mux.next_for("b").await["reason"], "mux.unknown_stream");
    mux.echo("a", "still here").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_connection_credential_is_renewed_by_an_auth_frame() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(
        &gw,
        "/mux",
        ("authorization", &format!("Bearer {}", token(2))),
    )
    .await;
    assert_eq!(mux.open("a", "/ws/tokens/a").await["type"], "opened");
    // A bad token is refused and the old credential kept.
    mux.send(json!({"type": "auth", "token": "not.a.jwt"}))
        .await;
    let refused = mux.next().await;
    assert_eq!(
        (refused["type"].as_str(), refused["reason"].as_str()),
        (Some("error"), Some("jwt.malformed"))
    );
    assert!(refused.get("id").is_none());
    // The token expires: an error frame, then the grace period.
    let expired = mux.next().await;
    assert_eq!(expired["reason"], "jwt.expired", "{expired}");
    assert!(expired.get("id").is_none());
    let fresh = token(3600);
    mux.send(json!({"type": "auth", "token": fresh})).await;
    assert_eq!(mux.next().await, json!({"type": "authed"}));
    // Streams opened afterwards carry the new credential.
    assert_eq!(mux.open("b", "/ws/tokens/b").await["type"], "opened");
    assert_eq!(
        u.tokens.last_handshake()["authorization"],
        format!("Bearer {fresh}")
    );
    mux.echo("b", "renewed").await;

    // Without a renewal, the connection closes at the end of the grace period (1 s here).
    let mut short = Mux::connect(
        &gw,
        "/mux-short",
        ("authorization", &format!("Bearer {}", token(1))),
    )
    .await;
    let expired = short.next().await;
    assert_eq!(expired["reason"], "jwt.expired");
    let closed = short.next().await;
    assert_eq!(closed["close"], json!([4401, "jwt.expired"]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_the_connection_stays() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(mux.open("ok", "/ws/pods/ok").await["type"], "opened");
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "mux.bad_frame"),
        (
            Message::text(r#"{"type":"teleport","id":"x"}"#),
            "mux.bad_frame",
        ),
        (
            Message::text(r#"{"type":"data","data":"no id"}"#),
            "mux.bad_frame",
        ),
        (Message::binary(vec![9u8, b'o', b'k']), "mux.bad_frame"),
        (Message::binary(vec![]), "mux.bad_frame"),
        (
            Message::text(r#"{"type":"data","id":"nope","data":"x"}"#),
            "mux.unknown_stream",
        ),
        (
            Message::text(r#"{"type":"close","id":"nope"}"#),
            "mux.unknown_stream",
        ),
        (
            Message::text(r#"{"type":"open","id":"ok","path":"/ws/pods/again"}"#),
            "mux.duplicate_id",
        ),
        (
            Message::text(
                r#"{"type":"open","id":"h","path":"/ws/pods","headers":{"authorization":"Bearer x"}}"#,
            ),
            "mux.bad_frame",
        ),
        (
            Message::text("x".repeat(1024 * 1024 + 1)),
            "mux.frame_too_large",
        ),
    ];
    for (frame, reason) in cases {
        mux.raw(frame).await;
        let answer = mux.next().await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["reason"], reason, "{answer}");
        // Still up: the open stream still echoes.
        mux.echo("ok", "alive").await;
    }
    // The 257th stream (256 open at most by default).
    for i in 1..256 {
        mux.send(json!({"type": "open", "id": format!("s{i}"), "path": "/ws/pods/many"}))
            .await;
    }
    let mut opened = 1;
    while opened < 256 {
        let v = mux.next().await;
        assert_eq!(v["type"], "opened", "{v}");
        opened += 1;
    }
    mux.send(json!({"type": "open", "id": "s256", "path": "/ws/pods/many"}))
        .await;
    let answer = mux.next_for("s256").await;
    assert_eq!(answer["reason"], "mux.too_many_streams");
    assert_eq!(answer["status"], 429);
    mux.echo("ok", "alive").await;
    // Beyond twice the frame limit the connection is closed (1009): memory stays bounded.
    mux.raw(Message::text("y".repeat(2 * 1024 * 1024 + 10)))
        .await;
    let end = mux.next().await;
    assert!(end.get("close").is_some(), "{end}");
    // Two bearer subprotocols on the mux handshake: refused like any handshake.
    let mut request = format!("ws://{}/mux", gw.addr)
        .into_client_request()
        .unwrap();
    let b = |t: &str| {
        format!(
            "base64url.bearer.authorization.k8s.io.{}",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t)
        )
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("keyway.mux.v1, {}, {}", b("a"), b("b"))
            .parse()
            .unwrap(),
    );
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("{err}")
    };
    assert_eq!(response.status(), 400);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_vanishing_closes_every_upstream_connection() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    for i in 0..3 {
        assert_eq!(
            mux.open(&format!("s{i}"), "/ws/pods/x").await["type"],
            "opened"
        );
    }
    assert_eq!(u.pods.open_now(), 3);
    drop(mux);
    let gone = wait_until(Duration::from_secs(5), || async { u.pods.open_now() == 0 }).await;
    assert!(
        gone,
        "{} upstream connections outlived their client",
        u.pods.open_now()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_reader_pauses_its_upstream() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(mux.open("f", "/ws/flood/f").await["type"], "opened");
    mux.send(json!({"type": "data", "id": "f", "data": "go"}))
        .await;
    // The client reads nothing more: the upstream's sends must stall at a bound (socket
    // buffers and keyway's bounded queues), not grow with keyway's memory.
    let mut last = 0;
    let stalled = wait_until(Duration::from_secs(15), || {
        let now = u.flood.flooded.load(std::sync::atomic::Ordering::SeqCst);
        let steady = now > 0 && now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            steady
        }
    })
    .await;
    let sent = u.flood.flooded.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        stalled,
        "the upstream never stalled: {sent} messages of 64 KiB"
    );
    // 64 KiB each: the kernel buffers of two loopback sockets (a few MB each) and keyway's
    // bounded queues take a few hundred; an unbounded relay would take them all.
    assert!(
        sent < 1_000,
        "{sent} messages of 64 KiB were taken from the upstream"
    );
    drop(mux);
    gw.stop().await;
}

/// An upstream that stops reading while its client keeps sending: the connection waits at most
/// 5 s for it, then closes that stream alone (`mux.stream_overflow`); the other streams, and
/// data sent to them meanwhile, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_upstream_closes_its_stream_and_never_freezes_the_others() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(mux.open("stuck", "/ws/deaf").await["type"], "opened");
    assert_eq!(mux.open("live", "/ws/pods").await["type"], "opened");
    let (mut tx, mut rx) = mux.ws.split();
    let sender = tokio::spawn(async move {
        let mut frame = vec![5u8];
        frame.extend_from_slice(b"stuck");
        frame.extend_from_slice(&vec![0u8; 64 * 1024]);
        // Far more than the upstream's socket buffers and the stream's budget (2 MiB).
        for _ in 0..400 {
            if tx.send(Message::binary(frame.clone())).await.is_err() {
                return tx;
            }
        }
        let live = json!({"type": "data", "id": "live", "data": "still here"});
        tx.send(Message::text(live.to_string())).await.unwrap();
        tx
    });
    let mut overflow = None;
    let mut closed = None;
    let mut live_echo = false;
    let started = tokio::time::Instant::now();
    while overflow.is_none() || closed.is_none() || !live_echo {
        let msg = tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .expect("no frame within 20 s")
            .expect("the connection ended")
            .expect("a frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match (v["type"].as_str(), v["id"].as_str()) {
            // Frames still in flight for the closed stream are answered as unknown.
            (Some("error"), Some("stuck")) if overflow.is_some() => {
                assert_eq!(v["reason"], "mux.unknown_stream", "{v}");
            }
            (Some("error"), Some("stuck")) => overflow = Some(v),
            (Some("closed"), Some("stuck")) => closed = Some(v),
            (Some("data"), Some("live")) => {
                assert_eq!(v["data"], "still here");
                live_echo = true;
            }
            _ => panic!("unexpected frame: {v}"),
        }
    }
    let overflow = overflow.unwrap();
    assert_eq!(overflow["reason"], "mux.stream_overflow", "{overflow}");
    assert_eq!(overflow["status"], 503);
    assert_eq!(closed.unwrap()["code"], 1011);
    assert!(started.elapsed() < Duration::from_secs(15));
    let mut tx = sender.await.unwrap();
    // The connection is healthy: a new stream opens and echoes.
    tx.send(Message::text(
        json!({"type": "open", "id": "after", "path": "/ws/pods"}).to_string(),
    ))
    .await
    .unwrap();
    let mut mux = Mux {
        ws: tx.reunite(rx).unwrap(),
    };
    assert_eq!(mux.next_for("after").await["type"], "opened");
    mux.echo("after", "fine").await;
    gw.stop().await;
}

/// An id closed by the client stays taken until its `closed` frame: reopening it at once is
/// `mux.duplicate_id`, and reopening after `closed` gives a stream the old one cannot end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_id_is_free_again_only_after_its_closed_frame() {
    let u = upstreams().await;
    let gw = start(&config(&u)).await;
    let mut mux = Mux::connect(&gw, "/mux", ("x-api-key", KEY)).await;
    assert_eq!(mux.open("s1", "/ws/pods").await["type"], "opened");
    mux.send(json!({"type": "close", "id": "s1"})).await;
    mux.send(json!({"type": "open", "id": "s1", "path": "/ws/pods"}))
        .await;
    // The immediate open is answered either 409 (the old stream was still closing) or, if
    // it came after the old stream's `closed`, `opened`; never `opened` before `closed`.
    let mut saw_closed = false;
    let mut answer = None;
    while !saw_closed || answer.is_none() {
        let v = mux.next_for("s1").await;
        match v["type"].as_str() {
            Some("closed") => {
                assert!(!saw_closed, "one closed frame only: {v}");
                saw_closed = true;
            }
            Some("opened") => {
                assert!(saw_closed, "reopened before the old stream's closed: {v}");
                answer = Some(v);
            }
            Some("error") => {
                assert_eq!(v["reason"], "mux.duplicate_id", "{v}");
                answer = Some(v);
            }
            _ => panic!("unexpected: {v}"),
        }
    }
    if answer.unwrap()["type"] == "error" {
        assert_eq!(mux.open("s1", "/ws/pods").await["type"], "opened");
    }
    // The new stream lives on: the old one's end did not take it.
    mux.echo("s1", "new").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mux.echo("s1", "still new").await;
    gw.stop().await;
}
