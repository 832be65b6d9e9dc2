//! Verification keys, each bound to the algorithms it may verify (SPEC §5: an HS secret is never
//! usable as an RS/ES/EdDSA key, nor the reverse). Loading from secrets, PEM files and JWKS.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::Value;

use super::token;

/// RSA moduli below this are refused at load (research row 27).
pub const MIN_RSA_BITS: usize = 2048;

/// A key and the algorithms it is bound to. `DecodingKey`'s Debug already redacts the material.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algs: Vec<Algorithm>,
    pub key: DecodingKey,
    /// RSA modulus size in bytes (the exact signature length), 0 for other families.
    pub rsa_bytes: usize,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algs", &self.algs)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub fn algs_text(&self) -> String {
        names(&self.algs)
    }

    /// The signature length `alg` produces with this key, when fixed.
    pub fn signature_len(&self, alg: Algorithm) -> Option<usize> {
        Some(match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            Algorithm::ES256 | Algorithm::EdDSA => 64,
            Algorithm::ES384 => 96,
            _ if self.rsa_bytes > 0 => self.rsa_bytes,
            _ => return None,
        })
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "?",
    }
}

pub fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| alg_name(*a))
        .collect::<Vec<_>>()
        .join(", ")
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "an HMAC secret (HS256/384/512)",
        AlgorithmFamily::Rsa => "an RSA key (RS256/384/512, PS256/384/512)",
        AlgorithmFamily::Ec => "an EC key (ES256/384)",
        AlgorithmFamily::Ed => "an Ed25519 key (EdDSA)",
    }
}

/// The public key material of a PEM file, with what it can verify.
pub struct PublicKey {
    pub key: DecodingKey,
    pub family: AlgorithmFamily,
    /// Algorithms the key can serve (a P-256 key only ES256, an RSA key all RS/PS).
    pub usable: Vec<Algorithm>,
    pub rsa_bytes: usize,
}

/// The hash size of an HMAC algorithm: RFC 7518 §3.2 wants secrets at least this long.
pub fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

pub fn decode_base64_secret(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    STANDARD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
        .map_err(|_| "base64_secret is not valid base64".to_owned())
}

fn rsa_bits_from_pkcs1(der: &[u8]) -> Result<usize, String> {
    let key = rsa::RsaPublicKey::from_pkcs1_der(der)
        .map_err(|_| "the RSA public key cannot be parsed".to_owned())?;
    Ok(key.size())
}

/// Reads a public key PEM (`PUBLIC KEY` for RSA, EC and Ed25519, or `RSA PUBLIC KEY`).
pub fn public_pem(bytes: &[u8]) -> Result<PublicKey, String> {
    let parsed = pem::parse(bytes).map_err(|_| "not a PEM file".to_owned())?;
    match parsed.tag() {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        "CERTIFICATE" => {
            return Err(
                "a certificate, not a public key: extract the key with `openssl x509 -pubkey -noout -in FILE`"
                    .to_owned(),
            );
        }
        tag if tag.contains("PRIVATE") => {
            return Err(format!(
                "a private key ({tag}); give the public key here (`openssl pkey -pubout -in FILE`), or use private_key_file"
            ));
        }
        tag => return Err(format!("a PEM {tag:?}, not a public key")),
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        let der = key.try_get_as_bytes().map_err(|e| e.to_string())?;
        let size = rsa_bits_from_pkcs1(der)?;
        if size * 8 < MIN_RSA_BITS {
            return Err(format!(
                "an RSA key of {} bits; keyway requires at least {MIN_RSA_BITS}",
                size * 8
            ));
        }
        return Ok(PublicKey {
            key,
            family: AlgorithmFamily::Rsa,
            usable: AlgorithmFamily::Rsa.algorithms().to_vec(),
            rsa_bytes: size,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        let alg = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err(
                "an EC key on a curve keyway does not verify (P-256 for ES256, P-384 for ES384)"
                    .to_owned(),
            ),
        };
        probe(&key, alg)
            .map_err(|_| "an EC public key that is not a valid curve point".to_owned())?;
        return Ok(PublicKey {
            key,
            family: AlgorithmFamily::Ec,
            usable: vec![alg],
            rsa_bytes: 0,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err("an Ed25519 public key must be 32 bytes".to_owned());
        }
        probe(&key, Algorithm::EdDSA)
            .map_err(|_| "an Ed25519 public key that is not valid".to_owned())?;
        return Ok(PublicKey {
            key,
            family: AlgorithmFamily::Ed,
            usable: vec![Algorithm::EdDSA],
            rsa_bytes: 0,
        });
    }
    Err("a public key of a type keyway does not verify (RSA, EC P-256/P-384, Ed25519)".to_owned())
}

/// Builds the verifier once with a dummy signature: a key the crypto backend refuses shows up
/// here, at load, not on the first request.
fn probe(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, alg)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A private key PEM for `algorithm` (used by `keyway token`), and its public half.
pub fn private_pem(bytes: &[u8], alg: Algorithm) -> Result<(EncodingKey, PublicKey), String> {
    let parsed = pem::parse(bytes).map_err(|_| "not a PEM file".to_owned())?;
    if parsed.tag() == "EC PRIVATE KEY" {
        return Err(
            "an SEC1 EC key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in FILE`"
                .to_owned(),
        );
    }
    if !parsed.tag().contains("PRIVATE KEY") {
        return Err(format!("a PEM {:?}, not a private key", parsed.tag()));
    }
    let family = alg.family();
    let enc = match family {
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(bytes),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(bytes),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(bytes),
        AlgorithmFamily::Hmac => {
            return Err(format!("{} needs a secret, not a key file", alg_name(alg)));
        }
    }
    .map_err(|_| format!("not {} private key", family_name(family)))?;
    let jwk = Jwk::from_encoding_key(&enc, alg).map_err(|_| {
        format!(
            "not {} private key usable with {}",
            family_name(family),
            alg_name(alg)
        )
    })?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let rsa_bytes = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => {
            URL_SAFE_NO_PAD.decode(&p.n).map_or(0, |n| significant(&n))
        }
        _ => 0,
    };
    if family == AlgorithmFamily::Rsa && rsa_bytes * 8 < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {} bits; keyway requires at least {MIN_RSA_BITS}",
            rsa_bytes * 8
        ));
    }
    probe(&key, alg).map_err(|_| format!("a key that cannot verify {}", alg_name(alg)))?;
    Ok((
        enc,
        PublicKey {
            key,
            family,
            usable: vec![alg],
            rsa_bytes,
        },
    ))
}

