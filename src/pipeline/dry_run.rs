//! A request run through the same stages as live traffic, with the upstream call replaced by a
//! description of what would be sent (`keyway explain`, `keyway test`, the admin `POST
//! /explain`). Nothing here decides: `decide`'s stages and `prepare`'s injection do, and this
//! module only reads what they left in the request and the trace.

use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, header};

use super::answer::{self, Answer};
use super::authn::Identity;
use super::authn::source::Source;
use super::body::Body;
use super::canonical::Authority;
use super::headers::{Client, Peer};
use super::trace::{Stage, Trace};
use super::unauthenticated::Mode;
use super::{Prepared, admit, decide_route, prepare, upstream};
use crate::oidc::Conn;
use crate::pipeline::runtime::{Route, Runtime};

/// The request keyway would send upstream. Secret values are already replaced by
/// `<redacted:NAME>`; nothing in it may be printed otherwise.
#[derive(Clone, Debug)]
pub struct Described {
    pub upstream: Arc<str>,
    /// The upstream's origin (`builtin:echo` for the echo) with the path and query sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
}

pub enum Outcome {
    /// Allowed: what would go to the upstream, and who the request is.
    Forward {
        request: Described,
        identity: Option<Identity>,
    },
    /// keyway answers itself: a refusal (its reason is in the trace) or a sign-in redirect.
    Answer(Response<Body>),
    /// A step needs a service explain does not contact (a Redis session store, keyway's own
    /// endpoints); the sentence says what keyway would do.
    Undecided(String),
}

/// What explain learnt beside the outcome: the routes tried before the one that matched.
pub struct DryRun {
    pub trace: Trace,
    pub outcome: Outcome,
    /// In the router's order, up to the match; each with why it did not match.
    pub candidates: Vec<(Arc<Route>, Option<String>)>,
    pub conn: Conn,
}

/// Where explain runs: in the serving process, whose session stores are connected, or offline
/// (the CLI), which contacts no store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    Serving,
    Offline,
}

/// Runs `parts` as if it arrived from `peer` (over TLS when `tls`).
pub async fn dry_run(rt: &Runtime, mut parts: Parts, peer: IpAddr, tls: bool, at: Where) -> DryRun {
    // Explain shows when each step happened, and changes nothing (no session renewal).
    let mut trace = Trace::of_request(&parts, true);
    let conn = Conn {
        tls,
        trusted: rt.is_trusted(peer),
    };
    let mut candidates = Vec::new();
    let outcome = run(rt, &mut parts, peer, conn, at, &mut trace, &mut candidates).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(answer) => Outcome::Answer(answer::render(answer, &mut trace, rt.detail)),
    };
    trace.status = match &outcome {
        Outcome::Forward { .. } => 200,
        Outcome::Answer(response) => response.status().as_u16(),
        Outcome::Undecided(_) => 0,
    };
    DryRun {
        trace,
        outcome,
        candidates,
        conn,
    }
}

async fn run(
    rt: &Runtime,
    parts: &mut Parts,
    peer: IpAddr,
    conn: Conn,
    at: Where,
    trace: &mut Trace,
    candidates: &mut Vec<(Arc<Route>, Option<String>)>,
) -> Result<Outcome, Answer> {
    admit(rt, parts, conn, trace)?;
    if rt.endpoints.find(parts.uri.path()).is_some() {
        return Ok(Outcome::Undecided(format!(
            "{} is one of keyway's own endpoints (forward-auth, sign-in, sign-out, callback): keyway answers it itself; explain describes routed requests",
            parts.uri.path()
        )));
    }
    *candidates = rt
        .router
        .candidates(parts, trace.authority.as_ref().map(Authority::host));
    if let Some(why) = candidates
        .last()
        .filter(|(_, why)| why.is_none() && at == Where::Offline)
        .and_then(|(route, _)| needs_session_store(route, parts))
    {
        return Ok(Outcome::Undecided(why));
    }
    let upgrade = upstream::is_upgrade(&http::Request::from_parts(parts.clone(), ()));
    let mut decision = decide_route(rt, parts, upgrade, conn, Mode::Proxy, trace).await?;
    let identity = decision.identity.clone();
    let route = decision.route.clone();
    decision.cookies.clear();
    let client = Client::new(peer, conn.tls);
    let peer = Peer {
        client: &client,
        trusted: conn.trusted,
    };
    // The echo's answer and the pool are not used: nothing is sent.
    if let Prepared::Mux = prepare(decision, rt, parts, peer, trace) {
        trace.step(
            Stage::Upstream,
            "multiplexer route: keyway accepts the connection itself; each stream's path is routed and authorised on its own (explain that path)",
        );
    }
    trace.step(Stage::Upstream, "dry run: described, not sent");
    Ok(Outcome::Forward {
        request: describe(rt, &route, parts),
        identity,
    })
}

