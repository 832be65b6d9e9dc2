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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::close::Handshake;
use super::tunnels::Open;
use super::{MUX_PROTOCOL, MuxSettings};
use crate::app::App;
use crate::config::runtime::{Runtime, Target};
use crate::oidc::Conn;
use crate::pipeline::answer::Answer;
use crate::pipeline::body::Body;
use crate::pipeline::headers::Client;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::request_id::{self, RequestId};
use crate::pipeline::trace::{RequestPath, Stage, Trace};
use crate::pipeline::unauthenticated::Mode;
use crate::pipeline::{self, Prepared};
use crate::reason::Reason;

/// Messages waiting for the client, across all streams.
const OUTGOING: usize = 64;
/// Messages waiting for one stream's upstream.
const PER_STREAM: usize = 16;
/// An idle connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Connecting to a stream's upstream, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A frame for the client.
enum Out {
    Json(Value),
    Binary(Bytes),
    Ping,
    Close(u16, String),
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

/// A stream the connection knows: the way to its upstream writer.
struct Stream {
    to_upstream: mpsc::Sender<Message>,
}

/// A stream's end, for the connection loop to forget it.
struct StreamEnded(String);

fn error(
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

fn bad_frame(id: Option<&str>, detail: &str) -> Out {
    error(id, 400, Reason::MuxBadFrame, detail, None)
}

fn ws_config(settings: &MuxSettings) -> WebSocketConfig {
    // Frames up to twice the limit are read and refused with an error frame (the connection
    // stays); larger ones end the connection (1009), so memory stays bounded either way.
    WebSocketConfig::default()
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
                    let Some(Ok(frame)) = frame else {
                        // The client is gone or broke the protocol (a frame beyond twice the
                        // limit): every stream ends with it.
                        let _ = out_tx.try_send(Out::Close(1009, "frame too large".into()));
                        break;
                    };
                    match frame {
                        Message::Text(text) => {
                            if text.len() > self.settings.max_frame_bytes {
                                let _ = out_tx.send(error(None, 413, Reason::MuxFrameTooLarge, &format!("A frame of {} bytes; the limit is {}.", text.len(), self.settings.max_frame_bytes), None)).await;
                                continue;
                            }
                            self.control(text.as_str(), &mut streams, &mut tasks, &out_tx, &ended_tx, &mut grace, &mut expiry).await;
                        }
                        Message::Binary(data) => {
                            if data.len() > self.settings.max_frame_bytes + 256 {
                                let _ = out_tx.send(error(None, 413, Reason::MuxFrameTooLarge, &format!("A frame of {} bytes; the limit is {}.", data.len(), self.settings.max_frame_bytes), None)).await;
                                continue;
                            }
                            binary(data, &streams, &out_tx).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                Some(StreamEnded(id)) = ended_rx.recv() => {
                    streams.remove(&id);
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

    #[allow(clippy::too_many_arguments)]
    async fn control(
        &mut self,
        text: &str,
        streams: &mut HashMap<String, Stream>,
        tasks: &mut JoinSet<()>,
        out: &mpsc::Sender<Out>,
        ended: &mpsc::UnboundedSender<StreamEnded>,
        grace: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ) {
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
                    *grace = None;
                    *expiry = expiry_sleep(valid_until);
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
                } else if streams.contains_key(id) {
                    let _ = out
                        .send(error(
                            Some(id),
                            409,
                            Reason::MuxDuplicateId,
                            "A stream with this id is open on this connection.",
                            None,
                        ))
                        .await;
                } else if streams.len() >= self.settings.max_streams {
                    let _ = out
                        .send(error(
                            Some(id),
                            429,
                            Reason::MuxTooManyStreams,
                            &format!(
                                "This connection has {} streams open, the most it may.",
                                streams.len()
                            ),
                            None,
                        ))
                        .await;
                } else if let Some(path) = control.path.as_deref().filter(|p| p.starts_with('/')) {
                    match self.stream_request(path, &control.headers) {
                        Ok(parts) => {
                            let (tx, rx) = mpsc::channel(PER_STREAM);
                            streams.insert(id.to_owned(), Stream { to_upstream: tx });
                            tasks.spawn(open_stream(
                                self.opener(),
                                id.to_owned(),
                                parts,
                                rx,
                                out.clone(),
                                ended.clone(),
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
            ("data", Some(id)) => match (streams.get(id), control.data) {
                (Some(stream), Some(data)) => {
                    // Waits when the stream's upstream does not keep up. A stream that has just
                    // ended (its `closed` is on the way) is as unknown as any other.
                    if stream.to_upstream.send(Message::text(data)).await.is_err() {
                        streams.remove(id);
                        let _ = out
                            .send(error(
                                Some(id),
                                404,
                                Reason::MuxUnknownStream,
                                "No stream with this id is open on this connection.",
                                None,
                            ))
                            .await;
                    }
                }
                (Some(_), None) => {
                    let _ = out
                        .send(bad_frame(Some(id), "A data frame needs data (a string)."))
                        .await;
                }
                (None, _) => {
                    let _ = out
                        .send(error(
                            Some(id),
                            404,
                            Reason::MuxUnknownStream,
                            "No stream with this id is open on this connection.",
                            None,
                        ))
                        .await;
                }
            },
            ("close", Some(id)) => match streams.remove(id) {
                Some(stream) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(control.code.unwrap_or(1000)),
                        reason: "".into(),
                    };
                    let _ = stream.to_upstream.send(Message::Close(Some(frame))).await;
                }
                None => {
                    let _ = out
                        .send(error(
                            Some(id),
                            404,
                            Reason::MuxUnknownStream,
                            "No stream with this id is open on this connection.",
                            None,
                        ))
                        .await;
                }
            },
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

/// A binary frame: `[N][N bytes of id][payload]`.
async fn binary(data: Bytes, streams: &HashMap<String, Stream>, out: &mpsc::Sender<Out>) {
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
    let sent = match streams.get(id) {
        Some(stream) => stream
            .to_upstream
            .send(Message::Binary(data.slice(1 + n..)))
            .await
            .is_ok(),
        None => false,
    };
    if !sent {
        let _ = out
            .send(error(
                Some(id),
                404,
                Reason::MuxUnknownStream,
                "No stream with this id is open on this connection.",
                None,
            ))
            .await;
    }
}

/// The one writer to the client: JSON control frames, binary data frames, pings and the final
/// close.
async fn write_out(
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

/// What a stream needs to be opened through the pipeline.
struct Opener {
    app: Arc<App>,
    rt: Arc<Runtime>,
    client: Arc<Client>,
    conn: Conn,
    max_frame_bytes: usize,
}

/// Opens one stream: decided as a direct WebSocket request would be, then its upstream
/// handshake, then the relay, until either side closes.
async fn open_stream(
    opener: Opener,
    id: String,
    mut parts: Parts,
    mut from_client: mpsc::Receiver<Message>,
    out: mpsc::Sender<Out>,
    ended: mpsc::UnboundedSender<StreamEnded>,
) {
    let mut trace = Trace::start(
        request_id::mint(),
        http::Method::GET,
        RequestPath::of(&parts.uri),
    );
    trace.step(Stage::Limits, "a multiplexer stream");
    let upstream = connect(&opener, &mut parts, &mut trace).await;
    let request_id = trace.request_id.clone();
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
                Some(&request_id),
            );
            opener.app.metrics.mux_stream(false, Some(refusal.reason));
            trace.refusal = Some(refusal);
            opener.app.record(&trace, &opener.rt);
            let _ = out.send(frame).await;
            let _ = ended.send(StreamEnded(id));
            return;
        }
    };
    let (mut up_sink, mut up_source) = upstream.split();
    let (code, reason) = loop {
        tokio::select! {
            message = from_client.recv() => match message {
                Some(Message::Close(frame)) => {
                    let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
                    let _ = up_sink.send(Message::Close(frame)).await;
                    break (code, String::new());
                }
                Some(m) => {
                    if up_sink.send(m).await.is_err() {
                        break (1011, "upstream gone".to_owned());
                    }
                }
                // The client connection ended.
                None => {
                    let _ = up_sink.close().await;
                    break (1001, String::new());
                }
            },
            message = up_source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    // Waits when the client does not read: the upstream is paused meanwhile.
                    if out.send(Out::Json(json!({"type": "data", "id": id, "data": text.as_str()}))).await.is_err() {
                        break (1001, String::new());
                    }
                }
                Some(Ok(Message::Binary(payload))) => {
                    let mut frame = Vec::with_capacity(1 + id.len() + payload.len());
                    frame.push(id.len() as u8);
                    frame.extend_from_slice(id.as_bytes());
                    frame.extend_from_slice(&payload);
                    if out.send(Out::Binary(Bytes::from(frame))).await.is_err() {
                        break (1001, String::new());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1000, |f| u16::from(f.code));
                    let reason = frame.map_or_else(String::new, |f| f.reason.to_string());
                    break (code, reason);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break (1006, "upstream connection lost".to_owned()),
            },
        }
    };
    opener.app.metrics.mux_stream_closed();
    // Refuse anything more for this stream before the client can learn it is closed: data
    // sent after `closed` is then `mux.unknown_stream`, never silently dropped.
    drop(from_client);
    let _ = out
        .send(Out::Json(
            json!({"type": "closed", "id": id, "code": code, "reason": reason}),
        ))
        .await;
    let _ = ended.send(StreamEnded(id));
}

/// The stream's decision and its upstream handshake.
async fn connect(
    opener: &Opener,
    parts: &mut Parts,
    trace: &mut Trace,
) -> Result<WebSocketStream<Box<dyn Io>>, Refusal> {
    let decision = pipeline::decide(&opener.rt, parts, true, opener.conn, Mode::Proxy, trace)
        .await
        .map_err(|answer| {
            answer.refusal().cloned().unwrap_or_else(|| {
                Refusal::new(Reason::CredentialsMissing, "The stream needs a credential.")
            })
        })?;
    if decision.route.mux.is_some() {
        return Err(Refusal::new(
            Reason::MuxBadFrame,
            "A stream cannot open another multiplexer.",
        ));
    }
    let peer = crate::pipeline::headers::Peer {
        client: &opener.client,
        trusted: opener.conn.trusted,
    };
    let route = decision.route.clone();
    // A stream is a WebSocket to its upstream: the builtin echo answers it as one.
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let authority = match pipeline::prepare(decision, &opener.rt, parts, peer, trace) {
        Prepared::EchoWebSocket(greeting) => return Ok(echo_stream(greeting).await),
        Prepared::Forward { .. } => match &route.upstream.target {
            Target::Http { authority, .. } => authority.clone(),
            _ => return Err(not_websocket(&route.upstream.name)),
        },
        Prepared::Answered(_) | Prepared::Mux => return Err(not_websocket(&route.upstream.name)),
    };
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("ws://{authority}{path}");
    let mut request = Request::get(url.as_str())
        .body(())
        .map_err(|_| Refusal::new(Reason::UpstreamProtocol, "The upstream URL is not valid."))?;
    *request.headers_mut() = std::mem::take(&mut parts.headers);
    let headers = request.headers_mut();
    for hop in [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    ] {
        headers.remove(hop);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    if let Ok(key) = HeaderValue::from_str(&generate_key()) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    if !headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
            Refusal::new(
                Reason::UpstreamUnreachable,
                format!(
                    "Upstream {} ({addr}): the connection failed ({e}).",
                    route.upstream.name
                ),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        let config = WebSocketConfig::default()
            .max_message_size(Some(opener.max_frame_bytes))
            .max_frame_size(Some(opener.max_frame_bytes));
        let io: Box<dyn Io> = Box::new(tcp);
        tokio_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response) => Refusal::new(
                    Reason::UpstreamHandshakeRefused,
                    format!(
                        "Upstream {} answered the WebSocket handshake with {}.",
                        route.upstream.name,
                        response.status()
                    ),
                )
                .hint("Check the credentials the route injects or forwards to this upstream."),
                other => Refusal::new(
                    Reason::UpstreamProtocol,
                    format!(
                        "Upstream {}: the WebSocket handshake failed ({other}).",
                        route.upstream.name
                    ),
                ),
            })
    };
    let ws = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            Refusal::new(
                Reason::UpstreamTimeout,
                format!("Upstream {} did not complete the WebSocket handshake within {CONNECT_TIMEOUT:?}.", route.upstream.name),
            )
        })??;
    trace.step(Stage::Upstream, "stream opened at the upstream");
    Ok(ws)
}

/// The byte stream a stream's upstream WebSocket runs over: TCP, or a pipe to the builtin echo.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn not_websocket(upstream: &str) -> Refusal {
    Refusal::new(
        Reason::UpstreamProtocol,
        format!("Upstream {upstream} does not accept WebSocket streams."),
    )
}

/// The builtin echo's end of an in-process pipe, already past its handshake.
async fn echo_stream(greeting: String) -> WebSocketStream<Box<dyn Io>> {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let ws = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
        super::echo::run(ws, greeting).await;
    });
    let io: Box<dyn Io> = Box::new(ours);
    WebSocketStream::from_raw_socket(io, Role::Client, None).await
}
