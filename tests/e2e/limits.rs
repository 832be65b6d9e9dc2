//! Item 4 (limits): header count and size, slowloris, and malformed request heads over raw TCP.
//! Nothing malformed ever reaches the upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A refusal read off a raw socket: status, problem+json reason, request id echoed in the header.
#[track_caller]
fn assert_raw_problem(answer: &RawAnswer, what: &str, status: u16, reason: &str) {
    assert_eq!(answer.status(), Some(status), "{what}: {}", answer.text());
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{what}: {}",
        answer.text()
    );
    let problem: serde_json::Value = serde_json::from_str(&answer.body())
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", answer.text()));
    assert_eq!(problem["reason"], reason, "{what}: {problem}");
    assert_eq!(problem["type"], format!("urn:keyway:reason:{reason}"));
    assert_eq!(problem["status"], status);
    assert_eq!(
        problem["request_id"].as_str(),
        answer.header("x-request-id").as_deref(),
        "{what}"
    );
    assert!(answer.closed, "{what}: the connection stayed open");
}

#[tokio::test]
async fn too_many_headers_is_431_header_too_large() {
    let up = upstream_ok().await;
    let gw = start(&public_config(
        &up.url(),
        "headers: {max_request_headers: 8}",
    ))
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let answer = get(&gw.url("/many"), &headers).await;
    let problem = assert_problem(&answer, 431, "header.too_large");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the limit is 8"),
        "{problem}"
    );
    assert!(up.requests().is_empty());

    // Within the limit: forwarded.
    let ok = get(&gw.url("/few"), &headers[..3]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn too_many_header_bytes_is_431_header_too_large() {
    let up = upstream_ok().await;
    let gw = start(&public_config(
        &up.url(),
        "headers: {max_request_header_bytes: 1024}",
    ))
    .await;
    let big = "a".repeat(2000);
    let answer = get(&gw.url("/big"), &[("x-big", &big)]).await;
    let problem = assert_problem(&answer, 431, "header.too_large");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("the limit is 1024"),
        "{problem}"
    );
    assert!(up.requests().is_empty());

    // Far beyond every buffer: hyper's parser stops reading, keyway still answers problem+json.
    let huge = "b".repeat(64 * 1024);
    let request =
        format!("GET /huge HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\nConnection: close\r\n\r\n");
    let answer = raw(gw.addr, &request).await;
    assert_raw_problem(&answer, "64 KiB header", 431, "header.too_large");
    assert!(up.requests().is_empty());
    gw.stop().await;
}

/// Reads until the server closes the connection, failing after `bound`.
async fn closed_within(what: &str, stream: &mut tokio::net::TcpStream, bound: Duration) {
    let closed = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the connection was not closed within {bound:?}"
    );
}

#[tokio::test]
async fn slowloris_clients_are_dropped_after_the_header_read_timeout() {
    let up = upstream_ok().await;
    let gw = start(&public_config(
        &up.url(),
        "limits: {header_read_timeout: 500ms}",
    ))
    .await;
    let started = Instant::now();

    // A partial request head, then nothing.
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        .await
        .unwrap();
    // A connection that never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // The start of the HTTP/2 preface, then nothing.
    let mut preface = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();

    for (what, stream) in [
        ("partial head", &mut partial),
        ("silent", &mut silent),
        ("partial h2 preface", &mut preface),
    ] {
        closed_within(what, stream, Duration::from_secs(5)).await;
    }
    // Closed by the timeout, not at once.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(up.requests().is_empty());

    // A prompt client is still served.
    assert_eq!(get(&gw.url("/fast"), &[]).await.status, 200);
    gw.stop().await;
}

/// Malformed request heads: refused by the HTTP parser before any keyway stage runs, answered
/// with keyway's problem+json (`header.malformed`), and never forwarded.
#[tokio::test]
async fn malformed_request_heads_are_refused_and_never_forwarded() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "admin: {listen: 127.0.0.1:0}")).await;
    let cases: [(&str, &[u8]); 9] = [
        (
            "space in a header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        ),
        (
            "@ in a header name",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad@Name: 1\r\n\r\n",
        ),
        (
            "space before the colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        ),
        (
            "NUL in a value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "Transfer-Encoding that is not chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        ),
    ];
    for (what, request) in cases {
        let answer = raw_exchange(gw.addr, request, Duration::from_secs(5)).await;
        assert_raw_problem(&answer, what, 400, "header.malformed");
        assert!(up.requests().is_empty(), "{what} was forwarded");
    }
    // Counted like every other refusal, though no pipeline stage ran.
    let series = r#"keyway_requests_total{route="",status="400",reason="header.malformed"}"#;
    assert_eq!(sample(&metrics(&gw).await, series), 9.0);
    gw.stop().await;
}

/// Both Content-Length and Transfer-Encoding (the CL.TE / TE.CL smuggling pattern), in either
/// order: 400 `header.bad_framing`, nothing forwarded, and the bytes hidden behind the body are
/// never parsed as a second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_bad_framing() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    for (what, request) in [
        (
            "CL.TE",
            "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "TE.CL",
            "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ] {
        let answer = raw(gw.addr, request).await;
        assert_raw_problem(&answer, what, 400, "header.bad_framing");
        assert_eq!(
            answer.text().matches("HTTP/1.1 ").count(),
            1,
            "{what}: {}",
            answer.text()
        );
        assert!(up.requests().is_empty(), "{what}: {:?}", up.requests());
    }
    // On a keep-alive connection, the head after a request with a body is scanned too.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
        .await
        .unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    let read_first = tokio::time::timeout(Duration::from_secs(5), async {
        // The upstream answers "ok": the response ends with it.
        while !first.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&first));
            first.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read_first.is_ok(), "{}", String::from_utf8_lossy(&first));
    assert!(first.starts_with(b"HTTP/1.1 200 "));
    stream
        .write_all(b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut second = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut second)).await;
    assert!(closed.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&second);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.contains("urn:keyway:reason:header.bad_framing"),
        "{text}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/ok");
    gw.stop().await;
}

