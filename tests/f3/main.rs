//! F3 (SPEC §1, §8): WebSocket handshakes authenticated at keyway, the route's credential
//! policy applied to the upstream handshake, connections that outlive no credential, and the
//! multiplexer; real WebSocket servers upstream (tokio-tungstenite) that refuse a handshake
//! without their token, real clients.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/jwt.rs"]
mod jwt_support;

mod browser;
mod direct;
mod mux;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// A client's WebSocket connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The dashboard consumer's HS256 token (consumer `dash`, `sub` dash-user), expiring in `ttl` s.
pub fn dash_token(secret: &str, ttl: i64) -> String {
    jwt_support::hs(
        secret,
        &serde_json::json!({"key": "dash", "sub": "dash-user", "exp": jwt_support::now() + ttl}),
    )
}

/// What an upstream does with an accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends back every text and binary message.
    Echo,
    /// Sends back every message, each after 50 ms.
    SlowEcho,
    /// Sends 64 KiB binary messages as fast as they are taken, counting them.
    Flood,
    /// Echoes the first message, then drops the connection without a close frame.
    DieAfterFirst,
    /// Reads the first message, then never reads again (a stuck process), holding the
    /// connection for a minute.
    Deaf,
}

/// A real WebSocket server upstream. It refuses (401) a handshake whose `Authorization` is not
/// `require` (when set), records every handshake's headers, counts open connections.
pub struct WsUpstream {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    /// Connections accepted and not yet ended.
    pub open: Arc<AtomicUsize>,
    /// Flood messages the server managed to hand to the socket.
    pub flooded: Arc<AtomicUsize>,
}

impl WsUpstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last_handshake(&self) -> HeaderMap {
        self.handshakes
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no handshake reached the upstream")
    }

    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

pub async fn ws_upstream(require: Option<&'static str>, behaviour: Behaviour) -> WsUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let open = Arc::new(AtomicUsize::new(0));
    let flooded = Arc::new(AtomicUsize::new(0));
    let (log, count, flood) = (handshakes.clone(), open.clone(), flooded.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, count, flood) = (log.clone(), count.clone(), flood.clone());
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)]
                let check =
                    |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                        log.lock().unwrap().push(req.headers().clone());
                        // Like the Kubernetes API server: the first subprotocol offered is chosen.
                        let first = req
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.split(',').next())
                            .map(|p| p.trim().to_owned());
                        if let Some(p) = first {
                            resp.headers_mut()
                                .insert("sec-websocket-protocol", p.parse().unwrap());
                        }
                        let given = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok());
                        match require {
                            Some(wanted) if given != Some(wanted) => {
                                let mut refused =
                                    ErrorResponse::new(Some("bad handshake: no token".into()));
                                *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
                                Err(refused)
                            }
                            _ => Ok(resp),
                        }
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Deaf => {
                        let _ = ws.next().await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Behaviour::Flood => {
                        // Starts on the first message, then sends until the socket stops
                        // taking more.
                        let _ = ws.next().await;
                        let payload = vec![7u8; 64 * 1024];
                        while ws.send(Message::binary(payload.clone())).await.is_ok() {
                            flood.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        while let Some(Ok(msg)) = ws.next().await {
                            if msg.is_text() || msg.is_binary() {
                                if behaviour == Behaviour::DieAfterFirst {
                                    let _ = ws.send(msg).await;
                                    break;
                                }
                                if behaviour == Behaviour::SlowEcho {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                if ws.send(msg).await.is_err() {
                                    break;
                                }
                            } else if msg.is_close() {
                                break;
                            }
                        }
                    }
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    WsUpstream {
        addr,
        handshakes,
        open,
        flooded,
    }
}
