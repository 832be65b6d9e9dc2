//! A client of keyway's WebSocket multiplexer (`keyway.mux.v1`, SPEC §8), for a person trying a
//! mux route and for `bench/mux.sh`.
//!
//! ```text
//! mux_client ws://127.0.0.1:8080/mux -H 'x-api-key: KEY' open /ws/echo --streams 2 --send hello
//! mux_client load ws://127.0.0.1:8080/mux -H 'x-api-key: KEY' --path /ws/echo --streams 1000 --duration 30s
//! mux_client load ws://127.0.0.1:8080/mux -H 'x-api-key: KEY' --path /ws/echo --streams 100 --direct
//! mux_client stall ws://127.0.0.1:8080/mux -H 'x-api-key: KEY' --path /ws/echo --streams 1000 --hold 10s
//! ```
//!
//! `frames` sends the control frames it reads from stdin, one JSON object a line, for trying
//! any sequence by hand (`sleep 200ms` lines pace it; `binary ID SIZE COUNT` sends a burst of
//! binary frames):
//!
//! ```text
//! printf '%s\n' '{"type":"open","id":"s1","path":"/ws/echo"}' 'sleep 200ms' \
//!     '{"type":"data","id":"s1","data":"hi"}' | mux_client ws://127.0.0.1:8080/mux -H 'x-api-key: KEY' frames
//! ```
//!
//! `open` prints every frame it receives as a JSON line (binary frames as
//! `{"type":"binary","id","bytes","data"}`), and exits 1 if keyway answered any `error`.
//! `load` runs a closed loop, one message in flight per stream (`--window` for more), and
//! prints one JSON line:
//! `{"mode":"mux|direct","streams","messages","errors","seconds","rate"}`; it exits 1 on any
//! error (an `error` frame, a stream closed under it, an echo that differs from what was sent, a
//! connection that failed). `stall` opens its streams, sends `flood` on each (an upstream run as
//! `ws_echo --flood` then floods them), and does not read the connection at all for `--hold`,
//! so that keyway's memory can be watched meanwhile.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Header = (HeaderName, HeaderValue);

const MUX_PROTOCOL: &str = "keyway.mux.v1";
/// How long opening the streams, the last echoes, and the closing may take before what is
/// missing counts as an error: generous, since 1,000 streams are 1,000 upstream handshakes.
const SETTLE: Duration = Duration::from_secs(30);
/// Errors printed to stderr in full; the rest are only counted.
const ERRORS_SHOWN: u64 = 10;

#[derive(Parser)]
#[command(about = "A client of keyway's WebSocket multiplexer (keyway.mux.v1)")]
struct Cli {
    /// keyway's multiplexer URL (ws://127.0.0.1:8080/mux); `load` and `stall` also take it after
    /// the command. For `load --direct`, only its scheme and authority are used.
    url: Option<String>,
    /// A header of the WebSocket handshake, `Name: value` (repeatable): the credential, e.g.
    /// `x-api-key: KEY` or `authorization: Bearer TOKEN`.
    #[arg(short = 'H', long = "header", global = true, value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<Header>,
    /// Runtime threads; 1 runs a single-threaded runtime, the cheapest load generator.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open streams to PATH, send messages on each, print what comes back, close.
    Open(OpenArgs),
    /// A closed-loop load: every stream sends a message, waits for its echo, repeats.
    Load(LoadArgs),
    /// Open streams, ask each upstream to flood, then hold the connection without reading it.
    Stall(StallArgs),
    /// Send the control frames read from stdin, one JSON object a line (`sleep 500ms` pauses,
    /// `binary ID SIZE COUNT` sends binary frames, `#` comments), and print every frame
    /// received.
    Frames(FramesArgs),
}

