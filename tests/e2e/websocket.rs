//! WebSocket pass-through (SPEC §8, F3): the handshake is authenticated, the route's credential
//! policy (strip the client's key, inject the upstream's) applies to the upstream handshake, and
//! messages flow both ways once upgraded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use keyway::pipeline::authn::api_key::hashed_form;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::support::*;

const KEY: &str = "ws-client-key";

/// A WebSocket echo server that records the headers of every handshake it accepts.
pub(crate) async fn ws_echo() -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                // The callback's signature is tungstenite's.
                #[allow(clippy::result_large_err)]
                let record = |req: &Request, resp: Response| {
                    log.lock().unwrap().push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

async fn gateway(upstream: SocketAddr, extra: &str) -> Gateway {
    start(&format!(
        r#"
{extra}
upstreams:
  pods:
    url: "http://{upstream}"
    inject: {{Authorization: "Bearer cluster-token"}}
consumers:
  - {{name: dashboard, groups: [ops], api_keys: ["{hash}"]}}
authenticators:
  keys: {{type: api_key}}
routes:
  - {{name: ws, match: {{path_prefix: /ws/}}, upstream: pods, auth: [keys]}}
"#,
        hash = hashed_form(KEY),
    ))
    .await
}

#[tokio::test]
async fn an_authenticated_upgrade_carries_the_injected_credential_and_echoes() {
    let (upstream, handshakes) = ws_echo().await;
    let gw = gateway(upstream, "").await;
    let mut request = format!("ws://{}/ws/pods?watch=1", gw.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", KEY.parse().unwrap());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake refused");
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));

    for text in ["hello", "second message"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no echo")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();

    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0];
    assert_eq!(headers["authorization"], "Bearer cluster-token");
    assert!(!headers.contains_key("x-api-key"), "{headers:?}");
    assert_eq!(headers["x-keyway-consumer"], "dashboard");
    assert_eq!(headers["x-keyway-groups"], "ops");
    assert!(
        headers["upgrade"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_the_key_is_refused_at_the_handshake() {
    let (upstream, handshakes) = ws_echo().await;
    let gw = gateway(upstream, "").await;
    for key in [None, Some("wrong-key")] {
        let mut request = format!("ws://{}/ws/pods", gw.addr)
            .into_client_request()
            .unwrap();
        if let Some(k) = key {
            request
                .headers_mut()
                .insert("x-api-key", k.parse().unwrap());
        }
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("handshake timed out")
        .expect_err("the handshake was accepted");
        let Error::Http(response) = err else {
            panic!("expected an HTTP refusal, got {err:?}");
        };
        let answer = Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.body().clone().unwrap_or_default().into(),
        };
        let (status, reason) = match key {
            None => (401, "credentials.missing"),
            Some(_) => (401, "api_key.invalid"),
        };
        assert_problem(&answer, status, reason);
        assert!(
            answer
                .header("www-authenticate")
                .starts_with("Bearer realm=\"keyway\"")
        );
    }
    assert!(handshakes.lock().unwrap().is_empty());
    gw.stop().await;
}

/// An upgraded WebSocket connection is a byte tunnel: whatever the upstream sends after 101
/// reaches the client unchanged, even bytes that look like an HTTP error head.
#[tokio::test]
async fn an_upgraded_connection_is_a_transparent_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that accepts the upgrade and then echoes bytes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let mut buf = [0u8; 1024];
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                    .await;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    // A short header read timeout: it must never close a tunnel, however quiet.
    let gw = gateway(upstream, "limits: {header_read_timeout: 200ms}").await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(
            format!(
                "GET /ws/tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nx-api-key: {KEY}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no 101: {}", String::from_utf8_lossy(&got));
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );

    for message in [
        &b"plain bytes"[..],
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
    ] {
        // Quiet for three header read timeouts: the tunnel stays open.
        let quiet = tokio::time::timeout(Duration::from_millis(600), client.read(&mut buf)).await;
        assert!(quiet.is_err(), "the tunnel ended while quiet: {quiet:?}");
        client.write_all(message).await.unwrap();
        let mut echoed = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while echoed.len() < message.len() {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "the tunnel closed");
                echoed.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(read.is_ok(), "no echo");
        assert_eq!(
            String::from_utf8_lossy(&echoed),
            String::from_utf8_lossy(message)
        );
    }
    gw.stop().await;
}
