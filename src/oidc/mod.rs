//! The `oidc` authenticator (SPEC §9): browser sign-in with the authorization code flow and
//! PKCE, sessions (sealed cookie or Redis), refresh before expiry, sign-out at the provider and
//! back-channel logout. ID and logout tokens are verified by the JWT authenticator's code
//! (`JwtAuth::for_provider`), so they fail with the same reasons as any token.
//!
//! The flows live beside it: `signin` (start and callback), `logout` (sign-out, back-channel),
//! `refresh`, `provider` (discovery and the token endpoint), `redirect` (safe `rd` targets).

pub mod compile;
pub mod logout;
pub mod provider;
pub mod redirect;
pub mod refresh;
pub mod signin;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use self::provider::Provider;
use self::redirect::HostPattern;
use crate::pipeline::authn::jwt::claims;
use crate::pipeline::authn::source::Source;
use crate::pipeline::authn::{Authenticated, Identity, Unauthenticated};
use crate::pipeline::refusal::Refusal;
use crate::pipeline::trace::{Stage, Trace};
use crate::reason::Reason;
use crate::secret::Secret;
use crate::session::cookie::Read;
use crate::session::store::{Load, Session, Sessions, now};

pub static X_KEYWAY_ID_TOKEN: HeaderName = HeaderName::from_static("x-keyway-id-token");

/// What keyway knows of the request's site, for cookies and redirect URIs.
#[derive(Clone, Debug)]
pub struct Site {
    /// The browser reached keyway over TLS (directly, or through a trusted proxy that said
    /// `X-Forwarded-Proto: https`): cookies get `Secure`.
    pub secure: bool,
    /// The canonical authority the request named.
    pub authority: Option<HeaderValue>,
}

impl Site {
    /// The request's site: TLS from the connection, or from a trusted proxy's
    /// `X-Forwarded-Proto`.
    pub fn of(conn: Conn, parts: &Parts, trace: &Trace) -> Site {
        let forwarded_https = conn.trusted
            && parts
                .headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        Site {
            secure: conn.tls || forwarded_https,
            authority: trace.authority.as_ref().map(|a| a.value.clone()),
        }
    }

    /// `scheme://authority`, the origin the browser sees.
    pub fn origin(&self) -> Option<String> {
        let scheme = if self.secure { "https" } else { "http" };
        let authority = self.authority.as_ref()?.to_str().ok()?;
        Some(format!("{scheme}://{authority}"))
    }
}

/// The client connection, as far as deciding needs it.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// Over TLS (the listener's default port is 443).
    pub tls: bool,
    /// The peer is in `trusted_proxies`: its forwarding headers are believed.
    pub trusted: bool,
}

#[derive(Debug)]
pub struct OidcAuth {
    pub name: Arc<str>,
    pub name_header: Option<HeaderValue>,
    pub provider: Arc<Provider>,
    pub sessions: Sessions,
    /// The session cookie, as the chain rule and refusals name it.
    pub source: Source,
    /// Space-separated, `openid` first.
    pub scopes: String,
    pub redirect_path: String,
    pub backchannel_logout_path: String,
    /// `https://app.example.com` without a trailing slash.
    pub public_url: Option<String>,
    pub pass_access_token: bool,
    pub pass_id_token: bool,
    pub allowed_redirect_hosts: Vec<HostPattern>,
    pub claims_to_headers: Vec<(String, HeaderName)>,
    pub refresh: refresh::Refresher,
    pub signins: signin::Replays,
}

impl OidcAuth {
    pub fn sources(&self) -> &[Source] {
        std::slice::from_ref(&self.source)
    }

    pub fn is_ready(&self) -> bool {
        self.provider.is_ready()
    }

    pub fn start(&self) {
        self.provider.start();
    }

    /// The session cookie the request carries, if any (the chain rule's lookup).
    pub fn find(&self, parts: &Parts) -> Option<Read> {
        self.sessions.read(&parts.headers)
    }

    /// The redirect URI the provider sends the browser back to.
    pub fn redirect_uri(&self, site: &Site) -> Option<String> {
        let origin = match &self.public_url {
            Some(url) => url.clone(),
            None => site.origin()?,
        };
        Some(format!("{origin}{}", self.redirect_path))
    }