fn significant(bytes: &[u8]) -> usize {
    bytes.iter().skip_while(|b| **b == 0).count()
}

/// Checks that `alg` may be bound to a key of this kind, or says why not.
pub fn bind(alg: Algorithm, key: &PublicKey) -> Result<(), String> {
    if alg.family() != key.family {
        return Err(format!(
            "{} needs {}, but the key file holds {}",
            alg_name(alg),
            family_name(alg.family()),
            family_name(key.family)
        ));
    }
    if !key.usable.contains(&alg) {
        return Err(format!(
            "{} does not match the key's curve (the key can verify {})",
            alg_name(alg),
            names(&key.usable)
        ));
    }
    Ok(())
}

/// JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2). `k`, the
/// `oct` secret, has its own refusal below.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Skipped-key notes kept per JWKS: a hostile or broken document of 1 MiB could otherwise
/// yield megabytes of notes, logged and repeated in every `jwt.keys_unavailable` detail.
const MAX_SKIPPED_NOTES: usize = 10;

/// Where a JWKS came from, for messages.
pub struct JwksKeys {
    pub keys: Vec<VerifyKey>,
    /// One line per key that was skipped, and why.
    pub skipped: Vec<String>,
}

/// Parses a JWKS document. Keys that keyway cannot use are skipped with a note rather than
/// failing the whole set, as a provider may publish encryption keys beside signing keys.
/// `allow_oct`: symmetric keys are accepted from a local file, never from a URL.
pub fn parse_jwks(
    text: &[u8],
    restrict: Option<&[Algorithm]>,
    allow_oct: bool,
) -> Result<JwksKeys, String> {
    let doc = token::strict_json(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("a JWKS is a JSON object with a \"keys\" array".to_owned());
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let kid = item.get("kid").and_then(Value::as_str).map(str::to_owned);
        let label = kid.as_deref().map_or_else(
            || format!("keys[{i}]"),
            |k| format!("keys[{i}] (kid {})", token::show(k)),
        );
        match jwk_key(item, restrict, allow_oct) {
            Ok(mut key) => {
                key.kid = kid;
                keys.push(key);
            }
            Err(_) if skipped.len() > MAX_SKIPPED_NOTES => {}
            Err(why) => skipped.push(format!("{label}: {why}")),
        }
    }
    if skipped.len() > MAX_SKIPPED_NOTES {
        let more = list.len() - keys.len() - MAX_SKIPPED_NOTES;
        skipped.truncate(MAX_SKIPPED_NOTES);
        skipped.push(format!("{more} more keys skipped"));
    }
    if keys.is_empty() {
        let mut msg = "the JWKS has no usable signing key".to_owned();
        if !skipped.is_empty() {
            msg.push_str(&format!(" ({})", skipped.join("; ")));
        }
        return Err(msg);
    }
    Ok(JwksKeys { keys, skipped })
}

