//! The upstream proxy: reused connections (see `pool`), bodies streamed both ways, upgrades
//! spliced.

pub mod connect;
pub mod deadline;
pub mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use self::deadline::{RequestTimer, Within};
use self::pool::{ConnectError, Lease, Pool, Sender};
use super::body::{Body, Progress, RequestBody, UpstreamBody};
use super::hop_by_hop;
use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::pipeline::runtime::Upstream;
use crate::reason::Reason;

/// A WebSocket handshake (RFC 6455 §4.1): an HTTP/1.1 GET with `Connection: upgrade` and
/// `Upgrade: websocket`, the only upgrade keyway forwards. Any other (`h2c`, or a list) is not
/// an upgrade: the headers stage removes `Upgrade` and `HTTP2-Settings` as hop-by-hop, so the
/// connection can never become a tunnel whose later requests skip the pipeline.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.method() == http::Method::GET
        && names_websocket(req.headers())
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Exactly one `Upgrade` value, naming exactly `websocket`.
fn names_websocket(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
    )
}

/// The upstream's answer, and the two sides of a WebSocket upgrade it accepted.
pub type Forwarded = (Response<Body>, Option<Tunnel>);

/// The two halves of an upgrade the upstream accepted: the WebSocket relay takes them on.
pub struct Tunnel {
    pub client: hyper::upgrade::OnUpgrade,
    pub upstream: hyper::upgrade::OnUpgrade,
}

/// Sends the request to the upstream and streams its answer back. The request goes into the
/// exchange before anything is awaited, so the returned future holds it once.
pub fn forward<'a>(
    upstream: &'a Upstream,
    pool: &'a Arc<Pool>,
    mut req: Request<Incoming>,
    upgrade: bool,
    timer: Option<&'a RequestTimer>,
    trace: &'a mut Trace,
) -> impl Future<Output = Result<Forwarded, Refusal>> + Send + 'a {
    trace.upstream_sending();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, request_body) = RequestBody::new(body);
    let req = Request::from_parts(parts, body);
    Forward {
        exchange: deadline::within(timer, upstream.timeouts.request, exchange(pool, req)),
        upstream,
        pool,
        client_upgrade,
        request_body,
        trace,
    }
}

pin_project! {
    /// `forward`'s future. A struct: an async block would move the exchange out of its captures
    /// to await it, and hold it twice.
    struct Forward<'a, E> {
        #[pin]
        exchange: Within<'a, E>,
        upstream: &'a Upstream,
        pool: &'a Arc<Pool>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        request_body: Option<Arc<Progress>>,
        trace: &'a mut Trace,
    }
}

impl<E> Future for Forward<'_, E>
where
    E: Future<Output = Result<Exchanged, ExchangeError>>,
{
    type Output = Result<Forwarded, Refusal>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let sent = std::task::ready!(this.exchange.poll(cx));
        Poll::Ready(answer(
            this.upstream,
            this.pool,
            this.client_upgrade.take(),
            this.request_body.take(),
            sent,
            this.trace,
        ))
    }
}

/// The upstream's response to the client, or the refusal for a failed exchange.
fn answer(
    upstream: &Upstream,
    pool: &Arc<Pool>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    request_body: Option<Arc<Progress>>,
    sent: Option<Result<Exchanged, ExchangeError>>,
    trace: &mut Trace,
) -> Result<Forwarded, Refusal> {
    let (mut response, sender, connection) = match sent {
        Some(Ok(done)) => done,
        Some(Err(err)) if request_body.as_deref().is_some_and(Progress::failed) => {
            return Err(bad_request_body(&err, trace));
        }
        Some(Err(err)) => return Err(failure(upstream, &err, trace)),
        None => {
            trace.step(Stage::Upstream, "timed out waiting for the response");
            return Err(Refusal::new(
                Reason::UpstreamTimeout,
                format!(
                    "Upstream {} ({}) did not answer within {}.",
                    upstream.name,
                    upstream.origin(),
                    human(upstream.timeouts.request)
                ),
            )
            .hint("Check the upstream's health, or raise timeouts.request."));
        }
    };
    // The status is in the trace once the response is recorded.
    trace.step(Stage::Upstream, connection.note());
    trace.upstream_answered(&upstream.name);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Only the WebSocket handshake keyway forwarded may become a tunnel.
        let Some(client_side) = client_upgrade.filter(|_| names_websocket(response.headers()))
        else {
            return Err(unasked_upgrade(upstream, &response, trace));
        };
        // The connection becomes the tunnel; it is never reused.
        drop(sender);
        let upstream_side = hyper::upgrade::on(&mut response);
        let tunnel = Tunnel {
            client: client_side,
            upstream: upstream_side,
        };
        return Ok((response.map(|_| Body::empty()), Some(tunnel)));
    }
    if hop_by_hop::any(response.headers()) {
        hop_by_hop::strip(response.headers_mut(), false, |_| {});
    }
    let lease = Lease::new(sender, pool.clone(), request_body);
    let body = |incoming| Body::Upstream(UpstreamBody::new(incoming, Some(lease)));
    Ok((response.map(body), None))
}

