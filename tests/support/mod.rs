//! Test support: keyway started in-process on an ephemeral loopback port, real upstream servers,
//! a real HTTP client. Readiness is awaited by polling, never by fixed sleeps.
#![allow(dead_code)]

pub mod idp;
pub mod nginx;
pub mod redis;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keyway::app::App;
use keyway::config::Source;
use keyway::server::{self, Running};
use tokio::net::TcpListener;

/// keyway, running in this process on 127.0.0.1 with an ephemeral port.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    running: Option<Running>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Starts keyway with `yaml` (written to a temp dir so relative paths resolve there).
/// The listen and admin addresses are replaced by ephemeral loopback ports.
pub async fn start(yaml: &str) -> Gateway {
    start_with_files(yaml, &[]).await
}

pub async fn start_with_files(yaml: &str, files: &[(&str, &[u8])]) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    let config_path = dir.path().join("keyway.yaml");
    std::fs::write(&config_path, yaml).expect("write config");
    let source = Source::File(config_path.clone());
    let mut loaded = match keyway::pipeline::compile::load(&source) {
        Ok(l) => l,
        Err(errors) => panic!("config failed: {errors:#?}"),
    };
    loaded.runtime.listen = vec!["127.0.0.1:0".parse().unwrap()];
    if let Some(admin) = loaded.runtime.admin.as_mut() {
        admin.listen = "127.0.0.1:0".parse().unwrap();
    }
    let app = App::new(loaded.runtime, source);
    let running = server::start(app.clone()).await.expect("start keyway");
    Gateway {
        addr: running.addrs[0],
        admin: running.admin_addr,
        app,
        dir,
        config_path,
        running: Some(running),
    }
}

/// A config with the top-level settings `extra`, one upstream `app` at `url`, and the YAML
/// list `routes`.
pub fn app_config(url: &str, extra: &str, routes: &str) -> String {
    format!("\n{extra}\nupstreams:\n  app: {{url: \"{url}\"}}\nroutes:\n{routes}")
}

/// `app_config` with one public route `all` for every path.
pub fn public_config(url: &str, extra: &str) -> String {
    app_config(
        url,
        extra,
        "  - {name: all, match: {path_prefix: /}, upstream: app, auth: []}\n",
    )
}

/// The F1 setup: consumer `consumer` (group `users`) holding the API key hashed as `hash`, which
/// the authenticator `desk-token` reads from `api_access_token` on the route `api` (`/api/`).
pub fn desk_config(url: &str, consumer: &str, hash: &str) -> String {
    let extra = format!(
        r#"consumers:
  - name: {consumer}
    groups: [users]
    api_keys: ["{hash}"]
authenticators:
  desk-token: {{type: api_key, header: api_access_token}}"#
    );
    app_config(
        url,
        &extra,
        "  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [desk-token]}\n",
    )
}

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 + h2c server on 127.0.0.1 that records every request it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

/// An upstream that answers 200 with body "ok" to everything.
pub async fn upstream_ok() -> Upstream {
    upstream(|_seen| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
        *r.status_mut() = StatusCode::OK;
        r
    })
    .await
}

/// An upstream whose answer is computed from the request it saw (body read in full).
pub async fn upstream<F>(answer: F) -> Upstream
where
    F: Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    upstream_async(move |seen| {
        let response =
            answer(&seen).map(|body| body.map_err(|never: Infallible| match never {}).boxed());
        async move { response }
    })
    .await
}

/// What an upstream saw of `req`, its body read in full.
async fn record(req: Request<Incoming>) -> Seen {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Seen {
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    }
}

/// A plain response as a test sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `reason` of a problem+json refusal.
    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request with headers and collects the answer.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    send_body(method, url, headers, Bytes::new()).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    send("GET", url, headers).await
}

pub async fn send_body(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = client()
        .request(req.body(Full::new(body)).unwrap())
        .await
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Polls `check` every 20 ms until it returns true, up to `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, up to `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The keyway binary built by cargo for integration tests.
pub fn keyway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyway")
}

