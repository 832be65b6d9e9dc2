//! One record per request of what every stage decided. The refusal body, the access log line and
//! the metrics are views of it; none of them recomputes a decision.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::canonical::Authority;
use super::refusal::Refusal;
use super::request_id::RequestId;

/// The stages of the pipeline, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Limits,
    /// The request's one authority and one path.
    Canonical,
    Router,
    Headers,
    Authn,
    /// Browser or API, and how an unauthenticated request is answered.
    Browser,
    Authz,
    Inject,
    Upstream,
    /// keyway's own endpoints (forward-auth, sign-in, sign-out, callback).
    Endpoint,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Limits => "limits",
            Stage::Canonical => "canonical",
            Stage::Router => "router",
            Stage::Headers => "headers",
            Stage::Authn => "authn",
            Stage::Browser => "browser",
            Stage::Authz => "authz",
            Stage::Inject => "inject",
            Stage::Upstream => "upstream",
            Stage::Endpoint => "endpoint",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub stage: Stage,
    pub note: Cow<'static, str>,
    /// Microseconds since the request started (0 unless the trace is `timed`).
    pub at_us: u64,
}

/// Why a client header was removed before forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalCause {
    /// `headers.underscores: drop`.
    UnderscorePolicy,
    /// Folds to a header keyway sets (`X_Forwarded_For` vs `X-Forwarded-For`).
    Collision,
    /// A client-sent identity header (`X-Keyway-*`, `X-Auth-Request-*`).
    IdentitySpoof,
    /// Hop-by-hop headers and those named in `Connection`.
    HopByHop,
    /// The credential keyway consumed (unless `forward_client_credentials`).
    ConsumedCredential,
    /// keyway's own session and sign-in cookies, which never reach an upstream.
    KeywayCookie,
}

impl RemovalCause {
    pub const ALL: [RemovalCause; 6] = [
        RemovalCause::UnderscorePolicy,
        RemovalCause::Collision,
        RemovalCause::IdentitySpoof,
        RemovalCause::HopByHop,
        RemovalCause::ConsumedCredential,
        RemovalCause::KeywayCookie,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RemovalCause::UnderscorePolicy => "underscore_policy",
            RemovalCause::Collision => "collision",
            RemovalCause::IdentitySpoof => "identity_spoof",
            RemovalCause::HopByHop => "hop_by_hop",
            RemovalCause::ConsumedCredential => "consumed_credential",
            RemovalCause::KeywayCookie => "keyway_cookie",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Removal {
    /// A header's name, or a credential source's label ("query parameter api_key").
    pub name: Arc<str>,
    pub cause: RemovalCause,
}

/// Who the request was authenticated as, and where its credential was; names only, never a
/// credential.
#[derive(Clone, Debug, Default)]
pub struct IdentitySummary {
    pub authenticator: Arc<str>,
    pub consumer: Option<Arc<str>>,
    pub subject: Arc<str>,
    /// The label of the first source the credential was found in ("header x-api-key").
    pub source: Arc<str>,
}

/// The request's path (never its query, which can hold credentials), shared with the request's
/// URI rather than copied.
#[derive(Clone, Default)]
pub struct RequestPath(Option<http::Uri>);

impl RequestPath {
    pub fn of(uri: &http::Uri) -> Self {
        RequestPath(Some(uri.clone()))
    }

    /// Empty when the request head could not be read.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("", http::Uri::path)
    }
}

impl std::fmt::Display for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[derive(Debug)]
pub struct Trace {
    pub request_id: RequestId,
    pub method: http::Method,
    pub path: RequestPath,
    started: Instant,
    pub route: Option<Arc<str>>,
    /// The authority routed on and sent upstream (with the client's spelling when it differed).
    pub authority: Option<Authority>,
    pub steps: Vec<Step>,
    pub removals: Vec<Removal>,
    pub identity: Option<IdentitySummary>,
    pub refusal: Option<Refusal>,
    pub status: u16,
    /// A dry run (explain): every step is timed (live traffic times only the whole request),
    /// and nothing is changed on the request's behalf — no session renewed, written or ended.
    pub dry_run: bool,
    /// The upstream that answered a forwarded request (its latency is `upstream_us`).
    pub upstream: Option<Arc<str>>,
    sent_us: u64,
}

impl Trace {
    pub fn start(request_id: RequestId, method: http::Method, path: RequestPath) -> Self {
        Trace {
            request_id,
            method,
            path,
            started: Instant::now(),
            route: None,
            authority: None,
            steps: Vec::with_capacity(8),
            removals: Vec::new(),
            identity: None,
            refusal: None,
            status: 0,
            dry_run: false,
            upstream: None,
            sent_us: 0,
        }
    }

    /// The trace of a request as it arrived: its X-Request-Id kept when well-formed, else a new
    /// one and a step saying so. `dry_run` (explain) times every step and changes nothing.
    pub fn of_request(parts: &http::request::Parts, dry_run: bool) -> Self {
        let (request_id, replaced) = super::request_id::of(&parts.headers);
        let mut trace = Trace::start(
            request_id,
            parts.method.clone(),
            RequestPath::of(&parts.uri),
        );
        trace.dry_run = dry_run;
        if replaced {
            trace.step(
                Stage::Limits,
                "replaced a malformed X-Request-Id (1-128 of A-Za-z0-9._:- expected)",
            );
        }
        trace
    }

    /// The request is about to be sent upstream.
    pub fn upstream_sending(&mut self) {
        self.sent_us = self.elapsed_us();
    }

    /// `upstream`'s response head arrived. The request is recorded as soon as the head is
    /// handed to the client, so the time then ends the upstream latency: no clock read here.
    pub fn upstream_answered(&mut self, upstream: &Arc<str>) {
        self.upstream = Some(upstream.clone());
    }

    /// Microseconds from sending the request upstream to its response head, given the
    /// request's `elapsed_us` when it is recorded; `None` without an upstream answer.
    pub fn upstream_us(&self, elapsed_us: u64) -> Option<u64> {
        self.upstream
            .as_ref()
            .map(|_| elapsed_us.saturating_sub(self.sent_us))
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn step(&mut self, stage: Stage, note: impl Into<Cow<'static, str>>) {
        let at_us = if self.dry_run { self.elapsed_us() } else { 0 };
        self.steps.push(Step {
            stage,
            note: note.into(),
            at_us,
        });
    }

    pub fn removed(&mut self, name: impl Into<Arc<str>>, cause: RemovalCause) {
        self.removals.push(Removal {
            name: name.into(),
            cause,
        });
    }

    /// Whether a header of this name (compared after folding `_` to `-`) was removed by policy.
    pub fn removal_of(&self, folded_name: &str) -> Option<&Removal> {
        self.removals
            .iter()
            .find(|r| super::headers::fold(&r.name) == folded_name)
    }

    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub fn reason_code(&self) -> &'static str {
        self.refusal.as_ref().map_or("", |r| r.reason.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_removal_cause_is_listed_at_its_own_index() {
        // Metrics index their per-cause counters with `cause as usize`.
        for (i, cause) in RemovalCause::ALL.into_iter().enumerate() {
            assert_eq!(cause as usize, i, "{cause:?}");
        }
    }

    #[test]
    fn a_request_path_never_shows_the_query() {
        let uri: http::Uri = "http://gw.example/tools/run?api_key=s3cret&x=1"
            .parse()
            .unwrap();
        let path = RequestPath::of(&uri);
        assert_eq!(path.to_string(), "/tools/run");
        assert_eq!(format!("{path:?}"), "\"/tools/run\"");
        assert_eq!(RequestPath::default().as_str(), "");
    }
}
