//! Pitfall warnings: configs that load but are likely to lose a credential (SPEC §1 F1, F2,
//! F4) or to expose what they mean to protect. Each has a stable code, its place in the file and
//! a fix.

use std::sync::Arc;

use super::Diagnostics;
use crate::config::Warning;
use crate::config::file::{FileConfig, OnUnauthenticated, UnderscorePolicy};
use crate::pipeline::authn::Authenticator;
use crate::pipeline::router::{HostMatch, Matcher, PathMatch, path_has_prefix};
use crate::pipeline::runtime::{Route, Runtime};

pub fn check(file: &FileConfig, d: &mut Diagnostics) {
    for (name, spanned) in &file.authenticators {
        let a = &spanned.value;
        let headers = a.header.iter().map(|h| h.0.as_str()).chain(
            a.from
                .iter()
                .flatten()
                .filter_map(|s| s.0.strip_prefix("header:")),
        );
        for header in headers.filter(|h| h.contains('_')) {
            let twin = header.replace('_', "-");
            d.warn(
                "credential_header_underscore",
                format!(
                    "authenticator {name} reads header {header}: proxies in front of keyway may drop names with '_' \
                     (nginx: underscores_in_headers off by default; ingress-nginx: enable-underscores-in-headers false by default), \
                     and the request then arrives without its credential; keyway also accepts {twin}, which survives them"
                ),
            )
            .at(Some(&spanned.referenced), format!("authenticators.{name}"))
            .fix(format!(
                "have clients send {twin}; or, in front of keyway, set `underscores_in_headers on;` (nginx) or `enable-underscores-in-headers: \"true\"` (ingress-nginx ConfigMap)"
            ));
            let allowed = file
                .headers
                .allow
                .iter()
                .any(|a| a.0.eq_ignore_ascii_case(header));
            if matches!(
                file.headers.underscores,
                UnderscorePolicy::Drop | UnderscorePolicy::Reject
            ) && !allowed
            {
                d.warn(
                    "credential_header_removed_by_policy",
                    format!(
                        "headers.underscores is {} and {header} is not in headers.allow: keyway itself will refuse or drop the credential header of authenticator {name}",
                        if file.headers.underscores == UnderscorePolicy::Drop { "drop" } else { "reject" }
                    ),
                )
                .at(Some(&spanned.referenced), format!("authenticators.{name}"))
                .fix(format!("add {header} to headers.allow"));
            }
        }
    }
    if let Some(admin) = &file.admin {
        let loopback = admin
            .listen
            .value
            .0
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let has_token = admin
            .token
            .as_ref()
            .is_some_and(|t| !t.0.expose().is_empty());
        if !loopback && !has_token {
            d.warn(
                "admin_without_token",
                "the admin listener is not on loopback and admin.token is not set: anyone who reaches it can reload the config, read recent decisions and run explain",
            )
            .at(Some(&admin.listen.referenced), "admin.listen")
            .fix("set admin.token (e.g. ${KEYWAY_ADMIN_TOKEN}), or listen on 127.0.0.1");
        }
    }
}

/// Route pitfalls, on the compiled matchers (normalised paths and hosts).
pub fn routes(file: &FileConfig, routes: &[Arc<Route>], d: &mut Diagnostics) {
    let place = |name: &str| {
        file.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.value.name.value.0 == name)
            .map(|(i, r)| (format!("routes[{i}]"), &r.referenced))
    };
    for route in routes {
        if route.on_unauthenticated == OnUnauthenticated::Redirect
            && let Some(api) = api_segment(&route.matcher.path)
        {
            let (path, at) = place(&route.name).unzip();
            d.warn(
                "redirect_on_api_route",
                format!(
                    "route {} answers every unauthenticated request with a redirect to sign in, and its path ({}) looks like an API (\"{api}\"): API clients would get a 302 to a login page instead of 401 (F4)",
                    route.name,
                    path_text(&route.matcher.path)
                ),
            )
            .at(at, path.map(|p| format!("{p}.on_unauthenticated")).unwrap_or_default())
            .fix("use on_unauthenticated: auto (redirects only browser navigations; API calls get 401) or status");
        }
    }
    for route in routes {
        // A route declared for WebSocket (a `websocket:` block or the multiplexer).
        let declared = file
            .routes
            .iter()
            .find(|r| r.value.name.value.0 == *route.name)
            .is_some_and(|r| r.value.websocket.is_some());
        if !(declared || route.mux.is_some()) || !route.websocket.allowed_origins.is_empty() {
            continue;
        }
        let by_cookie = route.auth.iter().find(|a| {
            a.as_oidc().is_some()
                || a.sources()
                    .iter()
                    .any(|s| matches!(s, crate::pipeline::authn::source::Source::Cookie { .. }))
        });
        if let Some(authenticator) = by_cookie {
            let (path, at) = place(&route.name).unzip();
            d.warn(
                "websocket_cookie_without_origins",
                format!(
                    "route {} takes WebSocket handshakes authenticated by a cookie (authenticator {}) and lists no websocket.allowed_origins: \
                     a browser sends the cookie whichever page opens the socket, so only the Origin check stands between it and cross-site \
                     WebSocket hijacking; keyway's default allows the request's own host alone, which refuses (403 websocket.origin_denied) \
                     pages served from another origin, and every page when a proxy in front rewrites Host",
                    route.name,
                    authenticator.name()
                ),
            )
            .at(at, path.map(|p| format!("{p}.websocket")).unwrap_or_default())
            .fix("list the origins of the pages that open it: websocket: {allowed_origins: [\"https://app.example.com\"]}");
        }
    }
    for public in routes.iter().filter(|r| r.auth.is_empty()) {
        // An exact path is one deliberate endpoint (a health check); a prefix exempts a subtree.
        if !matches!(public.matcher.path, PathMatch::Prefix(_)) {
            continue;
        }
        let shadowed = routes
            .iter()
            .filter(|r| !r.auth.is_empty())
            .find(|protected| shadows(&public.matcher, &protected.matcher));
        if let Some(protected) = shadowed {
            let (path, at) = place(&public.name).unzip();
            d.warn(
                "public_route_shadows_protected",
                format!(
                    "public route {} ({}) takes part of protected route {} ({}): requests under {} skip authentication",
                    public.name,
                    path_text(&public.matcher.path),
                    protected.name,
                    path_text(&protected.matcher.path),
                    path_text(&public.matcher.path),
                ),
            )
            .at(at, path.unwrap_or_default())
            .fix(format!(
                "if only some endpoints are public, list them as exact paths (path: /x/health); otherwise give route {} auth, or move it out of {}",
                public.name,
                path_text(&protected.matcher.path)
            ));
        }
    }
}

