//! One client connection: TLS handshake, protocol choice (ALPN, or the HTTP/2 preface for h2c
//! prior knowledge), and hyper's HTTP/1.1 or HTTP/2 server with keyway's pipeline as the service.
//!
//! HTTP/1 and HTTP/2 connections are served by separate futures so that the task of an idle
//! keep-alive connection is only as large as its own protocol's state.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

use super::drain::Drain;
use super::framing::FramingFlag;
use super::guarded_io::GuardedIo;
use crate::app::App;
use crate::pipeline::headers::Client;
use crate::pipeline::headers::ConflictingFraming;
use crate::pipeline::runtime::Runtime;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's per-protocol settings, built once per listener set.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Builders {
    pub fn new(rt: &Runtime) -> Self {
        // hyper's own limits sit above keyway's so that keyway's check answers with
        // problem+json and a precise detail; hyper refuses only what is beyond them (and
        // GuardedIo turns that refusal into problem+json too).
        let head_limit = (rt.headers.max_header_bytes + 16 * 1024).max(8192);
        let mut h1 = http1::Builder::new();
        // The header read timeout is GuardedIo's (one timer per connection, not per request).
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            // While a request is in flight hyper would read ahead to notice a client hang-up;
            // half-close support skips that read, and keyway relies on it twice. The read would
            // allocate a second read buffer the connection keeps for life (the request's head
            // still borrows the first: 1 MB more RSS at 1,000 idle keep-alive connections). And
            // GuardedIo's header read timer takes a read that awaits a head for one between
            // requests, never during an answer. The cost: a client that hangs up mid-request is
            // noticed when its answer is written.
            .half_close(true)
            .max_buf_size(head_limit)
            .max_headers(hyper_max_headers(rt.headers.max_headers));
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(head_limit as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        Builders {
            h1,
            h2,
            header_read_timeout: rt.limits.header_read_timeout,
        }
    }
}

/// hyper parses a head into arrays on the stack up to 100 headers and into two heap arrays of
/// that many entries per request above it; the margin over keyway's own limit stays under 100
/// whenever keyway's limit allows.
fn hyper_max_headers(keyway_max: usize) -> usize {
    const HYPER_INLINE: usize = 100;
    if keyway_max <= HYPER_INLINE {
        (keyway_max + 32).min(HYPER_INLINE)
    } else {
        keyway_max + 32
    }
}

pub async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    builders: Arc<Builders>,
    drain: Drain,
) {
    let sniff = tokio::time::timeout(builders.header_read_timeout, sniff_h2_preface(&stream));
    // A connection that has sent nothing yet does not hold up shutdown.
    let Some(sniffed) = drain.unless_stopping(sniff).await else {
        return;
    };
    let h2 = match sniffed {
        Ok(Some(h2)) => h2,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(peer = %peer, "no request within the header read timeout");
            return;
        }
    };
    serve(stream, peer, false, h2, app, builders, drain).await;
}

pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    builders: Arc<Builders>,
    drain: Drain,
) {
    let handshake = tokio::time::timeout(builders.header_read_timeout, acceptor.accept(stream));
    let Some(handshake) = drain.unless_stopping(handshake).await else {
        return;
    };
    match handshake {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve(tls, peer, true, h2, app, builders, drain).await;
        }
        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
    }
}

/// Whether the client opens with the HTTP/2 preface (h2c prior knowledge). Peeks, so nothing is
/// consumed; `None` when the client closes first.
async fn sniff_h2_preface(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A partial preface: peeking again would return at once, so wait a moment for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve<I>(
    io: I,
    peer: SocketAddr,
    is_tls: bool,
    h2: bool,
    app: Arc<App>,
    builders: Arc<Builders>,
    drain: Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = app.metrics.connection_opened();
    let io_app = app.clone();
    let framing = FramingFlag::default();
    let flag = framing.clone();
    let first_request = Arc::new(Notify::new());
    let arrived = first_request.clone();
    let client = Client::new(peer.ip(), is_tls);
    let client = Arc::new(if h2 {
        client
    } else {
        client.with_request_timer()
    });
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        arrived.notify_one();
        // The scanner's head is dispatched: what is written now is keyway's answer, never
        // rewritten by GuardedIo (see `FramingScanner::awaiting_dispatch`).
        flag.dispatched();
        let app = app.clone();
        let client = client.clone();
        if flag.is_set() {
            req.extensions_mut().insert(ConflictingFraming);
        }
        // Not boxed: hyper's HTTP/1 dispatcher keeps the in-flight future in one box per
        // connection, reused by every request; a box here would be allocated per request.
        super::handle::handle(app, req, client)
    });
    let timeout = builders.header_read_timeout;
    let io = TokioIo::new(GuardedIo::new(
        io,
        framing,
        io_app,
        (!h2).then_some(timeout),
    ));
    let stopping = drain.receiver();
    let result = if h2 {
        // Boxed so that HTTP/2's larger state does not size every HTTP/1 connection's task.
        let conn = builders.h2.serve_connection(io, service);
        let conn = drain.run(conn, |c| c.graceful_shutdown());
        Box::pin(first_request_within(
            conn,
            &first_request,
            timeout,
            stopping,
        ))
        .await
    } else {
        let conn = builders.h1.serve_connection(io, service).with_upgrades();
        let conn = drain.run(conn, |c| c.graceful_shutdown());
        first_request_within(conn, &first_request, timeout, stopping).await
    };
    match result {
        None => {
            tracing::debug!(peer = %peer, "no request before the header read timeout or shutdown")
        }
        Some(Err(e)) => tracing::debug!(peer = %peer, error = %e, "connection ended with an error"),
        Some(Ok(())) => {}
    }
}

/// A client that opens a connection and sends no complete request would otherwise hold it as
/// long as it likes (HTTP/2 has no header read timeout). Such a connection is dropped (`None`)
/// when no request has arrived within `timeout`, or when shutdown begins before one has: it
/// has nothing in flight to drain.
async fn first_request_within<F: Future>(
    conn: F,
    first_request: &Notify,
    timeout: Duration,
    mut stopping: watch::Receiver<()>,
) -> Option<F::Output> {
    tokio::pin!(conn);
    tokio::select! {
        // A request that has arrived wins over shutdown: it is drained, not dropped.
        biased;
        result = &mut conn => return Some(result),
        arrived = tokio::time::timeout(timeout, first_request.notified()) => arrived.ok()?,
        _ = stopping.changed() => return None,
    }
    Some(conn.await)
}