#[derive(Args)]
struct OpenArgs {
    /// The path each stream opens, routed like a direct WebSocket request (e.g. /ws/echo).
    path: String,
    /// How many streams (ids s1, s2, ...).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// A message to send on each stream once it is open (repeatable, sent in order).
    #[arg(long)]
    send: Vec<String>,
    /// Send the messages as binary frames rather than `data` control frames.
    #[arg(long)]
    binary: bool,
    /// A header of each stream's `open` frame, `Name: value` (repeatable).
    #[arg(long = "stream-header", value_name = "NAME: VALUE", value_parser = parse_header)]
    stream_headers: Vec<Header>,
    /// How long to wait with nothing received before closing the streams (and, once more,
    /// before giving up on their `closed` frames).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    wait: Duration,
}

#[derive(Args)]
struct LoadArgs {
    /// keyway's URL, when not given before the command.
    url: Option<String>,
    /// The path of every stream (or, with --direct, of every connection).
    #[arg(long)]
    path: String,
    /// Streams on the one multiplexer connection (with --direct: connections).
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// How long the loop runs once every stream is open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Separate plain WebSocket connections to PATH (keyway's direct route) instead of streams.
    #[arg(long)]
    direct: bool,
    /// Text messages (`data` control frames on the multiplexer) instead of binary ones.
    #[arg(long)]
    text: bool,
    /// Messages in flight per stream: 1 is a strict request-echo loop; more pipeline.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
}

#[derive(Args)]
struct StallArgs {
    /// keyway's URL, when not given before the command.
    url: Option<String>,
    /// The path of every stream; its upstream must flood on "flood" (ws_echo --flood).
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// How long to hold the connection without reading it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
}

#[derive(Args)]
struct FramesArgs {
    /// How long to keep printing, once stdin has ended, with nothing received.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    wait: Duration,
}

fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("{:?} is not a header value", value.trim()))?;
    Ok((name, value))
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (number, unit) = s.split_at(split.unwrap_or(s.len()));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: the unit is ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn main() {
    let cli = Cli::parse();
    let runtime = if cli.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.workers)
            .enable_all()
            .build()
    };
    let result = runtime
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("mux_client: {e}");
            std::process::exit(2);
        }
    }
}

/// `Ok(false)`: the run completed, with errors.
async fn run(cli: Cli) -> Result<bool, BoxError> {
    let (sub_url, command) = match cli.command {
        Command::Open(args) => (None, Command::Open(args)),
        Command::Frames(args) => (None, Command::Frames(args)),
        Command::Load(mut args) => (args.url.take(), Command::Load(args)),
        Command::Stall(mut args) => (args.url.take(), Command::Stall(args)),
    };
    let url = match (cli.url, sub_url) {
        (Some(_), Some(_)) => return Err("give the URL once, before or after the command".into()),
        (Some(url), None) | (None, Some(url)) => url,
        (None, None) => return Err("the URL of keyway's multiplexer route is missing".into()),
    };
    match command {
        Command::Open(args) => open(&url, &cli.headers, args).await,
        Command::Load(args) if args.direct => load_direct(&url, &cli.headers, args).await,
        Command::Load(args) => load_mux(&url, &cli.headers, args).await,
        Command::Stall(args) => stall(&url, &cli.headers, args).await,
        Command::Frames(args) => frames(&url, &cli.headers, args).await,
    }
}

/// A WebSocket handshake with `headers`, offering `keyway.mux.v1` when `mux`.
async fn connect(url: &str, headers: &[Header], mux: bool) -> Result<Ws, BoxError> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    if mux {
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(MUX_PROTOCOL),
        );
    }
    // Nagle off: every message is a small write waiting for an answer.
    match tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await {
        Ok((ws, _)) => Ok(ws),
        // A refusal: keyway's problem body says why.
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(format!("{url}: handshake answered {}: {body}", response.status()).into())
        }
        Err(e) => Err(format!("{url}: {e}").into()),
    }
}

