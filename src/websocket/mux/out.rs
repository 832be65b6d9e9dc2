//! What goes to the client: one writer task, fed by a bounded channel that the connection loop
//! and every stream share (a client that does not read pauses them all, memory stays bounded).

use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::pipeline::request_id::RequestId;
use crate::reason::Reason;

/// A frame for the client.
pub enum Out {
    Json(Value),
    Binary(Bytes),
    Ping,
    Close(u16, String),
}

pub fn error(
    id: Option<&str>,
    status: u16,
    reason: Reason,
    detail: &str,
    request_id: Option<&RequestId>,
) -> Out {
    let mut v =
        json!({"type": "error", "status": status, "reason": reason.code(), "detail": detail});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    if let Some(r) = request_id {
        v["request_id"] = json!(r.as_str());
    }
    Out::Json(v)
}

pub fn bad_frame(id: Option<&str>, detail: &str) -> Out {
    error(id, 400, Reason::MuxBadFrame, detail, None)
}

pub fn unknown_stream(id: &str) -> Out {
    error(
        Some(id),
        404,
        Reason::MuxUnknownStream,
        "No stream with this id is open on this connection.",
        None,
    )
}

/// The one writer to the client: JSON control frames, binary data frames, pings and the final
/// close.
pub async fn write_out(
    mut sink: SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>,
    mut out: mpsc::Receiver<Out>,
) {
    while let Some(frame) = out.recv().await {
        let message = match frame {
            Out::Ping => Message::Ping(Bytes::new()),
            Out::Json(v) => Message::text(v.to_string()),
            Out::Binary(b) => Message::Binary(b),
            Out::Close(code, reason) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })))
                    .await;
                break;
            }
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}
