//! Strict parsing of a JWS compact token, before any key is touched.
//!
//! jsonwebtoken would parse too, but its errors are coarse; parsing here first lets every
//! failure carry its own reason and a detail that names what was wrong. The rules, each from an
//! attack in research/jwt.md §6: a size bound before decoding; exactly three parts (a JWE has
//! five); canonical base64url without padding; JSON objects without duplicate members at any
//! depth (serde would silently keep the last `alg`); `alg: none` in any spelling refused;
//! `crit` refused (keyway understands no extension); header-supplied keys (`jwk`, `jku`, `x5u`,
//! `x5c`) refused on sight, because a verifier that never reads them has no reason to accept a
//! token that relies on them; nested tokens (`cty: JWT`) refused.
//!
//! Details never quote the token, the signature or a key: only short, sanitised header values
//! such as the `alg` or `kid` string.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::reason::Reason;

/// Tokens longer than this are refused before decoding (research §6 row 23).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token that passed every structural check; its signature is not verified yet. `Debug`
/// leaves out `signing_input` and `signature_b64`: they are the token itself.
pub struct Parsed<'t> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'t str,
    /// The third part, still base64url (checked canonical).
    pub signature_b64: &'t str,
    /// Decoded signature length (checked against the algorithm before verifying).
    pub signature_len: usize,
}

impl fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parsed")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("signature_len", &self.signature_len)
            .finish_non_exhaustive()
    }
}

/// Why a token failed structurally: a reason code and a sentence for the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub reason: Reason,
    pub detail: String,
}

impl TokenError {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        TokenError {
            reason,
            detail: detail.into(),
        }
    }

    fn malformed(detail: impl Into<String>) -> Self {
        Self::new(Reason::JwtMalformed, detail)
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

/// The claim names of a token's payload, read without verifying it: for explain and `check
/// --token`, which show names and never values. `None` when it is not a JWT with a JSON
/// object payload.
pub fn unverified_claim_names(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let map: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    Some(map.keys().cloned().collect())
}

/// A short, printable rendering of an attacker-controlled string for a detail.
pub fn show(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(40) + 2);
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == 40 {
            out.push('…');
            break;
        }
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
    out.push('"');
    out
}

/// The JSON type of a value, for details ("found a string").
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The algorithms keyway verifies, by their exact JOSE names (no case folding: `hs256` is not
/// `HS256`, research row 22).
pub fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Header members that carry or point to a key. Trusting any of them lets the token choose
/// the key that verifies it (CVE-2018-0114, `jku`/`x5u` SSRF).
const KEY_MEMBERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

pub fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::malformed(format!(
            "The token is {} bytes; keyway accepts tokens up to {MAX_TOKEN_BYTES} bytes.",
            token.len()
        )));
    }
    if token.starts_with('{') {
        return Err(TokenError::malformed(
            "The token is JSON (JWS JSON serialization); keyway accepts only the compact form header.payload.signature.",
        ));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        let n = token.split('.').count();
        return Err(TokenError::malformed(format!(
            "The token has {n} part{}; a JWT has 3 (header.payload.signature).",
            if n == 1 { "" } else { "s" }
        )));
    };
    let extra = parts.count();
    if extra == 2 {
        return Err(TokenError::malformed(
            "The token has 5 parts: it is an encrypted JWE; keyway accepts only signed tokens (JWS, 3 parts).",
        ));
    }
    if extra > 0 {
        return Err(TokenError::malformed(format!(
            "The token has {} parts; a JWT has 3 (header.payload.signature).",
            3 + extra
        )));
    }
    let header = decode_object(h, "header")?;
    let (alg, kid) = check_header(&header)?;
    let claims = decode_object(p, "payload")?;
    let signature = decode_part(s, "signature")?;
    if signature.is_empty() {
        return Err(TokenError::new(
            Reason::JwtSignatureInvalid,
            "The token has no signature (its third part is empty).",
        ));
    }
    Ok(Parsed {
        alg,
        kid,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature_b64: s,
        signature_len: signature.len(),
    })
}

