//! The WebSocket multiplexer (SPEC §8, F3): many logical streams over one client connection
//! (`keyway.mux.v1`), each opened like a direct WebSocket request to its path, carrying the
//! connection's credential: routed, authenticated, authorised and injected by the same pipeline
//! (`pipeline::decide`, `prepare`), recorded as a trace of its own, and failing alone with a
//! status and a reason while the others go on.
//!
//! Frames: JSON text frames for control (`open`, `data`, `close`, `auth` from the client;
//! `opened`, `data`, `error`, `closed`, `authed` to it) and binary frames `[N][N bytes of id]
//! [payload]`. Buffering is bounded: every stream's upstream reader waits when the client does
//! not read (so the upstream is paused, memory does not grow), and data for a stream waits when
//! its upstream does not read.

mod out;
mod stream;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use self::out::{Out, bad_frame, error, unknown_stream, write_out};
use self::stream::{Opener, StreamEnded, ToUpstream};
pub use self::upstream::Io;
use super::close::Handshake;
use super::tunnels::Open;
use super::{MUX_PROTOCOL, MuxSettings};
use crate::app::App;
use crate::oidc::Conn;
use crate::pipeline;
use crate::pipeline::answer::Answer;
use crate::pipeline::body::Body;
use crate::pipeline::headers::Client;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::request_id;
use crate::pipeline::runtime::Runtime;
use crate::pipeline::trace::{RequestPath, Stage, Trace};
use crate::pipeline::unauthenticated::Mode;
use crate::reason::Reason;

/// Messages waiting for the client, across all streams.
const OUTGOING: usize = 64;
/// A stream's upstream may have this many maximal frames waiting for it...
const BUDGET_FRAMES: usize = 2;
/// ...and the connection waits this long for room before the stream is closed.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// An idle connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Connecting to a stream's upstream, handshake included.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers a stream's `open` may not set: the connection's credential, the authority, and the
/// handshake's own.
fn reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "authorization"
        || n == "cookie"
        || n == "host"
        || n == "connection"
        || n == "upgrade"
        || n == "content-length"
        || n == "transfer-encoding"
        || n.starts_with("sec-websocket-")
}

/// Whether a handshake offers `keyway.mux.v1`.
fn offers_mux(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == MUX_PROTOCOL)
}

/// Accepts a multiplexer connection on an authenticated handshake to a `mux` route.
pub fn accept(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    client: &Arc<Client>,
    decision: pipeline::Decision,
    mut parts: Parts,
    conn: Conn,
    trace: &mut Trace,
) -> Result<http::Response<Body>, Answer> {
    let settings = decision.route.mux.unwrap_or_default();
    let handshake = if offers_mux(&parts) {
        Handshake::take(&mut parts)
    } else {
        None
    };
    let Some(handshake) = handshake else {
        trace.step(Stage::Upstream, "not a keyway.mux.v1 handshake");
        return Err(Refusal::new(
            Reason::MuxBadHandshake,
            format!("Route {} is a WebSocket multiplexer: open it with a WebSocket handshake offering the subprotocol {MUX_PROTOCOL}.", decision.route.name),
        )
        .into());
    };
    // What every stream's request starts from: the handshake's headers (the credential
    // included: a mux route does not consume it) less the handshake's own.
    let mut base = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != header::HOST && !reserved_for_handshake(name) {
            base.append(name.clone(), value.clone());
        }
    }
    let state = Connection {
        app: app.clone(),
        rt: rt.clone(),
        client: client.clone(),
        conn,
        base,
        authority: trace.authority.as_ref().map(|a| a.value.clone()),
        path: parts.uri.path().to_owned(),
        settings,
        valid_until: decision.identity.as_ref().and_then(|i| i.valid_until),
        open: app.tunnels.open(),
    };
    trace.step(Stage::Upstream, "multiplexer connection accepted");
    let response = handshake.response(Some(MUX_PROTOCOL));
    tokio::spawn(async move {
        if let Ok(upgraded) = handshake.upgrade.await {
            state.run(upgraded).await;
        }
    });
    Ok(response)
}

