//! One OpenID provider as a relying party sees it: discovery (retried with backoff while the
//! provider is down, so keyway starts anyway), the token endpoint (code exchange and refresh),
//! and the provider's keys, which the JWT code verifies ID and logout tokens with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{StatusCode, Uri};
use serde::Deserialize;

use crate::fetch::{self, Fetcher};
use crate::pipeline::authn::jwt::jwks::Jwks;
use crate::pipeline::authn::jwt::{JwtAuth, ProviderClaims};
use crate::secret::Secret;

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Discovery is refreshed this often once it has succeeded (endpoints rarely move).
const REDISCOVER: Duration = Duration::from_secs(3600);

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

/// The client's registration at the provider.
#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub secret: Secret<String>,
    pub auth: TokenAuth,
}

/// What discovery found, with the verifiers built from it.
#[derive(Debug)]
pub struct Metadata {
    pub authorization_endpoint: Uri,
    pub token_endpoint: Uri,
    pub end_session_endpoint: Option<Uri>,
    /// Verifies ID tokens: issuer, audience (the client id), signature, expiry.
    pub id_tokens: JwtAuth,
    /// Verifies back-channel logout tokens (same keys; `exp` optional).
    pub logout_tokens: JwtAuth,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    end_session_endpoint: Option<String>,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// A token endpoint answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Why the token endpoint did not give tokens.
#[derive(Debug)]
pub enum TokenError {
    /// The provider could not be reached, or answered with something else than JSON.
    Unavailable(String),
    /// The provider refused: `invalid_grant` (a used, expired or revoked code or refresh
    /// token), `invalid_client`, …
    Refused { error: String, description: String },
}

/// Settings that shape the verifiers built from discovery.
#[derive(Debug)]
pub struct Claims {
    pub identity_claim: String,
    pub groups_claim: String,
    pub to_headers: Vec<(String, http::HeaderName)>,
    pub leeway: Duration,
}

pub struct Provider {
    /// The authenticator's name, for verifier messages and logs.
    name: Arc<str>,
    pub issuer: String,
    discovery_url: Uri,
    pub client: Client,
    claims: Claims,
    metadata: ArcSwapOption<Metadata>,
    last_error: Mutex<Option<String>>,
    started: AtomicBool,
    /// Wakes the discovery task at once (a request found no metadata). Shared, so the task
    /// can wait on it without keeping the provider alive after a reload dropped it.
    nudge: Arc<tokio::sync::Notify>,
    /// Wakes requests waiting for the first discovery.
    discovered: tokio::sync::Notify,
    fetcher: Fetcher,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client.id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(
        name: &Arc<str>,
        issuer: &str,
        client: Client,
        claims: Claims,
    ) -> Result<Arc<Provider>, String> {
        let base = issuer.trim_end_matches('/');
        let discovery_url: Uri = format!("{base}/.well-known/openid-configuration")
            .parse()
            .map_err(|e| format!("issuer {issuer:?} is not a URL: {e}"))?;
        if !matches!(discovery_url.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "issuer {issuer:?} must be an http:// or https:// URL"
            ));
        }
        Ok(Arc::new(Provider {
            name: name.clone(),
            issuer: issuer.to_owned(),
            discovery_url,
            client,
            claims,
            metadata: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            started: AtomicBool::new(false),
            nudge: Arc::default(),
            discovered: tokio::sync::Notify::new(),
            fetcher: Fetcher::new(DISCOVERY_TIMEOUT, MAX_DOCUMENT_BYTES),
        }))
    }

    /// The discovered metadata; `None` until discovery has succeeded once. Asking wakes the
    /// discovery task when it is waiting out a backoff.
    pub fn metadata(self: &Arc<Self>) -> Option<Arc<Metadata>> {
        let current = self.metadata.load_full();
        if current.is_none() {
            self.start();
            self.nudge.notify_one();
        }
        current
    }

    /// The metadata, waiting up to `wait` for a discovery in progress: a request that arrives
    /// as keyway starts need not fail because discovery is a few milliseconds behind.
    pub async fn metadata_within(self: &Arc<Self>, wait: Duration) -> Option<Arc<Metadata>> {
        if let Some(m) = self.metadata() {
            return Some(m);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.discovered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.metadata.load_full() {
                return Some(m);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn is_ready(self: &Arc<Self>) -> bool {
        self.start();
        self.metadata.load().is_some()
            && self
                .metadata
                .load()
                .as_ref()
                .is_some_and(|m| m.id_tokens.is_ready())
    }

    /// Why the provider is not usable yet (for `/readyz` and the 503's detail).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Starts discovery once, when called inside a tokio runtime (config compiles outside one).
    pub fn start(self: &Arc<Self>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(discover_loop(Arc::downgrade(self), self.nudge.clone()));
    }

    async fn discover(&self) -> Result<Metadata, String> {
        let label = fetch::label(&self.discovery_url);
        let fetched = self
            .fetcher
            .get(&self.discovery_url, "application/json")
            .await?;
        if fetched.status != StatusCode::OK {
            return Err(format!("GET {label} answered {}", fetched.status));
        }
        let doc: Discovery = serde_json::from_slice(&fetched.body)
            .map_err(|e| format!("{label} is not an OpenID provider configuration: {e}"))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if doc.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(format!(
                "{label} names the issuer {:?}, not {:?}",
                doc.issuer, self.issuer
            ));
        }
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(format!("{label}: the provider does not support PKCE S256"));
        }
        let url = |field: &str, text: &str| -> Result<Uri, String> {
            let uri: Uri = text
                .parse()
                .map_err(|e| format!("{label}: {field} {text:?} is not a URL: {e}"))?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(format!("{label}: {field} {text:?} is not an absolute URL"));
            }
            Ok(uri)
        };
        let jwks_uri = url("jwks_uri", &doc.jwks_uri)?;
        if !matches!(jwks_uri.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "{label}: jwks_uri {:?} is neither http:// nor https://",
                doc.jwks_uri
            ));
        }
        let jwks = Jwks::new(
            jwks_uri,
            Duration::from_secs(300),
            Duration::from_secs(10),
            None,
        );
        jwks.start();
        let verifier = |require_exp: bool| {
            JwtAuth::for_provider(
                &self.name,
                jwks.clone(),
                &self.issuer,
                &self.client.id,
                ProviderClaims {
                    identity_claim: self.claims.identity_claim.clone(),
                    groups_claim: self.claims.groups_claim.clone(),
                    to_headers: self.claims.to_headers.clone(),
                    leeway: self.claims.leeway,
                    require_exp,
                    // Each token is verified once (a callback, a refresh, a logout).
                    cache: 1,
                },
            )
        };
        Ok(Metadata {
            authorization_endpoint: url("authorization_endpoint", &doc.authorization_endpoint)?,
            token_endpoint: url("token_endpoint", &doc.token_endpoint)?,
            end_session_endpoint: doc
                .end_session_endpoint
                .as_deref()
                .map(|e| url("end_session_endpoint", e))
                .transpose()?,
            id_tokens: verifier(true),
            logout_tokens: verifier(false),
        })
    }

    /// Calls the token endpoint with a grant (`authorization_code` or `refresh_token`).
    pub async fn tokens(
        &self,
        metadata: &Metadata,
        grant: &[(&str, &str)],
    ) -> Result<Tokens, TokenError> {
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        let basic = match self.client.auth {
            TokenAuth::ClientSecretBasic => Some((self.client.id.as_str(), &self.client.secret)),
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", &self.client.id));
                form.push(("client_secret", self.client.secret.expose()));
                None
            }
        };
        let label = fetch::label(&metadata.token_endpoint);
        let fetched = self
            .fetcher
            .post_form(&metadata.token_endpoint, &form, basic)
            .await
            .map_err(TokenError::Unavailable)?;
        let json = fetched.json(&label).map_err(TokenError::Unavailable)?;
        if fetched.status != StatusCode::OK {
            let text = |k: &str| {
                json.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            };
            let error = text("error");
            if error.is_empty() || fetched.status.is_server_error() {
                return Err(TokenError::Unavailable(format!(
                    "POST {label} answered {}",
                    fetched.status
                )));
            }
            return Err(TokenError::Refused {
                error,
                description: text("error_description"),
            });
        }
        serde_json::from_value(json)
            .map_err(|e| TokenError::Unavailable(format!("{label} answered unusable tokens: {e}")))
    }
}

/// Discovers now, then every hour; after a failure retries after 1 s, doubling up to 60 s, or
/// at once when a request needed the provider.
async fn discover_loop(weak: Weak<Provider>, nudge: Arc<tokio::sync::Notify>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(provider) = weak.upgrade() else {
            return;
        };
        let wait = match provider.discover().await {
            Ok(metadata) => {
                tracing::info!(authenticator = %provider.name, issuer = %provider.issuer, "OpenID provider discovered");
                provider.metadata.store(Some(Arc::new(metadata)));
                provider.set_error(None);
                provider.discovered.notify_waiters();
                backoff = Duration::from_secs(1);
                REDISCOVER
            }
            Err(e) => {
                tracing::warn!(authenticator = %provider.name, error = %e, "OpenID discovery failed; retrying");
                provider.set_error(Some(e));
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        let undiscovered = provider.metadata.load().is_none();
        drop(provider);
        if undiscovered {
            // A request that needs the provider cuts the backoff short, at most once a second.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = async {
                    nudge.notified().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } => {}
            }
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}
