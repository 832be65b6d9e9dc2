//! Sign-in: the redirect to the provider (authorization code flow with PKCE S256, `state` and
//! `nonce`) and the callback that turns the code into a session.
//!
//! The state travels in a sealed cookie scoped to the callback path, one per sign-in (named
//! after the state), so several tabs can sign in at once. A callback is accepted once: its state
//! is remembered until it would have expired anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::provider::TokenError;
use super::{OidcAuth, Site, session_from};
use crate::pipeline::answer::Answer;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::trace::{Stage, Trace};
use crate::reason::Reason;
use crate::secret::Secret;
use crate::session::cookie::{CookieJar, read_named};
use crate::session::store::now;

/// How long a request waits for a discovery in progress before it is a 503.
pub const DISCOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a sign-in may take, from the redirect to the callback.
const SIGN_IN_TTL: Duration = Duration::from_secs(600);
const STATE_PURPOSE: &str = "sign-in";

/// What the callback needs to finish a sign-in, sealed in its cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    /// Where the browser goes once signed in (already checked by `redirect::safe_target`).
    rd: String,
    redirect_uri: String,
    created: u64,
}

/// States whose callback has been accepted, until they expire.
#[derive(Default)]
pub struct Replays(Mutex<HashMap<[u8; 32], u64>>);

impl std::fmt::Debug for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replays")
    }
}

impl Replays {
    /// False when `state` was used before.
    fn first_use(&self, state: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        let now = now();
        let mut used = self.0.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, until| *until > now);
        used.insert(key, now + SIGN_IN_TTL.as_secs()).is_none()
    }
}

fn random_text() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

impl OidcAuth {
    fn state_cookie_name(&self, state: &str) -> String {
        let tag = state.get(..12).unwrap_or(state);
        format!("{}_state_{tag}", self.sessions.cookie_name())
    }

    /// The prefix of every sign-in state cookie (keyway strips them before forwarding).
    pub fn state_cookie_prefix(&self) -> String {
        format!("{}_state_", self.sessions.cookie_name())
    }

    fn state_jar(&self, state: &str, secure: bool) -> Option<CookieJar> {
        CookieJar::new(&self.state_cookie_name(state), &self.redirect_path, secure).ok()
    }

    /// The redirect that starts a sign-in, returning to `rd` afterwards.
    pub async fn start_sign_in(&self, site: &Site, rd: &str, trace: &mut Trace) -> Answer {
        let Some(metadata) = self.provider.metadata_within(DISCOVERY_WAIT).await else {
            return self.provider_unavailable(trace);
        };
        let Some(redirect_uri) = self.redirect_uri(site) else {
            return Refusal::new(
                Reason::HostMissing,
                "The request names no host, so keyway cannot build the redirect URI the provider sends the browser back to.",
            )
            .hint("Send a Host header, or set public_url on the oidc authenticator.")
            .into();
        };
        let (Some(state), Some(nonce), Some(verifier)) =
            (random_text(), random_text(), random_text())
        else {
            return Refusal::new(
                Reason::OidcProviderUnavailable,
                "The system random source failed.",
            )
            .into();
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let pending = Pending {
            state: state.clone(),
            nonce: nonce.clone(),
            verifier,
            rd: rd.to_owned(),
            redirect_uri: redirect_uri.clone(),
            created: now(),
        };
        let cookies = serde_json::to_vec(&pending)
            .ok()
            .and_then(|json| self.sessions.seal_state(STATE_PURPOSE, &json))
            .and_then(|sealed| {
                self.state_jar(&state, site.secure)?
                    .set(&sealed, Some(SIGN_IN_TTL), 0)
                    .ok()
            });
        let Some(cookies) = cookies else {
            return Refusal::new(
                Reason::OidcProviderUnavailable,
                "The sign-in state could not be sealed.",
            )
            .into();
        };
        let endpoint = metadata.authorization_endpoint.to_string();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.provider.client.id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &self.scopes)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let Ok(location) = HeaderValue::from_str(&format!("{endpoint}{separator}{query}")) else {
            return Refusal::new(
                Reason::OidcProviderUnavailable,
                "The provider's authorization endpoint is not a usable URL.",
            )
            .into();
        };
        trace.step(
            Stage::Authn,
            format!("{}: redirected to the provider's sign-in", self.name),
        );
        Answer::redirect(location).with_cookies(cookies)
    }