/// tungstenite's default read buffer is 128 KiB, and it zero-fills the unused part of it
/// before every read call: for small messages that memset is most of the CPU a message costs
/// (and 128 KiB of memory per connection). The load generator shares a core with the
/// upstream, so it reads in 8 KiB steps; larger messages still arrive whole.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// The writer half, fed through a channel: whatever is queued when it wakes goes out in one
/// flush, so one write carries many frames, as a busy client's would.
fn spawn_writer(
    mut sink: SplitSink<Ws, Message>,
) -> (
    mpsc::UnboundedSender<Message>,
    tokio::task::JoinHandle<Result<(), WsError>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let task = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            sink.feed(message).await?;
            while let Ok(message) = rx.try_recv() {
                sink.feed(message).await?;
            }
            sink.flush().await?;
        }
        Ok(())
    });
    (tx, task)
}

/// A frame from keyway as a JSON line: control frames as they are, binary ones as
/// `{"type":"binary","id","bytes","data"}`; `None` for pings, pongs and the close.
fn frame_line(frame: &Message) -> Result<Option<String>, BoxError> {
    Ok(match frame {
        Message::Text(text) => Some(text.to_string()),
        Message::Binary(data) => {
            let (id, payload) = split_binary(data).ok_or("a binary frame without a stream id")?;
            let line = json!({"type": "binary", "id": id, "bytes": payload.len(),
                "data": String::from_utf8_lossy(payload)});
            Some(line.to_string())
        }
        _ => None,
    })
}

/// A control frame from keyway (every type's fields, each optional).
#[derive(Deserialize)]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    data: Option<String>,
}

/// A binary frame's stream id and payload.
fn split_binary(frame: &[u8]) -> Option<(&str, &[u8])> {
    let n = usize::from(*frame.first()?);
    let id = frame.get(1..1 + n)?;
    Some((std::str::from_utf8(id).ok()?, &frame[1 + n..]))
}

fn binary_frame(id: &str, payload: &[u8]) -> Result<Bytes, BoxError> {
    let n = u8::try_from(id.len()).map_err(|_| "a stream id is at most 255 bytes")?;
    let mut frame = Vec::with_capacity(1 + id.len() + payload.len());
    frame.push(n);
    frame.extend_from_slice(id.as_bytes());
    frame.extend_from_slice(payload);
    Ok(Bytes::from(frame))
}

fn data_frame(id: &str, data: &str) -> Message {
    Message::text(json!({"type": "data", "id": id, "data": data}).to_string())
}

/// Counts an error, and shows the first few.
fn error_seen(errors: &AtomicU64, what: std::fmt::Arguments<'_>) {
    if errors.fetch_add(1, Ordering::Relaxed) < ERRORS_SHOWN {
        eprintln!("mux_client: {what}");
    }
}

// ------------------------------------------------------------------------------------ open --

/// Where a stream of `open` is.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Opening,
    /// Open, this many echoes still due.
    Open(usize),
    Closing,
    Done,
}

