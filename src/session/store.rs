//! Sessions: what keyway remembers of a signed-in browser, and where. The cookie store seals the
//! whole session into the cookie (chunked past 4 KB); the Redis store keeps it, sealed too, in
//! Redis under an opaque id the cookie carries, so every instance sees the same sessions and a
//! sign-out or back-channel logout ends them everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cookie::{CookieJar, Read, Sealer};
use super::redis::{LockToken, RedisStore, SessionId, StoreError};
use crate::secret::Secret;

/// How long one instance may hold a session's renewal, and how long another waits for it.
const RENEWAL_LOCK: Duration = Duration::from_secs(10);
const RENEWAL_WAIT: Duration = Duration::from_secs(3);

/// Who may renew a session now (`Sessions::lock_renewal`).
pub enum RenewalLock {
    Local,
    Redis(String, LockToken),
}

/// Entries the cookie store remembers from back-channel logouts (it cannot delete a cookie it
/// does not see); the oldest are dropped beyond this.
const MAX_REVOCATIONS: usize = 100_000;

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A signed-in browser.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// keyway's own random id of this sign-in (kept when renewed): what a sign-out in the
    /// cookie store remembers, since a copy of the cookie cannot be deleted.
    #[serde(default)]
    pub id: String,
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The ID token's claims, for `allow.claims`, `allow.email_domains` and `claims_to_headers`.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// The provider's session id (`sid`), which back-channel logout names.
    pub sid: Option<String>,
    #[serde(with = "exposed", default)]
    pub id_token: Option<Secret<String>>,
    #[serde(with = "exposed", default)]
    pub access_token: Option<Secret<String>>,
    #[serde(with = "exposed", default)]
    pub refresh_token: Option<Secret<String>>,
    /// When the access token expires (seconds since the epoch), if the provider said.
    pub tokens_expire_at: Option<u64>,
    /// When the current tokens were issued (the renewal margin is a share of their lifetime).
    #[serde(default)]
    pub tokens_issued_at: Option<u64>,
    pub created_at: u64,
    pub expires_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .field("tokens_expire_at", &self.tokens_expire_at)
            .finish_non_exhaustive()
    }
}

/// Tokens are serialized only here, into a value that is sealed before it leaves keyway.
mod exposed {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::Secret;