    pub fn provider_unavailable(&self, trace: &mut Trace) -> Answer {
        trace.step(
            Stage::Authn,
            format!("{}: provider not discovered", self.name),
        );
        let why = self
            .provider
            .last_error()
            .unwrap_or_else(|| "discovery has not finished yet".to_owned());
        Refusal::new(
            Reason::OidcProviderUnavailable,
            format!(
                "The OpenID provider {} of authenticator {} is not available: {why}.",
                self.provider.issuer, self.name
            ),
        )
        .hint("keyway retries discovery in the background; check that the provider is reachable from keyway.")
        .by(&self.name)
        .into()
    }

    /// The callback at `redirect_path`: checks the state, exchanges the code, verifies the ID
    /// token and its nonce, and stores the session.
    pub async fn callback(&self, parts: &Parts, site: &Site, trace: &mut Trace) -> Answer {
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let state = query.get("state").map(String::as_str).unwrap_or("");
        let clear_state = self
            .state_jar(state, site.secure)
            .map(|jar| jar.clear(0))
            .unwrap_or_default();
        // RFC 9207: a provider that names itself must be the one this sign-in went to.
        if let Some(iss) = query.get("iss")
            && iss.trim_end_matches('/') != self.provider.issuer.trim_end_matches('/')
        {
            return self.sign_in_failed(
                format!(
                    "The callback names the issuer {iss:?}, not {:?}.",
                    self.provider.issuer
                ),
                clear_state,
                trace,
            );
        }
        if let Some(error) = query.get("error") {
            let description = query
                .get("error_description")
                .map(|d| format!(": {}", clean(d)))
                .unwrap_or_default();
            return self.sign_in_failed(
                format!("The provider answered error={}{description}.", clean(error)),
                clear_state,
                trace,
            );
        }
        let pending = match self.pending(parts, state) {
            Ok(p) => p,
            Err(why) => {
                trace.step(
                    Stage::Authn,
                    format!("{}: callback state refused", self.name),
                );
                return Refusal::new(Reason::OidcStateInvalid, why)
                    .hint("Start the sign-in again from the page you wanted.")
                    .by(&self.name)
                    .into();
            }
        };
        let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
            return self.sign_in_failed(
                "The callback carries no code.".to_owned(),
                clear_state,
                trace,
            );
        };
        let Some(metadata) = self.provider.metadata_within(DISCOVERY_WAIT).await else {
            return self.provider_unavailable(trace);
        };
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", pending.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let tokens = match self.provider.tokens(&metadata, &grant).await {
            Ok(tokens) => tokens,
            Err(TokenError::Refused { error, description }) => {
                trace.step(
                    Stage::Authn,
                    format!("{}: code refused ({error})", self.name),
                );
                return Answer::from(
                    Refusal::new(
                        Reason::OidcCodeRejected,
                        format!("The provider refused the authorization code: {error} {description}").trim_end().to_owned(),
                    )
                    .hint("The code was used already, expired, or was issued for another client or redirect URI; sign in again.")
                    .by(&self.name),
                )
                .with_cookies(clear_state);
            }
            Err(TokenError::Unavailable(why)) => {
                return Answer::from(
                    Refusal::new(
                        Reason::OidcProviderUnavailable,
                        format!("The token endpoint could not be used: {why}"),
                    )
                    .by(&self.name),
                )
                .with_cookies(clear_state);
            }
        };
        let Some(id_token) = tokens.id_token.clone() else {
            return self.sign_in_failed(
                "The token endpoint answered without an ID token (is openid among the scopes?)."
                    .to_owned(),
                clear_state,
                trace,
            );
        };
        let identity = match metadata
            .id_tokens
            .verify(Secret::new(id_token.as_str()))
            .await
        {
            Ok(identity) => identity,
            Err(refusal) => {
                trace.step(
                    Stage::Authn,
                    format!(
                        "{}: ID token refused ({})",
                        self.name,
                        refusal.reason.code()
                    ),
                );
                return Answer::from(refusal.by(&self.name)).with_cookies(clear_state);
            }
        };
        let nonce = identity
            .claims
            .as_ref()
            .and_then(|c| c.get("nonce"))
            .and_then(|n| n.as_str())
            .unwrap_or("");
        if !bool::from(nonce.as_bytes().ct_eq(pending.nonce.as_bytes())) {
            trace.step(Stage::Authn, format!("{}: nonce mismatch", self.name));
            return Answer::from(
                Refusal::new(
                    Reason::OidcNonceMismatch,
                    "The ID token's nonce is not the one this sign-in sent: the token belongs to another sign-in (a replay or an injected code).",
                )
                .hint("Sign in again.")
                .by(&self.name),
            )
            .with_cookies(clear_state);
        }
        let session = session_from(&identity, tokens, None, self.sessions.ttl);
        let handle = self.sessions.present(&parts.headers);
        let mut cookies = match self
            .sessions
            .save(&session, Some(&handle), site.secure)
            .await
        {
            Ok(cookies) => cookies,
            Err(e) => {
                return Answer::from(
                    Refusal::new(
                        Reason::SessionStoreUnavailable,
                        format!("The session could not be stored ({e})."),
                    )
                    .by(&self.name),
                )
                .with_cookies(clear_state);
            }
        };
        cookies.extend(clear_state);
        trace.step(
            Stage::Authn,
            format!("{}: signed in; back to the page that asked", self.name),
        );
        match HeaderValue::from_str(&pending.rd) {
            Ok(location) => Answer::redirect(location).with_cookies(cookies),
            Err(_) => Answer::redirect(HeaderValue::from_static("/")).with_cookies(cookies),
        }
    }

    /// The sign-in in progress for `state`, from its cookie.
    fn pending(&self, parts: &Parts, state: &str) -> Result<Pending, String> {
        if state.is_empty() {
            return Err("The callback carries no state.".to_owned());
        }
        let Some(sealed) = read_named(&parts.headers, &self.state_cookie_name(state)) else {
            return Err("No sign-in is in progress for this state: its cookie is missing (expired after 10 minutes, sent to another host, or the callback was replayed).".to_owned());
        };
        let pending: Pending = self
            .sessions
            .open_state(STATE_PURPOSE, sealed.expose())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| "The sign-in state cookie does not open: it was altered or sealed with another secret.".to_owned())?;
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(
                "The callback's state does not match the sign-in's (a forged callback).".to_owned(),
            );
        }
        if pending.created + SIGN_IN_TTL.as_secs() <= now() {
            return Err("The sign-in took longer than 10 minutes.".to_owned());
        }
        if !self.signins.first_use(state) {
            return Err("This callback was used already (a replay).".to_owned());
        }
        Ok(pending)
    }

    fn sign_in_failed(
        &self,
        detail: String,
        cookies: Vec<HeaderValue>,
        trace: &mut Trace,
    ) -> Answer {
        trace.step(Stage::Authn, format!("{}: sign-in failed", self.name));
        Answer::from(
            Refusal::new(Reason::OidcSignInFailed, detail)
                .hint("Sign in again; if it keeps failing, check the client's registration at the provider.")
                .by(&self.name),
        )
        .with_cookies(cookies)
    }
}

/// Provider-supplied text for a detail: printable, bounded.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}