/// A 101 that does not answer the request's WebSocket handshake: never a tunnel.
fn unasked_upgrade(
    upstream: &Upstream,
    response: &Response<Incoming>,
    trace: &mut Trace,
) -> Refusal {
    let offered = response.headers().get(header::UPGRADE).map_or_else(
        || "nothing".to_owned(),
        |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
    );
    trace.step(Stage::Upstream, "refused a 101 that keyway did not ask for");
    Refusal::new(
        Reason::UpstreamProtocol,
        format!(
            "Upstream {} ({}) switched protocols (101, Upgrade: {offered}) without being asked to; keyway forwards only WebSocket handshakes and never turns a connection into a tunnel otherwise.",
            upstream.name,
            upstream.origin()
        ),
    )
    .hint("Check what the upstream answers; only a WebSocket handshake may be answered with 101.")
}

/// Which connection carried the exchange.
#[derive(Clone, Copy, Debug)]
enum Connection {
    Reused,
    New,
    /// The idle connection tried first had been closed by the upstream before keyway wrote.
    Replaced,
}

impl Connection {
    fn note(self) -> &'static str {
        match self {
            Connection::Reused => "upstream answered on a reused connection",
            Connection::New => "upstream answered on a new connection",
            Connection::Replaced => {
                "upstream answered on a new connection (the idle one had been closed by the upstream)"
            }
        }
    }
}

#[derive(Debug)]
enum ExchangeError {
    Connect(ConnectError),
    Exchange(hyper::Error),
}

/// The response head, the connection that carried it, and how it was found.
type Exchanged = (Response<Incoming>, Sender, Connection);

/// One request and its response head, on a reused connection when there is one. A request the
/// reused connection never wrote (the upstream closed it while idle) goes out on a new one.
///
/// When an idle connection is ready, the request is handed to it before anything is awaited, so
/// the future holds the request only in hyper's send; the other cases are rare and boxed.
fn exchange(
    pool: &Pool,
    req: Request<RequestBody>,
) -> Exchange<'_, impl Future<Output = Result<Response<Incoming>, TrySendError>> + Send + use<>> {
    match pool.take_idle() {
        Some(mut sender) if sender.is_ready() => {
            let sent = sender.try_send_request(req);
            Exchange::Sent {
                sent,
                sender: Some(sender),
                pool,
            }
        }
        waiting => Exchange::Boxed {
            exchange: Box::pin(exchange_slow(pool, waiting, req)),
        },
    }
}

type BoxedExchange<'a> =
    Pin<Box<dyn Future<Output = Result<Exchanged, ExchangeError>> + Send + 'a>>;
type TrySendError = hyper::client::conn::TrySendError<Request<RequestBody>>;

pin_project! {
    /// `exchange`'s future: a struct, so that hyper's send is held once, in place.
    #[project = ExchangeProj]
    enum Exchange<'a, F> {
        /// Handed to a ready idle connection.
        Sent {
            #[pin]
            sent: F,
            sender: Option<Sender>,
            pool: &'a Pool,
        },
        /// Waiting for an idle connection to become ready, or on a new one.
        Boxed { exchange: BoxedExchange<'a> },
    }
}

