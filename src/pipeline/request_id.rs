//! `X-Request-Id`: kept from the client when well-formed (1–128 of `A-Za-z0-9._:-`), else minted.

use std::cell::Cell;

use http::{HeaderMap, HeaderName};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn of(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map_or_else(mint, str::to_owned)
}

pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
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

/// 32 hex characters from a per-thread xorshift stream seeded by the OS.
pub fn mint() -> String {
    let next = |s: &Cell<u64>| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    };
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let nibbles = (0..16).rev().map(|shift| (a >> (shift * 4)) & 0xf);
    let nibbles = nibbles.chain((0..16).rev().map(|shift| (b >> (shift * 4)) & 0xf));
    for (digit, nibble) in id.iter_mut().zip(nibbles) {
        *digit = HEX[nibble as usize];
    }
    // Hex digits are ASCII; the fallback is unreachable.
    String::from_utf8(id.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_well_formed_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, "abc-123:x.y_z".parse().unwrap());
        assert_eq!(of(&h), "abc-123:x.y_z");
        h.insert(&X_REQUEST_ID, "bad id!".parse().unwrap());
        let minted = of(&h);
        assert_eq!(minted.len(), 32);
        assert_ne!(minted, of(&h));
        assert!(!is_well_formed(&"a".repeat(129)));
    }
}
