//! One stream's life: decided and connected (`upstream::connect`), then two pumps at once —
//! client → upstream from the connection loop's queue, upstream → client into the shared
//! writer — until one side ends it, its `closed` frame, and word to the connection loop.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::out::{Out, error};
use super::upstream::{Io, connect};
use crate::app::App;
use crate::oidc::Conn;
use crate::pipeline::headers::Client;
use crate::pipeline::request_id;
use crate::pipeline::runtime::Runtime;
use crate::pipeline::trace::{RequestPath, Stage, Trace};
use crate::reason::Reason;
use crate::websocket::pump::last_write;

/// What a stream needs to be opened through the pipeline.
pub struct Opener {
    pub app: Arc<App>,
    pub rt: Arc<Runtime>,
    pub client: Arc<Client>,
    pub conn: Conn,
    pub max_frame_bytes: usize,
}

/// A message for the stream's upstream, holding its share of the stream's byte budget until
/// it is written.
pub type ToUpstream = (Message, Option<OwnedSemaphorePermit>);

/// A stream's end, for the connection loop to free its id (only the stream of that
/// generation: the id may have been opened again) and then send `last`, its `closed` or
/// `error` frame: a client that reopens the id after reading it finds it free.
pub struct StreamEnded {
    pub id: String,
    pub generation: u64,
    pub last: Out,
}

/// The connection loop's handles on a running stream's task.
pub struct Started {
    pub from_client: mpsc::UnboundedReceiver<ToUpstream>,
    /// Fired when the stream's upstream stopped reading and the stream must end at once.
    pub abort: oneshot::Receiver<()>,
    pub out: mpsc::Sender<Out>,
    pub ended: mpsc::UnboundedSender<StreamEnded>,
}

type Upstream = WebSocketStream<Box<dyn Io>>;

/// How a stream ended.
enum Ending {
    ClientClosed(Option<CloseFrame>),
    /// The client connection is gone (or its writer): every stream ends with it.
    ConnectionGone,
    UpstreamClosed(Option<CloseFrame>),
    /// Writing to the upstream failed.
    UpstreamGone,
    /// Reading from the upstream failed.
    UpstreamLost,
    /// The upstream stopped reading while the client kept sending.
    Overflow,
}

/// Opens one stream, relays it, and reports its end.
pub async fn run(opener: Opener, id: String, generation: u64, mut parts: Parts, s: Started) {
    let Started {
        mut from_client,
        abort,
        out,
        ended,
    } = s;
    let mut trace = Trace::start(
        request_id::mint(),
        http::Method::GET,
        RequestPath::of(&parts.uri),
    );
    trace.step(Stage::Limits, "a multiplexer stream");
    let upstream = connect(&opener, &mut parts, &mut trace).await;
    let upstream = match upstream {
        Ok(ws) => {
            trace.status = 101;
            opener.app.record(&trace, &opener.rt);
            opener.app.metrics.mux_stream(true, None);
            let _ = out
                .send(Out::Json(json!({"type": "opened", "id": id})))
                .await;
            ws
        }
        Err(refusal) => {
            trace.status = refusal.status().as_u16();
            let frame = error(
                Some(&id),
                trace.status,
                refusal.reason,
                &refusal.detail,
                Some(&trace.request_id),
            );
            opener.app.metrics.mux_stream(false, Some(refusal.reason));
            trace.refusal = Some(refusal);
            opener.app.record(&trace, &opener.rt);
            let _ = ended.send(StreamEnded {
                id,
                generation,
                last: frame,
            });
            return;
        }
    };
    let (mut up_tx, mut up_rx) = upstream.split();
    let aborted = async {
        match abort.await {
            Ok(()) => (),
            // The connection loop is gone: the queue's end says so.
            Err(_) => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        ending = client_to_upstream(&mut from_client, &mut up_tx) => ending,
        ending = upstream_to_client(&id, &mut up_rx, &out) => ending,
        () = aborted => Ending::Overflow,
    };
    let closed_by_keyway = match ending {
        Ending::Overflow => Reason::MuxStreamOverflow.code(),
        _ => "",
    };
    let (code, reason) = match ending {
        Ending::ClientClosed(frame) => {
            let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
            last_write(up_tx.send(Message::Close(frame))).await;
            (code, String::new())
        }
        Ending::ConnectionGone => {
            last_write(up_tx.close()).await;
            (1001, String::new())
        }
        Ending::UpstreamClosed(frame) => {
            let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
            (
                code,
                frame.map_or_else(String::new, |f| f.reason.to_string()),
            )
        }
        Ending::UpstreamGone => (1011, "upstream gone".to_owned()),
        Ending::UpstreamLost => (1006, "upstream connection lost".to_owned()),
        // It is not reading: dropping it is the close.
        Ending::Overflow => (1011, Reason::MuxStreamOverflow.code().to_owned()),
    };
    opener.app.metrics.mux_stream_closed(closed_by_keyway);
    // Refuse anything more for this stream before the client can learn it is closed: data
    // sent after `closed` is then `mux.unknown_stream`, never silently dropped.
    drop(from_client);
    let last = Out::Json(json!({"type": "closed", "id": id, "code": code, "reason": reason}));
    let _ = ended.send(StreamEnded {
        id,
        generation,
        last,
    });
}

async fn client_to_upstream(
    from: &mut mpsc::UnboundedReceiver<ToUpstream>,
    to: &mut SplitSink<Upstream, Message>,
) -> Ending {
    while let Some((message, budget)) = from.recv().await {
        if let Message::Close(frame) = message {
            return Ending::ClientClosed(frame);
        }
        if to.send(message).await.is_err() {
            return Ending::UpstreamGone;
        }
        drop(budget);
    }
    Ending::ConnectionGone
}

/// Waits when the client does not read (the shared writer's queue is full): the upstream is
/// paused meanwhile, memory does not grow.
async fn upstream_to_client(
    id: &str,
    from: &mut SplitStream<Upstream>,
    out: &mpsc::Sender<Out>,
) -> Ending {
    while let Some(message) = from.next().await {
        let frame = match message {
            Ok(Message::Text(text)) => {
                Out::Json(json!({"type": "data", "id": id, "data": text.as_str()}))
            }
            Ok(Message::Binary(payload)) => {
                let mut frame = Vec::with_capacity(1 + id.len() + payload.len());
                frame.push(id.len() as u8);
                frame.extend_from_slice(id.as_bytes());
                frame.extend_from_slice(&payload);
                Out::Binary(Bytes::from(frame))
            }
            Ok(Message::Close(frame)) => return Ending::UpstreamClosed(frame),
            Ok(_) => continue,
            Err(_) => return Ending::UpstreamLost,
        };
        if out.send(frame).await.is_err() {
            return Ending::ConnectionGone;
        }
    }
    Ending::UpstreamLost
}
