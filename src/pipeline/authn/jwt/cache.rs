//! The verified-token cache: a token whose signature verified is not verified again while it is
//! valid. This is what keeps RS256 and ES256 cheap: a client reuses its token for minutes, and
//! each reuse costs one SHA-256 and a map lookup instead of a public-key operation.
//!
//! Keyed by the SHA-256 of the token (the token itself is never stored), bounded, sharded so
//! workers rarely contend, and owned by one compiled authenticator: a reload builds a new one,
//! which flushes it. The time claims are kept and re-checked on every hit by the caller. Entries
//! also remember the key-set generation they were verified under, so a JWKS change (a key
//! removed) sends cached tokens through verification again.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::claims::Times;
use crate::pipeline::authn::Identity;

const SHARDS: usize = 16;

pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
pub struct Entry {
    pub identity: Arc<Identity>,
    pub times: Times,
    pub generation: u64,
}

pub struct Cache {
    shards: Vec<Mutex<HashMap<TokenHash, Entry, DigestHasher>>>,
    per_shard: usize,
    /// Tokens answered from the cache, and tokens verified (for `/metrics`).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Cache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(DigestHasher::default())))
                .collect(),
            per_shard,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn counted(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn shard(&self, key: &TokenHash) -> &Mutex<HashMap<TokenHash, Entry, DigestHasher>> {
        &self.shards[usize::from(key[31]) % SHARDS]
    }

    pub fn get(&self, key: &TokenHash) -> Option<Entry> {
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(key).cloned()
    }

    pub fn remove(&self, key: &TokenHash) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard.remove(key);
    }

    /// Inserts, evicting when the shard is full: first entries that have expired by `now`, then
    /// an arbitrary one (a cache miss only costs one verification).
    pub fn insert(&self, key: TokenHash, entry: Entry, now: f64) {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.times.exp.is_none_or(|exp| exp > now));
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// The key is already a uniform SHA-256 digest: hashing it again with SipHash is wasted work.
#[derive(Clone, Copy, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length prefix then its bytes; keep the first 8 digest bytes.
        if bytes.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(b);
        }
    }
}

impl BuildHasher for DigestHasher {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(exp: f64) -> Entry {
        Entry {
            identity: Arc::new(Identity {
                subject: "s".into(),
                consumer: None,
                groups: Arc::from(Vec::new()),
                authenticator: Arc::from("a"),
                authenticator_header: None,
                claims: None,
                headers: Vec::new(),
                valid_until: None,
            }),
            times: Times {
                exp: Some(exp),
                ..Times::default()
            },
            generation: 0,
        }
    }

    #[test]
    fn bounded_and_keyed_by_hash() {
        let c = Cache::new(32);
        for i in 0..1000 {
            c.insert(hash(&format!("t{i}")), entry(10.0), 5.0);
        }
        assert!(c.len() <= 32, "{}", c.len());
        c.insert(hash("x"), entry(10.0), 5.0);
        assert!(c.get(&hash("x")).is_some());
        c.remove(&hash("x"));
        assert!(c.get(&hash("x")).is_none());
    }
}
