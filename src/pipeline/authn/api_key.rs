//! The `api_key` authenticator: keys stored as SHA-256 hashes, compared in constant time.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Identity;
use super::source::Source;
use crate::config::runtime::Consumer;
use crate::pipeline::refusal::Refusal;
use crate::reason::Reason;
use crate::secret::Secret;

#[derive(Debug)]
pub struct ApiKeyAuth {
    pub name: Arc<str>,
    /// `name` as the X-Keyway-Authenticator value.
    pub name_header: Option<http::HeaderValue>,
    pub sources: Vec<Source>,
    /// Every consumer's key hashes.
    pub keys: Vec<([u8; 32], Arc<Consumer>)>,
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
        // Compare against every key so the time taken does not depend on which one matched.
        let mut matched: Option<&Arc<Consumer>> = None;
        for (hash, consumer) in &self.keys {
            if bool::from(hash.ct_eq(&presented)) {
                matched = Some(consumer);
            }
        }
        let consumer = matched.ok_or_else(|| {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_form_matches_spec_example() {
        assert_eq!(
            hashed_form("foo"),
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
