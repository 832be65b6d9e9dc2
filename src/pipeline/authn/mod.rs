//! The authentication stage and its chain rule (SPEC §5): the first authenticator that finds its
//! credential decides; a bad credential is never masked by falling through to the next.

pub mod api_key;
pub mod jwt;
pub mod source;

use std::fmt::Write as _;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use self::source::{Lookup, Source, lookup};
use super::headers::fold;
use super::refusal::Refusal;
use super::trace::{IdentitySummary, RemovalCause, Stage, Trace};
use crate::oidc::{Conn, Site};
use crate::pipeline::runtime::{Consumer, Route};
use crate::reason::Reason;
use crate::secret::Secret;

/// Who a request is, as established by one authenticator.
#[derive(Clone, Debug)]
pub struct Identity {
    pub subject: Arc<str>,
    pub consumer: Option<Arc<Consumer>>,
    pub groups: Arc<[String]>,
    pub authenticator: Arc<str>,
    /// `authenticator` as the X-Keyway-Authenticator value, built with the config.
    pub authenticator_header: Option<HeaderValue>,
    /// Verified token claims (JWT), for `allow.claims` and explain.
    pub claims: Option<Arc<Map<String, Value>>>,
    /// Headers from `claims_to_headers`; they overwrite client-sent headers of the same name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// When the credential stops being valid (seconds since the epoch): a token's `exp` plus
    /// the leeway, a session's end. A WebSocket opened with it is closed then.
    pub valid_until: Option<u64>,
}

/// An authenticator's name as the X-Keyway-Authenticator value (`None` if it cannot be one).
pub fn name_header(name: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(name).ok()
}

impl Identity {
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| &*c.name)
    }

    /// The `email` claim, when the credential carried one.
    pub fn email(&self) -> Option<&str> {
        self.claims
            .as_ref()?
            .get("email")?
            .as_str()
            .filter(|e| !e.is_empty())
    }

    /// What the trace keeps of this identity, established from a credential in `source`.
    pub fn summary(&self, source: &Source) -> IdentitySummary {
        IdentitySummary {
            authenticator: self.authenticator.clone(),
            consumer: self.consumer.as_ref().map(|c| c.name.clone()),
            subject: self.subject.clone(),
            source: source.label().clone(),
        }
    }
}

/// A request the route's authenticators accepted, with the cookies to set on its response (a
/// renewed session).
#[derive(Debug)]
pub struct Authenticated {
    pub identity: Identity,
    pub cookies: Vec<HeaderValue>,
}

/// A request the authenticators refused, with the cookies to set on the answer (clearing a
/// dead session).
#[derive(Debug)]
pub struct Unauthenticated {
    pub refusal: Refusal,
    pub cookies: Vec<HeaderValue>,
}