async fn open(url: &str, headers: &[Header], args: OpenArgs) -> Result<bool, BoxError> {
    let ws = connect(url, headers, true).await?;
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink);
    let mut stream_headers = serde_json::Map::new();
    for (name, value) in &args.stream_headers {
        let value = value.to_str().map_err(|_| "a stream header is not text")?;
        stream_headers.insert(name.as_str().to_owned(), json!(value));
    }
    let ids: Vec<String> = (1..=args.streams).map(|i| format!("s{i}")).collect();
    let mut states = vec![State::Opening; ids.len()];
    for id in &ids {
        let open = json!({"type": "open", "id": id, "path": args.path, "headers": stream_headers});
        tx.send(Message::text(open.to_string()))?;
    }
    let close =
        |id: &str| Message::text(json!({"type": "close", "id": id, "code": 1000}).to_string());
    let mut ok = true;
    let mut stdout = std::io::stdout();
    let mut quiet_once = false;
    while states.iter().any(|s| *s != State::Done) {
        let frame = match tokio::time::timeout(args.wait, source.next()).await {
            Ok(Some(frame)) => frame?,
            Ok(None) => {
                eprintln!("mux_client: keyway ended the connection");
                return Ok(false);
            }
            // Nothing for --wait: close whatever is still open, and give up the next time.
            Err(_) if quiet_once => break,
            Err(_) => {
                quiet_once = true;
                for (id, state) in ids.iter().zip(states.iter_mut()) {
                    if matches!(state, State::Opening | State::Open(_)) {
                        tx.send(close(id))?;
                        *state = State::Closing;
                    }
                }
                continue;
            }
        };
        if let Some(line) = frame_line(&frame)? {
            writeln!(stdout, "{line}")?;
        }
        let (id, kind) = match &frame {
            Message::Text(text) => {
                let control: Control = serde_json::from_str(text.as_str())?;
                (control.id, control.kind)
            }
            Message::Binary(data) => {
                let id = split_binary(data).map(|(id, _)| id.to_owned());
                (id, "data".to_owned())
            }
            Message::Close(frame) => {
                eprintln!("mux_client: keyway closed the connection: {frame:?}");
                return Ok(false);
            }
            _ => continue,
        };
        if kind == "error" {
            ok = false;
        }
        let Some(i) = id.and_then(|id| ids.iter().position(|i| *i == id)) else {
            continue;
        };
        states[i] = match (kind.as_str(), states[i]) {
            ("opened", State::Opening) => {
                for message in &args.send {
                    tx.send(if args.binary {
                        Message::Binary(binary_frame(&ids[i], message.as_bytes())?)
                    } else {
                        data_frame(&ids[i], message)
                    })?;
                }
                State::Open(args.send.len())
            }
            ("data", State::Open(due)) => State::Open(due.saturating_sub(1)),
            ("closed" | "error", _) => State::Done,
            (_, state) => state,
        };
        // Every echo is back: this stream is done once keyway confirms its close.
        if states[i] == State::Open(0) {
            tx.send(close(&ids[i]))?;
            states[i] = State::Closing;
        }
    }
    tx.send(Message::Close(None))?;
    drop(tx);
    writer.await??;
    // Whatever comes before keyway's answer to our close is still printed.
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(args.wait, source.next()).await {
        if let Message::Text(text) = frame {
            writeln!(stdout, "{text}")?;
        }
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------------- frames --

async fn frames(url: &str, headers: &[Header], args: FramesArgs) -> Result<bool, BoxError> {
    let ws = connect(url, headers, true).await?;
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink);
    // tokio's stdin needs a feature the crate does not enable: a thread reads it instead.
    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The input has a task of its own, so that a `sleep` line does not stop the reading.
    let input_tx = tx.clone();
    let mut input = tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            let line = line.trim();
            if let Some(pause) = line.strip_prefix("sleep ") {
                tokio::time::sleep(parse_duration(pause.trim())?).await;
            } else if let Some(burst) = line.strip_prefix("binary ") {
                for frame in binary_burst(burst)? {
                    input_tx.send(frame)?;
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                input_tx.send(Message::text(line.to_owned()))?;
            }
        }
        Ok::<(), BoxError>(())
    });
    let mut input_done = false;
    let mut stdout = std::io::stdout();
    loop {
        let frame = if input_done {
            match tokio::time::timeout(args.wait, source.next()).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                ended = &mut input => {
                    ended??;
                    input_done = true;
                    continue;
                }
                frame = source.next() => frame,
            }
        };
        match frame {
            Some(Ok(Message::Close(close))) => {
                eprintln!("mux_client: keyway closed the connection: {close:?}");
                return Ok(false);
            }
            Some(Ok(frame)) => {
                if let Some(line) = frame_line(&frame)? {
                    writeln!(stdout, "{line}")?;
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                eprintln!("mux_client: keyway ended the connection");
                return Ok(false);
            }
        }
    }
    tx.send(Message::Close(None))?;
    drop(tx);
    // keyway may not be reading any more (that may be what is being tried): do not wait long.
    if tokio::time::timeout(args.wait, writer).await.is_err() {
        eprintln!(
            "mux_client: keyway did not take our close within {:?}",
            args.wait
        );
        return Ok(false);
    }
    Ok(true)
}

