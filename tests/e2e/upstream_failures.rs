//! Item 9 (upstream failures, SPEC §11): connection refused → 502 `upstream.unreachable`, no
//! answer in time → 504 `upstream.timeout`, not HTTP → 502 `upstream.protocol`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::*;

fn config(url: &str, timeouts: &str) -> String {
    format!(
        r#"
upstreams:
  app: {{url: "{url}", timeouts: {timeouts}}}
routes:
  - {{name: all, match: {{path_prefix: /}}, upstream: app, auth: []}}
"#
    )
}

/// A TCP server that reads each request head and then does what `behave` says with the socket.
async fn raw_server<F>(behave: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> tokio::task::JoinHandle<()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            behave(stream);
        }
    });
    addr
}

/// An upstream that reads each request head and never answers; each connection is handed to the
/// receiver, which keeps it open and silent for as long as the test holds it.
async fn silent_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
) {
    let (held_tx, held_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = raw_server(move |mut stream| {
        let held_tx = held_tx.clone();
        tokio::spawn(async move {
            read_head(&mut stream).await;
            let _ = held_tx.send(stream);
        })
    })
    .await;
    (addr, held_rx)
}

#[tokio::test]
async fn connection_refused_is_502_upstream_unreachable() {
    // Nothing listens on port 1 (binding it needs privileges).
    let gw = start(&config("http://127.0.0.1:1", "{}")).await;
    let answer = get(&gw.url("/x"), &[]).await;
    let problem = assert_problem(&answer, 502, "upstream.unreachable");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("Upstream app (http://127.0.0.1:1)"),
        "{detail}"
    );
    assert_eq!(problem["route"], "all");
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_504_upstream_timeout() {
    let (addr, mut held_rx) = silent_upstream().await;
    let gw = start(&config(&format!("http://{addr}"), "{request: 300ms}")).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), get(&gw.url("/slow"), &[]))
        .await
        .expect("keyway did not give up on the silent upstream");
    let took = started.elapsed();
    let problem = assert_problem(&answer, 504, "upstream.timeout");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 300ms"),
        "{problem}"
    );
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    // The upstream did get the request.
    assert!(held_rx.recv().await.is_some());
    gw.stop().await;
}

/// One client connection, two upstreams: a quick answer under a long timeout, then a silent
/// upstream under a short one. Each request keeps its own upstream's timeout.
#[tokio::test]
async fn each_request_on_a_keep_alive_connection_gets_its_upstreams_timeout() {
    let (silent, mut held_rx) = silent_upstream().await;
    let quick = upstream_ok().await;
    let gw = start(&format!(
        r#"
upstreams:
  quick: {{url: "{}", timeouts: {{request: 60s}}}}
  silent: {{url: "http://{silent}", timeouts: {{request: 300ms}}}}
routes:
  - {{name: quick, match: {{path_prefix: /quick/}}, upstream: quick, auth: []}}
  - {{name: silent, match: {{path_prefix: /silent/}}, upstream: silent, auth: []}}
"#,
        quick.url()
    ))
    .await;

    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut exchange = async |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let started = Instant::now();
        let head = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("no answer to {path} within 5s"));
        (head, started.elapsed())
    };
    let (first, _) = exchange("/quick/1").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let (timed_out, took) = exchange("/silent/1").await;
    assert!(timed_out.starts_with("HTTP/1.1 504"), "{timed_out}");
    assert!(timed_out.contains("upstream.timeout"), "{timed_out}");
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    let (again, _) = exchange("/quick/2").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert!(held_rx.recv().await.is_some());
    gw.stop().await;
}

/// Reads one response with a Content-Length body off `stream`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if body.len() >= length {
                return text;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn an_upstream_that_is_not_http_is_502_upstream_protocol() {
    let garbage = raw_server(|mut stream| {
        tokio::spawn(async move {
            read_head(&mut stream).await;
            let _ = stream.write_all(b"NOT HTTP\r\n\r\n").await;
            let _ = stream.shutdown().await;
        })
    })
    .await;
    let gw = start(&config(&format!("http://{garbage}"), "{}")).await;
    let answer = get(&gw.url("/x"), &[]).await;
    assert_problem(&answer, 502, "upstream.protocol");
    gw.stop().await;

    // An upstream that closes without answering.
    let closer = raw_server(|mut stream| {
        tokio::spawn(async move {
            read_head(&mut stream).await;
            drop(stream);
        })
    })
    .await;
    let gw = start(&config(&format!("http://{closer}"), "{}")).await;
    let answer = get(&gw.url("/x"), &[]).await;
    assert_problem(&answer, 502, "upstream.protocol");
    gw.stop().await;
}
