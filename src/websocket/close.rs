//! keyway's own end of a WebSocket handshake: the 101 for a connection keyway terminates (the
//! multiplexer, a refusal sent as a close frame), and `refuse_with: close`, because a browser
//! cannot read a refused handshake's status or body, only a close frame's code and reason.

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::close_code;
use crate::pipeline::answer::{Answer, AnswerKind};
use crate::pipeline::body::Body;
use crate::pipeline::refusal::Refusal;

/// A handshake keyway will complete itself: the client's upgrade and its accept key.
pub struct Handshake {
    pub upgrade: OnUpgrade,
    pub accept: HeaderValue,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handshake")
    }
}

impl Handshake {
    /// Takes the upgrade out of a WebSocket handshake request (RFC 6455 §4.2.1).
    pub fn take(parts: &mut Parts) -> Option<Handshake> {
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY)?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()?;
        let upgrade = parts.extensions.remove::<OnUpgrade>()?;
        Some(Handshake { upgrade, accept })
    }

    /// The 101 that completes it, selecting `protocol` if given.
    pub fn response(&self, protocol: Option<&'static str>) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        if let Some(p) = protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        response
    }
}

/// `refusal` as a completed handshake and a close frame, when the request is a handshake.
pub fn instead(answer: Answer, parts: &mut Parts) -> Answer {
    let Answer { kind, cookies } = answer;
    let AnswerKind::Refuse(refusal) = kind else {
        return Answer { kind, cookies };
    };
    match Handshake::take(parts) {
        Some(handshake) => Answer {
            kind: AnswerKind::CloseWebSocket(refusal, Box::new(handshake)),
            cookies,
        },
        None => Answer::from(refusal).with_cookies(cookies),
    }
}

/// Completes the handshake and closes at once with the refusal's code and reason.
pub fn render(refusal: &Refusal, handshake: Handshake) -> Response<Body> {
    let response = handshake.response(None);
    let code = close_code(refusal.status());
    let reason = refusal.reason.code();
    tokio::spawn(async move {
        let Ok(upgraded) = handshake.upgrade.await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(super::pump::config()),
        )
        .await;
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        // The client answers the close, then the connection ends; bounded, so a client that
        // never answers does not keep the task.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = ws.close(Some(frame)).await;
            use futures_util::StreamExt;
            while ws.next().await.is_some() {}
        })
        .await;
    });
    response
}