/// `ID SIZE [COUNT]`: COUNT (default 1) binary frames of SIZE bytes for stream ID, all at once.
fn binary_burst(spec: &str) -> Result<Vec<Message>, BoxError> {
    let mut words = spec.split_whitespace();
    let (Some(id), Some(size)) = (words.next(), words.next()) else {
        return Err(format!("{spec:?}: a binary line is `binary ID SIZE [COUNT]`").into());
    };
    let count: usize = words.next().map_or(Ok(1), str::parse)?;
    let frame = binary_frame(id, &vec![b'x'; size.parse()?])?;
    Ok(vec![Message::Binary(frame); count])
}

// ------------------------------------------------------------------------------------ load --

/// A message's payload: which stream and which message, then padding to `size` bytes; ASCII,
/// so that it is valid text too.
fn payload(stream: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{stream:x}:{seq:x}:").into_bytes();
    p.resize(size.max(p.len()), b'.');
    p.truncate(size);
    p
}

struct Report {
    mode: &'static str,
    streams: usize,
    messages: u64,
    errors: u64,
    seconds: f64,
}

impl Report {
    fn print(&self) -> bool {
        let rate = if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        };
        println!(
            "{}",
            json!({
                "mode": self.mode,
                "streams": self.streams,
                "messages": self.messages,
                "errors": self.errors,
                "seconds": (self.seconds * 1000.0).round() / 1000.0,
                "rate": rate.round(),
            })
        );
        self.errors == 0
    }
}

/// One stream of the multiplexer load.
struct LoadStream {
    id: String,
    /// What was sent and not yet echoed, oldest first: the binary frame (its echo is the very
    /// same frame), or the text payload.
    in_flight: VecDeque<Bytes>,
    seq: u64,
    /// Failed or closed: sends nothing more.
    dead: bool,
}

impl LoadStream {
    /// Sends the next message.
    fn send(
        &mut self,
        index: usize,
        size: usize,
        text: bool,
        tx: &mpsc::UnboundedSender<Message>,
    ) -> Result<(), BoxError> {
        self.seq += 1;
        let p = payload(index, self.seq, size);
        let message = if text {
            let data = String::from_utf8(p)?;
            let m = data_frame(&self.id, &data);
            self.in_flight.push_back(Bytes::from(data));
            m
        } else {
            let frame = binary_frame(&self.id, &p)?;
            self.in_flight.push_back(frame.clone());
            Message::Binary(frame)
        };
        tx.send(message)?;
        Ok(())
    }
}

/// Opens `streams` streams (ids s0, s1, ...) on a multiplexer connection and waits for each
/// to be opened or refused; refused ones are dead, and counted in `errors`.
async fn open_streams(
    source: &mut SplitStream<Ws>,
    tx: &mpsc::UnboundedSender<Message>,
    path: &str,
    streams: usize,
    errors: &AtomicU64,
) -> Result<Vec<LoadStream>, BoxError> {
    let mut all: Vec<LoadStream> = (0..streams)
        .map(|i| LoadStream {
            id: format!("s{i}"),
            in_flight: VecDeque::new(),
            seq: 0,
            dead: false,
        })
        .collect();
    for s in &all {
        tx.send(Message::text(
            json!({"type": "open", "id": s.id, "path": path}).to_string(),
        ))?;
    }
    let mut waiting = streams;
    let mut opened = vec![false; streams];
    let deadline = Instant::now() + SETTLE;
    while waiting > 0 {
        let frame = match tokio::time::timeout_at(deadline, source.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(_) => return Err("keyway ended the connection while streams were opening".into()),
            Err(_) => {
                for (s, _) in all.iter_mut().zip(&opened).filter(|(_, o)| !**o) {
                    if !s.dead {
                        s.dead = true;
                        error_seen(
                            errors,
                            format_args!("stream {} not opened within {SETTLE:?}", s.id),
                        );
                    }
                }
                break;
            }
        };
        let Message::Text(text) = frame else { continue };
        let control: Control = serde_json::from_str(text.as_str())?;
        let Some(i) = control.id.as_deref().and_then(stream_index) else {
            if control.kind == "error" {
                error_seen(errors, format_args!("{text}"));
            }
            continue;
        };
        let Some(s) = all.get_mut(i) else { continue };
        match control.kind.as_str() {
            "opened" if !opened[i] && !s.dead => {
                opened[i] = true;
                waiting -= 1;
            }
            "error" | "closed" => {
                error_seen(errors, format_args!("{text}"));
                if !opened[i] && !s.dead {
                    waiting -= 1;
                }
                s.dead = true;
            }
            _ => {}
        }
    }
    Ok(all)
}