/// A bare LF ends a header line (RFC 9112 §2.2 lets a recipient accept it, and hyper does). It
/// cannot hide a header from the policy: the identity header behind a bare LF is seen and
/// removed, and the upstream gets every line re-framed with CRLF.
#[tokio::test]
async fn bare_lf_cannot_hide_a_header_from_the_policy() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    let answer = raw(
        gw.addr,
        "GET /lf HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-Keyway-Subject: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let seen = up.last();
    assert_eq!(seen.headers["x-a"], "1");
    assert!(!seen.headers.contains_key("x-keyway-subject"), "{seen:?}");
    assert_eq!(seen.headers["host"], "x");
    gw.stop().await;
}

/// Reads from `stream` until `needle` has arrived, within 5 s.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(needle) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        matches!(found, Ok(true)),
        "{needle:?} never arrived: {text}"
    );
    text
}

const SLOW_TEST_TIMEOUT: Duration = Duration::from_millis(300);

/// keyway with a `SLOW_TEST_TIMEOUT` header read timeout in front of `upstream`, and a client
/// connection that has sent `GET /slow`.
async fn slow_request_through(upstream: std::net::SocketAddr) -> (Gateway, tokio::net::TcpStream) {
    let gw = start(&public_config(
        &format!("http://{upstream}"),
        &format!(
            "limits: {{header_read_timeout: {}ms}}",
            SLOW_TEST_TIMEOUT.as_millis()
        ),
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    (gw, stream)
}

/// The header read timeout bounds a keep-alive connection's wait for its next request, and never
/// a response still being streamed to the client, however long that takes.
#[tokio::test]
async fn the_header_read_timeout_closes_idle_connections_not_slow_answers() {
    let timeout = SLOW_TEST_TIMEOUT;
    let (release_tx, release_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let addr = serve_raw(move |_req| {
        let release_rx = release_rx.clone();
        async move {
            let (tx, body) = channel_body();
            let mut release = release_rx.lock().await.take().expect("one request");
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first")).await;
                if let Some(last) = release.recv().await {
                    let _ = tx.send(last).await;
                }
            });
            Response::new(body)
        }
    })
    .await;
    let (gw, mut stream) = slow_request_through(addr).await;
    read_until(&mut stream, "first").await;
    // Three timeouts pass while the answer is still streaming: the connection stays open.
    let mut buf = [0u8; 64];
    let quiet = tokio::time::timeout(3 * timeout, stream.read(&mut buf)).await;
    assert!(quiet.is_err(), "the connection ended mid-answer: {quiet:?}");
    release_tx.send(Bytes::from_static(b"last")).await.unwrap();
    drop(release_tx);
    read_until(&mut stream, "0\r\n\r\n").await;

    // Answered and idle: closed once the timeout has passed, not before.
    let idle_from = Instant::now();
    closed_within("idle keep-alive", &mut stream, Duration::from_secs(5)).await;
    assert!(
        idle_from.elapsed() >= timeout - Duration::from_millis(50),
        "closed after {:?} idle",
        idle_from.elapsed()
    );
    gw.stop().await;
}

/// keyway does not read from a connection while its request waits for the upstream's answer, and
/// the header read timeout does not count that wait: an upstream slower than the timeout still
/// gets its answer through, and the connection serves the next request.
#[tokio::test]
async fn the_header_read_timeout_does_not_cut_a_request_waiting_for_its_upstream() {
    let timeout = SLOW_TEST_TIMEOUT;
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream_release = release.clone();
    let addr = serve_raw(move |req| {
        let release = upstream_release.clone();
        async move {
            if req.uri().path() == "/slow" {
                release.notified().await;
            }
            Response::new(full("answered"))
        }
    })
    .await;
    let (gw, mut stream) = slow_request_through(addr).await;
    // Three timeouts pass while the upstream has not answered: the connection stays open.
    let mut buf = [0u8; 64];
    let quiet = tokio::time::timeout(3 * timeout, stream.read(&mut buf)).await;
    assert!(
        quiet.is_err(),
        "the connection ended before the answer: {quiet:?}"
    );
    release.notify_one();
    read_until(&mut stream, "answered").await;
    stream
        .write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, "answered").await;
    gw.stop().await;
}
