//! Issue 14: what keyway routes on is what the upstream receives (SPEC §4). One regression test
//! per request that walked around the checks, and one per class: host spellings, path spellings,
//! upgrades, early answers to slow uploads, malformed request bodies. The differential test
//! against a real nginx is in `differential.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyway::pipeline::authn::api_key::hashed_form;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const KEY: &str = "canonical-test-key";

/// A public catch-all, a protected `/api/` and a protected host `internal.example`: the setup
/// of the probe that found the bypasses.
fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
upstreams:
  app: {{url: "{upstream}"}}
consumers:
  - {{name: ops, api_keys: ["{hash}"]}}
authenticators:
  key: {{type: api_key}}
routes:
  - {{name: public, match: {{path_prefix: /}}, upstream: app, auth: []}}
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [key]}}
  - {{name: internal, match: {{host: internal.example, path_prefix: /}}, upstream: app, auth: [key]}}
"#,
        hash = hashed_form(KEY)
    )
}

/// The reason of a raw answer's problem body.
fn raw_reason(answer: &RawAnswer) -> String {
    serde_json::from_str::<serde_json::Value>(&answer.body())
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[track_caller]
fn assert_raw_refusal(answer: &RawAnswer, status: u16, reason: &str) {
    assert_eq!(answer.status(), Some(status), "{}", answer.text());
    assert_eq!(raw_reason(answer), reason, "{}", answer.text());
    assert_eq!(answer.header("x-keyway-reason").as_deref(), Some(reason));
}

#[tokio::test]
async fn absolute_form_with_another_host_is_refused_not_routed_on_the_target() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    // The bypass: keyway routed on the request-line authority (public), nginx served the Host.
    let answer = raw(
        gw.addr,
        "GET http://public.example/ HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_refusal(&answer, 400, "host.conflicting");
    // Agreeing spellings of one authority are one authority, routed on and sent upstream.
    let answer = raw(
        gw.addr,
        "GET http://INTERNAL.example:80/x HTTP/1.1\r\nHost: internal.example.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_refusal(&answer, 401, "credentials.missing");
    let answer = raw(
        gw.addr,
        &format!("GET http://internal.example/x?y=1 HTTP/1.1\r\nHost: internal.example\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let seen = up.last();
    assert_eq!(seen.uri, "/x?y=1");
    assert_eq!(seen.headers["host"], "internal.example");
    assert_eq!(up.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn host_spellings_route_as_the_host_they_name_and_the_upstream_gets_that_host() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    for host in [
        "internal.example.",
        "INTERNAL.EXAMPLE",
        "Internal.Example.:80",
        "internal.example:",
        "internal.example:0080",
    ] {
        let answer = get(&gw.url("/secret"), &[("host", host)]).await;
        assert_problem(&answer, 401, "credentials.missing");
        assert_eq!(answer.json()["route"], "internal", "{host}");
        let answer = get(&gw.url("/secret"), &[("host", host), ("x-api-key", KEY)]).await;
        assert_eq!(answer.status, 200, "{host}");
        let seen = up.last();
        assert_eq!(seen.headers["host"], "internal.example", "{host}");
        // The client's own value, port included, for applications that build URLs.
        assert_eq!(seen.headers["x-forwarded-host"], host);
        assert!(
            seen.headers["forwarded"]
                .to_str()
                .unwrap()
                .ends_with(&format!("host=\"{host}\"")),
            "{:?}",
            seen.headers["forwarded"]
        );
    }
    // A non-default port stays part of the authority.
    let answer = get(
        &gw.url("/x"),
        &[("host", "Internal.Example:8443"), ("x-api-key", KEY)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().headers["host"], "internal.example:8443");
    assert_eq!(
        up.last().headers["x-forwarded-host"],
        "Internal.Example:8443"
    );
    gw.stop().await;
}

#[tokio::test]
async fn two_hosts_a_missing_host_and_malformed_hosts_are_400() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    let answer = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_refusal(&answer, 400, "host.conflicting");
    // Two identical ones too (RFC 9112 §3.2: more than one Host field line is a 400).
    let answer = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_refusal(&answer, 400, "host.conflicting");
    let answer = raw(gw.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_raw_refusal(&answer, 400, "host.missing");
    // HTTP/1.1 needs Host beside an absolute-form target too.
    let answer = raw(
        gw.addr,
        "GET http://internal.example/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_raw_refusal(&answer, 400, "host.missing");
    for host in [
        "",
        "internal.example@public.example",
        "public.example, internal.example",
        "internal%2eexample",
        "internal..example",
        ".internal.example",
        "internal.example:99999",
        "internal.example:80:80",
        "[::1",
        "a\tb",
    ] {
        let answer = raw(
            gw.addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_raw_refusal(&answer, 400, "host.invalid");
    }
    // HTTP/1.0 may name no host: it reaches routes that do not match on one.
    let answer = raw(gw.addr, "GET /old HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.text().starts_with("HTTP/1.0 200 "),
        "{}",
        answer.text()
    );
    assert!(
        up.requests().iter().all(|s| s.uri == "/old"),
        "{:?}",
        up.requests()
    );
    gw.stop().await;
}

/// An h2c connection to keyway on which requests carry any `:authority` and `host`.
async fn h2_connection(gw: &Gateway) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn an_http2_authority_and_host_must_agree() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    let mut h2 = h2_connection(&gw).await;
    let send = |uri: &str, host: Option<&str>| {
        let mut req = Request::get(uri);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    // :authority public, host internal: refused, not routed on either.
    let response = h2
        .send_request(send("http://public.example/", Some("internal.example")))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-keyway-reason"], "host.conflicting");
    // One authority in two spellings, or in one place only, is routed on.
    for (uri, host) in [
        ("http://internal.example/x", Some("INTERNAL.example.")),
        ("http://internal.example/x", None),
    ] {
        let response = h2.send_request(send(uri, host)).await.unwrap();
        assert_eq!(response.status(), 401, "{uri} {host:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["route"], "internal");
    }
    // Without :authority the host header names the authority.
    let response = h2
        .send_request(send("/x", Some("internal.example")))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = h2.send_request(send("/x", None)).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-keyway-reason"], "host.missing");
    assert!(up.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn path_spellings_are_normalised_once_and_the_upstream_gets_the_routed_path() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    for (sent, routed) in [
        // The bypasses: nginx merges the slashes and decodes %61.
        ("//api/x", "/api/x"),
        ("/%61pi/x", "/api/x"),
        ("/%61%70%69/x", "/api/x"),
        ("///api///x//", "/api/x/"),
        ("/api/%7Euser", "/api/~user"),
    ] {
        let answer = raw(
            gw.addr,
            &format!("GET {sent} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_raw_refusal(&answer, 401, "credentials.missing");
        let answer = raw(
            gw.addr,
            &format!("GET {sent}?q=%61&next=//x HTTP/1.1\r\nHost: public.example\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(answer.status(), Some(200), "{sent}: {}", answer.text());
        // The query string is forwarded as sent.
        assert_eq!(up.last().uri, format!("{routed}?q=%61&next=//x"), "{sent}");
    }
    // Escapes of other bytes stay escaped, in upper case; raw non-ASCII bytes get escaped.
    let answer = raw(
        gw.addr,
        "GET /docs/a%2bb%3a/caf\u{e9} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert_eq!(up.last().uri, "/docs/a%2Bb%3A/caf%C3%A9");
    for (sent, reason) in [
        ("/api%2Fx", "path.encoded_slash"),
        ("/x/..%2fapi/x", "path.encoded_slash"),
        ("/x\\api", "path.encoded_slash"),
        ("/x/%2e%2E/api/x", "request.bad_path"),
        ("/x/%zz", "request.bad_path"),
        ("/x/%00", "request.bad_path"),
        ("/admin;jsessionid=1/x", "path.semicolon"),
    ] {
        let answer = raw(
            gw.addr,
            &format!("GET {sent} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_raw_refusal(&answer, 400, reason);
    }
    gw.stop().await;
}

#[tokio::test]
async fn encoded_slashes_and_semicolons_can_be_kept_and_are_then_forwarded_still_encoded() {
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        "paths: {encoded_slashes: keep, semicolons: keep}",
    ))
    .await;
    let answer = raw(
        gw.addr,
        "GET /projects/group%2fname;v=1 HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert_eq!(up.last().uri, "/projects/group%2Fname;v=1");
    // Dot segments between kept separators are still dot segments.
    for sent in ["/x/..%2Fapi", "/x%5C..%5Capi", "/x/..;v=1/api"] {
        let answer = raw(
            gw.addr,
            &format!("GET {sent} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_raw_refusal(&answer, 400, "request.bad_path");
    }
    gw.stop().await;
}

/// An upstream on raw sockets that answers every request head with `answer` and records what it
/// read; it never reads a body.
async fn raw_upstream(answer: &'static str) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(answer.as_bytes()).await;
                // Hold the connection open until keyway closes it.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn h2c_upgrades_are_never_forwarded_and_an_unasked_101_is_a_502_not_a_tunnel() {
    // A recording upstream: what does it receive of an h2c upgrade?
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    let answer = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    let seen = up.last();
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream: {seen:?}"
        );
    }
    gw.stop().await;

    // An upstream that switches protocols whatever it is asked.
    let (addr, heads) = raw_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let gw = start(&config(&format!("http://{addr}"), "")).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut client).await;
    assert!(first.starts_with("HTTP/1.1 502 "), "{first}");
    assert!(first.contains("upstream.protocol"), "{first}");
    assert!(
        !heads.lock().unwrap()[0]
            .to_ascii_lowercase()
            .contains("upgrade")
    );
    // The connection is still HTTP, and the next request on it is authenticated.
    client
        .write_all(b"GET /api/secret HTTP/1.1\r\nHost: public.example\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut client).await;
    assert!(second.starts_with("HTTP/1.1 401 "), "{second}");
    assert!(second.contains("credentials.missing"), "{second}");

    // A WebSocket handshake answered with a 101 to another protocol is a 502 too.
    let answer = raw(
        gw.addr,
        &format!("GET /api/ws HTTP/1.1\r\nHost: public.example\r\nx-api-key: {KEY}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
    )
    .await;
    assert_raw_refusal(&answer, 502, "upstream.protocol");
    gw.stop().await;
}

/// Reads one response (head and a Content-Length body) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no response: {}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_slow_uploader_answered_early_never_delays_another_clients_request() {
    // The upstream answers each request as soon as its head arrives and never reads a body:
    // a second request on a connection still carrying an upload would never be answered.
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                let mut answered = 0;
                loop {
                    let heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    while answered < heads {
                        answered += 1;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                            .await;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    let gw = start(&config(&format!("http://{addr}"), "")).await;
    // Client A starts a 1 MB upload and sends 10 bytes of it; the upstream answers at once.
    let mut a = TcpStream::connect(gw.addr).await.unwrap();
    a.write_all(b"POST /upload HTTP/1.1\r\nHost: public.example\r\nContent-Length: 1000000\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_response(&mut a).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("early"),
        "{answer}"
    );
    // Client B, meanwhile: answered at once, on a connection of its own.
    let started = Instant::now();
    let b = tokio::time::timeout(
        Duration::from_secs(5),
        get(&gw.url("/next"), &[("host", "public.example")]),
    )
    .await
    .expect("the second client waited behind the slow upload");
    assert_eq!(b.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    drop(a);
    gw.stop().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_400_not_the_upstreams_502() {
    // The upstream reads the whole body before answering, as most do.
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ] {
        let answer = raw(
            gw.addr,
            &format!("POST /upload HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
        )
        .await;
        assert_raw_refusal(&answer, 400, "request.body_invalid");
    }
    // A well-formed one passes.
    let answer = raw(
        gw.addr,
        "POST /upload HTTP/1.1\r\nHost: public.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert_eq!(up.last().body, "hello");
    gw.stop().await;
}

#[tokio::test]
async fn a_reload_to_a_config_without_routes_is_refused_and_the_running_one_kept() {
    let up = upstream_ok().await;
    let gw = start(&config(&up.url(), "")).await;
    for emptied in ["", "{}", "# nothing here\n", "listen: 127.0.0.1:8080\n"] {
        std::fs::write(&gw.config_path, emptied).unwrap();
        let errors = gw.app.reload().expect_err(emptied);
        assert!(
            errors.iter().any(|e| e.message.contains("no routes")),
            "{emptied:?}: {errors:?}"
        );
        let still = get(&gw.url("/x"), &[("host", "public.example")]).await;
        assert_eq!(still.status, 200, "{emptied:?}");
    }
    gw.stop().await;
}