fn stream_index(id: &str) -> Option<usize> {
    id.strip_prefix('s')?.parse().ok()
}

async fn load_mux(url: &str, headers: &[Header], args: LoadArgs) -> Result<bool, BoxError> {
    let ws = connect(url, headers, true).await?;
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink);
    let errors = AtomicU64::new(0);
    let mut streams = open_streams(&mut source, &tx, &args.path, args.streams, &errors).await?;

    let deadline = Instant::now() + args.duration;
    let mut in_flight = 0usize;
    for (i, s) in streams.iter_mut().enumerate().filter(|(_, s)| !s.dead) {
        for _ in 0..args.window as usize {
            s.send(i, args.size, args.text, &tx)?;
            in_flight += 1;
        }
    }
    let mut messages = 0u64;
    // Once the duration is over nothing more is sent; the echoes in flight have SETTLE to come.
    let give_up = tokio::time::sleep_until(deadline + SETTLE);
    tokio::pin!(give_up);
    let mut lost = false;
    while in_flight > 0 {
        let frame = tokio::select! {
            frame = source.next() => frame,
            () = &mut give_up => break,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                error_seen(&errors, format_args!("the connection failed: {e}"));
                lost = true;
                break;
            }
            None => {
                error_seen(&errors, format_args!("keyway ended the connection"));
                lost = true;
                break;
            }
        };
        // The stream the frame is for, and why it is not the echo that stream waits for.
        let (i, failure) = match &frame {
            Message::Binary(data) => {
                let Some(i) = split_binary(data).and_then(|(id, _)| stream_index(id)) else {
                    error_seen(
                        &errors,
                        format_args!("a binary frame for no stream of ours"),
                    );
                    continue;
                };
                let expected = streams.get(i).and_then(|s| s.in_flight.front());
                let echoed = !args.text && expected == Some(data);
                let failure = format!("stream s{i}: not the echo of what was sent");
                (i, (!echoed).then_some(failure))
            }
            Message::Text(text) => {
                let control: Control = serde_json::from_str(text.as_str())?;
                let Some(i) = control.id.as_deref().and_then(stream_index) else {
                    error_seen(&errors, format_args!("{text}"));
                    continue;
                };
                let expected = streams.get(i).and_then(|s| s.in_flight.front());
                let echoed = control.kind == "data"
                    && args.text
                    && expected.map(|e| &e[..]) == control.data.as_deref().map(str::as_bytes);
                let failure = match control.kind.as_str() {
                    _ if echoed => None,
                    "data" => Some(format!("stream s{i}: not the echo of what was sent")),
                    // An `error` or a `closed` while the stream is in use.
                    _ => Some(text.to_string()),
                };
                (i, failure)
            }
            Message::Close(frame) => {
                error_seen(
                    &errors,
                    format_args!("keyway closed the connection: {frame:?}"),
                );
                lost = true;
                break;
            }
            _ => continue,
        };
        let Some(s) = streams
            .get_mut(i)
            .filter(|s| !s.dead && !s.in_flight.is_empty())
        else {
            error_seen(
                &errors,
                format_args!("a frame for stream s{i}, which waits for none"),
            );
            continue;
        };
        if let Some(why) = failure {
            // The stream is not used again, and what it had in flight is written off.
            error_seen(&errors, format_args!("{why}"));
            in_flight -= s.in_flight.len();
            s.in_flight.clear();
            s.dead = true;
            continue;
        }
        s.in_flight.pop_front();
        in_flight -= 1;
        if Instant::now() < deadline {
            messages += 1;
            s.send(i, args.size, args.text, &tx)?;
            in_flight += 1;
        }
    }
    if in_flight > 0 && !lost {
        error_seen(
            &errors,
            format_args!("{in_flight} echoes missing {SETTLE:?} after the end"),
        );
        errors.fetch_add(in_flight as u64 - 1, Ordering::Relaxed);
    }
    if !lost {
        close_streams(&mut source, &tx, &mut streams, &errors).await?;
    }
    let _ = tx.send(Message::Close(None));
    drop(tx);
    let _ = writer.await;
    let report = Report {
        mode: "mux",
        streams: args.streams,
        messages,
        errors: errors.load(Ordering::Relaxed),
        seconds: args.duration.as_secs_f64(),
    };
    Ok(report.print())
}