impl From<Refusal> for Unauthenticated {
    fn from(refusal: Refusal) -> Self {
        Unauthenticated {
            refusal,
            cookies: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub enum Authenticator {
    ApiKey(api_key::ApiKeyAuth),
    Jwt(jwt::JwtAuth),
    // Boxed: an oidc authenticator holds its provider, sessions and flows.
    Oidc(Box<crate::oidc::OidcAuth>),
}

impl Authenticator {
    pub fn name(&self) -> &Arc<str> {
        match self {
            Authenticator::ApiKey(a) => &a.name,
            Authenticator::Jwt(a) => a.name(),
            Authenticator::Oidc(a) => &a.name,
        }
    }

    pub fn sources(&self) -> &[Source] {
        match self {
            Authenticator::ApiKey(a) => &a.sources,
            Authenticator::Jwt(a) => a.sources(),
            Authenticator::Oidc(a) => a.sources(),
        }
    }

    async fn verify(&self, credential: Secret<&str>) -> Result<Identity, Refusal> {
        match self {
            Authenticator::ApiKey(a) => a.verify(credential),
            // Boxed: a key fetch makes this future large, and every request's future would
            // otherwise carry that size (an API-key or public route never needs it).
            Authenticator::Jwt(a) => Box::pin(a.verify(credential)).await,
            // Sessions are looked up by `authenticate_session`, never as a bare credential.
            Authenticator::Oidc(a) => Err(Refusal::new(
                Reason::SessionInvalid,
                "A session cookie is checked as a session.",
            )
            .by(&a.name)),
        }
    }

    pub fn as_oidc(&self) -> Option<&crate::oidc::OidcAuth> {
        match self {
            Authenticator::Oidc(a) => Some(a),
            _ => None,
        }
    }

    /// Header names this authenticator sets on upstream requests (for the collision guard).
    pub fn header_names(&self) -> Vec<String> {
        match self {
            Authenticator::ApiKey(_) => Vec::new(),
            Authenticator::Jwt(a) => a.header_names(),
            Authenticator::Oidc(a) => a
                .claims_to_headers
                .iter()
                .map(|(_, h)| h.as_str().to_owned())
                .collect(),
        }
    }

    /// Whether this authenticator is ready to serve (e.g. its JWKS was fetched once).
    pub fn is_ready(&self) -> bool {
        match self {
            Authenticator::ApiKey(_) => true,
            Authenticator::Jwt(a) => a.is_ready(),
            Authenticator::Oidc(a) => a.is_ready(),
        }
    }

    /// Starts background work (a JWKS refresher); call inside the tokio runtime.
    pub fn start(&self) {
        match self {
            Authenticator::Jwt(a) => a.start(),
            Authenticator::Oidc(a) => a.start(),
            Authenticator::ApiKey(_) => {}
        }
    }

    /// Why it is not ready, for `/readyz`.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        let why = match self {
            Authenticator::Jwt(a) => a.last_error(),
            Authenticator::Oidc(a) => a.provider.last_error(),
            Authenticator::ApiKey(_) => None,
        };
        Some(why.unwrap_or_else(|| "not loaded yet".to_owned()))
    }
}

/// The authentication stage. `Ok(None)` is a public route (or a CORS preflight the route
/// passes).
pub async fn authenticate(
    route: &Route,
    parts: &mut Parts,
    conn: Conn,
    trace: &mut Trace,
) -> Result<Option<Authenticated>, Unauthenticated> {
    if route.auth.is_empty() {
        trace.step(Stage::Authn, "public route: no authentication");
        return Ok(None);
    }
    if route.preflight_pass && is_preflight(parts) {
        trace.step(
            Stage::Authn,
            "CORS preflight passed without authentication (preflight: pass)",
        );
        return Ok(None);
    }
    for (i, auth) in route.auth.iter().enumerate() {
        if let Authenticator::Oidc(oidc) = &**auth {
            let Some(read) = oidc.find(parts) else {
                trace.step(Stage::Authn, format!("{}: no session cookie", auth.name()));
                continue;
            };
            let site = Site::of(conn, parts, trace);
            // Boxed, as the JWT verification: a public or API-key route's future never carries
            // the session store's and the provider's state.
            let authenticated = Box::pin(oidc.authenticate(read, &site, trace)).await?;
            trace.identity = Some(authenticated.identity.summary(&oidc.source));
            return Ok(Some(authenticated));
        }
        let (credential, mut sources) = match lookup(auth.sources(), parts) {
            Lookup::None => {
                trace.step(Stage::Authn, format!("{}: no credential", auth.name()));
                continue;
            }
            Lookup::Conflict(a, b) => return Err(conflicting(auth, a, b, trace).into()),
            Lookup::Found {
                credential,
                sources,
            } => (credential, sources),
        };
        let identity = match auth.verify(credential.as_deref()).await {
            Ok(identity) => identity,
            Err(refusal) => {
                trace.step(
                    Stage::Authn,
                    format!("{}: refused ({})", auth.name(), refusal.reason.code()),
                );
                return Err(refusal.by(auth.name()).token_presented().into());
            }
        };
        // A different credential for a later authenticator would be ignored and then forwarded
        // upstream: refuse the ambiguity. (A failed verification above keeps its own reason.)
        // The same value twice is fine, and is consumed from every place it was sent.
        for later in &route.auth[i + 1..] {
            if later.as_oidc().is_some() {
                // A session cookie beside a token is not a second credential: the token decides.
                continue;
            }
            match lookup(later.sources(), parts) {
                Lookup::None => {}
                Lookup::Conflict(a, b) => return Err(conflicting(later, a, b, trace).into()),
                Lookup::Found {
                    credential: other,
                    sources: where_found,
                } => {
                    if other.expose() != credential.expose() {
                        return Err(
                            conflicting(auth, sources.first(), where_found.first(), trace).into(),
                        );
                    }
                    for source in where_found.iter() {
                        sources.add(source);
                    }
                }
            }
        }
        // The step says what was decided; who and from where are in `trace.identity`.
        trace.step(Stage::Authn, "authenticated");
        trace.identity = Some(identity.summary(sources.first()));
        if !route.forward_client_credentials {
            for source in sources.iter() {
                source.remove_from(parts);
                trace.removed(source.label().clone(), RemovalCause::ConsumedCredential);
            }
        }
        return Ok(Some(Authenticated {
            identity,
            cookies: Vec::new(),
        }));
    }
    Err(missing(route, parts, trace).into())
}

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method` (browsers send no
/// credentials with one).
fn is_preflight(parts: &Parts) -> bool {
    parts.method == http::Method::OPTIONS
        && parts.headers.contains_key("access-control-request-method")
}

/// Whether any source of the route's authenticators (other than sessions) holds a credential:
/// a request that presented one, valid or not, is an API call, never redirected to sign in.
pub fn token_presented(route: &Route, parts: &Parts) -> bool {
    route
        .auth
        .iter()
        .filter(|a| a.as_oidc().is_none())
        .any(|a| !matches!(lookup(a.sources(), parts), Lookup::None))
}

fn conflicting(auth: &Authenticator, a: &Source, b: &Source, trace: &mut Trace) -> Refusal {
    trace.step(
        Stage::Authn,
        format!("{}: conflicting credentials", auth.name()),
    );
    Refusal::new(
        Reason::CredentialsConflicting,
        format!("The request carries different credentials in {a} and in {b}."),
    )
    .hint("Send one credential, in one place.")
    .by(auth.name())
    .token_presented()
}

/// `credentials.missing`, naming every place searched and any header the policy removed.
fn missing(route: &Route, parts: &Parts, trace: &Trace) -> Refusal {
    let mut detail = String::from("No credential found. Searched: ");
    let mut removed = String::new();
    let mut underscore_header = None;
    let mut bearer = false;
    for (i, auth) in route.auth.iter().enumerate() {
        for (j, source) in auth.sources().iter().enumerate() {
            if i + j > 0 {
                detail.push_str("; ");
            }
            let _ = write!(detail, "{source} [authenticator {}]", auth.name());
            if let Source::Header { name, .. } = source {
                bearer |= name == http::header::AUTHORIZATION;
                if name.as_str().contains('_') {
                    underscore_header = Some(name.clone());
                }
                if let Some(r) = trace.removal_of(&fold(name.as_str())) {
                    let why = match r.cause {
                        RemovalCause::UnderscorePolicy => "headers.underscores: drop",
                        RemovalCause::Collision => "the collision guard",
                        _ => "header policy",
                    };
                    let _ = write!(
                        removed,
                        " A header {:?} was present but removed by {why}.",
                        r.name
                    );
                }
            }
        }
    }
    detail.push('.');
    detail.push_str(&removed);
    let mut refusal = Refusal::new(Reason::CredentialsMissing, detail);
    if let Some(auth) = route.auth.first() {
        refusal.authenticator = Some(auth.name().clone());
    }
    // The headers stage keeps `Upgrade` only on a WebSocket handshake.
    let handshake = parts.headers.contains_key(http::header::UPGRADE);
    match underscore_header {
        _ if bearer && handshake => refusal.hint(
            "A browser's WebSocket cannot set Authorization: offer the token as the subprotocol base64url.bearer.authorization.k8s.io.<token in unpadded base64url>.",
        ),
        Some(name) => refusal.hint(format!(
            "Send the credential in {name}; if a proxy in front of keyway drops header names with '_' (nginx does by default), send {} instead.",
            name.as_str().replace('_', "-")
        )),
        None => refusal.hint("Send a credential in one of the places listed."),
    }
}
