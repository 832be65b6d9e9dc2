//! The upstream proxy: a pooled client, bodies streamed both ways, upgrades spliced.

use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::Body;
use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::config::runtime::{Timeouts, Upstream};
use crate::reason::Reason;

pub type HttpClient = Client<HttpConnector, Incoming>;

pub fn client(timeouts: &Timeouts) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sends the request to the upstream and streams its answer back.
pub async fn forward(
    upstream: &Upstream,
    client: &HttpClient,
    mut req: Request<Incoming>,
    upgrade: bool,
    trace: &mut Trace,
) -> Result<Response<Body>, Refusal> {
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let sent = tokio::time::timeout(upstream.timeouts.request, client.request(req)).await;
    let mut response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Err(failure(upstream, &err, trace)),
        Err(_) => {
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
    trace.step(Stage::Upstream, "upstream answered");
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_upgrade
    {
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client_io), Ok(upstream_io)) = (client_side.await, upstream_side.await) {
                let mut client_io = TokioIo::new(client_io);
                let mut upstream_io = TokioIo::new(upstream_io);
                let _ = tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io).await;
            }
        });
        return Ok(response.map(|_| Body::empty()));
    }
    strip_response_hop_by_hop(response.headers_mut());
    Ok(response.map(Body::Upstream))
}

fn failure(
    upstream: &Upstream,
    err: &hyper_util::client::legacy::Error,
    trace: &mut Trace,
) -> Refusal {
    let source = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_default();
    let timed_out = source.contains("timed out") || source.contains("timeout");
    let (reason, what, hint) = if err.is_connect() && timed_out {
        (
            Reason::UpstreamTimeout,
            format!(
                "connecting took longer than {}",
                human(upstream.timeouts.connect)
            ),
            "Check that the upstream is reachable, or raise timeouts.connect.",
        )
    } else if err.is_connect() {
        (
            Reason::UpstreamUnreachable,
            format!("the connection failed ({source})"),
            "Check that the upstream is running and that its url is right.",
        )
    } else {
        (
            Reason::UpstreamProtocol,
            format!("the exchange failed ({source})"),
            "The upstream closed the connection or sent an invalid HTTP response.",
        )
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

static RESPONSE_HOP_BY_HOP: [http::HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
];

fn strip_response_hop_by_hop(headers: &mut http::HeaderMap) {
    // Comparing a handful of names is cheaper than hashing each for a removal that finds nothing.
    for name in &RESPONSE_HOP_BY_HOP {
        if headers.keys().any(|k| k == name) {
            headers.remove(name);
        }
    }
}

pub fn human(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}