    pub fn serialize<S: Serializer>(v: &Option<Secret<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(secret) => s.serialize_some(secret.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Secret<String>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

pub enum Backend {
    Cookie,
    Redis(Box<RedisStore>),
}

/// What a later save or clear needs to know about the request's session cookie.
#[derive(Debug, Default)]
pub struct Handle {
    /// Chunks the cookie came in (0: one cookie), so stale ones are deleted.
    chunks: usize,
    /// Redis: the id the cookie carries.
    id: Option<SessionId>,
    /// Sealed with an old secret: re-issue with the current one.
    pub rotated: bool,
}

/// A request's session, or why there is none to use.
#[derive(Debug)]
pub enum Load {
    Found(Box<Session>, Handle),
    /// The cookie does not open: tampered, sealed with another secret, or a chunk is missing.
    Invalid(Handle),
    /// Redis has no such session: it expired or was signed out.
    Missing(Handle),
    /// A back-channel logout named it (cookie store).
    Revoked(Handle),
    /// The store could not be asked.
    Unavailable(StoreError),
}

/// One authenticator's sessions.
pub struct Sessions {
    cookie_name: String,
    sealer: Sealer,
    backend: Backend,
    pub ttl: Duration,
    /// Binds sealed values to this authenticator and purpose.
    aad: Vec<u8>,
    /// Cookie store: back-channel logouts by `sid` (value: until when) and by subject (value:
    /// sessions created up to then are ended).
    revoked: Mutex<Revocations>,
}

#[derive(Default)]
struct Revocations {
    sids: HashMap<String, u64>,
    subjects: HashMap<String, u64>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cookie", &self.cookie_name)
            .field(
                "store",
                &match self.backend {
                    Backend::Cookie => "cookie",
                    Backend::Redis(_) => "redis",
                },
            )
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(
        authenticator: &str,
        cookie_name: String,
        sealer: Sealer,
        backend: Backend,
        ttl: Duration,
    ) -> Sessions {
        Sessions {
            aad: format!("keyway session\0{authenticator}").into_bytes(),
            cookie_name,
            sealer,
            backend,
            ttl,
            revoked: Mutex::default(),
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    fn jar(&self, secure: bool) -> Option<CookieJar> {
        CookieJar::new(&self.cookie_name, "/", secure).ok()
    }

    /// The session cookie the request carries (reassembled from its chunks).
    pub fn read(&self, headers: &HeaderMap) -> Option<Read> {
        self.jar(false)?.read(headers)
    }

    /// Removes keyway's session cookies from a request before it goes upstream.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        self.jar(false).map_or(0, |jar| jar.strip(headers))
    }

    /// The request's session cookie as a handle for a brand-new session: its chunks, so stale
    /// ones are deleted, but never its Redis id: a new sign-in always gets a new id, so a
    /// session id planted in the browser before (fixation) is worthless.
    pub fn present(&self, headers: &HeaderMap) -> Handle {
        Handle {
            chunks: self.read(headers).map_or(0, |r| r.chunks),
            ..Handle::default()
        }
    }

    pub async fn load(&self, read: Read) -> Load {
        let chunks = read.chunks;
        match &self.backend {
            Backend::Cookie => {
                let handle = Handle {
                    chunks,
                    ..Handle::default()
                };
                let Some((session, rotated)) = self.open(read.value.expose(), &self.aad) else {
                    return Load::Invalid(handle);
                };
                let handle = Handle { rotated, ..handle };
                if self.is_revoked(&session) {
                    return Load::Revoked(handle);
                }
                Load::Found(Box::new(session), handle)
            }
            Backend::Redis(store) => {
                let Some(id) = SessionId::parse(read.value.expose()) else {
                    return Load::Invalid(Handle {
                        chunks,
                        ..Handle::default()
                    });
                };
                let sealed = match store.get(&id).await {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => {
                        return Load::Missing(Handle {
                            chunks,
                            id: Some(id),
                            rotated: false,
                        });
                    }
                    Err(e) => return Load::Unavailable(e),
                };
                let aad = self.redis_aad(&id);
                let opened = std::str::from_utf8(&sealed)
                    .ok()
                    .and_then(|text| self.open(text, &aad));
                let handle = Handle {
                    chunks,
                    id: Some(id),
                    rotated: opened.as_ref().is_some_and(|(_, r)| *r),
                };
                match opened {
                    Some((session, _)) => Load::Found(Box::new(session), handle),
                    None => Load::Invalid(handle),
                }
            }
        }
    }

    fn open(&self, sealed: &str, aad: &[u8]) -> Option<(Session, bool)> {
        let opened = self.sealer.open(sealed, aad).ok()?;
        let session = serde_json::from_slice(&opened.plaintext).ok()?;
        Some((session, opened.rotated))
    }

    fn redis_aad(&self, id: &SessionId) -> Vec<u8> {
        let mut aad = self.aad.clone();
        aad.push(0);
        aad.extend_from_slice(id.as_text().expose().as_bytes());
        aad
    }

    /// Stores `session` and returns the `Set-Cookie` values that point the browser at it.
    /// `handle`: the request's cookie, when the session is an update of it.
    pub async fn save(
        &self,
        session: &Session,
        handle: Option<&Handle>,
        secure: bool,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let plaintext = serde_json::to_vec(session)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode the session: {e}")))?;
        let remaining = Duration::from_secs(session.expires_at.saturating_sub(now()).max(1));
        let chunks = handle.map_or(0, |h| h.chunks);
        let value = match &self.backend {
            Backend::Cookie => self
                .sealer
                .seal(&plaintext, &self.aad)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            Backend::Redis(store) => {
                let id = match handle.and_then(|h| h.id.clone()) {
                    Some(id) => id,
                    None => SessionId::generate().map_err(|_| {
                        StoreError::Unavailable("the system random source failed".into())
                    })?,
                };
                let sealed = self
                    .sealer
                    .seal(&plaintext, &self.redis_aad(&id))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                store
                    .put(
                        &id,
                        sealed.as_bytes(),
                        remaining,
                        session.sid.as_deref(),
                        Some(&session.subject),
                    )
                    .await?;
                id.as_text().expose().to_string()
            }
        };
        let jar = self
            .jar(secure)
            .ok_or_else(|| StoreError::Unavailable("invalid session cookie name".into()))?;
        jar.set(&value, Some(remaining), chunks)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Ends the request's session (deleted from Redis) and returns the cookies that clear it.
    pub async fn end(&self, handle: &Handle, secure: bool) -> Result<Vec<HeaderValue>, StoreError> {
        if let (Backend::Redis(store), Some(id)) = (&self.backend, &handle.id) {
            store.delete(id).await?;
        }
        Ok(self.clear(handle, secure))
    }

    /// The cookies that clear the request's session cookie (and its chunks).
    pub fn clear(&self, handle: &Handle, secure: bool) -> Vec<HeaderValue> {
        self.jar(secure)
            .map(|jar| jar.clear(handle.chunks))
            .unwrap_or_default()
    }

    /// Back-channel logout: ends the sessions of `sid`, or else of `subject`. Redis deletes
    /// them for every instance; the cookie store remembers the logout in this instance.
    pub async fn revoke(
        &self,
        sid: Option<&str>,
        subject: Option<&str>,
    ) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redis(store) => store.revoke(sid, subject).await,
            Backend::Cookie => {
                let now = now();
                let until = now + self.ttl.as_secs();
                let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                if revoked.sids.len() + revoked.subjects.len() >= MAX_REVOCATIONS {
                    revoked.sids.retain(|_, t| *t > now);
                    revoked
                        .subjects
                        .retain(|_, t| *t + self.ttl.as_secs() > now);
                }
                match (sid, subject) {
                    (Some(sid), _) => {
                        revoked.sids.insert(sid.to_owned(), until);
                    }
                    (None, Some(subject)) => {
                        revoked.subjects.insert(subject.to_owned(), now);
                    }
                    (None, None) => return Ok(0),
                }
                Ok(1)
            }
        }
    }

    /// Cookie store: remembers a signed-out session (by keyway's id and the provider's `sid`),
    /// so a copy of its cookie is refused by this instance until it would have expired.
    pub fn forget(&self, session: &Session) {
        if self.is_redis() {
            return;
        }
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        for key in [
            Some(format!("keyway:{}", session.id)).filter(|_| !session.id.is_empty()),
            session.sid.clone(),
        ]
        .into_iter()
        .flatten()
        {
            revoked.sids.insert(key, session.expires_at);
        }
    }

    fn is_revoked(&self, session: &Session) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.sids.is_empty() && revoked.subjects.is_empty() {
            return false;
        }
        (!session.id.is_empty() && revoked.sids.contains_key(&format!("keyway:{}", session.id)))
            || session
                .sid
                .as_ref()
                .is_some_and(|sid| revoked.sids.contains_key(sid))
            || revoked
                .subjects
                .get(&session.subject)
                .is_some_and(|at| session.created_at <= *at)
    }

    /// Stores the session again when it was sealed with an old secret (so the cookie moves to
    /// the current one); otherwise there is nothing to set.
    pub async fn save_if_rotated(
        &self,
        session: Session,
        handle: &Handle,
        secure: bool,
    ) -> Result<(Session, Vec<HeaderValue>), StoreError> {
        if !handle.rotated {
            return Ok((session, Vec::new()));
        }
        let cookies = self.save(&session, Some(handle), secure).await?;
        Ok((session, cookies))
    }

    /// The right to renew this session: always granted in the cookie store (one instance
    /// sees a given cookie's refresh token); in Redis, held by one instance at a time.
    pub async fn lock_renewal(&self, handle: &Handle) -> Result<Option<RenewalLock>, StoreError> {
        match (&self.backend, &handle.id) {
            (Backend::Redis(store), Some(id)) => {
                let name = format!("renew:{}", id.as_text().expose());
                Ok(store
                    .try_lock(&name, RENEWAL_LOCK)
                    .await?
                    .map(|token| RenewalLock::Redis(name, token)))
            }
            _ => Ok(Some(RenewalLock::Local)),
        }
    }

    pub async fn unlock_renewal(&self, lock: RenewalLock) {
        if let (Backend::Redis(store), RenewalLock::Redis(name, token)) = (&self.backend, lock) {
            // An unreleased lock expires by itself.
            let _ = store.unlock(&name, &token).await;
        }
    }

    /// Redis: waits (at most a few seconds) for another instance's renewal of this session to
    /// reach the store.
    pub async fn await_renewal(&self, handle: &Handle, current: &Session) -> Option<Session> {
        let (Backend::Redis(store), Some(id)) = (&self.backend, &handle.id) else {
            return None;
        };
        let deadline = tokio::time::Instant::now() + RENEWAL_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Ok(Some(sealed)) = store.get(id).await else {
                continue;
            };
            let renewed = std::str::from_utf8(&sealed)
                .ok()
                .and_then(|text| self.open(text, &self.redis_aad(id)))
                .map(|(session, _)| session)
                .filter(|s| s.tokens_expire_at != current.tokens_expire_at);
            if renewed.is_some() {
                return renewed;
            }
        }
        None
    }

    /// Seals a short-lived value (the sign-in state) for this authenticator and `purpose`.
    pub fn seal_state(&self, purpose: &str, plaintext: &[u8]) -> Option<String> {
        self.sealer.seal(plaintext, &self.state_aad(purpose)).ok()
    }

    pub fn open_state(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        self.sealer
            .open(sealed, &self.state_aad(purpose))
            .ok()
            .map(|o| o.plaintext)
    }

    fn state_aad(&self, purpose: &str) -> Vec<u8> {
        let mut aad = self.aad.clone();
        aad.extend_from_slice(b"\0state\0");
        aad.extend_from_slice(purpose.as_bytes());
        aad
    }
}
