//! The `api_key` authenticator: keys stored as SHA-256 hashes, found by hash and compared in
//! constant time.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Identity;
use super::source::Source;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::runtime::Consumer;
use crate::reason::Reason;
use crate::secret::Secret;

#[derive(Debug)]
pub struct ApiKeyAuth {
    pub name: Arc<str>,
    /// `name` as the X-Keyway-Authenticator value.
    pub name_header: Option<http::HeaderValue>,
    pub sources: Vec<Source>,
    pub keys: KeyTable,
}

/// Every consumer's key hashes, found by their first 8 bytes, so a request costs the same with
/// one key as with ten thousand. The table holds SHA-256 digests: what a lookup's timing could
/// show (whether a presented key's digest shares its first 8 bytes with a stored one) brings
/// nobody closer to a key. The whole digest is then compared in constant time.
#[derive(Default)]
pub struct KeyTable {
    by_prefix: HashMap<u64, Vec<StoredKey>>,
    len: usize,
}

/// A key's SHA-256 digest and its consumer.
type StoredKey = ([u8; 32], Arc<Consumer>);

impl KeyTable {
    pub fn new(keys: impl IntoIterator<Item = StoredKey>) -> Self {
        let mut table = KeyTable::default();
        for (hash, consumer) in keys {
            table
                .by_prefix
                .entry(prefix(&hash))
                .or_default()
                .push((hash, consumer));
            table.len += 1;
        }
        table
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The consumer whose key hashes to `presented`.
    pub fn find(&self, presented: &[u8; 32]) -> Option<&Arc<Consumer>> {
        let candidates = self.by_prefix.get(&prefix(presented))?;
        // Nearly always one. All are compared, so the time does not depend on which one matched.
        let mut matched = None;
        for (hash, consumer) in candidates {
            if digests_equal(hash, presented) {
                matched = Some(consumer);
            }
        }
        matched
    }
}

/// A digest of a weak key can be brute-forced offline: a Debug print shows only how many there are.
impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable").field("keys", &self.len).finish()
    }
}

fn prefix(hash: &[u8; 32]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// Equality of two digests in constant time: the differences of their 8-byte words are OR-ed
/// together without a branch, and only that result is compared, by `subtle`.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u64;
    for (x, y) in a.as_chunks::<8>().0.iter().zip(b.as_chunks::<8>().0) {
        difference |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    bool::from(difference.ct_eq(&0))
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<hex>` as written in the config and printed by `keyway hash-key`.
pub fn hashed_form(key: &str) -> String {
    format!("sha256:{}", hex::encode(hash_key(key)))
}

impl ApiKeyAuth {
    pub fn verify(&self, credential: Secret<&str>) -> Result<Identity, Refusal> {
        let presented = hash_key(credential.expose());
        let consumer = self.keys.find(&presented).ok_or_else(|| {
            Refusal::new(
                Reason::ApiKeyInvalid,
                format!(
                    "The API key matches none of the {} keys known to authenticator {}.",
                    self.keys.len(),
                    self.name
                ),
            )
            .hint("Check that the key is complete and that its sha256 form is in a consumer's api_keys (`keyway hash-key`).")
        })?;
        Ok(Identity {
            subject: consumer.name.clone(),
            consumer: Some(consumer.clone()),
            groups: consumer.groups.clone(),
            authenticator: self.name.clone(),
            authenticator_header: self.name_header.clone(),
            claims: None,
            headers: Vec::new(),
            valid_until: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str) -> Arc<Consumer> {
        Arc::new(Consumer::new(name, Vec::new()))
    }

    #[test]
    fn every_key_of_many_finds_its_consumer_and_no_other_key_does() {
        let table = KeyTable::new(
            (0..2000).map(|i| (hash_key(&format!("key-{i}")), consumer(&format!("c{i}")))),
        );
        assert_eq!(table.len(), 2000);
        for i in [0, 1, 999, 1999] {
            let found = table.find(&hash_key(&format!("key-{i}")));
            assert_eq!(found.map(|c| &*c.name), Some(&*format!("c{i}")));
        }
        assert!(table.find(&hash_key("key-2000")).is_none());
        assert!(table.find(&hash_key("")).is_none());
    }

    #[test]
    fn a_digest_sharing_the_first_8_bytes_is_not_a_match() {
        let stored = hash_key("the real key");
        for at in [8, 15, 16, 31] {
            let mut near = stored;
            near[at] ^= 0x01;
            let table = KeyTable::new([(near, consumer("near"))]);
            assert!(table.find(&stored).is_none(), "differs at byte {at}");
        }
        // Two stored digests under one prefix: each finds its own consumer.
        let mut twin = stored;
        twin[31] ^= 0x80;
        let table = KeyTable::new([(stored, consumer("real")), (twin, consumer("twin"))]);
        assert_eq!(table.find(&stored).map(|c| &*c.name), Some("real"));
        assert_eq!(table.find(&twin).map(|c| &*c.name), Some("twin"));
    }

    #[test]
    fn a_debug_print_shows_no_digest() {
        let table = KeyTable::new([(hash_key("k"), consumer("c"))]);
        assert_eq!(format!("{table:?}"), "KeyTable { keys: 1 }");
    }

    #[test]
    fn hashed_form_matches_spec_example() {
        assert_eq!(
            hashed_form("foo"),
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
