//! Token parsing must be total: any input gives a parsed token or a refusal with a reason,
//! never a panic. Also feeds the same bytes to the strict JSON parser and the JWKS parser.
#![no_main]

use keyway::pipeline::authn::jwt::{keys, token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = token::parse(text) {
            // A refusal's detail never quotes the signature part.
            if let Some(sig) = text.rsplit('.').next()
                && sig.len() >= 16
            {
                assert!(!e.detail.contains(sig));
            }
        }
    }
    let _ = token::strict_json(data);
    let _ = keys::parse_jwks(data, None, true);
});
