//! The request pipeline. `decide` runs the stages that decide (limits → canonical authority and
//! path → headers → router → authn → authz) and is shared by everything that needs a decision;
//! `prepare` adds injection and `upstream` the exchange; `server::handle` runs them in order for
//! a proxied request. Every stage appends to one `Trace`. The layers point one way: `config`
//! (the file as written) → `pipeline` (`compile` into `runtime`, then the stages) → `app`,
//! `server`, `admin`, `cli`. The capability rooms (oidc, session, websocket, forward_auth) are
//! parts of stages, reached from authn, endpoints and answer, and build on the pipeline's types.

pub mod answer;
pub mod authn;
pub mod authz;
pub mod body;
pub mod browser;
pub mod canonical;
pub mod compile;
pub mod dry_run;
pub mod echo;
pub mod endpoints;
pub mod headers;
pub mod hop_by_hop;
pub mod inject;
pub mod refusal;
pub mod request_id;
pub mod router;
pub mod runtime;
pub mod trace;
pub mod unauthenticated;
pub mod upstream;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderValue, Response};

use self::answer::Answer;
use self::authn::Identity;
use self::body::Body;
use self::headers::Peer;
use self::runtime::{Route, Runtime, Target};
use self::trace::{Stage, Trace};
use self::unauthenticated::Mode;
use self::upstream::pool::Pool;
use crate::oidc::Conn;
use crate::websocket;
use crate::websocket::RefuseWith;

/// What the deciding stages concluded for an allowed request.
pub struct Decision {
    pub route: Arc<Route>,
    pub identity: Option<Identity>,
    /// `Set-Cookie` values for the response (a renewed session).
    pub cookies: Vec<HeaderValue>,
}

/// The stages before keyway's own endpoints and routing: limits, then the request's one
/// authority and one path, which everything after sees.
pub fn admit(rt: &Runtime, parts: &mut Parts, conn: Conn, trace: &mut Trace) -> Result<(), Answer> {
    rt.headers.check_limits(parts, trace)?;
    trace.authority = canonical::authority(parts, conn.tls, trace)?;
    canonical::path(parts, rt.paths, trace)?;
    Ok(())
}

/// The deciding stages for an admitted request, in order: headers, router, authentication
/// (answered by the unauthenticated stage when it fails), authorisation, and for a WebSocket
/// handshake its own credential place and `Origin`.
pub async fn decide_route(
    rt: &Runtime,
    parts: &mut Parts,
    upgrade: bool,
    conn: Conn,
    mode: Mode,
    trace: &mut Trace,
) -> Result<Decision, Answer> {
    rt.headers.sanitize(&mut parts.headers, upgrade, trace)?;
    if upgrade {
        websocket::handshake::bearer_subprotocol(parts, trace)?;
    }
    let route = rt.router.route(parts, trace)?;
    // A browser cannot read a refused handshake: the route may answer with a close frame.
    let close_refusals = upgrade && route.websocket.refuse_with == RefuseWith::Close;
    let decided: Result<Decision, Answer> = 'decided: {
        let authenticated = match authn::authenticate(&route, parts, conn, trace).await {
            Ok(a) => a,
            Err(u) => {
                // Boxed: only an unauthenticated request may start a sign-in.
                let answer = unauthenticated::answer(u, &route, parts, conn, mode, trace);
                break 'decided Err(Box::pin(answer).await);
            }
        };
        let (identity, cookies) = match authenticated {
            Some(a) => (Some(a.identity), a.cookies),
            None => (None, Vec::new()),
        };
        if let Err(refusal) = authz::authorize(route.allow.as_ref(), identity.as_ref(), trace) {
            // A 403 is never a redirect; a renewed session is still stored.
            break 'decided Err(Answer::from(refusal).with_cookies(cookies));
        }
        if upgrade && authenticated_by_cookie(trace) {
            let own = crate::oidc::Site::of(conn, parts, trace).origin();
            let checked =
                websocket::handshake::check_origin(&route.websocket, parts, own.as_deref(), trace);
            if let Err(refusal) = checked {
                break 'decided Err(Answer::from(refusal).with_cookies(cookies));
            }
        }
        Ok(Decision {
            route: route.clone(),
            identity,
            cookies,
        })
    };
    match decided {
        Err(answer) if close_refusals => Err(websocket::close::instead(answer, parts)),
        other => other,
    }
}

/// The accepted credential came from a cookie (a cookie source, or a session).
fn authenticated_by_cookie(trace: &Trace) -> bool {
    trace
        .identity
        .as_ref()
        .is_some_and(|i| i.source.starts_with("cookie ") || i.source.starts_with("session cookie "))
}

/// Every deciding stage: what explain and forward-auth run on a described request.
pub async fn decide(
    rt: &Runtime,
    parts: &mut Parts,
    upgrade: bool,
    conn: Conn,
    mode: Mode,
    trace: &mut Trace,
) -> Result<Decision, Answer> {
    admit(rt, parts, conn, trace)?;
    decide_route(rt, parts, upgrade, conn, mode, trace).await
}

/// An allowed request made ready for its upstream.
pub enum Prepared {
    /// The builtin echo upstream answered.
    Answered(Response<Body>),
    /// The request's head is ready for the route's HTTP upstream and its connections.
    Forward { route: Arc<Route>, pool: Arc<Pool> },
    /// A multiplexer route: its connection is accepted, not forwarded.
    Mux,
    /// A WebSocket handshake to the builtin echo: accepted, greeted with `0`'s description.
    EchoWebSocket(String),
}

/// Credential injection and the upstream request's head.
pub fn prepare(
    decision: Decision,
    rt: &Runtime,
    parts: &mut Parts,
    peer: Peer<'_>,
    trace: &mut Trace,
) -> Prepared {
    let Decision {
        route, identity, ..
    } = decision;
    // keyway's own session and sign-in cookies never reach an upstream.
    rt.headers.strip_keyway_cookies(&mut parts.headers, trace);
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
        (None, Target::Echo | Target::Mux) => {}
    }
    match &upstream.target {
        // The headers stage kept `Upgrade` only for a WebSocket handshake.
        Target::Echo if parts.headers.contains_key(http::header::UPGRADE) => {
            trace.step(Stage::Upstream, "builtin echo accepted the WebSocket");
            let greeting = echo::describe(parts, upstream, identity.as_ref());
            Prepared::EchoWebSocket(greeting.to_string())
        }
        Target::Echo => {
            trace.step(Stage::Upstream, "builtin echo answered");
            Prepared::Answered(echo::respond(parts, upstream, identity.as_ref()))
        }
        Target::Mux => Prepared::Mux,
        Target::Http { pool, .. } => Prepared::Forward {
            pool: pool.clone(),
            route,
        },
    }
}
