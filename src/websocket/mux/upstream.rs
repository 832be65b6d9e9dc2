//! A stream's upstream: its decision through the pipeline, then a WebSocket handshake to the
//! route's upstream (or an in-process pipe to the builtin echo).

use http::request::Parts;
use http::{HeaderValue, Request, header};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::CONNECT_TIMEOUT;
use super::stream::Opener;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::runtime::Target;
use crate::pipeline::trace::{Stage, Trace};
use crate::pipeline::unauthenticated::Mode;
use crate::pipeline::{self, Prepared};
use crate::reason::Reason;

/// The stream's decision and its upstream handshake.
pub async fn connect(
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
    let (authority, pool) = match pipeline::prepare(decision, &opener.rt, parts, peer, trace) {
        Prepared::EchoWebSocket(greeting) => return Ok(echo_stream(greeting).await),
        Prepared::Forward { .. } => match &route.upstream.target {
            Target::Http {
                authority, pool, ..
            } => (authority.clone(), pool.clone()),
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
    let handshake = async {
        // TCP, and TLS for an https:// upstream: the stream then speaks plain WebSocket frames.
        let stream = pool.connector().open().await.map_err(|e| {
            Refusal::new(
                Reason::UpstreamUnreachable,
                format!(
                    "Upstream {} ({}): the connection failed ({e}).",
                    route.upstream.name,
                    route.upstream.origin()
                ),
            )
        })?;
        let config = crate::websocket::pump::config()
            .max_message_size(Some(opener.max_frame_bytes))
            .max_frame_size(Some(opener.max_frame_bytes));
        let io: Box<dyn Io> = Box::new(stream);
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
        let ws = WebSocketStream::from_raw_socket(
            theirs,
            Role::Server,
            Some(crate::websocket::pump::config()),
        )
        .await;
        crate::websocket::echo::run(ws, greeting).await;
    });
    let io: Box<dyn Io> = Box::new(ours);
    WebSocketStream::from_raw_socket(io, Role::Client, Some(crate::websocket::pump::config())).await
}