fn path_text(path: &PathMatch) -> String {
    match path {
        PathMatch::Exact(p) => format!("path {p}"),
        PathMatch::Prefix(p) => format!("path_prefix {p}"),
    }
}

/// The segment that makes a path look like an API: `api`, `graphql`, or a version (`v1`).
fn api_segment(path: &PathMatch) -> Option<String> {
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = path;
    p.split('/')
        .find(|seg| {
            let s = seg.to_ascii_lowercase();
            s == "api"
                || s == "graphql"
                || (s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// Every request `public` accepts, `protected` accepts too, and `public` is the more specific:
/// so it takes those requests, without authentication.
fn shadows(public: &Matcher, protected: &Matcher) -> bool {
    let host = match (&protected.host, &public.host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(q), HostMatch::Exact(p)) => q.eq_ignore_ascii_case(p),
        // `*.example.com` is stored as `.example.com`: a host under it ends with it.
        (HostMatch::Suffix(q), HostMatch::Exact(p) | HostMatch::Suffix(p)) => {
            p.to_ascii_lowercase().ends_with(&q.to_ascii_lowercase())
        }
        _ => false,
    };
    let path = match (&protected.path, &public.path) {
        (PathMatch::Prefix(q), PathMatch::Prefix(p)) => {
            let base = p.trim_end_matches('/');
            path_has_prefix(if base.is_empty() { "/" } else { base }, q) && path_has_prefix(p, q)
        }
        _ => false,
    };
    let methods = protected.methods.is_empty()
        || !public.methods.is_empty()
            && public.methods.iter().all(|m| protected.methods.contains(m));
    let headers = protected.headers.iter().all(|h| public.headers.contains(h));
    host && path && methods && headers && public.specificity() > protected.specificity()
}

/// `check --token FILE`: the token a client will send, against every route whose JWT
/// authenticator would read it (F2). The claims each authenticator requires come from the
/// compiled authenticator, the places from the file. Names only: the token's values are never
/// printed.
pub fn token(file: &FileConfig, rt: &Runtime, token: &str) -> Result<Vec<Warning>, String> {
    let claims = crate::pipeline::authn::jwt::token::unverified_claim_names(token).ok_or(
        "the --token file does not hold a JWT (header.payload.signature with a JSON payload)",
    )?;
    let mut d = Diagnostics::default();
    let present = if claims.is_empty() {
        "none".to_owned()
    } else {
        claims.join(", ")
    };
    for (i, spanned) in file.routes.iter().enumerate() {
        let name = &spanned.value.name.value.0;
        let Some(route) = rt.router.routes().iter().find(|r| *r.name == **name) else {
            continue;
        };
        for auth in &route.auth {
            let Authenticator::Jwt(jwt) = &**auth else {
                continue;
            };
            for required in jwt.required_claims() {
                let claim = required.claim;
                if claims.iter().any(|c| c == claim) {
                    continue;
                }
                let code = if required.setting == "consumer_claim" {
                    "token_lacks_consumer_claim"
                } else {
                    "token_lacks_identity_claim"
                };
                d.warn(
                    code,
                    format!(
                        "route {name}: the token has no claim \"{claim}\", which authenticator {} reads {}, so it would be refused ({}); claims present: {present}",
                        jwt.name(),
                        required.role,
                        required.reason.code(),
                    ),
                )
                .at(Some(&spanned.referenced), format!("routes[{i}]"))
                .fix(format!(
                    "set {}: <one of the token's claims> on authenticator {}, or have the token's issuer add \"{claim}\"",
                    required.setting, jwt.name()
                ));
            }
        }
    }
    Ok(d.warnings)
}
