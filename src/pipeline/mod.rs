//! The request pipeline. `decide` runs the stages that decide (limits → canonical authority and
//! path → headers → router → authn → authz) and is shared by everything that needs a decision;
//! `handle` adds injection and the upstream for proxied requests. Every stage appends to one
//! `Trace`.

pub mod authn;
pub mod authz;
pub mod body;
pub mod canonical;
pub mod echo;
pub mod headers;
pub mod inject;
pub mod refusal;
pub mod request_id;
pub mod router;
pub mod trace;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use self::authn::Identity;
use self::body::Body;
use self::headers::{Client, Peer};
use self::refusal::Refusal;
use self::trace::{RequestPath, Stage, Trace};
use self::upstream::pool::Pool;
use crate::app::App;
use crate::config::runtime::{Route, Runtime, Target};

/// What the deciding stages concluded for an allowed request.
pub struct Decision {
    pub route: Arc<Route>,
    pub identity: Option<Identity>,
}

/// The deciding stages, in order. `tls`: the request came over TLS (its default port is 443).
pub async fn decide(
    rt: &Runtime,
    parts: &mut Parts,
    upgrade: bool,
    tls: bool,
    trace: &mut Trace,
) -> Result<Decision, Refusal> {
    rt.headers.check_limits(parts, trace)?;
    trace.authority = canonical::authority(parts, tls, trace)?;
    canonical::path(parts, rt.paths, trace)?;
    rt.headers.sanitize(&mut parts.headers, upgrade, trace)?;
    let route = rt.router.route(parts, trace)?;
    let identity = authn::authenticate(&route, parts, trace).await?;
    authz::authorize(route.allow.as_ref(), identity.as_ref(), trace)?;
    Ok(Decision { route, identity })
}

/// Serves one proxied request and records it.
///
/// The work before the first await runs here rather than in an async fn, and the stages after
/// the decision hand the request on by value: each async fn would keep its own copy of the
/// request in the future hyper holds for every connection.
pub fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    client: Arc<Client>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    let rt = app.runtime();
    let upgrade = upstream::is_upgrade(&req);
    let (mut parts, body) = req.into_parts();
    let (request_id, replaced) = request_id::of(&parts.headers);
    let mut trace = Trace::start(
        request_id,
        parts.method.clone(),
        RequestPath::of(&parts.uri),
    );
    if replaced {
        trace.step(
            Stage::Limits,
            "replaced a malformed X-Request-Id (1-128 of A-Za-z0-9._:- expected)",
        );
    }
    let trusted = rt.is_trusted(client.ip);
    async move {
        let peer = Peer {
            client: &client,
            trusted,
        };
        let result = match decide(&rt, &mut parts, upgrade, client.tls, &mut trace).await {
            Ok(decision) => match prepare(decision, &mut parts, peer, &mut trace) {
                Prepared::Answered(response) => Ok(response),
                Prepared::Forward { route, pool } => {
                    upstream::forward(
                        &route.upstream,
                        &pool,
                        Request::from_parts(parts, body),
                        upgrade,
                        client.request_timer(),
                        &mut trace,
                    )
                    .await
                }
            },
            Err(refusal) => Err(refusal),
        };
        let mut response = match result {
            Ok(response) => response,
            Err(refusal) => {
                let response = refusal::render(&refusal, &trace, rt.detail);
                trace.refusal = Some(refusal);
                response
            }
        };
        // The same value went to the upstream.
        response.headers_mut().insert(
            request_id::X_REQUEST_ID.clone(),
            trace.request_id.header_value().clone(),
        );
        trace.status = response.status().as_u16();
        app.record(&trace, &rt);
        // Every request is answered: refusals are responses too.
        Ok(response)
    }
}

/// An allowed request made ready for its upstream.
enum Prepared {
    /// The builtin echo upstream answered.
    Answered(Response<Body>),
    /// The request's head is ready for the route's HTTP upstream and its connections.
    Forward { route: Arc<Route>, pool: Arc<Pool> },
}

/// Credential injection and the upstream request's head.
fn prepare(decision: Decision, parts: &mut Parts, peer: Peer<'_>, trace: &mut Trace) -> Prepared {
    let Decision { route, identity } = decision;
    let upstream = &*route.upstream;
    // The upstream speaks HTTP/1.1 whatever the client spoke, and HTTP/1.1 needs a Host: the
    // authority routing used (an HTTP/2 request carries it in the URI, which `inject` makes
    // origin-form), else the upstream's own for an HTTP/1.0 client that named none.
    parts.version = http::Version::HTTP_11;
    inject::apply(&route, upstream, identity.as_ref(), parts, peer, trace);
    parts.headers.insert(
        request_id::X_REQUEST_ID.clone(),
        trace.request_id.header_value().clone(),
    );
    match (&trace.authority, &upstream.target) {
        // Usually the client's own Host header, left in place.
        (Some(authority), _) => {
            if parts.headers.get(http::header::HOST) != Some(&authority.value) {
                parts
                    .headers
                    .insert(http::header::HOST, authority.value.clone());
            }
        }
        (None, Target::Http { authority, .. }) => {
            trace.step(
                Stage::Inject,
                "no Host from the client: sent the upstream's",
            );
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(http::header::HOST, host);
            }
        }
        (None, Target::Echo) => {}
    }
    match &upstream.target {
        Target::Echo => {
            trace.step(Stage::Upstream, "builtin echo answered");
            Prepared::Answered(echo::respond(parts, upstream, identity.as_ref()))
        }
        Target::Http { pool, .. } => Prepared::Forward {
            pool: pool.clone(),
            route,
        },
    }
}