/// An OIDC session kept in Redis cannot be opened without Redis: offline, explain says what
/// keyway would do instead of contacting it (the admin `POST /explain` reads the session).
/// Cookie sessions open locally and are explained.
fn needs_session_store(route: &Route, parts: &Parts) -> Option<String> {
    let oidc = route.auth.iter().find_map(|a| a.as_oidc())?;
    if !oidc.sessions.is_redis() || oidc.find(parts).is_none() {
        return None;
    }
    Some(format!(
        "route {} matched and the request carries the session cookie {} of authenticator {}, whose sessions live in Redis: keyway would load the session from Redis and allow the request if it is there and unexpired (else 401 session.revoked or session.expired); `keyway explain` does not contact Redis (the admin listener's POST /explain does)",
        route.name,
        oidc.sessions.cookie_name(),
        oidc.name
    ))
}

/// The upstream request as `prepare` left it, with every secret value redacted.
fn describe(rt: &Runtime, route: &Route, parts: &Parts) -> Described {
    let upstream = &route.upstream;
    let secret_query = secret_query_names(rt);
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!(
        "{}{}",
        upstream.origin(),
        redact_query(path_and_query, &secret_query)
    );
    let secret_headers = secret_header_names(rt);
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if name == header::COOKIE {
                redact_cookies(value)
            } else if value.is_sensitive() || secret_headers.iter().any(|s| s == name.as_str()) {
                format!("<redacted:{name}>")
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    Described {
        upstream: upstream.name.clone(),
        url,
        headers,
    }
}

/// Header names whose values are secrets though keyway did not set them: the client's
/// credentials wherever an authenticator reads them. (Every value keyway sets that is a secret,
/// injected or passed on, is marked sensitive and redacted for that.)
pub fn secret_header_names(rt: &Runtime) -> Vec<String> {
    let mut names: Vec<String> = [
        "authorization",
        "proxy-authorization",
        "x-keyway-id-token",
        "x-keyway-cookie",
    ]
    .map(str::to_owned)
    .to_vec();
    for auth in &rt.authenticators {
        for source in auth.sources() {
            if let Source::Header { name, twin, .. } = source {
                names.push(name.as_str().to_owned());
                names.extend(twin.as_ref().map(|t| t.as_str().to_owned()));
            }
        }
    }
    names
}

/// The query parameters that carry credentials: every authenticator's `query:` sources and
/// `access_token`.
pub fn secret_query_names(rt: &Runtime) -> Vec<String> {
    let mut names = vec!["access_token".to_owned()];
    for auth in &rt.authenticators {
        names.extend(auth.sources().iter().filter_map(|s| match s {
            Source::Query { param, .. } => Some(param.clone()),
            _ => None,
        }));
    }
    names
}

/// `a=b; c=d` as `a=<redacted:a>; c=<redacted:c>`: cookie names tell what was sent, values
/// may be sessions or tokens.
pub fn redact_cookies(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .split(';')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            format!("{name}=<redacted:{name}>")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The query with the values of credential parameters redacted.
pub fn redact_query(path_and_query: &str, secret: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            // Compared decoded, as the authenticators read it: `api%5Fkey` is `api_key`.
            let decoded = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(n, _)| n);
            if decoded.is_some_and(|d| secret.iter().any(|s| *s == *d)) {
                format!("{name}=<redacted:{name}>")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// The names of a refusal's headers and cookies an explain may show (never a cookie value).
pub fn answer_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if name == header::SET_COOKIE {
                let cookie = String::from_utf8_lossy(value.as_bytes());
                let name = cookie.split('=').next().unwrap_or("").trim().to_owned();
                format!("{name}=<redacted:{name}>")
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_credentials_are_redacted() {
        let v = HeaderValue::from_static("sid=abc.def; theme=dark");
        assert_eq!(
            redact_cookies(&v),
            "sid=<redacted:sid>; theme=<redacted:theme>"
        );
        let q = redact_query("/x?jwt=eyJ.a.b&page=2", &["jwt".to_owned()]);
        assert_eq!(q, "/x?jwt=<redacted:jwt>&page=2");
        assert_eq!(redact_query("/x", &[]), "/x");
    }
}