fn reserved_for_handshake(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "connection"
        || n == "upgrade"
        || n == "content-length"
        || n == "transfer-encoding"
        || n == "x-request-id"
        || n.starts_with("sec-websocket-")
}

struct Connection {
    app: Arc<App>,
    rt: Arc<Runtime>,
    client: Arc<Client>,
    conn: Conn,
    /// The headers every stream's request starts with, the credential among them.
    base: HeaderMap,
    authority: Option<HeaderValue>,
    /// The mux route's path (an `auth` frame is checked against it).
    path: String,
    settings: MuxSettings,
    /// When the connection's credential ends (seconds since the epoch).
    valid_until: Option<u64>,
    open: Open,
}

/// What the client sends in a text frame.
#[derive(Deserialize)]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    data: Option<String>,
    code: Option<u16>,
    token: Option<String>,
}

/// A stream the connection knows.
struct Stream {
    generation: u64,
    /// The way to its upstream; `None` once the client closed it or it overflowed: its
    /// `closed` frame is on the way and its id is not free yet.
    to_upstream: Option<mpsc::UnboundedSender<ToUpstream>>,
    /// Bytes that may wait for its upstream (`BUDGET_FRAMES` frames).
    budget: Arc<Semaphore>,
    abort: Option<oneshot::Sender<()>>,
}

fn ws_config(settings: &MuxSettings) -> WebSocketConfig {
    // Frames up to twice the limit are read and refused with an error frame (the connection
    // stays); larger ones end the connection (1009), so memory stays bounded either way.
    super::pump::config()
        .max_message_size(Some(settings.max_frame_bytes.saturating_mul(2)))
        .max_frame_size(Some(settings.max_frame_bytes.saturating_mul(2)))
}

