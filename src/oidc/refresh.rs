//! Renewing a session before its tokens expire, once for all the requests that arrive with it.
//!
//! Providers rotate refresh tokens, and reusing a rotated one revokes the whole grant (OAuth 2.0
//! Security BCP §4.14.2), so two concurrent renewals with the same refresh token would sign the
//! user out. In one instance, the requests carrying one refresh token share one renewal (and its
//! result for a minute, for requests still holding the old cookie); across instances sharing
//! Redis, a lock lets one renew while the others keep using the tokens that are still valid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::provider::TokenError;
use super::{OidcAuth, Site, session_from};
use crate::pipeline::authn::Unauthenticated;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::trace::{Stage, Trace};
use crate::reason::Reason;
use crate::secret::Secret;
use crate::session::store::{Handle, Session, now};

/// Renew when this much (or a quarter of the tokens' lifetime, if shorter) is left.
const MARGIN: u64 = 60;
/// How long a renewal's result serves requests that still carry the old refresh token.
const REMEMBER: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Outcome {
    Renewed(Box<Session>),
    /// The provider refused (`invalid_grant`: revoked, expired, reused): the session is over.
    Refused(String),
    /// The provider could not be reached.
    Unavailable(String),
}

type Flight = Arc<OnceCell<Outcome>>;

#[derive(Default)]
pub struct Refresher {
    flights: Mutex<HashMap<[u8; 32], (Instant, Flight)>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher")
    }
}

/// Whether the tokens should be renewed now: within the margin of their expiry.
fn due(session: &Session, now: u64) -> bool {
    let Some(expires) = session.tokens_expire_at else {
        return false;
    };
    let issued = session.tokens_issued_at.unwrap_or(session.created_at);
    let lifetime = expires.saturating_sub(issued.min(expires));
    let margin = MARGIN.min(lifetime / 4).max(1);
    expires <= now + margin
}

impl Refresher {
    fn flight(&self, refresh_token: &Secret<String>) -> Flight {
        let key: [u8; 32] = Sha256::digest(refresh_token.expose().as_bytes()).into();
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.retain(|_, (at, _)| at.elapsed() < REMEMBER);
        flights
            .entry(key)
            .or_insert_with(|| (Instant::now(), Arc::default()))
            .1
            .clone()
    }

    /// The session, renewed if its tokens are about to expire, with the cookies that store it
    /// when it changed (or was sealed with an old secret).
    pub async fn renew_if_due(
        &self,
        auth: &OidcAuth,
        session: Session,
        handle: Handle,
        site: &Site,
        trace: &mut Trace,
    ) -> Result<(Session, Vec<HeaderValue>), Unauthenticated> {
        let now = now();
        if trace.dry_run {
            // A renewal would spend the refresh token, which the browser's cookie still holds.
            if due(&session, now) {
                trace.step(
                    Stage::Authn,
                    format!(
                        "{}: the session's tokens are due for renewal; keyway would renew them with the refresh token now (not in a dry run)",
                        auth.name
                    ),
                );
            }
            return Ok((session, Vec::new()));
        }
        if !due(&session, now) {
            return auth
                .sessions
                .save_if_rotated(session, &handle, site.secure)
                .await
                .map_err(|e| store_unavailable(auth, &e.to_string()));
        }
        let expired = session.tokens_expire_at.is_some_and(|t| t <= now);
        let Some(refresh_token) = session.refresh_token.clone() else {
            // Without a refresh token the session lives its own ttl; tokens handed upstream
            // must still be valid, though.
            if expired && (auth.pass_access_token || auth.pass_id_token) {
                let cookies = auth
                    .sessions
                    .end(&handle, site.secure)
                    .await
                    .unwrap_or_default();
                return Err(ended(
                    auth,
                    "Its access token expired and the provider gave no refresh token to renew it.",
                    cookies,
                    trace,
                ));
            }
            return Ok((session, Vec::new()));
        };
        // Across instances: another one may be renewing this very session.
        let lock = match auth.sessions.lock_renewal(&handle).await {
            Ok(lock) => lock,
            Err(e) => return Err(store_unavailable(auth, &e.to_string())),
        };
        if lock.is_none() {
            trace.step(Stage::Authn, "another instance is renewing the session");
            if !expired {
                return Ok((session, Vec::new()));
            }
            // Wait (bounded) for the other instance's result to reach the store.
            if let Some(renewed) = auth.sessions.await_renewal(&handle, &session).await {
                return Ok((renewed, Vec::new()));
            }
        }
        let flight = self.flight(&refresh_token);
        let outcome = flight
            .get_or_init(|| renew(auth, session.clone(), refresh_token))
            .await
            .clone();
        if let Some(lock) = lock {
            auth.sessions.unlock_renewal(lock).await;
        }
        match outcome {
            Outcome::Renewed(renewed) => {
                trace.step(
                    Stage::Authn,
                    format!("{}: session renewed with its refresh token", auth.name),
                );
                let cookies = auth
                    .sessions
                    .save(&renewed, Some(&handle), site.secure)
                    .await
                    .map_err(|e| store_unavailable(auth, &e.to_string()))?;
                Ok((*renewed, cookies))
            }
            Outcome::Refused(why) => {
                let cookies = auth
                    .sessions
                    .end(&handle, site.secure)
                    .await
                    .unwrap_or_default();
                Err(ended(
                    auth,
                    &format!("The provider refused to renew it ({why})."),
                    cookies,
                    trace,
                ))
            }
            Outcome::Unavailable(why) if !expired => {
                // Renew on a later request; the tokens are still valid.
                trace.step(
                    Stage::Authn,
                    format!("{}: renewal failed, tokens still valid: {why}", auth.name),
                );
                Ok((session, Vec::new()))
            }
            Outcome::Unavailable(why) => Err(Unauthenticated::from(
                Refusal::new(
                    Reason::OidcProviderUnavailable,
                    format!(
                        "The session's tokens expired and the provider could not renew them: {why}"
                    ),
                )
                .hint("keyway retries on the next request; check that the provider is reachable.")
                .by(&auth.name),
            )),
        }
    }
}

