//! The explain report: what the dry run's trace, outcome and router candidates say, in one
//! serialisable value. Only names, reasons and redacted values go in: never a token, key or
//! cookie value.

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use http::request::Parts;
use serde::Serialize;

use super::Asked;
use crate::pipeline::authn::Authenticator;
use crate::pipeline::authn::source::{Lookup, Source, lookup};
use crate::pipeline::dry_run::{self, DryRun, Outcome};
use crate::pipeline::router::{HostMatch, Matcher, PathMatch};
use crate::pipeline::runtime::{Route, Runtime};
use crate::pipeline::trace::Stage;
use crate::secret::Secret;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub request: RequestSeen,
    /// `allow`, `refuse`, `redirect` or `undecided`.
    pub decision: &'static str,
    /// The status keyway would answer (200 for a forwarded request, 0 when undecided).
    pub status: u16,
    pub route: Option<String>,
    /// How the matched route matches ("path_prefix /api/").
    pub route_match: Option<String>,
    /// The routes tried before the match (more specific ones), and why each lost.
    pub candidates: Vec<Candidate>,
    pub steps: Vec<StepSeen>,
    /// Headers the header policy removed, and why.
    pub removals: Vec<RemovalSeen>,
    pub authenticators: Vec<AuthSeen>,
    /// The route's `allow` rule, if any.
    pub allow: Option<String>,
    pub identity: Option<IdentitySeen>,
    pub refusal: Option<RefusalSeen>,
    pub redirect: Option<String>,
    pub upstream: Option<UpstreamSeen>,
    /// Why explain stopped short of a decision.
    pub undecided: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RequestSeen {
    pub method: String,
    pub url: String,
    /// Header names only: values may be credentials.
    pub headers: Vec<String>,
    pub cookies: Vec<String>,
    pub peer: IpAddr,
    pub trusted_peer: bool,
    pub tls: bool,
    pub request_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub route: String,
    pub matcher: String,
    pub why: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepSeen {
    pub stage: &'static str,
    pub note: String,
    pub at_us: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RemovalSeen {
    pub name: String,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuthSeen {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Every place it looks, in order.
    pub looked_in: Vec<String>,
    /// Where it found a credential (never the credential).
    pub found: Option<String>,
    /// The names of the claims of a JWT it found, read without verifying (never the values).
    pub claims: Vec<String>,
    pub decided: String,
    pub jwks: Option<JwksSeen>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JwksSeen {
    pub url: String,
    /// `fetched`, `not fetched` or `failed: …`.
    pub state: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentitySeen {
    pub subject: String,
    pub consumer: Option<String>,
    pub groups: Vec<String>,
    pub authenticator: String,
    pub source: Option<String>,
    /// Claim names of a verified token.
    pub claims: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RefusalSeen {
    pub reason: &'static str,
    pub detail: String,
    pub hint: Option<String>,
    pub authenticator: Option<String>,
    /// The answer's headers (`WWW-Authenticate`, `X-Keyway-Reason`; cookie values redacted).
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpstreamSeen {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl Report {
    pub fn allowed(&self) -> bool {
        self.decision == "allow"
    }
}

pub fn build(rt: &Runtime, asked: &Asked, original: &Parts, peer: IpAddr, run: DryRun) -> Report {
    let DryRun {
        trace,
        outcome,
        candidates,
        conn,
    } = run;
    // The route the router stage recorded; when explain stopped before the deciding stages
    // (a Redis session), the one the candidates matched.
    let route = trace
        .route
        .as_deref()
        .and_then(|name| {
            rt.router
                .routes()
                .iter()
                .find(|r| &*r.name == name)
                .cloned()
        })
        .or_else(|| {
            candidates
                .last()
                .filter(|(_, why)| why.is_none())
                .map(|(r, _)| r.clone())
        });
    let secret_query = dry_run::secret_query_names(rt);
    let request = RequestSeen {
        method: original.method.to_string(),
        url: dry_run::redact_query(&asked.url, &secret_query),
        headers: asked.headers.iter().map(|(n, _)| n.clone()).collect(),
        cookies: asked.cookies.iter().map(|(n, _)| n.clone()).collect(),
        peer,
        trusted_peer: conn.trusted,
        tls: conn.tls,
        request_id: trace.request_id.as_str().to_owned(),
    };
    let lost = candidates
        .iter()
        .filter_map(|(r, why)| {
            why.as_ref().map(|why| Candidate {
                route: r.name.to_string(),
                matcher: describe_matcher(&r.matcher),
                why: why.clone(),
            })
        })
        .collect();
    let steps = trace
        .steps
        .iter()
        .map(|s| StepSeen {
            stage: s.stage.as_str(),
            note: s.note.to_string(),
            at_us: s.at_us,
        })
        .collect();
    let removals = trace
        .removals
        .iter()
        .map(|r| RemovalSeen {
            name: r.name.to_string(),
            cause: r.cause.as_str(),
        })
        .collect();
    let refusal = trace.refusal.as_ref();
    let mut report = Report {
        request,
        decision: "undecided",
        status: trace.status,
        route: route.as_ref().map(|r| r.name.to_string()),
        route_match: route.as_ref().map(|r| describe_matcher(&r.matcher)),
        candidates: lost,
        steps,
        removals,
        authenticators: Vec::new(),
        allow: route
            .as_ref()
            .and_then(|r| r.allow.as_ref())
            .map(|a| a.describe()),
        identity: None,
        refusal: None,
        redirect: None,
        upstream: None,
        undecided: None,
    };
    if let Some(route) = &route {
        let decided_by = trace.identity.as_ref().map(|i| i.authenticator.clone());
        let refused_by = refusal.and_then(|r| r.authenticator.clone());
        report.authenticators = authenticators(route, original, decided_by, refused_by, refusal);
    }
    match outcome {
        Outcome::Forward { request, identity } => {
            report.decision = "allow";
            report.identity = identity.map(|id| IdentitySeen {
                subject: id.subject.to_string(),
                consumer: id.consumer_name().map(str::to_owned),
                groups: id.groups.to_vec(),
                authenticator: id.authenticator.to_string(),
                source: trace.identity.as_ref().map(|s| s.source.to_string()),
                claims: id
                    .claims
                    .as_ref()
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default(),
            });
            report.upstream = Some(UpstreamSeen {
                name: request.upstream.to_string(),
                url: request.url,
                headers: request.headers,
            });
        }
        Outcome::Answer(response) => {
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            report.decision = if location.is_some() {
                "redirect"
            } else {
                "refuse"
            };
            report.redirect = location;
            report.refusal = refusal.map(|r| RefusalSeen {
                reason: r.reason.code(),
                detail: r.detail.clone(),
                hint: r.hint.clone(),
                authenticator: r.authenticator.as_deref().map(str::to_owned),
                headers: dry_run::answer_headers(response.headers())
                    .into_iter()
                    .filter(|(n, _)| n != "content-type")
                    .collect(),
            });
        }
        Outcome::Undecided(why) => report.undecided = Some(why),
    }
    report
}

/// Each of the route's authenticators: where it looked in the request as sent, what it found,
/// and what the chain decided about it.
fn authenticators(
    route: &Route,
    original: &Parts,
    decided_by: Option<Arc<str>>,
    refused_by: Option<Arc<str>>,
    refusal: Option<&crate::pipeline::refusal::Refusal>,
) -> Vec<AuthSeen> {
    let mut out = Vec::new();
    let mut settled = false;
    for auth in &route.auth {
        let name = auth.name();
        let (kind, looked_in) = match &**auth {
            Authenticator::ApiKey(a) => ("api_key", labels(&a.sources)),
            Authenticator::Jwt(a) => ("jwt", labels(a.sources())),
            Authenticator::Oidc(a) => ("oidc", labels(a.sources())),
        };
        let (found, credential) = match &**auth {
            Authenticator::Oidc(o) => (o.find(original).map(|_| o.source.to_string()), None),
            _ => match lookup(auth.sources(), original) {
                Lookup::None => (None, None),
                Lookup::Conflict(a, b) => {
                    (Some(format!("different credentials in {a} and {b}")), None)
                }
                Lookup::Found {
                    credential,
                    sources,
                } => (
                    Some(sources.first().to_string()),
                    Some(Secret::new(credential.expose().to_string())),
                ),
            },
        };
        let claims = match (&**auth, &credential) {
            (Authenticator::Jwt(_), Some(token)) => claim_names(token.expose()),
            _ => Vec::new(),
        };
        drop(credential);
        let decided = if settled {
            "not reached: an earlier authenticator decided".to_owned()
        } else if decided_by.as_ref() == Some(name) {
            settled = true;
            "authenticated".to_owned()
        } else if refused_by.as_ref() == Some(name) {
            // The trace names who refused; the credential may have come from the handshake
            // (a WebSocket bearer subprotocol), which the request as sent does not show.
            settled = true;
            match refusal {
                Some(r) => format!("refused: {}", r.reason.code()),
                None => "refused".to_owned(),
            }
        } else if found.is_none() {
            "no credential: the next authenticator looks".to_owned()
        } else {
            "found a credential; the request was decided before it was checked".to_owned()
        };
        let jwks = match &**auth {
            Authenticator::Jwt(j) => j.jwks().map(|jwks| JwksSeen {
                url: jwks.label.clone(),
                state: match (jwks.current(), jwks.last_error()) {
                    (Some(set), _) => format!("fetched ({} keys)", set.keys.len()),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "not fetched: a token would fetch it".to_owned(),
                },
            }),
            _ => None,
        };
        out.push(AuthSeen {
            name: name.to_string(),
            kind,
            looked_in,
            found,
            claims,
            decided,
            jwks,
        });
    }
    out
}

fn labels(sources: &[Source]) -> Vec<String> {
    sources.iter().map(ToString::to_string).collect()
}

/// The claim names of a JWT's payload, decoded without verification: explain shows names, the
/// verdict comes from the authenticator.
fn claim_names(token: &str) -> Vec<String> {
    crate::pipeline::authn::jwt::token::unverified_claim_names(token).unwrap_or_default()
}

/// A route's match rule as the config says it.
pub fn describe_matcher(m: &Matcher) -> String {
    let mut parts = Vec::new();
    match &m.host {
        HostMatch::Any => {}
        HostMatch::Exact(h) => parts.push(format!("host {h}")),
        HostMatch::Suffix(s) => parts.push(format!("host *{s}")),
    }
    parts.push(match &m.path {
        PathMatch::Exact(p) => format!("path {p}"),
        PathMatch::Prefix(p) => format!("path_prefix {p}"),
    });
    if !m.methods.is_empty() {
        let names: Vec<&str> = m.methods.iter().map(http::Method::as_str).collect();
        parts.push(format!("methods {}", names.join(",")));
    }
    for (name, value) in &m.headers {
        parts.push(format!(
            "header {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    parts.join(", ")
}

/// The steps of one stage, for the text view.
pub fn notes_of(report: &Report, stage: Stage) -> impl Iterator<Item = &StepSeen> {
    report
        .steps
        .iter()
        .filter(move |s| s.stage == stage.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_never_carry_values() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","key":"s3cret-value"}"#);
        let names = claim_names(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig"));
        assert_eq!(names, vec!["key".to_owned(), "sub".to_owned()]);
        assert!(claim_names("not-a-token").is_empty());
    }
}
