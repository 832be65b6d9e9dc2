//! Moving messages one way between WebSocket peers. Each direction is its own pump, polled
//! concurrently with the other: a peer that stops reading while its own writes wait (an echo, a
//! terminal) pauses only the direction towards it, never the one away from it.

use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

/// Settings for every WebSocket keyway speaks on. tungstenite's default 128 KiB read buffer is
/// zero-filled before every read (half the relay's CPU in a profile) and stays resident per
/// socket; 8 KiB reads cost the same syscalls for typical messages.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// Why a pump stopped.
#[derive(Debug)]
pub enum Stopped {
    /// The source sent a close frame (not forwarded: the caller decides what to send).
    Closed(Option<CloseFrame>),
    /// The source's connection ended or broke.
    SourceLost,
    /// Writing to the sink failed.
    SinkLost,
}

/// Forwards text and binary messages from `from` to `to` until one side stops. Pings are
/// answered by each side's own WebSocket code.
pub async fn pump<R, W>(from: &mut R, to: &mut W) -> Stopped
where
    R: Stream<Item = Result<Message, Error>> + Unpin,
    W: Sink<Message> + Unpin,
{
    while let Some(message) = from.next().await {
        match message {
            Ok(Message::Close(frame)) => return Stopped::Closed(frame),
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if to.send(m).await.is_err() {
                    return Stopped::SinkLost;
                }
            }
            Ok(_) => {}
            Err(_) => return Stopped::SourceLost,
        }
    }
    Stopped::SourceLost
}

/// A last write to a peer (its close frame): a peer that does not read would hold it forever,
/// so it gets a moment, then the connection is dropped, which is the close.
pub async fn last_write<F: Future>(write: F) {
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}
