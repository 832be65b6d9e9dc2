//! keyway's own endpoints on the main listener, found on the canonical path before routing:
//! forward-auth (`/_keyway/auth`), sign-in (`/_keyway/signin`), sign-out (`/_keyway/signout`),
//! and each oidc authenticator's callback and back-channel logout paths. They always answer
//! themselves; nothing here is forwarded.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::answer::Answer;
use super::authn::Authenticator;
use super::browser;
use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::oidc::redirect::safe_target;
use crate::oidc::{Conn, OidcAuth, Site};
use crate::pipeline::runtime::Runtime;
use crate::reason::Reason;

pub const PREFIX: &str = "/_keyway/";
/// A back-channel logout form holds one token.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ForwardAuth,
    SignIn,
    SignOut,
    Callback,
    BackChannelLogout,
}

/// The endpoint a canonical path names, with its oidc authenticator (callback, back-channel).
pub struct Endpoint {
    pub kind: Kind,
    pub oidc: Option<Arc<Authenticator>>,
}

/// keyway's endpoint paths, built with the config.
#[derive(Debug, Default)]
pub struct Endpoints {
    /// Callback and back-channel paths, by path.
    oidc_paths: HashMap<String, (Kind, Arc<Authenticator>)>,
    /// Some of them lie outside `/_keyway/`: only then is every path looked up.
    outside_prefix: bool,
}

impl Endpoints {
    pub fn new(authenticators: &[Arc<Authenticator>]) -> Endpoints {
        let mut oidc_paths = HashMap::new();
        for auth in authenticators {
            if let Some(oidc) = auth.as_oidc() {
                oidc_paths.insert(oidc.redirect_path.clone(), (Kind::Callback, auth.clone()));
                oidc_paths.insert(
                    oidc.backchannel_logout_path.clone(),
                    (Kind::BackChannelLogout, auth.clone()),
                );
            }
        }
        let outside_prefix = oidc_paths.keys().any(|p| !p.starts_with(PREFIX));
        Endpoints {
            oidc_paths,
            outside_prefix,
        }
    }

    /// The endpoint at `path`; `None` for every path routes serve (one prefix check for most).
    pub fn find(&self, path: &str) -> Option<Endpoint> {
        if !self.outside_prefix && !path.starts_with(PREFIX) {
            return None;
        }
        if let Some((kind, auth)) = self.oidc_paths.get(path) {
            return Some(Endpoint {
                kind: *kind,
                oidc: Some(auth.clone()),
            });
        }
        let kind = match path {
            "/_keyway/auth" => Kind::ForwardAuth,
            "/_keyway/signin" => Kind::SignIn,
            "/_keyway/signout" => Kind::SignOut,
            _ => return None,
        };
        Some(Endpoint { kind, oidc: None })
    }
}

pub async fn serve(
    endpoint: Endpoint,
    rt: &Runtime,
    parts: &mut Parts,
    body: Incoming,
    conn: Conn,
    trace: &mut Trace,
) -> Answer {
    trace.route = Some(Arc::from(match endpoint.kind {
        Kind::ForwardAuth => "keyway:auth",
        Kind::SignIn => "keyway:signin",
        Kind::SignOut => "keyway:signout",
        Kind::Callback => "keyway:callback",
        Kind::BackChannelLogout => "keyway:backchannel-logout",
    }));
    trace.step(Stage::Endpoint, "keyway endpoint");
    let site = Site::of(conn, parts, trace);
    let oidc = endpoint.oidc.as_deref().and_then(Authenticator::as_oidc);
    match (endpoint.kind, oidc) {
        (Kind::ForwardAuth, _) => crate::forward_auth::check(rt, parts, conn, trace).await,
        (Kind::Callback, Some(oidc)) => {
            if parts.method != Method::GET {
                return method_not_allowed(trace);
            }
            oidc.callback(parts, &site, trace).await
        }
        (Kind::BackChannelLogout, Some(oidc)) => {
            if parts.method != Method::POST {
                return method_not_allowed(trace);
            }
            match Limited::new(body, MAX_FORM_BYTES).collect().await {
                Ok(collected) => oidc.back_channel_logout(&collected.to_bytes(), trace).await,
                Err(_) => Refusal::new(
                    Reason::OidcLogoutTokenInvalid,
                    "The back-channel logout body could not be read (more than 64 KiB, or malformed).",
                )
                .into(),
            }
        }
        (Kind::SignIn, _) => Box::pin(sign_in(rt, parts, conn, &site, trace)).await,
        (Kind::SignOut, _) => sign_out(rt, parts, &site, trace).await,
        _ => Refusal::new(Reason::RouteNone, "No such keyway endpoint.").into(),
    }
}

fn method_not_allowed(trace: &mut Trace) -> Answer {
    trace.step(Stage::Endpoint, "wrong method");
    Refusal::new(
        Reason::RouteNone,
        "This keyway endpoint does not answer this method.",
    )
    .into()
}

