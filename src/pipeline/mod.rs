//! The request pipeline. `decide` runs the stages that decide (limits → headers → router →
//! authn → authz) and is shared by everything that needs a decision; `handle` adds injection
//! and the upstream for proxied requests. Every stage appends to one `Trace`.

pub mod authn;
pub mod authz;
pub mod body;
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
use crate::reason::Reason;

/// What the deciding stages concluded for an allowed request.
pub struct Decision {
    pub route: Arc<Route>,
    pub identity: Option<Identity>,
}

/// The deciding stages, in order.
pub async fn decide(
    rt: &Runtime,
    parts: &mut Parts,
    upgrade: bool,
    trace: &mut Trace,
) -> Result<Decision, Refusal> {
    rt.headers.check_limits(parts, trace)?;
    check_path(parts.uri.path(), trace)?;
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
        let result = match decide(&rt, &mut parts, upgrade, &mut trace).await {
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
    // client's (an HTTP/2 request carries it in the URI, which `inject` makes origin-form), else
    // the upstream's own for an HTTP/1.0 client that sent none.
    let client_authority = parts.uri.authority().cloned();
    parts.version = http::Version::HTTP_11;
    inject::apply(&route, upstream, identity.as_ref(), parts, peer, trace);
    parts.headers.insert(
        request_id::X_REQUEST_ID.clone(),
        trace.request_id.header_value().clone(),
    );
    if !parts.headers.contains_key(http::header::HOST) {
        let host = match (&client_authority, &upstream.target) {
            (Some(authority), _) => Some(authority),
            (None, Target::Http { authority, .. }) => {
                trace.step(
                    Stage::Inject,
                    "no Host from the client: sent the upstream's",
                );
                Some(authority)
            }
            (None, Target::Echo) => None,
        };
        if let Some(Ok(host)) = host.map(|a| HeaderValue::from_str(a.as_str())) {
            parts.headers.insert(http::header::HOST, host);
        }
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

/// A path whose dot segments (raw or percent-encoded, with `/`, `%2F`, `\\` or `%5C` as separators)
/// could make the upstream resolve a different path than the router matched. Encoded slashes on
/// their own (`/projects/group%2Fname`) are legitimate and pass.
fn check_path(path: &str, trace: &mut Trace) -> Result<(), Refusal> {
    // Without a dot, a percent sign or a backslash there is no dot segment in any spelling.
    if memchr::memchr3(b'.', b'%', b'\\', path.as_bytes()).is_none() {
        return Ok(());
    }
    let has_dot_segment = |p: &str| p.split('/').any(|seg| seg == "." || seg == "..");
    let suspicious = if path.contains(['%', '\\']) {
        let normalized = path
            .to_ascii_lowercase()
            .replace("%2f", "/")
            .replace("%5c", "/")
            .replace('\\', "/")
            .replace("%2e", ".");
        has_dot_segment(&normalized)
    } else {
        has_dot_segment(path)
    };
    if !suspicious {
        return Ok(());
    }
    trace.step(Stage::Limits, "path with dot segments");
    Err(Refusal::new(
        Reason::PathInvalid,
        "The path contains dot segments (., .., or encoded forms), which could reach a different route upstream.",
    )
    .hint("Send the normalized path."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        let mut t = Trace::start(
            request_id::mint(),
            http::Method::GET,
            RequestPath::default(),
        );
        for bad in [
            "/a/../b",
            "/a/./b",
            "/public/%2e%2e/admin",
            "/public%2F..%2Fadmin",
            "/p/%2E./x",
            "/p\\..\\x",
            "/..",
        ] {
            assert!(check_path(bad, &mut t).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/static/app.js",
            "/projects/group%2Fname",
            "/a/..b/c",
            "/a%20b",
        ] {
            assert!(check_path(good, &mut t).is_ok(), "{good}");
        }
    }
}