// ---------------------------------------------------------------------------------------------
// Helpers for the gateway-core end-to-end tests (streaming upstreams, raw sockets, refusals).
// ---------------------------------------------------------------------------------------------

/// A response body an upstream can stream (or send whole).
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A whole response body.
pub fn full(bytes: impl Into<Bytes>) -> UpBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response body whose chunks are sent, one frame each, through the returned channel;
/// dropping the sender ends the body.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, UpBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok(http_body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed())
}

/// Serves `handler` (HTTP/1.1 and h2c, with upgrades) on an ephemeral loopback port. The
/// handler gets each request with its body unread.
pub async fn serve_raw<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<UpBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that records each request (body read in full) *before* computing its answer
/// asynchronously, so a test can see the request arrive while the answer is still pending.
pub async fn upstream_async<F, Fut>(answer: F) -> Upstream
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<UpBody>> + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let addr = serve_raw(move |req: Request<Incoming>| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            let seen = record(req).await;
            log.lock().unwrap().push(seen.clone());
            answer(seen).await
        }
    })
    .await;
    Upstream { addr, seen }
}

/// An HTTP/2-only (h2c prior knowledge) client.
pub fn client_h2() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Asserts that `answer` is a keyway refusal (SPEC §6.1, §11): the status, problem+json with
/// `type` `urn:keyway:reason:<reason>`, `status`, `title`, `reason`, and `request_id` equal to
/// the `X-Request-Id` response header. Returns the problem body.
#[track_caller]
pub fn assert_problem(answer: &Answer, status: u16, reason: &str) -> serde_json::Value {
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(answer.status, status, "status; body: {body}");
    assert_eq!(
        answer.header("content-type"),
        "application/problem+json",
        "content-type; body: {body}"
    );
    let problem = answer.json();
    assert_eq!(problem["reason"], reason, "reason; body: {body}");
    assert_eq!(
        problem["type"],
        format!("urn:keyway:reason:{reason}"),
        "type; body: {body}"
    );
    assert_eq!(problem["status"], status, "status field; body: {body}");
    let title = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    assert_eq!(problem["title"], title, "title; body: {body}");
    let id = answer.header("x-request-id");
    assert!(!id.is_empty(), "no X-Request-Id on the refusal");
    assert_eq!(problem["request_id"], id, "request_id; body: {body}");
    assert_eq!(answer.header("x-keyway-reason"), reason);
    problem
}

/// `GET /metrics` on the gateway's admin listener.
pub async fn metrics(gw: &Gateway) -> String {
    let admin = gw.admin.expect("the config has no admin listener");
    let answer = get(&format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(answer.status, 200);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// The value of one sample (`name{labels}` exactly as rendered) in Prometheus text, 0 if absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What came back on a raw TCP exchange.
#[derive(Debug)]
pub struct RawAnswer {
    /// Everything read until the server closed the connection (or the bound elapsed).
    pub bytes: Vec<u8>,
    /// The server closed the connection within the bound.
    pub closed: bool,
}

impl RawAnswer {
    /// The status code of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")
            .or_else(|| line.strip_prefix("HTTP/1.0 "))?
            .get(..3)?
            .parse()
            .ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The body of the first response (after the blank line).
    pub fn body(&self) -> String {
        let text = self.text();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// A header of the first response (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text
            .split_once("\r\n\r\n")
            .map_or(text.as_str(), |(h, _)| h);
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Writes `request` to `addr` over a fresh TCP connection and reads until the server closes it,
/// waiting at most `bound` (a bound on a hang, not a sleep).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], bound: Duration) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    RawAnswer { bytes, closed }
}

/// Reads from `stream` until the end of a request head (a blank line); false if the peer
/// closed or failed first.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A raw request answered by `raw_exchange` within 5 s.
pub async fn raw(addr: SocketAddr, request: &str) -> RawAnswer {
    raw_exchange(addr, request.as_bytes(), Duration::from_secs(5)).await
}
