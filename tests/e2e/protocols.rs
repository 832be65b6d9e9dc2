//! Item 4 (server): HTTP/1.1, h2c prior knowledge, TLS with ALPN h2 and http/1.1, graceful
//! shutdown that drains an in-flight request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

#[tokio::test]
async fn http1_request_is_proxied_and_answered_over_http1() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    let resp = client()
        .request(
            Request::get(gw.url("/one"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(up.last().uri, "/one");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    // `curl`-style clients and `nc -N` shut their write side once the request is sent.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection was neither answered nor closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    assert_eq!(up.last().uri, "/half");
    gw.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_as_http2() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    let resp = client_h2()
        .request(
            Request::get(gw.url("/two?x=1"))
                .header("x-probe", "h2")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("h2c request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/two?x=1");
    assert_eq!(seen.headers["x-probe"], "h2");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    // The upstream speaks HTTP/1.1 and gets the client's authority as Host.
    assert_eq!(seen.headers["host"], gw.addr.to_string().as_str());

    // A refusal over HTTP/2 is the same problem+json (and carries no connection header).
    let resp = client_h2()
        .request(
            Request::get(gw.url("/a/../b"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("h2c request");
    assert_eq!(resp.version(), Version::HTTP_2);
    let (parts, body) = resp.into_parts();
    let answer = Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    };
    assert_problem(&answer, 400, "request.bad_path");
    assert!(answer.headers.get("connection").is_none());
    gw.stop().await;
}

/// A self-signed certificate for localhost and 127.0.0.1, made with openssl at test time.
/// `CA:FALSE` lets the same certificate be the client's trust anchor and the server's leaf.
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the TLS tests need the openssl command");
    assert!(status.success(), "openssl req failed");
    (
        std::fs::read(dir.path().join("cert.pem")).unwrap(),
        std::fs::read(dir.path().join("key.pem")).unwrap(),
    )
}

async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &[u8],
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

async fn collect(resp: Response<hyper::body::Incoming>) -> (http::StatusCode, Version, Bytes) {
    let status = resp.status();
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, body)
}

#[tokio::test]
async fn tls_negotiates_h2_and_http1_by_alpn() {
    let (cert, key) = self_signed();
    let up = upstream_ok().await;
    let yaml = public_config(&up.url(), "tls: {cert: cert.pem, key: key.pem}");
    let gw = start_with_files(&yaml, &[("cert.pem", &cert), ("key.pem", &key)]).await;

    // ALPN h2 → HTTP/2 over TLS.
    let tls = tls_connect(gw.addr, &cert, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("https://localhost:{}/tls-h2", gw.addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, version, body) = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!((status.as_u16(), version), (200, Version::HTTP_2));
    assert_eq!(body, "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/tls-h2");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(
        seen.headers["forwarded"]
            .to_str()
            .unwrap()
            .contains("proto=https"),
        "{:?}",
        seen.headers["forwarded"]
    );

    // ALPN http/1.1 → HTTP/1.1 over TLS.
    let tls = tls_connect(gw.addr, &cert, b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/tls-h1")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, version, body) = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!((status.as_u16(), version), (200, Version::HTTP_11));
    assert_eq!(body, "ok");
    assert_eq!(up.last().uri, "/tls-h1");
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");

    // Plain HTTP on the TLS listener is not served.
    let plain = raw_exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(plain.closed, "the TLS listener kept a plaintext connection");
    assert_eq!(plain.status(), None);
    assert_eq!(up.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_the_in_flight_request_and_refuses_new_connections() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let up = upstream_async(move |_seen| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Response::new(full("drained"))
        }
    })
    .await;
    let gw = start(&public_config(&up.url(), "")).await;
    let addr = gw.addr;

    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !up.requests().is_empty()
        })
        .await,
        "the request never reached the upstream"
    );

    let stopping = tokio::spawn(gw.stop());
    // keyway stops accepting while the request is still in flight.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "keyway still accepts connections after stop()"
    );
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended early"
    );
    assert!(!stopping.is_finished(), "stop() returned before draining");

    release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight request was not drained")
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "drained");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("stop() did not return after draining")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Graceful shutdown waits for requests, not for connections: an idle keep-alive connection,
/// a connection that never sent a byte and one that sent half a first request head do not hold
/// stop() (the header read timeout is the default 10 s, far above the bound).
#[tokio::test]
async fn graceful_shutdown_does_not_wait_for_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    // An idle keep-alive connection after one answered request.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // A connection that sent nothing, and one that sent part of its first request head.
    let _silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    partial.write_all(b"GET /b HTTP/1.1\r\n").await.unwrap();
    // Connections are accepted in order: once a later one is answered, keyway holds these.
    assert_eq!(get(&gw.url("/c"), &[]).await.status, 200);

    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(3), gw.stop())
        .await
        .expect("stop() waited for idle connections");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The idle connection was closed.
    let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf))
        .await
        .expect("the idle connection stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
}
