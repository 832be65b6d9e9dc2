//! Upstream connection reuse: a keep-alive client's requests share one upstream connection, a
//! connection the upstream closes is replaced, and a connection whose response body was cut off
//! is never handed to another request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::*;

/// An HTTP/1.1 upstream that counts the connections it accepts.
struct CountingUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl CountingUpstream {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

async fn counting_upstream<F, Fut>(answer: F) -> CountingUpstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<UpBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let open = Arc::new(AtomicUsize::new(0));
    let open_now = open.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            open_now.fetch_add(1, Ordering::SeqCst);
            let open_now = open_now.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    CountingUpstream {
        addr,
        connections,
        open,
    }
}

/// One keep-alive client connection to keyway.
async fn client_connection(gw: &Gateway) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_on(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "app.test")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_keep_alive_client_uses_one_upstream_connection() {
    let up = counting_upstream(|_| async { Response::new(full("ok")) }).await;
    let gw = start(&public_config(&up.url(), "")).await;
    let mut client = client_connection(&gw).await;
    for i in 0..20 {
        assert_eq!(
            get_on(&mut client, &format!("/n/{i}")).await,
            (200, "ok".into())
        );
    }
    assert_eq!(up.connections(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_closes_every_connection_still_answers_every_request() {
    let up = counting_upstream(|_| async {
        Response::builder()
            .header("connection", "close")
            .body(full("bye"))
            .unwrap()
    })
    .await;
    let gw = start(&public_config(&up.url(), "")).await;
    let mut client = client_connection(&gw).await;
    for i in 0..10 {
        assert_eq!(
            get_on(&mut client, &format!("/c/{i}")).await,
            (200, "bye".into())
        );
    }
    assert_eq!(up.connections(), 10);
    gw.stop().await;
}

#[tokio::test]
async fn a_response_cut_off_by_its_client_never_lends_its_connection_to_another_request() {
    let (chunks_tx, mut chunks_rx) = mpsc::unbounded_channel::<mpsc::Sender<Bytes>>();
    let up = counting_upstream(move |req: Request<Incoming>| {
        let chunks_tx = chunks_tx.clone();
        async move {
            if req.uri().path() == "/stream" {
                let (tx, body) = channel_body();
                let _ = chunks_tx.send(tx);
                Response::new(body)
            } else {
                Response::new(full("plain"))
            }
        }
    })
    .await;
    let gw = start(&public_config(&up.url(), "")).await;

    // A client reads the first chunk of a stream, then goes away mid-body.
    let mut streaming = client_connection(&gw).await;
    let req = Request::get("/stream")
        .header("host", "app.test")
        .body(Empty::new())
        .unwrap();
    let pending = tokio::spawn(async move {
        let mut response = streaming.send_request(req).await.unwrap();
        let first = response.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        drop(response);
        drop(streaming);
    });
    let feeder = chunks_rx.recv().await.unwrap();
    feeder.send(Bytes::from_static(b"first")).await.unwrap();
    pending.await.unwrap();
    // keyway has dropped the cut-off exchange once the upstream's next write finds no reader.
    let gone = wait_until(Duration::from_secs(5), || {
        let feeder = feeder.clone();
        async move { feeder.send(Bytes::from_static(b"more")).await.is_err() }
    })
    .await;
    assert!(gone, "the cut-off response body was never released");

    // The next client must get a connection of its own: the first one is mid-body.
    let mut next = client_connection(&gw).await;
    assert_eq!(get_on(&mut next, "/plain").await, (200, "plain".into()));
    assert_eq!(up.connections(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_clients_each_get_a_connection_and_keep_it() {
    let up = counting_upstream(|_| async { Response::new(full("ok")) }).await;
    let gw = start(&public_config(&up.url(), "")).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client_connection(&gw).await);
    }
    for round in 0..5 {
        let mut tasks = Vec::new();
        for mut client in clients.drain(..) {
            tasks.push(tokio::spawn(async move {
                let got = get_on(&mut client, &format!("/r/{round}")).await;
                (client, got)
            }));
        }
        for task in tasks {
            let (client, got) = task.await.unwrap();
            assert_eq!(got, (200, "ok".into()));
            clients.push(client);
        }
    }
    // Never more upstream connections than clients in flight at once.
    assert!(up.connections() <= 4, "{} connections", up.connections());
    gw.stop().await;
}

#[tokio::test]
async fn an_http10_request_without_host_reaches_the_upstream_with_one() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    let answer = raw_exchange(
        gw.addr,
        b"GET /old HTTP/1.0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        answer.text().starts_with("HTTP/1.0 200 "),
        "{}",
        answer.text()
    );
    let seen = up.last();
    assert_eq!(seen.uri, "/old");
    assert_eq!(seen.headers["host"], up.addr.to_string());
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let up = counting_upstream(|_| async { Response::new(full("ok")) }).await;
    let config = format!(
        "upstreams:\n  app: {{url: \"{}\", timeouts: {{idle: 300ms}}}}\nroutes:\n  - {{name: all, match: {{path_prefix: /}}, upstream: app, auth: []}}\n",
        up.url()
    );
    let gw = start(&config).await;
    let mut client = client_connection(&gw).await;
    assert_eq!(get_on(&mut client, "/first").await, (200, "ok".into()));
    assert_eq!(up.open(), 1);
    // No further traffic: keyway itself must close the idle connection.
    let closed = wait_until(Duration::from_secs(10), || async { up.open() == 0 }).await;
    assert!(closed, "the idle upstream connection was kept open");
    assert_eq!(get_on(&mut client, "/second").await, (200, "ok".into()));
    assert_eq!(up.connections(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn an_http2_request_reaches_the_upstream_with_its_authority_as_host() {
    let up = upstream_ok().await;
    let gw = start(&public_config(&up.url(), "")).await;
    let req = Request::get(gw.url("/h2"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = client_h2().request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/h2");
    assert_eq!(seen.headers["host"], gw.addr.to_string());
    // The client's authority, with its port (SPEC §4).
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
    gw.stop().await;
}
