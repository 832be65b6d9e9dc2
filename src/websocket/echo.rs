//! The builtin echo upstream's WebSocket side: the first message describes the handshake it
//! received (as the HTTP echo describes a request), then every text and binary message comes
//! back. It lets `keyway demo` show F3 with nothing else running.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::close::Handshake;
use super::tunnels::Tunnels;
use crate::pipeline::body::Body;

/// Completes a handshake to the echo (tracked like any WebSocket connection); gives the greeting
/// back when the request is not a complete handshake.
pub fn accept(
    tunnels: &Arc<Tunnels>,
    parts: &mut Parts,
    greeting: String,
) -> Result<http::Response<Body>, String> {
    let Some(handshake) = Handshake::take(parts) else {
        return Err(greeting);
    };
    let mut response = handshake.response(None);
    // Like an application server, the echo selects the first subprotocol offered (a browser
    // fails a handshake that offered some and had none selected).
    let first = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|p| http::HeaderValue::from_str(p.trim()).ok());
    if let Some(protocol) = first {
        response
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let open = tunnels.open();
    tokio::spawn(async move {
        if let Ok(upgraded) = handshake.upgrade.await {
            let io = TokioIo::new(upgraded);
            run(
                WebSocketStream::from_raw_socket(io, Role::Server, Some(super::pump::config()))
                    .await,
                greeting,
            )
            .await;
        }
        drop(open);
    });
    Ok(response)
}

pub async fn run<S>(mut ws: WebSocketStream<S>, greeting: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.send(Message::text(greeting)).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        let echoed = match message {
            Message::Text(_) | Message::Binary(_) => ws.send(message).await.is_ok(),
            Message::Close(_) => false,
            _ => true,
        };
        if !echoed {
            return;
        }
    }
}