fn decode_part(text: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    if text.is_empty() && what != "signature" {
        return Err(TokenError::malformed(format!(
            "The token's {what} is empty."
        )));
    }
    // URL_SAFE_NO_PAD refuses padding, `+`, `/`, whitespace and non-zero trailing bits, so
    // each token has exactly one encoding (research row 17).
    URL_SAFE_NO_PAD.decode(text).map_err(|_| {
        TokenError::malformed(format!(
            "The token's {what} is not canonical base64url (alphabet A-Z a-z 0-9 - _, no padding, no whitespace)."
        ))
    })
}

fn decode_object(text: &str, what: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = decode_part(text, what)?;
    match strict_json(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(TokenError::malformed(format!(
            "The token's {what} is {}, not a JSON object.",
            type_name(&other)
        ))),
        Err(e) => Err(TokenError::malformed(format!(
            "The token's {what} is not valid JSON: {e}."
        ))),
    }
}

fn check_header(header: &Map<String, Value>) -> Result<(Algorithm, Option<String>), TokenError> {
    if header.contains_key("enc") {
        return Err(TokenError::malformed(
            "The token header has \"enc\": it is an encrypted JWE; keyway accepts only signed tokens (JWS).",
        ));
    }
    let alg = match header.get("alg") {
        None => {
            return Err(TokenError::malformed("The token header has no \"alg\"."));
        }
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(TokenError::malformed(format!(
                "The token header's \"alg\" is {}, not a string.",
                type_name(other)
            )));
        }
    };
    if alg.trim().eq_ignore_ascii_case("none") {
        return Err(TokenError::new(
            Reason::JwtAlgNotAllowed,
            format!(
                "The token's alg is {}: unsigned tokens are never accepted.",
                show(alg)
            ),
        ));
    }
    let Some(alg) = algorithm(alg) else {
        return Err(TokenError::new(
            Reason::JwtAlgNotAllowed,
            format!(
                "The token's alg {} is not a JWS algorithm keyway verifies (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA; names are case-sensitive).",
                show(alg)
            ),
        ));
    };
    if let Some(crit) = header.get("crit") {
        let names = match crit {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| type_name(v).to_owned(), show))
                .collect::<Vec<_>>()
                .join(", "),
            other => type_name(other).to_owned(),
        };
        return Err(TokenError::new(
            Reason::JwtCritUnsupported,
            format!(
                "The token header marks extensions as critical (crit: {names}); keyway implements none, so it must refuse the token (RFC 7515 §4.1.11)."
            ),
        ));
    }
    if let Some(member) = KEY_MEMBERS.iter().find(|m| header.contains_key(**m)) {
        return Err(TokenError::new(
            Reason::JwtEmbeddedKey,
            format!(
                "The token header carries \"{member}\", a key or key location chosen by the token itself; keyway verifies only with configured keys and refuses such tokens."
            ),
        ));
    }
    if let Some(cty) = header.get("cty").and_then(Value::as_str)
        && cty.eq_ignore_ascii_case("jwt")
    {
        return Err(TokenError::malformed(
            "The token is a nested JWT (cty: JWT); keyway accepts only a plain signed token.",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(other) => {
            return Err(TokenError::malformed(format!(
                "The token header's \"kid\" is {}, not a string.",
                type_name(other)
            )));
        }
    };
    Ok((alg, kid))
}

/// Parses JSON into a `Value`, refusing duplicate object members at any depth. serde_json's own
/// recursion limit (128) bounds nesting.
pub fn strict_json(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(|e| clean(&e))?;
    de.end().map_err(|e| clean(&e))?;
    Ok(value)
}

/// serde_json's message without its "at line 1 column N" suffix (the position is noise here).
fn clean(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate member {} (a JSON object must name each member once)",
                    show(&key)
                )));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn tok(h: &str, p: &str, s: &str) -> String {
        format!("{}.{}.{s}", b64(h), b64(p))
    }

    fn reason(t: &str) -> Reason {
        parse(t).map(|_| ()).unwrap_err().reason
    }

    #[test]
    fn well_formed() {
        let t = tok(r#"{"alg":"HS256","kid":"k1"}"#, r#"{"sub":"a"}"#, "AAAA");
        let p = parse(&t).unwrap();
        assert_eq!(p.alg, Algorithm::HS256);
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.signature_len, 3);
        assert_eq!(p.claims["sub"], "a");
    }

    #[test]
    fn refusals_have_precise_reasons() {
        use Reason::*;
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let cases = [
            (r#"{"alg":"none"}"#, "{}", "AAAA", JwtAlgNotAllowed),
            (r#"{"alg":"nOnE"}"#, "{}", "", JwtAlgNotAllowed),
            (r#"{"alg":"hs256"}"#, "{}", "AAAA", JwtAlgNotAllowed),
            (r#"{"alg":"HS256"}"#, "{}", "", JwtSignatureInvalid),
            (
                r#"{"alg":"HS256","crit":["x"],"x":1}"#,
                "{}",
                "AAAA",
                JwtCritUnsupported,
            ),
            (
                r#"{"alg":"RS256","jku":"http://x"}"#,
                "{}",
                "AAAA",
                JwtEmbeddedKey,
            ),
            (
                r#"{"alg":"HS256","alg":"none"}"#,
                "{}",
                "AAAA",
                JwtMalformed,
            ),
            (
                r#"{"alg":"HS256"}"#,
                r#"{"a":{"b":1,"b":2}}"#,
                "AAAA",
                JwtMalformed,
            ),
            // "AB" decodes with non-zero trailing bits: not canonical.
            (r#"{"alg":"HS256"}"#, "{}", "AB", JwtMalformed),
            (r#"{"alg":"HS256","kid":7}"#, "{}", "AAAA", JwtMalformed),
            (r#"{"alg":"HS256"}"#, "[1]", "AAAA", JwtMalformed),
            (r#"{"alg":"HS256"}"#, &deep, "AAAA", JwtMalformed),
        ];
        for (h, p, s, want) in cases {
            assert_eq!(reason(&tok(h, p, s)), want, "{h} {p:.40} {s}");
        }
        assert_eq!(reason("a.b"), JwtMalformed);
        assert_eq!(reason("a.b.c.d.e"), JwtMalformed);
        assert_eq!(
            reason(&format!("{}=", tok(r#"{"alg":"HS256"}"#, "{}", "AAAA"))),
            JwtMalformed
        );
        assert_eq!(reason(&"a".repeat(MAX_TOKEN_BYTES + 1)), JwtMalformed);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = tok(
            r#"{"alg":"HS256","kid":"k1"}"#,
            r#"{"sub":"a"}"#,
            "c2VjcmV0c2lnbmF0dXJl",
        );
        let shown = format!("{:?}", parse(&t).unwrap());
        let (input, sig) = t.rsplit_once('.').unwrap();
        assert!(!shown.contains(sig), "{shown}");
        assert!(!shown.contains(input), "{shown}");
        assert!(shown.contains("HS256") && shown.contains("k1"), "{shown}");
    }

    #[test]
    fn details_never_quote_the_signature() {
        let t = tok(r#"{"alg":"HS256","alg":"x"}"#, "{}", "c2VjcmV0c2lnbmF0dXJl");
        let e = parse(&t).unwrap_err();
        assert!(!e.detail.contains("c2VjcmV0c2lnbmF0dXJl"), "{e}");
    }

    #[test]
    fn mutated_tokens_never_panic() {
        let base = tok(
            r#"{"alg":"ES256","kid":"k"}"#,
            r#"{"sub":"a","exp":1,"aud":["x"]}"#,
            "AAAA",
        )
        .into_bytes();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut t = base.clone();
            for _ in 0..(state % 4 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % t.len();
                t[i] = (state >> 32) as u8;
            }
            let _ = parse(&String::from_utf8_lossy(&t));
        }
    }
}