fn jwk_key(
    item: &Value,
    restrict: Option<&[Algorithm]>,
    allow_oct: bool,
) -> Result<VerifyKey, String> {
    let field = |name: &str| item.get(name).and_then(Value::as_str);
    if let Some(u) = field("use")
        && u != "sig"
    {
        return Err(format!("use is {}, not sig", token::show(u)));
    }
    // A private key served at a URL is public: anyone who fetched it can sign tokens (as for
    // `oct`). Only the member's name is reported, never its value.
    if !allow_oct && let Some(m) = PRIVATE_MEMBERS.iter().find(|m| item.get(**m).is_some()) {
        return Err(format!(
            "a private key published at a URL is not accepted (it has member \"{m}\")"
        ));
    }
    let kty = field("kty").ok_or("no kty")?;
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(field(name).ok_or_else(|| format!("no {name}"))?)
            .map_err(|_| format!("{name} is not base64url"))
    };
    let (key, usable, rsa_bytes) = match kty {
        "RSA" => {
            let n = b64("n")?;
            let e = b64("e")?;
            let public = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|_| "an invalid RSA key".to_owned())?;
            if public.size() * 8 < MIN_RSA_BITS {
                return Err(format!(
                    "an RSA key of {} bits; keyway requires at least {MIN_RSA_BITS}",
                    public.size() * 8
                ));
            }
            (
                DecodingKey::from_rsa_raw_components(&n, &e),
                AlgorithmFamily::Rsa.algorithms().to_vec(),
                public.size(),
            )
        }
        "EC" => {
            let alg = match field("crv") {
                Some("P-256") => Algorithm::ES256,
                Some("P-384") => Algorithm::ES384,
                other => {
                    return Err(format!(
                        "curve {} is not P-256 or P-384",
                        token::show(other.unwrap_or(""))
                    ));
                }
            };
            let key = DecodingKey::from_ec_components(
                field("x").ok_or("no x")?,
                field("y").ok_or("no y")?,
            )
            .map_err(|_| "x or y is not base64url".to_owned())?;
            probe(&key, alg).map_err(|_| "not a valid curve point".to_owned())?;
            (key, vec![alg], 0)
        }
        "OKP" => {
            if field("crv") != Some("Ed25519") {
                return Err("an OKP key that is not Ed25519".to_owned());
            }
            let x = b64("x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key must be 32 bytes".to_owned());
            }
            let key = DecodingKey::from_ed_der(&x);
            probe(&key, Algorithm::EdDSA).map_err(|_| "not a valid Ed25519 key".to_owned())?;
            (key, vec![Algorithm::EdDSA], 0)
        }
        "oct" if allow_oct => {
            let k = b64("k")?;
            if k.is_empty() {
                return Err("an empty secret".to_owned());
            }
            (
                DecodingKey::from_secret(&k),
                AlgorithmFamily::Hmac.algorithms().to_vec(),
                0,
            )
        }
        "oct" => return Err("a symmetric key published at a URL is not accepted".to_owned()),
        other => return Err(format!("kty {} is not RSA, EC or OKP", token::show(other))),
    };
    let mut algs = match field("alg") {
        Some(name) => {
            let alg = token::algorithm(name).ok_or_else(|| {
                format!(
                    "alg {} is not a JWS algorithm keyway verifies",
                    token::show(name)
                )
            })?;
            if !usable.contains(&alg) {
                return Err(format!("alg {} does not fit a {kty} key", alg_name(alg)));
            }
            vec![alg]
        }
        // Without `alg`, an RSA key defaults to RS256 only: PS* must be asked for, by the key
        // or by `algorithms`.
        None if kty == "RSA" && restrict.is_none() => vec![Algorithm::RS256],
        None if kty == "oct" && restrict.is_none() => vec![Algorithm::HS256],
        None => usable,
    };
    if let Some(allowed) = restrict {
        algs.retain(|a| allowed.contains(a));
        if algs.is_empty() {
            return Err("its algorithm is not in `algorithms`".to_owned());
        }
    }
    Ok(VerifyKey {
        kid: None,
        algs,
        key,
        rsa_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(private: bool) -> Value {
        let pem = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/keys/rsa.key.pem"),
        )
        .unwrap();
        let enc = EncodingKey::from_rsa_pem(&pem).unwrap();
        let mut v =
            serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
        if private {
            v["d"] = Value::from("cHJpdmF0ZS1leHBvbmVudA");
        }
        v
    }

    #[test]
    fn private_keys_at_a_url_are_skipped_without_their_value() {
        let doc = serde_json::json!({"keys": [rsa_jwk(true), rsa_jwk(false)]}).to_string();
        let remote = parse_jwks(doc.as_bytes(), None, false).unwrap();
        assert_eq!(remote.keys.len(), 1);
        assert_eq!(remote.skipped.len(), 1, "{:?}", remote.skipped);
        assert!(remote.skipped[0].contains("\"d\""), "{:?}", remote.skipped);
        assert!(!remote.skipped[0].contains("cHJpdmF0ZS1leHBvbmVudA"));
        // A local file is the operator's own: its public half is used.
        let local = parse_jwks(doc.as_bytes(), None, true).unwrap();
        assert_eq!(local.keys.len(), 2);
    }

    #[test]
    fn skipped_notes_are_bounded() {
        let doc = format!("{{\"keys\":[{}]}}", vec!["{}"; 50_000].join(","));
        let e = parse_jwks(doc.as_bytes(), None, false)
            .map(|_| ())
            .unwrap_err();
        assert!(e.len() < 2_000, "{} bytes", e.len());
        assert!(e.contains("49990 more keys skipped"), "{e}");
    }
}