/// The `rd` query parameter.
fn rd(parts: &Parts) -> Option<String> {
    form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
}

/// The oidc authenticator a sign-in or sign-out is for: `?auth=NAME`, or the only one.
fn oidc_for<'r>(rt: &'r Runtime, parts: &Parts) -> Result<&'r OidcAuth, Refusal> {
    let wanted = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "auth")
            .map(|(_, v)| v.into_owned())
    });
    let mut all = rt.authenticators.iter().filter_map(|a| a.as_oidc());
    match wanted {
        Some(name) => rt
            .authenticators
            .iter()
            .filter_map(|a| a.as_oidc())
            .find(|o| *o.name == *name)
            .ok_or_else(|| {
                Refusal::new(
                    Reason::RouteNone,
                    format!("No oidc authenticator is named {name:?}."),
                )
            }),
        None => match (all.next(), all.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(Refusal::new(
                Reason::RouteNone,
                "No oidc authenticator is configured, so there is nothing to sign in to.",
            )),
            (Some(_), Some(_)) => Err(Refusal::new(
                Reason::RouteNone,
                "Several oidc authenticators are configured: name one with ?auth=NAME.",
            )),
        },
    }
}

/// `/_keyway/signin?rd=URL`: a browser navigation is sent to the provider and comes back to
/// `rd`. Anything else is answered 401: when a trusted proxy describes the original request
/// (nginx's `error_page 401 = /_keyway/signin`, Caddy's `handle_response`), with the exact
/// refusal forward-auth gave it, so a proxy that sends every 401 here never redirects an API
/// call and never hides why it was refused.
async fn sign_in(
    rt: &Runtime,
    parts: &Parts,
    conn: Conn,
    site: &Site,
    trace: &mut Trace,
) -> Answer {
    let oidc = match oidc_for(rt, parts) {
        Ok(o) => o,
        Err(r) => return r.into(),
    };
    let verdict = browser::classify(parts, false);
    trace.step(Stage::Browser, verdict.rule);
    let original = conn.trusted.then(|| original_uri(parts)).flatten();
    if !verdict.navigation {
        if original.is_some() {
            return crate::forward_auth::check(rt, parts, conn, trace).await;
        }
        return Refusal::new(
            Reason::CredentialsMissing,
            "Sign-in is for browsers: this request is not a navigation, so it is answered 401 instead of being sent to the provider.",
        )
        .hint("Send a credential the route accepts, or open the page in a browser.")
        .by(&oidc.name)
        .into();
    }
    let requested = rd(parts).or(original);
    let target = requested
        .as_deref()
        .and_then(|rd| safe_target(rd, &oidc.allowed_redirect_hosts));
    if requested.is_some() && target.is_none() {
        trace.step(
            Stage::Endpoint,
            "rd refused: neither a path on this site nor an allowed host; returning to /",
        );
    }
    oidc.start_sign_in(site, target.as_deref().unwrap_or("/"), trace)
        .await
}

/// The original request's path a trusted proxy names (`X-Original-URI`, `X-Forwarded-Uri`),
/// unless it is one of keyway's own pages.
fn original_uri(parts: &Parts) -> Option<String> {
    ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .find_map(|name| parts.headers.get(*name)?.to_str().ok())
        .filter(|uri| uri.starts_with('/') && !uri.starts_with(PREFIX))
        .map(str::to_owned)
}

/// `/_keyway/signout` (GET or POST): ends the session of every oidc authenticator whose cookie
/// the request carries, continuing at the provider of the first one signed in.
async fn sign_out(rt: &Runtime, parts: &Parts, site: &Site, trace: &mut Trace) -> Answer {
    if parts.method != Method::GET && parts.method != Method::POST {
        return method_not_allowed(trace);
    }
    let requested = rd(parts);
    let carried: Vec<&OidcAuth> = rt
        .authenticators
        .iter()
        .filter_map(|a| a.as_oidc())
        .filter(|o| o.find(parts).is_some())
        .collect();
    let Some((first, others)) = carried.split_first() else {
        // Nothing to end here: send the browser on (through the only provider, if any).
        return match oidc_for(rt, parts) {
            Ok(oidc) => {
                oidc.sign_out(parts, site, requested.as_deref(), trace)
                    .await
            }
            Err(_) => {
                let target = requested
                    .as_deref()
                    .and_then(|rd| safe_target(rd, &[]))
                    .unwrap_or_else(|| "/".to_owned());
                Answer::redirect(
                    http::HeaderValue::from_str(&target)
                        .unwrap_or(http::HeaderValue::from_static("/")),
                )
            }
        };
    };
    let mut cookies = Vec::new();
    for other in others {
        let answer = other.sign_out(parts, site, None, trace).await;
        cookies.extend(answer.cookies);
    }
    first
        .sign_out(parts, site, requested.as_deref(), trace)
        .await
        .with_cookies(cookies)
}