/// One renewal at the token endpoint. A new ID token, when the provider sends one, is verified
/// like the first (issuer, audience, signature, expiry) and updates the identity.
async fn renew(auth: &OidcAuth, session: Session, refresh_token: Secret<String>) -> Outcome {
    let Some(metadata) = auth
        .provider
        .metadata_within(super::signin::DISCOVERY_WAIT)
        .await
    else {
        return Outcome::Unavailable(
            auth.provider
                .last_error()
                .unwrap_or_else(|| "discovery has not succeeded yet".to_owned()),
        );
    };
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose().as_str()),
    ];
    let tokens = match auth.provider.tokens(&metadata, &grant).await {
        Ok(tokens) => tokens,
        Err(TokenError::Refused { error, description }) => {
            return Outcome::Refused(if description.is_empty() {
                error
            } else {
                format!("{error}: {description}")
            });
        }
        Err(TokenError::Unavailable(why)) => return Outcome::Unavailable(why),
    };
    let identity = match &tokens.id_token {
        Some(id_token) => match metadata
            .id_tokens
            .verify(Secret::new(id_token.as_str()))
            .await
        {
            Ok(identity) => Some(identity),
            Err(refusal) => {
                return Outcome::Refused(format!(
                    "the renewed ID token failed verification: {}",
                    refusal.reason.code()
                ));
            }
        },
        None => None,
    };
    let mut renewed = match &identity {
        Some(identity) => session_from(identity, tokens, Some(&session), auth.sessions.ttl),
        None => {
            let mut s = session.clone();
            let now = now();
            if let Some(t) = tokens.access_token {
                s.access_token = Some(Secret::new(t));
            }
            if let Some(t) = tokens.refresh_token {
                s.refresh_token = Some(Secret::new(t));
            }
            s.tokens_expire_at = tokens.expires_in.map(|e| now + e);
            s.tokens_issued_at = Some(now);
            s
        }
    };
    renewed.created_at = session.created_at;
    Outcome::Renewed(Box::new(renewed))
}

fn ended(
    auth: &OidcAuth,
    why: &str,
    cookies: Vec<HeaderValue>,
    trace: &mut Trace,
) -> Unauthenticated {
    trace.step(
        Stage::Authn,
        format!("{}: session ended ({why})", auth.name),
    );
    Unauthenticated {
        refusal: Refusal::new(Reason::SessionExpired, format!("The session ended: {why}"))
            .hint("Sign in again.")
            .by(&auth.name),
        cookies,
    }
}

fn store_unavailable(auth: &OidcAuth, why: &str) -> Unauthenticated {
    Unauthenticated::from(
        Refusal::new(
            Reason::SessionStoreUnavailable,
            format!(
                "The session store of authenticator {} could not be reached ({why}).",
                auth.name
            ),
        )
        .hint("Check that Redis is running and reachable from keyway.")
        .by(&auth.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(created: u64, expires: Option<u64>) -> Session {
        Session {
            id: String::new(),
            subject: "a".into(),
            groups: vec![],
            claims: Default::default(),
            sid: None,
            id_token: None,
            access_token: None,
            refresh_token: None,
            tokens_expire_at: expires,
            tokens_issued_at: None,
            created_at: created,
            expires_at: created + 3600,
        }
    }

    #[test]
    fn renewal_is_due_within_a_margin_that_fits_the_lifetime() {
        // An hour-long token: renewed in its last minute.
        assert!(!due(&session(1000, Some(4600)), 4539));
        assert!(due(&session(1000, Some(4600)), 4541));
        // A 20 s token: in its last 5 s, not on every request.
        assert!(!due(&session(1000, Some(1020)), 1010));
        assert!(due(&session(1000, Some(1020)), 1016));
        assert!(!due(&session(1000, None), 99999));
    }
}