/// Closes every live stream and waits for its `closed`; one that does not come is an error.
async fn close_streams(
    source: &mut SplitStream<Ws>,
    tx: &mpsc::UnboundedSender<Message>,
    streams: &mut [LoadStream],
    errors: &AtomicU64,
) -> Result<(), BoxError> {
    let mut open = 0usize;
    for s in streams.iter().filter(|s| !s.dead) {
        tx.send(Message::text(
            json!({"type": "close", "id": s.id, "code": 1000}).to_string(),
        ))?;
        open += 1;
    }
    let deadline = Instant::now() + SETTLE;
    while open > 0 {
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, source.next()).await else {
            break;
        };
        let Message::Text(text) = frame else { continue };
        let control: Control = serde_json::from_str(text.as_str())?;
        let stream = control.id.as_deref().and_then(stream_index);
        let Some(s) = stream.and_then(|i| streams.get_mut(i)).filter(|s| !s.dead) else {
            continue;
        };
        // Anything but `closed` is unexpected: every echo was already waited for.
        if control.kind != "closed" {
            error_seen(errors, format_args!("while closing: {text}"));
        }
        if control.kind == "closed" || control.kind == "error" {
            s.dead = true;
            open -= 1;
        }
    }
    if open > 0 {
        error_seen(
            errors,
            format_args!("{open} streams not closed within {SETTLE:?}"),
        );
        errors.fetch_add(open as u64 - 1, Ordering::Relaxed);
    }
    Ok(())
}

/// The direct route's URL: the multiplexer URL's scheme and authority, and `path`.
fn direct_url(url: &str, path: &str) -> Result<String, BoxError> {
    let uri: Uri = url.parse()?;
    let scheme = uri.scheme_str().ok_or("the URL has no scheme")?;
    let authority = uri.authority().ok_or("the URL has no authority")?;
    Ok(format!("{scheme}://{authority}{path}"))
}