impl Connection {
    async fn run(mut self, upgraded: Upgraded) {
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config(&self.settings)),
        )
        .await;
        let (sink, mut source) = ws.split();
        let (out_tx, out_rx) = mpsc::channel::<Out>(OUTGOING);
        let writer = tokio::spawn(write_out(sink, out_rx));
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<StreamEnded>();
        let mut streams: HashMap<String, Stream> = HashMap::new();
        let mut generation = 0u64;
        // Every stream's tasks: dropping the set (the client is gone) ends them all, and their
        // upstream connections with them.
        let mut tasks = JoinSet::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut stopping = self.open.stopping.clone();
        let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut expiry = expiry_sleep(self.valid_until);
        loop {
            tokio::select! {
                frame = source.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        // A frame beyond twice the limit: every stream ends with the connection.
                        Some(Err(WsError::Capacity(_))) => {
                            let _ = out_tx.try_send(Out::Close(1009, "frame too large".into()));
                            break;
                        }
                        // The client is gone.
                        Some(Err(_)) | None => break,
                    };
                    match frame {
                        Message::Text(text) => {
                            if text.len() > self.settings.max_frame_bytes {
                                let _ = out_tx.send(error(None, 413, Reason::MuxFrameTooLarge, &format!("A frame of {} bytes; the limit is {}.", text.len(), self.settings.max_frame_bytes), None)).await;
                                continue;
                            }
                            let mut ctx = Ctx { streams: &mut streams, tasks: &mut tasks, out: &out_tx, ended: &ended_tx, generation: &mut generation, grace: &mut grace, expiry: &mut expiry };
                            self.control(text.as_str(), &mut ctx).await;
                        }
                        Message::Binary(data) => {
                            if data.len() > self.settings.max_frame_bytes + 256 {
                                let _ = out_tx.send(error(None, 413, Reason::MuxFrameTooLarge, &format!("A frame of {} bytes; the limit is {}.", data.len(), self.settings.max_frame_bytes), None)).await;
                                continue;
                            }
                            self.binary(data, &mut streams, &out_tx).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                Some(StreamEnded { id, generation, last }) = ended_rx.recv() => {
                    if streams.get(&id).is_some_and(|s| s.generation == generation) {
                        streams.remove(&id);
                    }
                    let _ = out_tx.send(last).await;
                }
                _ = ping.tick() => {
                    let _ = out_tx.try_send(Out::Ping);
                }
                () = async { match expiry.as_mut() { Some(s) => s.await, None => std::future::pending().await } } => {
                    expiry = None;
                    let _ = out_tx.send(error(None, 401, Reason::JwtExpired, &format!("The connection's credential expired; send an auth frame with a new token within {}s, or the connection closes.", self.settings.grace.as_secs()), None)).await;
                    grace = Some(Box::pin(tokio::time::sleep(self.settings.grace)));
                }
                () = async { match grace.as_mut() { Some(s) => s.await, None => std::future::pending().await } } => {
                    let _ = out_tx.send(Out::Close(4401, Reason::JwtExpired.code().into())).await;
                    break;
                }
                () = super::tunnels::stopped(&mut stopping) => {
                    let _ = out_tx.send(Out::Close(1001, "keyway shutting down".into())).await;
                    break;
                }
            }
        }
        // The client connection ends: every stream, and its upstream, with it.
        drop(streams);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(out_tx);
        let _ = writer.await;
    }

    async fn control(&mut self, text: &str, ctx: &mut Ctx<'_>) {
        let out = ctx.out;
        let control: Control = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let _ = out
                    .send(bad_frame(None, &format!("Not a control frame: {e}.")))
                    .await;
                return;
            }
        };
        let id = control.id.as_deref();
        match (control.kind.as_str(), id) {
            ("auth", _) => {
                let answer = self.renew(control.token.as_deref()).await;
                if let Ok(valid_until) = answer {
                    *ctx.grace = None;
                    *ctx.expiry = expiry_sleep(valid_until);
                }
                let frame = match answer {
                    Ok(_) => Out::Json(json!({"type": "authed"})),
                    Err(e) => e,
                };
                let _ = out.send(frame).await;
            }
            (_, None) => {
                let _ = out
                    .send(bad_frame(
                        None,
                        &format!("A {:?} frame needs an id.", control.kind),
                    ))
                    .await;
            }
            ("open", Some(id)) => {
                if id.is_empty() || id.len() > 255 {
                    let _ = out
                        .send(bad_frame(Some(id), "A stream id is 1 to 255 bytes."))
                        .await;
                } else if ctx.streams.contains_key(id) {
                    let _ = out
                        .send(error(
                            Some(id),
                            409,
                            Reason::MuxDuplicateId,
                            "A stream with this id is open, or closing, on this connection.",
                            None,
                        ))
                        .await;
                } else if ctx.streams.len() >= self.settings.max_streams {
                    let _ = out
                        .send(error(
                            Some(id),
                            429,
                            Reason::MuxTooManyStreams,
                            &format!(
                                "This connection has {} streams open, the most it may.",
                                ctx.streams.len()
                            ),
                            None,
                        ))
                        .await;
                } else if let Some(path) = control.path.as_deref().filter(|p| p.starts_with('/')) {
                    match self.stream_request(path, &control.headers) {
                        Ok(parts) => {
                            let (tx, from_client) = mpsc::unbounded_channel();
                            let (abort_tx, abort) = oneshot::channel();
                            *ctx.generation += 1;
                            let generation = *ctx.generation;
                            ctx.streams.insert(
                                id.to_owned(),
                                Stream {
                                    generation,
                                    to_upstream: Some(tx),
                                    budget: Arc::new(Semaphore::new(self.budget_bytes())),
                                    abort: Some(abort_tx),
                                },
                            );
                            let started = stream::Started {
                                from_client,
                                abort,
                                out: out.clone(),
                                ended: ctx.ended.clone(),
                            };
                            ctx.tasks.spawn(stream::run(
                                self.opener(),
                                id.to_owned(),
                                generation,
                                parts,
                                started,
                            ));
                        }
                        Err(detail) => {
                            let _ = out.send(bad_frame(Some(id), &detail)).await;
                        }
                    }
                } else {
                    let _ = out
                        .send(bad_frame(
                            Some(id),
                            "An open frame needs a path starting with /.",
                        ))
                        .await;
                }
            }
            ("data", Some(id)) => match control.data {
                Some(data) => {
                    self.deliver(id, Message::text(data), ctx.streams, out)
                        .await;
                }
                None => {
                    let _ = out
                        .send(bad_frame(Some(id), "A data frame needs data (a string)."))
                        .await;
                }
            },
            ("close", Some(id)) => {
                // The id stays taken until the stream's `closed` frame is sent.
                let sender = ctx.streams.get_mut(id).and_then(|s| s.to_upstream.take());
                match sender {
                    Some(to_upstream) => {
                        let frame = CloseFrame {
                            code: CloseCode::from(control.code.unwrap_or(1000)),
                            reason: "".into(),
                        };
                        let _ = to_upstream.send((Message::Close(Some(frame)), None));
                    }
                    None => {
                        let _ = out.send(unknown_stream(id)).await;
                    }
                }
            }
            (other, Some(id)) => {
                let _ = out
                    .send(bad_frame(
                        Some(id),
                        &format!(
                            "Unknown frame type {other:?}; expected open, data, close or auth."
                        ),
                    ))
                    .await;
            }
        }
    }

    /// A stream's request: a WebSocket handshake to `path` with the connection's headers and
    /// the stream's own.
    fn stream_request(
        &self,
        path: &str,
        extra: &serde_json::Map<String, Value>,
    ) -> Result<Parts, String> {
        let (mut parts, ()) = Request::get(path)
            .version(http::Version::HTTP_11)
            .body(())
            .map_err(|_| format!("{path:?} is not a path."))?
            .into_parts();
        parts.headers = self.base.clone();
        for (name, value) in extra {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a header name."))?;
            if reserved(&name) {
                return Err(format!(
                    "A stream may not set {name}: the connection's credential and the handshake are keyway's."
                ));
            }
            let value = value
                .as_str()
                .and_then(|v| HeaderValue::from_str(v).ok())
                .ok_or_else(|| format!("Header {name} needs a string value."))?;
            parts.headers.append(name, value);
        }
        if let Some(authority) = &self.authority {
            parts.headers.insert(header::HOST, authority.clone());
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        parts.headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        Ok(parts)
    }

    fn opener(&self) -> Opener {
        Opener {
            app: self.app.clone(),
            rt: self.rt.clone(),
            client: self.client.clone(),
            conn: self.conn,
            max_frame_bytes: self.settings.max_frame_bytes,
        }
    }

    /// An `auth` frame: the new token is checked with the mux route's own authenticators, and
    /// replaces the connection's credential only if it passes.
    async fn renew(&mut self, token: Option<&str>) -> Result<Option<u64>, Out> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(bad_frame(None, "An auth frame needs a token."));
        };
        let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Err(bad_frame(None, "The token is not a header value."));
        };
        bearer.set_sensitive(true);
        let mut base = self.base.clone();
        base.insert(header::AUTHORIZATION, bearer);
        let (mut parts, ()) = Request::get(self.path.as_str())
            .version(http::Version::HTTP_11)
            .body(())
            .map_err(|_| bad_frame(None, "The mux route's path is not a path."))?
            .into_parts();
        parts.headers = base.clone();
        if let Some(authority) = &self.authority {
            parts.headers.insert(header::HOST, authority.clone());
        }
        let mut trace = Trace::start(
            request_id::mint(),
            http::Method::GET,
            RequestPath::of(&parts.uri),
        );
        trace.step(Stage::Authn, "mux auth frame");
        let decided = pipeline::decide(
            &self.rt,
            &mut parts,
            false,
            self.conn,
            Mode::Proxy,
            &mut trace,
        )
        .await;
        let outcome = match decided {
            Ok(decision) if decision.route.mux.is_some() => {
                self.base = base;
                self.valid_until = decision.identity.as_ref().and_then(|i| i.valid_until);
                trace.status = 200;
                Ok(self.valid_until)
            }
            Ok(_) => Err(error(
                None,
                400,
                Reason::MuxBadFrame,
                "The token was checked against another route than this multiplexer's.",
                Some(&trace.request_id),
            )),
            Err(answer) => {
                let refusal = answer.refusal();
                let status = refusal.map_or(401, |r| r.status().as_u16());
                let reason = refusal.map_or(Reason::CredentialsMissing, |r| r.reason);
                let detail = refusal.map_or(String::new(), |r| r.detail.clone());
                trace.status = status;
                let frame = error(
                    None,
                    status,
                    reason,
                    &format!("{detail} The connection keeps its credential."),
                    Some(&trace.request_id),
                );
                if let Some(r) = refusal {
                    trace.refusal = Some(r.clone());
                }
                Err(frame)
            }
        };
        self.app.record(&trace, &self.rt);
        outcome
    }
}