    /// The session behind the request's cookie, renewed when its tokens are about to expire,
    /// as an identity; or why it cannot be used (with the cookies that clear a dead session).
    pub async fn authenticate(
        &self,
        read: Read,
        site: &Site,
        trace: &mut Trace,
    ) -> Result<Authenticated, Unauthenticated> {
        let (session, handle) = match self.sessions.load(read).await {
            Load::Found(session, handle) => (session, handle),
            Load::Invalid(handle) => {
                return Err(self.dead(
                    Reason::SessionInvalid,
                    "The session cookie does not open: it was altered, cut short (a chunk is missing), or sealed with a secret this keyway does not hold.",
                    self.sessions.clear(&handle, site.secure),
                    trace,
                ));
            }
            Load::Missing(handle) => {
                return Err(self.dead(
                    Reason::SessionRevoked,
                    "The session is not in the session store: it expired there or was signed out (on this or another instance, or by the provider's back-channel logout).",
                    self.sessions.clear(&handle, site.secure),
                    trace,
                ));
            }
            Load::Revoked(handle) => {
                return Err(self.dead(
                    Reason::SessionRevoked,
                    "The provider ended this session (back-channel logout).",
                    self.sessions.clear(&handle, site.secure),
                    trace,
                ));
            }
            Load::Unavailable(e) => {
                trace.step(
                    Stage::Authn,
                    format!("{}: session store unavailable", self.name),
                );
                return Err(Unauthenticated::from(
                    Refusal::new(
                        Reason::SessionStoreUnavailable,
                        format!("The session store of authenticator {} could not be reached ({e}).", self.name),
                    )
                    .hint("Check that Redis is running and reachable from keyway; requests succeed again as soon as it is.")
                    .by(&self.name),
                ));
            }
        };
        if session.expires_at <= now() {
            let cookies = if trace.dry_run {
                Vec::new()
            } else {
                self.sessions
                    .end(&handle, site.secure)
                    .await
                    .unwrap_or_default()
            };
            return Err(self.dead(
                Reason::SessionExpired,
                &format!(
                    "The session ended at {} (session.ttl).",
                    claims::rfc3339(session.expires_at as f64)
                ),
                cookies,
                trace,
            ));
        }
        let (session, cookies) = self
            .refresh
            .renew_if_due(self, *session, handle, site, trace)
            .await?;
        trace.step(Stage::Authn, "authenticated");
        Ok(Authenticated {
            identity: self.identity(&session),
            cookies,
        })
    }

    /// A session that cannot be used: refused, with its cookies cleared. Not a presented
    /// token: a browser navigation is sent to sign in again.
    fn dead(
        &self,
        reason: Reason,
        detail: &str,
        cookies: Vec<HeaderValue>,
        trace: &mut Trace,
    ) -> Unauthenticated {
        trace.step(
            Stage::Authn,
            format!("{}: session refused ({})", self.name, reason.code()),
        );
        Unauthenticated {
            refusal: Refusal::new(reason, detail)
                .hint("Sign in again.")
                .by(&self.name),
            cookies,
        }
    }

    fn identity(&self, session: &Session) -> Identity {
        let mut headers = Vec::new();
        for (claim, header) in &self.claims_to_headers {
            let text = claims::at_path(&session.claims, claim)
                .map_or_else(String::new, claims::header_text);
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.push((header.clone(), v));
            }
        }
        let token_header = |token: &Option<Secret<String>>, prefix: &str| {
            token.as_ref().and_then(|t| {
                let mut v = HeaderValue::from_str(&format!("{prefix}{}", t.expose())).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
        };
        if self.pass_access_token
            && let Some(v) = token_header(&session.access_token, "Bearer ")
        {
            headers.push((http::header::AUTHORIZATION, v));
        }
        if self.pass_id_token
            && let Some(v) = token_header(&session.id_token, "")
        {
            headers.push((X_KEYWAY_ID_TOKEN.clone(), v));
        }
        Identity {
            subject: Arc::from(session.subject.as_str()),
            consumer: None,
            groups: Arc::from(session.groups.clone()),
            authenticator: self.name.clone(),
            authenticator_header: self.name_header.clone(),
            claims: Some(Arc::new(session.claims.clone())),
            headers,
            valid_until: Some(session.expires_at),
        }
    }
}

/// A random id for a new sign-in.
fn new_session_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A session from a verified ID token's identity and the token endpoint's answer.
pub fn session_from(
    identity: &Identity,
    tokens: provider::Tokens,
    previous: Option<&Session>,
    ttl: std::time::Duration,
) -> Session {
    let now = now();
    let claims = identity.claims.as_deref().cloned().unwrap_or_default();
    let sid = claims
        .get("sid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| previous.and_then(|p| p.sid.clone()));
    let keep = |new: Option<String>, old: Option<&Secret<String>>| {
        new.map(Secret::new).or_else(|| old.cloned())
    };
    Session {
        id: previous.map_or_else(new_session_id, |p| p.id.clone()),
        subject: identity.subject.to_string(),
        groups: identity.groups.to_vec(),
        claims,
        sid,
        id_token: keep(tokens.id_token, previous.and_then(|p| p.id_token.as_ref())),
        access_token: keep(
            tokens.access_token,
            previous.and_then(|p| p.access_token.as_ref()),
        ),
        refresh_token: keep(
            tokens.refresh_token,
            previous.and_then(|p| p.refresh_token.as_ref()),
        ),
        tokens_expire_at: tokens.expires_in.map(|s| now + s),
        tokens_issued_at: Some(now),
        created_at: previous.map_or(now, |p| p.created_at),
        expires_at: previous.map_or(now + ttl.as_secs(), |p| p.expires_at),
    }
}