async fn load_direct(url: &str, headers: &[Header], args: LoadArgs) -> Result<bool, BoxError> {
    let target = direct_url(url, &args.path)?;
    let errors = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let mut connecting = JoinSet::new();
    for _ in 0..args.streams {
        let (target, headers) = (target.clone(), headers.to_vec());
        connecting.spawn(async move { connect(&target, &headers, false).await });
    }
    let mut connections = Vec::with_capacity(args.streams);
    while let Some(joined) = connecting.join_next().await {
        match joined? {
            Ok(ws) => connections.push(ws),
            Err(e) => error_seen(&errors, format_args!("{e}")),
        }
    }

    let deadline = Instant::now() + args.duration;
    let mut running = JoinSet::new();
    for (i, ws) in connections.into_iter().enumerate() {
        let (messages, errors) = (messages.clone(), errors.clone());
        let (size, text, window) = (args.size, args.text, args.window as usize);
        running.spawn(async move {
            let result = direct_loop(ws, i, deadline, size, text, window, &messages).await;
            if let Err(e) = result {
                error_seen(&errors, format_args!("connection {i}: {e}"));
            }
        });
    }
    let all_done = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline + SETTLE, all_done)
        .await
        .is_err()
    {
        let stuck = running.len() as u64;
        error_seen(
            &errors,
            format_args!("{stuck} connections still waiting for echoes {SETTLE:?} after the end"),
        );
        errors.fetch_add(stuck - 1, Ordering::Relaxed);
        running.abort_all();
    }
    let report = Report {
        mode: "direct",
        streams: args.streams,
        messages: messages.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: args.duration.as_secs_f64(),
    };
    Ok(report.print())
}

/// One direct connection's closed loop, `window` messages in flight, then its close
/// handshake. Written by its own task, so that it is read while a write waits: a client that
/// stops reading when its socket is full would deadlock with any echo server.
async fn direct_loop(
    ws: Ws,
    index: usize,
    deadline: Instant,
    size: usize,
    text: bool,
    window: usize,
    messages: &AtomicU64,
) -> Result<(), BoxError> {
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink);
    let mut seq = 0u64;
    let mut in_flight = VecDeque::with_capacity(window);
    let mut send = |in_flight: &mut VecDeque<Message>| -> Result<(), BoxError> {
        seq += 1;
        let p = payload(index, seq, size);
        let message = if text {
            Message::text(String::from_utf8(p)?)
        } else {
            Message::Binary(Bytes::from(p))
        };
        in_flight.push_back(message.clone());
        tx.send(message)?;
        Ok(())
    };
    for _ in 0..window {
        send(&mut in_flight)?;
    }
    while let Some(expected) = in_flight.pop_front() {
        let echo = loop {
            match source.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => break m,
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed by keyway: {frame:?}").into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("the connection ended".into()),
            }
        };
        if echo != expected {
            return Err("not the echo of what was sent".into());
        }
        if Instant::now() < deadline {
            messages.fetch_add(1, Ordering::Relaxed);
            send(&mut in_flight)?;
        }
    }
    tx.send(Message::Close(None))?;
    drop(tx);
    writer.await??;
    // Up to the answer to our close (or the end of the connection).
    while let Some(Ok(_)) = source.next().await {}
    Ok(())
}

// ----------------------------------------------------------------------------------- stall --

async fn stall(url: &str, headers: &[Header], args: StallArgs) -> Result<bool, BoxError> {
    let ws = connect(url, headers, true).await?;
    let (sink, mut source) = ws.split();
    let (tx, _writer) = spawn_writer(sink);
    let errors = AtomicU64::new(0);
    let streams = open_streams(&mut source, &tx, &args.path, args.streams, &errors).await?;
    let mut opened = 0usize;
    for s in streams.iter().filter(|s| !s.dead) {
        tx.send(data_frame(&s.id, "flood"))?;
        opened += 1;
    }
    eprintln!(
        "mux_client: {opened} streams flooding; not reading for {:?}",
        args.hold
    );
    // `source` is not polled from here on: keyway's writes pile up in this socket's receive
    // buffer, then in keyway's send buffer, and then keyway must stop reading its upstreams.
    tokio::time::sleep(args.hold).await;
    println!(
        "{}",
        json!({
            "mode": "stall",
            "streams": args.streams,
            "opened": opened,
            "errors": errors.load(Ordering::Relaxed),
            "seconds": args.hold.as_secs_f64(),
        })
    );
    // Leaving without a close: the kernel resets the connection, unread data and all, and
    // keyway must end every stream on its own.
    drop(source);
    Ok(errors.load(Ordering::Relaxed) == 0)
}
