//! The floor of keyway's HTTP stack, for `bench/proxy.sh`: a reverse proxy built from the same
//! hyper server, hyper client connections and tokio runtime as keyway, doing nothing else — no
//! routing, header policy, forwarding headers, request id, trace, metrics or timeouts. The
//! bench's `keyway/hyper-floor` ratio is then what keyway's own work costs, and
//! `hyper-floor/nginx` what the stack itself allows.
//!
//! Usage: `hyper_floor LISTEN_ADDR UPSTREAM_ADDR` (HTTP/1.1 only, one thread, idle upstream
//! connections reused most recent first, as keyway's pool does).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Sender = client::SendRequest<Incoming>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Pool {
    upstream: String,
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    fn take(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<Sender, BoxError> {
        let stream = TcpStream::connect(&self.upstream).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = client::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// The upstream's response body; its connection goes back to the pool once the body has ended.
struct Released {
    body: Incoming,
    sender: Option<Sender>,
    pool: Arc<Pool>,
}

impl Body for Released {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if (matches!(frame, Poll::Ready(None)) || self.body.is_end_stream())
            && let Some(sender) = self.sender.take()
        {
            self.pool.put(sender);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

async fn proxy(req: Request<Incoming>, pool: Arc<Pool>) -> Result<Response<Released>, BoxError> {
    let mut sender = match pool.take() {
        Some(sender) => sender,
        None => pool.connect().await?,
    };
    sender.ready().await?;
    let (mut parts, body) = req.into_parts();
    // Origin-form, as an HTTP/1.1 request line to the upstream carries it.
    let mut origin = http::uri::Parts::default();
    origin.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = http::Uri::from_parts(origin)?;
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    let (parts, body) = response.into_parts();
    let body = Released {
        body,
        sender: Some(sender),
        pool,
    };
    Ok(Response::from_parts(parts, body))
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let pool = Arc::new(Pool {
        upstream,
        idle: Mutex::new(Vec::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| proxy(req, pool.clone()));
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
