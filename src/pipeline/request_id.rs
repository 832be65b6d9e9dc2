//! `X-Request-Id`: kept from the client when well-formed (1–128 of `A-Za-z0-9._:-`), else minted.

use std::cell::Cell;

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, kept as the header value it is sent as: built once, it goes to the upstream
/// and back to the client without being copied or checked again.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only well-formed (ASCII) ids are ever stored.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client's id when well-formed, else a minted one; `true` when a malformed one was replaced.
pub fn of(headers: &HeaderMap) -> (RequestId, bool) {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_well_formed(v.as_bytes()) => (RequestId(v.clone()), false),
        Some(_) => (mint(), true),
        None => (mint(), false),
    }
}

pub fn is_well_formed(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // A fixed fallback seed only weakens uniqueness across processes, never correctness.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

/// The two hex digits of every byte: one lookup per byte instead of two nibble lookups.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

/// 32 hex characters from a per-thread xorshift stream seeded by the OS.
pub fn mint() -> RequestId {
    let next = |s: &Cell<u64>| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    };
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut id = [0u8; 32];
    let bytes = a.to_be_bytes().into_iter().chain(b.to_be_bytes());
    for (pair, byte) in id.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    // Owned by one shared allocation: the clones for the upstream and the response only count
    // references. Hex digits are always a valid header value.
    RequestId(
        HeaderValue::from_maybe_shared(Bytes::from_owner(id))
            .unwrap_or(HeaderValue::from_static("-")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_well_formed_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, "abc-123:x.y_z".parse().unwrap());
        assert_eq!(of(&h).0.as_str(), "abc-123:x.y_z");
        assert!(!of(&h).1);
        h.insert(&X_REQUEST_ID, "bad id!".parse().unwrap());
        let (minted, replaced) = of(&h);
        assert!(replaced);
        assert_eq!(minted.as_str().len(), 32);
        assert!(minted.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(minted, of(&h).0);
        assert!(!of(&HeaderMap::new()).1);
        assert!(!is_well_formed("a".repeat(129).as_bytes()));
    }
}
