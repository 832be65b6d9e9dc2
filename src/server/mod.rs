//! Listeners: accept loops, TLS with ALPN, HTTP/1.1 and HTTP/2 (h2c prior knowledge or ALPN),
//! limits on header size and read time, graceful shutdown that drains in-flight requests.

pub mod admin;
pub mod framing;
mod guarded_io;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::pipeline;
use framing::{ConflictingFraming, FramingFlag};
use guarded_io::GuardedIo;

/// A started gateway: its bound addresses and the handle that stops it.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to `limits.shutdown_grace`), then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds every listener (and the admin listener) and starts serving.
pub async fn start(app: Arc<App>) -> io::Result<Running> {
    let rt = app.runtime();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    let builder = Arc::new(connection_builder(&rt));
    for addr in &rt.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        addrs.push(local);
        tracing::info!(addr = %local, tls = rt.tls.is_some(), "listening");
        let tls = rt.tls.clone().map(TlsAcceptor::from);
        tasks.spawn(accept_loop(
            listener,
            tls,
            app.clone(),
            builder.clone(),
            stop_rx.clone(),
        ));
    }
    let admin_addr = match &rt.admin {
        Some(admin) => {
            let listener = TcpListener::bind(admin.listen).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {} (admin): {e}", admin.listen),
                )
            })?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, "admin listening");
            tasks.spawn(admin::serve(listener, app.clone(), stop_rx.clone()));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        addrs,
        admin_addr,
        stop,
        tasks,
    })
}

fn connection_builder(rt: &crate::config::runtime::Runtime) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own limits sit above keyway's so that keyway's check answers with problem+json;
    // hyper refuses only what is far beyond them.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(rt.limits.header_read_timeout)
        .max_buf_size((rt.headers.max_header_bytes + 16 * 1024).max(8192))
        .max_headers(rt.headers.max_headers + 32);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size((rt.headers.max_header_bytes + 16 * 1024) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, app, builder, watcher).await;
        });
    }
    drop(listener);
    let grace = app.runtime().limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown grace elapsed with requests still in flight"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let timeout = app.runtime().limits.header_read_timeout;
    let is_tls = tls.is_some();
    let framing = FramingFlag::default();
    let flag = framing.clone();
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        if flag.is_set() {
            req.extensions_mut().insert(ConflictingFraming);
        }
        async move { Ok::<_, Infallible>(pipeline::handle(&app, req, peer.ip(), is_tls).await) }
    });
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(GuardedIo::new(stream, framing)),
                service,
            );
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(GuardedIo::new(tls_stream, framing)),
                    service,
                );
                watcher.watch(conn.into_owned()).await
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
