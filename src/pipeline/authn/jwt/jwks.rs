//! A remote JWKS: fetched with keyway's HTTP client, cached, refreshed in the background,
//! refetched when a token names an unknown `kid` (at most once per `jwks_min_refetch`), and the
//! last good set kept while the endpoint fails.
//!
//! The refresher task holds only a `Weak` reference, so it ends by itself once a reload has
//! dropped the authenticator. `compile` runs outside any runtime (`keyway check`), so the task
//! starts lazily: on the first `start()` made inside a tokio runtime (compile under a running
//! server, the server's start, readiness checks, or the first request).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{StatusCode, Uri};
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

use super::keys::{self, VerifyKey};
use crate::fetch::{self, Fetcher};

/// Upper bound of a JWKS document; real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One fetched key set. `generation` changes only when the document changes.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
    pub generation: u64,
}

struct FetchState {
    last_attempt: Option<Instant>,
    body_hash: [u8; 32],
}

pub struct Jwks {
    url: Uri,
    /// `scheme://host/path`, for messages (never the query).
    pub label: String,
    refresh: Duration,
    min_refetch: Duration,
    restrict: Option<Vec<Algorithm>>,
    keys: ArcSwapOption<KeySet>,
    /// Single flight: whoever holds it fetches; others wait, then use the result.
    fetch: tokio::sync::Mutex<FetchState>,
    last_error: Mutex<Option<String>>,
    started: AtomicBool,
    generation: AtomicU64,
    fetcher: Fetcher,
    /// Fetches that succeeded and that failed (for `/metrics`).
    fetched_ok: AtomicU64,
    fetched_failed: AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.label)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// Result of looking for a key after a possible refetch.
pub enum Refetch {
    /// A newer set was fetched (by us or by a concurrent request).
    Fetched(Arc<KeySet>),
    /// Rate limited or failed: the set is unchanged.
    Unchanged,
}

impl Jwks {
    pub fn new(
        url: Uri,
        refresh: Duration,
        min_refetch: Duration,
        restrict: Option<Vec<Algorithm>>,
    ) -> Arc<Jwks> {
        let label = fetch::label(&url);
        Arc::new(Jwks {
            url,
            label,
            refresh,
            min_refetch,
            restrict,
            keys: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                body_hash: [0; 32],
            }),
            last_error: Mutex::new(None),
            started: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            fetcher: Fetcher::new(FETCH_TIMEOUT, MAX_JWKS_BYTES),
            fetched_ok: AtomicU64::new(0),
            fetched_failed: AtomicU64::new(0),
        })
    }

    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.keys.load().as_ref().map_or(0, |k| k.generation)
    }

    /// Successful and failed fetches so far.
    pub fn fetch_counts(&self) -> (u64, u64) {
        (
            self.fetched_ok.load(Ordering::Relaxed),
            self.fetched_failed.load(Ordering::Relaxed),
        )
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts the background refresher once, if called inside a tokio runtime.
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
        handle.spawn(refresher(Arc::downgrade(self)));
    }

    /// The key set, fetching it now if it was never fetched (waits for a fetch in flight).
    pub async fn get_or_fetch(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        if let Some(k) = self.current() {
            return Some(k);
        }
        self.start();
        let mut state = self.fetch.lock().await;
        if let Some(k) = self.current() {
            return Some(k);
        }
        if rate_limited(&state, self.min_refetch) {
            return None;
        }
        self.fetch_locked(&mut state).await;
        self.current()
    }

    /// A token named a `kid` that `seen` lacks: refetch, at most once per `min_refetch`.
    pub async fn refetch_for_unknown_kid(&self, seen: u64) -> Refetch {
        let mut state = self.fetch.lock().await;
        // Someone fetched a newer set while we waited for the lock.
        if let Some(k) = self.current()
            && k.generation != seen
        {
            return Refetch::Fetched(k);
        }
        if rate_limited(&state, self.min_refetch) {
            return Refetch::Unchanged;
        }
        self.fetch_locked(&mut state).await;
        match self.current() {
            Some(k) if k.generation != seen => Refetch::Fetched(k),
            _ => Refetch::Unchanged,
        }
    }

    /// One fetch under the single-flight lock. On failure the last good set stays.
    async fn fetch_locked(&self, state: &mut FetchState) -> bool {
        state.last_attempt = Some(Instant::now());
        let result = self.download().await.and_then(|body| {
            let digest: [u8; 32] = Sha256::digest(&body).into();
            if digest == state.body_hash && self.current().is_some() {
                return Ok(None);
            }
            let parsed = keys::parse_jwks(&body, self.restrict.as_deref(), false)
                .map_err(|e| format!("{} served an unusable key set: {e}", self.label))?;
            Ok(Some((digest, parsed)))
        });
        let counter = if result.is_ok() {
            &self.fetched_ok
        } else {
            &self.fetched_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(None) => {
                self.set_error(None);
                true
            }
            Ok(Some((digest, parsed))) => {
                for note in &parsed.skipped {
                    tracing::warn!(jwks = %self.label, "skipped a JWKS key: {note}");
                }
                state.body_hash = digest;
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::info!(
                    jwks = %self.label,
                    keys = parsed.keys.len(),
                    "fetched JWKS"
                );
                self.keys.store(Some(Arc::new(KeySet {
                    keys: parsed.keys,
                    generation,
                })));
                self.set_error(None);
                true
            }
            Err(e) => {
                let kept = if self.current().is_some() {
                    "keeping the last good key set"
                } else {
                    "no key set yet"
                };
                tracing::warn!(jwks = %self.label, error = %e, "JWKS fetch failed; {kept}");
                self.set_error(Some(e));
                false
            }
        }
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    async fn download(&self) -> Result<Bytes, String> {
        let fetched = self
            .fetcher
            .get(&self.url, "application/jwk-set+json, application/json")
            .await?;
        if fetched.status != StatusCode::OK {
            let note = if fetched.status.is_redirection() {
                " (redirects are not followed: configure the final URL)"
            } else {
                ""
            };
            return Err(format!(
                "GET {} answered {}{note}",
                self.label, fetched.status
            ));
        }
        Ok(fetched.body)
    }
}

fn rate_limited(state: &FetchState, min: Duration) -> bool {
    state.last_attempt.is_some_and(|t| t.elapsed() < min)
}

/// Fetches now, then every `refresh`; after a failure retries sooner (1s doubling, at most
/// `refresh`), so readiness comes soon after the endpoint does.
async fn refresher(weak: Weak<Jwks>) {
    let mut delay = Duration::ZERO;
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::time::sleep(delay).await;
        let Some(jwks) = weak.upgrade() else {
            return;
        };
        let ok = {
            let mut state = jwks.fetch.lock().await;
            // A request may have fetched the set while this task slept (at start-up, or for an
            // unknown kid): a good fetch in the last half-interval (at least 1 s) counts as this
            // refresh, so start-up does not fetch twice.
            let recent = delay.max(Duration::from_secs(2)) / 2;
            let fresh = jwks.current().is_some()
                && jwks.last_error().is_none()
                && state.last_attempt.is_some_and(|t| t.elapsed() < recent);
            fresh || jwks.fetch_locked(&mut state).await
        };
        if ok {
            delay = jwks.refresh;
            backoff = Duration::from_secs(1);
        } else {
            delay = backoff.min(jwks.refresh);
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}
