//! How an unauthenticated request is answered (SPEC §6.2, F4): with its status, or, for a
//! browser navigation on a route that may, with the redirect to the route's sign-in. A presented
//! credential, valid or not, is never redirected, nor is a 403, nor a forward-auth check.

use http::request::Parts;

use super::answer::Answer;
use super::authn::{Unauthenticated, token_presented};
use super::browser;
use super::trace::{Stage, Trace};
use crate::config::file::OnUnauthenticated;
use crate::oidc::{Conn, Site};
use crate::pipeline::runtime::Route;

/// Who asks for the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A request keyway proxies.
    Proxy,
    /// A forward-auth check (SPEC §7): always a status, the calling proxy redirects.
    ForwardAuth,
}

pub async fn answer(
    unauthenticated: Unauthenticated,
    route: &Route,
    parts: &Parts,
    conn: Conn,
    mode: Mode,
    trace: &mut Trace,
) -> Answer {
    let Unauthenticated { refusal, cookies } = unauthenticated;
    let why_status = if mode == Mode::ForwardAuth {
        Some("forward-auth answers with a status; the calling proxy decides about redirects")
    } else if refusal.status() != http::StatusCode::UNAUTHORIZED {
        Some("not a 401: never redirected")
    } else if refusal.token_presented {
        Some("a credential was presented: never redirected")
    } else if route.sign_in().is_none() {
        Some("the route has no oidc authenticator to sign in with")
    } else {
        match route.on_unauthenticated {
            OnUnauthenticated::Status => Some("on_unauthenticated: status"),
            OnUnauthenticated::Redirect => None,
            OnUnauthenticated::Auto => {
                let verdict = browser::classify(parts, token_presented(route, parts));
                trace.step(Stage::Browser, verdict.rule);
                (!verdict.navigation)
                    .then_some("on_unauthenticated: auto, and not a browser navigation")
            }
        }
    };
    if let Some(why) = why_status {
        trace.step(Stage::Browser, why);
        let refusal = if mode == Mode::ForwardAuth {
            with_sign_in_hint(refusal, route, parts, trace)
        } else {
            refusal
        };
        return Answer::from(refusal).with_cookies(cookies);
    }
    let Some(oidc) = route.sign_in() else {
        return Answer::from(refusal).with_cookies(cookies);
    };
    trace.step(Stage::Browser, "redirected to sign in");
    let site = Site::of(conn, parts, trace);
    // Back to the same path and query afterwards (canonical, relative: never another site).
    let rd = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let answer = oidc
        .start_sign_in(&site, &rd, trace)
        .await
        .with_cookies(cookies);
    // Why the request was not let through stays the refusal's reason.
    if answer.refusal().is_none() {
        trace.refusal = Some(refusal);
    }
    answer
}

/// A forward-auth 401 to a browser navigation names where to sign in: a proxy that cannot tell
/// browsers from API calls (Traefik) passes the 401 on as it is, and the person reading it needs
/// the way in. Only where the route can sign in and no credential was presented.
fn with_sign_in_hint(
    refusal: super::refusal::Refusal,
    route: &Route,
    parts: &Parts,
    trace: &mut Trace,
) -> super::refusal::Refusal {
    if refusal.status() != http::StatusCode::UNAUTHORIZED
        || refusal.token_presented
        || route.sign_in().is_none()
    {
        return refusal;
    }
    let verdict = browser::classify(parts, token_presented(route, parts));
    if !verdict.navigation {
        return refusal;
    }
    trace.step(Stage::Browser, verdict.rule);
    // The path alone: the body is shown to whoever reads it, and a query may hold a credential
    // meant for another route.
    let rd: String = form_urlencoded::byte_serialize(parts.uri.path().as_bytes()).collect();
    refusal.hint(format!(
        "Sign in at /_keyway/signin?rd={rd}, then come back."
    ))
}
