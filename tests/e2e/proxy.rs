//! Item 9 (upstream proxy): request and response bodies streamed, `inject` (F5) with secrets
//! from the environment and from files, and the builtin echo upstream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyway::pipeline::authn::api_key::hashed_form;
use tokio::sync::mpsc;

use crate::support::*;

const KEY: &str = "client-api-key";

#[tokio::test]
async fn a_large_request_body_reaches_the_upstream_whole() {
    let up = upstream(|seen| {
        Response::new(http_body_util::Full::new(Bytes::from(
            seen.body.len().to_string(),
        )))
    })
    .await;
    let gw = start(&public_config(&up.url(), "")).await;
    let body: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let answer = send_body("POST", &gw.url("/upload"), &[], Bytes::from(body.clone())).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "1048576");
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, body);
    gw.stop().await;
}

#[tokio::test]
async fn the_request_body_is_streamed_not_buffered() {
    // The upstream reports when the first chunk arrives, then reads the rest and echoes it.
    let (first_tx, mut first_rx) = mpsc::channel::<Bytes>(1);
    let addr = serve_raw(move |req: Request<Incoming>| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut all = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.unwrap().into_data() else {
                    continue;
                };
                if all.is_empty() {
                    let _ = first_tx.send(data.clone()).await;
                }
                all.extend_from_slice(&data);
            }
            Response::new(full(all))
        }
    })
    .await;
    let gw = start(&public_config(&format!("http://{addr}"), "")).await;

    let (chunks, body) = channel_body();
    let client: Client<HttpConnector, UpBody> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = Request::post(gw.url("/stream-up")).body(body).unwrap();
    let pending = tokio::spawn(async move { client.request(request).await });

    chunks.send(Bytes::from_static(b"first ")).await.unwrap();
    // The upstream holds the first chunk while the client has not even produced the second.
    let got = tokio::time::timeout(Duration::from_secs(5), first_rx.recv())
        .await
        .expect("the first chunk did not reach the upstream before the body ended")
        .unwrap();
    assert_eq!(got, "first ");
    chunks.send(Bytes::from_static(b"second")).await.unwrap();
    drop(chunks);

    let response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("no response")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "first second");
    gw.stop().await;
}

/// Senders of the response bodies a `streaming_gateway` upstream is writing, newest last.
type Senders = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