fn expiry_sleep(valid_until: Option<u64>) -> Option<std::pin::Pin<Box<tokio::time::Sleep>>> {
    let at = valid_until?;
    let now = crate::session::store::now();
    Some(Box::pin(tokio::time::sleep(Duration::from_secs(
        at.saturating_sub(now),
    ))))
}

/// What `control` works on besides the connection itself.
struct Ctx<'a> {
    streams: &'a mut HashMap<String, Stream>,
    tasks: &'a mut JoinSet<()>,
    out: &'a mpsc::Sender<Out>,
    ended: &'a mpsc::UnboundedSender<StreamEnded>,
    generation: &'a mut u64,
    grace: &'a mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    expiry: &'a mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    /// The bytes that may wait for one stream's upstream.
    fn budget_bytes(&self) -> usize {
        self.settings
            .max_frame_bytes
            .saturating_mul(BUDGET_FRAMES)
            .clamp(64 * 1024, Semaphore::MAX_PERMITS)
    }

    /// A binary frame: `[N][N bytes of id][payload]`.
    async fn binary(
        &self,
        data: Bytes,
        streams: &mut HashMap<String, Stream>,
        out: &mpsc::Sender<Out>,
    ) {
        let Some(&n) = data.first() else {
            let _ = out.send(bad_frame(None, "An empty binary frame.")).await;
            return;
        };
        let n = usize::from(n);
        if n == 0 || data.len() < 1 + n {
            let _ = out
                .send(bad_frame(
                    None,
                    "A binary frame shorter than its stream id.",
                ))
                .await;
            return;
        }
        let Ok(id) = std::str::from_utf8(&data[1..1 + n]) else {
            let _ = out
                .send(bad_frame(
                    None,
                    "A binary frame whose stream id is not UTF-8.",
                ))
                .await;
            return;
        };
        let payload = Message::Binary(data.slice(1 + n..));
        self.deliver(id, payload, streams, out).await;
    }

    /// Queues a message for a stream's upstream. A stream whose upstream does not take its
    /// budget's worth within `STALL_LIMIT` is closed (`mux.stream_overflow`): the connection's
    /// other streams wait for it at most that long, and memory stays bounded.
    async fn deliver(
        &self,
        id: &str,
        message: Message,
        streams: &mut HashMap<String, Stream>,
        out: &mpsc::Sender<Out>,
    ) {
        let Some(stream) = streams.get_mut(id) else {
            let _ = out.send(unknown_stream(id)).await;
            return;
        };
        // A stream that is closing, or has just ended, is as unknown as any other.
        let Some(to_upstream) = stream.to_upstream.as_ref() else {
            let _ = out.send(unknown_stream(id)).await;
            return;
        };
        let budget = self.budget_bytes();
        // Within `budget_bytes`, which `Semaphore::MAX_PERMITS` bounds.
        let need = message.len().clamp(1, budget) as u32;
        let permit = match stream.budget.clone().try_acquire_many_owned(need) {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits) => {
                tokio::time::timeout(STALL_LIMIT, stream.budget.clone().acquire_many_owned(need))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(TryAcquireError::Closed) => None,
        };
        let Some(permit) = permit else {
            stream.to_upstream = None;
            let _ = out
                .send(error(
                    Some(id),
                    503,
                    Reason::MuxStreamOverflow,
                    &format!(
                        "Stream {id}'s upstream stopped reading: {budget} bytes waited for it for {}s. The stream is closed so that the connection's other streams go on.",
                        STALL_LIMIT.as_secs()
                    ),
                    None,
                ))
                .await;
            if let Some(abort) = stream.abort.take() {
                let _ = abort.send(());
            }
            return;
        };
        if to_upstream.send((message, Some(permit))).is_err() {
            let _ = out.send(unknown_stream(id)).await;
        }
    }
}