impl<F> Future for Exchange<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    type Output = Result<Exchanged, ExchangeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (unsent, pool) = match self.as_mut().project() {
            ExchangeProj::Boxed { exchange } => return exchange.as_mut().poll(cx),
            ExchangeProj::Sent { sent, sender, pool } => match std::task::ready!(sent.poll(cx)) {
                // `sender` is gone only if polled again after completion, which the Future
                // contract leaves unspecified.
                Ok(response) => {
                    return match sender.take() {
                        Some(sender) => Poll::Ready(Ok((response, sender, Connection::Reused))),
                        None => Poll::Pending,
                    };
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => (unsent, *pool),
                    None => return Poll::Ready(Err(ExchangeError::Exchange(e.into_error()))),
                },
            },
        };
        let exchange = Box::pin(exchange_on_new(pool, unsent, Connection::Replaced));
        self.set(Exchange::Boxed { exchange });
        self.poll(cx)
    }
}

/// No idle connection was ready at once: `waiting`, one that may still become ready, another
/// idle one, or a new one.
async fn exchange_slow(
    pool: &Pool,
    waiting: Option<Sender>,
    mut req: Request<RequestBody>,
) -> Result<Exchanged, ExchangeError> {
    let mut connection = Connection::New;
    if let Some(mut sender) = pool.reuse(waiting).await {
        match sender.try_send_request(req).await {
            Ok(response) => return Ok((response, sender, Connection::Reused)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    req = unsent;
                    connection = Connection::Replaced;
                }
                None => return Err(ExchangeError::Exchange(e.into_error())),
            },
        }
    }
    exchange_on_new(pool, req, connection).await
}

async fn exchange_on_new(
    pool: &Pool,
    req: Request<RequestBody>,
    connection: Connection,
) -> Result<Exchanged, ExchangeError> {
    let mut sender = pool.connect().await.map_err(ExchangeError::Connect)?;
    let response = sender
        .send_request(req)
        .await
        .map_err(ExchangeError::Exchange)?;
    Ok((response, sender, connection))
}

/// The client's request body could not be read (the exchange failed because of it): the
/// client's fault, not the upstream's.
fn bad_request_body(err: &ExchangeError, trace: &mut Trace) -> Refusal {
    let what = match err {
        ExchangeError::Exchange(e) => {
            std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string())
        }
        ExchangeError::Connect(e) => e.to_string(),
    };
    trace.step(
        Stage::Upstream,
        "the request body from the client was malformed",
    );
    Refusal::new(
        Reason::RequestBodyInvalid,
        format!("The request body could not be read ({what}); nothing more was sent upstream."),
    )
    .hint("Send a well-formed body: valid chunked encoding, or exactly Content-Length bytes.")
}

fn failure(upstream: &Upstream, err: &ExchangeError, trace: &mut Trace) -> Refusal {
    let (reason, what, hint) = match err {
        ExchangeError::Connect(ConnectError::Timeout) => (
            Reason::UpstreamTimeout,
            format!(
                "connecting took longer than {}",
                human(upstream.timeouts.connect)
            ),
            "Check that the upstream is reachable, or raise timeouts.connect.",
        ),
        ExchangeError::Connect(e @ ConnectError::Tls(_)) => (
            Reason::UpstreamUnreachable,
            format!("the connection failed ({e})"),
            "The upstream's certificate must chain to its tls.ca (default: the system's CA store) and name its tls.server_name (default: the url's host).",
        ),
        ExchangeError::Connect(e) => (
            Reason::UpstreamUnreachable,
            format!("the connection failed ({e})"),
            "Check that the upstream is running and that its url is right.",
        ),
        ExchangeError::Exchange(e) => (
            Reason::UpstreamProtocol,
            format!("the exchange failed ({e})"),
            "The upstream closed the connection or sent an invalid HTTP response.",
        ),
    };
    trace.step(
        Stage::Upstream,
        format!("upstream {} failed: {what}", upstream.name),
    );
    Refusal::new(
        reason,
        format!(
            "Upstream {} ({}): {what}.",
            upstream.name,
            upstream.origin()
        ),
    )
    .hint(hint)
}

pub fn human(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}