/// keyway in front of an upstream that answers every request with `headers` and a body the
/// test writes through the sender it finds in `Senders`.
async fn streaming_gateway(headers: Vec<(&'static str, String)>) -> (Gateway, Senders) {
    let senders = Senders::default();
    let slot = senders.clone();
    let addr = serve_raw(move |_req: Request<Incoming>| {
        let slot = slot.clone();
        let headers = headers.clone();
        async move {
            let (tx, body) = channel_body();
            slot.lock().unwrap().push(tx);
            let mut response = Response::builder();
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(body).unwrap()
        }
    })
    .await;
    let gw = start(&public_config(&format!("http://{addr}"), "")).await;
    (gw, senders)
}

/// GETs `path` over h2c or HTTP/1.1 and returns the response, once its head is in, with the
/// sender of its body.
async fn open_stream(
    gw: &Gateway,
    senders: &Senders,
    path: &str,
    headers: &[(&str, &str)],
    http2: bool,
) -> (Response<Incoming>, mpsc::Sender<Bytes>) {
    let mut request = Request::get(gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = if http2 { client_h2() } else { client() }
        .request(request)
        .await
        .unwrap();
    let tx = senders
        .lock()
        .unwrap()
        .pop()
        .expect("the upstream saw no request");
    (response, tx)
}

/// The next chunk of `body`, within 5 s.
async fn next_chunk(body: &mut Incoming, late: &str) -> Bytes {
    tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect(late)
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
}

/// The rest of `body` once the upstream ended it, within 5 s.
async fn rest_of(body: Incoming, late: &str) -> Bytes {
    tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect(late)
        .expect("the body was cut")
        .to_bytes()
}

#[tokio::test]
async fn a_streaming_response_reaches_the_client_event_by_event() {
    let (gw, senders) = streaming_gateway(vec![
        ("content-type", "text/event-stream".to_owned()),
        ("cache-control", "no-cache".to_owned()),
    ])
    .await;
    for http2 in [false, true] {
        let accept = [("accept", "text/event-stream")];
        let (response, tx) = open_stream(&gw, &senders, "/events", &accept, http2).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();

        tx.send(Bytes::from_static(b"data: one\n\n")).await.unwrap();
        let first = next_chunk(&mut body, "the first event was held back (buffered)").await;
        // The client has event one while the upstream has not produced event two.
        assert_eq!(first, "data: one\n\n", "http2: {http2}");

        tx.send(Bytes::from_static(b"data: two\n\n")).await.unwrap();
        drop(tx);
        let rest = rest_of(body, "the stream did not end").await;
        assert_eq!(rest, "data: two\n\n", "http2: {http2}");
    }
    gw.stop().await;
}

/// F5: a tool server that answers 401 unless it gets its own API key.
async fn tool_server() -> Upstream {
    upstream(|seen| {
        let authorized = seen
            .headers
            .get("authorization")
            .is_some_and(|v| v == "Bearer tools-secret");
        let mut r = Response::new(http_body_util::Full::new(Bytes::from(if authorized {
            "tool result"
        } else {
            "Invalid API key"
        })));
        if !authorized {
            *r.status_mut() = StatusCode::UNAUTHORIZED;
        }
        r
    })
    .await
}

#[tokio::test]
async fn f5_injected_credentials_reach_the_tool_server_and_the_clients_do_not() {
    let tools = tool_server().await;
    let yaml = format!(
        r#"
upstreams:
  tools:
    url: "{url}"
    inject:
      Authorization: "Bearer ${{file:secret.txt}}"
      X-Deployment: "${{CARGO_PKG_NAME}}-${{KEYWAY_E2E_SURELY_UNSET:-default}}"
  tools-bare: {{url: "{url}"}}
consumers:
  - {{name: chat-ui, api_keys: ["{hash}"]}}
authenticators:
  keys: {{type: api_key, from: ["header:x-api-key", "header:Authorization"]}}
routes:
  - {{name: tools, match: {{path_prefix: /tools/}}, strip_prefix: true, upstream: tools, auth: [keys]}}
  - {{name: bare, match: {{path_prefix: /bare/}}, strip_prefix: true, upstream: tools-bare, auth: [keys]}}
"#,
        url = tools.url(),
        hash = hashed_form(KEY),
    );
    let gw = start_with_files(&yaml, &[("secret.txt", b"tools-secret\n")]).await;

    // Without inject: the incident. The tool server refuses, and keyway passes its 401 through.
    let answer = get(&gw.url("/bare/run"), &[("x-api-key", KEY)]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body, "Invalid API key");
    assert!(answer.headers.get("x-keyway-reason").is_none());

    // With inject: 200, the tool server saw its key and never the client's.
    for client_credential in [
        ("x-api-key", KEY),
        ("authorization", "Bearer client-api-key"),
    ] {
        let answer = get(&gw.url("/tools/run"), &[client_credential]).await;
        assert_eq!(answer.status, 200, "{client_credential:?}");
        assert_eq!(answer.body, "tool result");
        let seen = tools.last();
        assert_eq!(seen.uri, "/run");
        assert_eq!(seen.headers["authorization"], "Bearer tools-secret");
        assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
        let pkg = std::env::var("CARGO_PKG_NAME").expect("run the tests with cargo");
        assert_eq!(
            seen.headers["x-deployment"],
            format!("{pkg}-default").as_str()
        );
        assert!(!seen.headers.contains_key("x-api-key"));
        for (_, value) in seen.headers.iter() {
            assert!(
                !value
                    .as_bytes()
                    .windows(KEY.len())
                    .any(|w| w == KEY.as_bytes()),
                "the client's key reached the tool server: {:?}",
                seen.headers
            );
        }
    }
    // Another client Authorization (Basic, which the bearer source does not read) is
    // overwritten by the injected one, never appended to it.
    let answer = get(
        &gw.url("/tools/run"),
        &[("x-api-key", KEY), ("authorization", "Basic dXNlcjpwYXNz")],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = tools.last();
    assert_eq!(seen.headers["authorization"], "Bearer tools-secret");
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn builtin_echo_reflects_the_request_and_the_identity() {
    let gw = start(&format!(
        r#"
upstreams:
  echo:
    builtin: echo
    inject: {{X-Echo-Secret: "never-shown"}}
consumers:
  - {{name: alice, groups: [users, beta], api_keys: ["{hash}"]}}
authenticators:
  keys: {{type: api_key}}
routes:
  - {{name: echo, match: {{path_prefix: /echo/}}, upstream: echo, auth: [keys]}}
  - {{name: public-echo, match: {{path_prefix: /pub/}}, upstream: echo, auth: []}}
"#,
        hash = hashed_form(KEY),
    ))
    .await;
    let answer = send(
        "PUT",
        &gw.url("/echo/a/b?x=1&y=two"),
        &[
            ("x-api-key", KEY),
            ("X-Custom", "v1"),
            ("host", "echo.example"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "application/json");
    let echo = answer.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/a/b");
    assert_eq!(echo["query"], "x=1&y=two");
    let headers = &echo["headers"];
    assert_eq!(headers["x-custom"], "v1");
    assert_eq!(headers["x-keyway-subject"], "alice");
    assert_eq!(headers["x-keyway-groups"], "users,beta");
    assert_eq!(headers["x-forwarded-host"], "echo.example");
    assert_eq!(headers["x-echo-secret"], "<injected, redacted>");
    assert!(headers.get("x-api-key").is_none(), "{echo}");
    assert_eq!(headers["x-request-id"], answer.header("x-request-id"));
    assert!(!answer.body.windows(11).any(|w| w == b"never-shown"));
    assert_eq!(
        echo["identity"],
        serde_json::json!({
            "subject": "alice",
            "consumer": "alice",
            "groups": ["users", "beta"],
            "authenticator": "keys",
        })
    );

    let answer = get(&gw.url("/pub/"), &[]).await;
    let echo = answer.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/pub/");
    assert_eq!(echo["query"], "");
    assert!(echo["identity"].is_null(), "{echo}");
    gw.stop().await;
}

/// Response bytes that merely look like an HTTP error head are the upstream's data: keyway
/// passes them through untouched (the guard that turns hyper's own parse-error answers into
/// problem+json must not rewrite a body).
#[tokio::test]
async fn a_body_chunk_that_looks_like_an_http_head_is_passed_through() {
    const LOOKALIKE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let (gw, senders) = streaming_gateway(vec![
        ("content-type", "message/http".to_owned()),
        ("content-length", (6 + LOOKALIKE.len()).to_string()),
    ])
    .await;
    for http2 in [false, true] {
        let (response, tx) = open_stream(&gw, &senders, "/raw", &[], http2).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        tx.send(Bytes::from_static(b"first ")).await.unwrap();
        let first = next_chunk(&mut body, "no first chunk").await;
        assert_eq!(first, "first ");
        // Sent on its own, after the first chunk reached the client.
        tx.send(Bytes::from_static(LOOKALIKE)).await.unwrap();
        drop(tx);
        let rest = rest_of(body, "the body did not end").await;
        assert_eq!(rest, LOOKALIKE, "http2: {http2}");
    }
    gw.stop().await;
}
