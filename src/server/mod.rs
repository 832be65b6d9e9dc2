//! Listeners: accept loops, TLS with ALPN, HTTP/1.1 and HTTP/2 (h2c prior knowledge or ALPN),
//! limits on header size and read time, graceful shutdown that drains in-flight requests.

mod conn;
mod drain;
pub mod framing;
mod guarded_io;
mod handle;
mod part_waker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::app::App;

/// A started gateway: its bound addresses and the handle that stops it.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    app: Arc<App>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to `limits.shutdown_grace`), then returns.
    /// Stops accepting, drains in-flight requests, then closes open WebSocket connections
    /// (each within `limits.shutdown_grace`), then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let grace = self.app.runtime().limits.shutdown_grace;
        self.app.tunnels.close_all(grace).await;
    }
}

/// Binds every listener (and the admin listener) and starts serving.
pub async fn start(app: Arc<App>) -> io::Result<Running> {
    let rt = app.runtime();
    rt.authenticators.iter().for_each(|a| a.start());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    let builders = Arc::new(conn::Builders::new(&rt));
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
            builders.clone(),
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
            tasks.spawn(crate::admin::serve(listener, app.clone(), stop_rx.clone()));
            Some(local)
        }
        None => None,
    };
    Ok(Running {
        addrs,
        admin_addr,
        stop,
        tasks,
        app,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    builders: Arc<conn::Builders>,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection holds a receiver; shutdown sends on the channel, then waits until all
    // receivers are gone, i.e. every connection has finished its in-flight requests.
    let (drain, drain_rx) = watch::channel(());
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
        let builders = builders.clone();
        let drain = drain::Drain::new(drain_rx.clone());
        match &tls {
            None => tokio::spawn(conn::serve_plain(stream, peer, app, builders, drain)),
            Some(acceptor) => tokio::spawn(conn::serve_tls(
                stream,
                peer,
                acceptor.clone(),
                app,
                builders,
                drain,
            )),
        };
    }
    drop(listener);
    let grace = app.runtime().limits.shutdown_grace;
    drop(drain_rx);
    let _ = drain.send(());
    if tokio::time::timeout(grace, drain.closed()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown grace elapsed with requests still in flight"
        );
    }
}
