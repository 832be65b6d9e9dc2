//! `keyway token`: mints a JWT for a consumer that has an HS secret or a private key, carrying
//! the claims keyway's consumer-mode authenticators look for (the consumer claim, `exp`, and
//! their `iss`/`aud` when they check them).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::file::{AuthenticatorType, ConsumerJwtFile, FileConfig};
use crate::config::interpolate::{resolve_path, with_base_dir};
use crate::config::types::parse_duration;
use crate::pipeline::authn::jwt::{keys, token};

pub fn token(config: &Path, consumer: &str, ttl: &str, claims: &[String]) -> ExitCode {
    let result = parse_claims(claims).and_then(|extra| {
        let ttl = parse_duration(ttl).map_err(|e| format!("--ttl: {e}"))?;
        let text = std::fs::read_to_string(config)
            .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let dir = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        mint_from_text(&text, dir, consumer, ttl, &extra, &[])
    });
    match result {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyway token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `k=v` pairs; a value that parses as JSON (a number, true/false, an array, an object) is used
/// as JSON, anything else as a string.
fn parse_claims(claims: &[String]) -> Result<Vec<(String, Value)>, String> {
    claims
        .iter()
        .map(|c| {
            let (k, v) = c
                .split_once('=')
                .ok_or_else(|| format!("--claim {c:?}: write NAME=VALUE"))?;
            if k.is_empty() {
                return Err(format!("--claim {c:?}: the claim name is empty"));
            }
            let value = match serde_json::from_str::<Value>(v) {
                Ok(j) if !j.is_string() => j,
                _ => Value::String(v.to_owned()),
            };
            Ok((k.to_owned(), value))
        })
        .collect()
}

/// Mints a token for `consumer` of the config `text` (paths relative to `dir`), without the
/// claims in `omit` (the demo uses this to show a token minted elsewhere).
pub fn mint_from_text(
    text: &str,
    dir: &Path,
    consumer: &str,
    ttl: Duration,
    extra: &[(String, Value)],
    omit: &[&str],
) -> Result<String, String> {
    if ttl.is_zero() {
        return Err("--ttl must be more than 0s".to_owned());
    }
    with_base_dir(dir, || {
        let file = crate::config::parse(text).map_err(|e| format!("config: {e}"))?;
        mint(&file, consumer, ttl, extra, omit)
    })
}

fn mint(
    file: &FileConfig,
    consumer: &str,
    ttl: Duration,
    extra: &[(String, Value)],
    omit: &[&str],
) -> Result<String, String> {
    let names: Vec<&str> = file
        .consumers
        .iter()
        .map(|c| c.value.name.0.as_str())
        .collect();
    let entry = file
        .consumers
        .iter()
        .find(|c| c.value.name.0 == consumer)
        .ok_or_else(|| {
            format!(
                "no consumer named {consumer:?} (consumers: {})",
                names.join(", ")
            )
        })?;
    let jwt = entry
        .value
        .jwt
        .as_ref()
        .ok_or_else(|| format!("consumer {consumer} has no jwt credential"))?;
    let (alg, key) = signing_key(consumer, jwt)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_owned())?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), consumer.into());
    // The consumer claim of every consumer-mode authenticator, so any of them accepts it.
    let consumer_mode = file.authenticators.values().map(|a| &a.value).filter(|a| {
        a.kind == AuthenticatorType::Jwt
            && a.secret.is_none()
            && a.keys_file.is_none()
            && a.jwks_url.is_none()
    });
    let mut any = false;
    for a in consumer_mode {
        any = true;
        let claim = a.consumer_claim.as_ref().map_or("key", |c| c.0.as_str());
        claims.insert(claim.to_owned(), jwt.key.0.clone().into());
        if let Some(iss) = &a.issuer {
            claims.insert("iss".into(), iss.0.clone().into());
        }
        if let Some(aud) = &a.audience
            && let Some(first) = aud.clone().into_vec().into_iter().next()
        {
            claims.insert("aud".into(), first.0.into());
        }
    }
    if !any {
        claims.insert("key".into(), jwt.key.0.clone().into());
    }
    claims.insert("iat".into(), now.into());
    // Saturating: `--ttl 99999999999999999h` must not overflow (a panic, or in release a wrap
    // to an already expired token).
    claims.insert(
        "exp".into(),
        now.saturating_add(ttl.as_secs().max(1)).into(),
    );
    for (k, v) in extra {
        claims.insert(k.clone(), v.clone());
    }
    for k in omit {
        claims.remove(*k);
    }
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing failed: {e}"))
}

fn signing_key(
    consumer: &str,
    jwt: &ConsumerJwtFile,
) -> Result<(jsonwebtoken::Algorithm, EncodingKey), String> {
    let alg = match &jwt.algorithm {
        None => jsonwebtoken::Algorithm::HS256,
        Some(t) => token::algorithm(&t.0).ok_or_else(|| {
            format!(
                "consumer {consumer}: {:?} is not an algorithm keyway signs",
                t.0
            )
        })?,
    };
    if alg.family() == AlgorithmFamily::Hmac {
        let secret = match (&jwt.secret, &jwt.base64_secret) {
            (Some(s), _) => s.0.expose().as_bytes().to_vec(),
            (None, Some(b)) => keys::decode_base64_secret(b.0.expose())?,
            (None, None) => {
                return Err(format!(
                    "consumer {consumer} has no secret for {}",
                    keys::alg_name(alg)
                ));
            }
        };
        if secret.is_empty() {
            return Err(format!("consumer {consumer} has an empty secret"));
        }
        return Ok((alg, EncodingKey::from_secret(&secret)));
    }
    let Some(path) = &jwt.private_key_file else {
        return Err(format!(
            "consumer {consumer} has only a public key; keyway token signs with secret, base64_secret or private_key_file"
        ));
    };
    let full = resolve_path(&path.0);
    let bytes = std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))?;
    let (key, _) =
        keys::private_pem(&bytes, alg).map_err(|e| format!("{} is {e}", full.display()))?;
    Ok((alg, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parse_as_json_or_text() {
        let c = parse_claims(&[
            "n=3".into(),
            "s=hello".into(),
            "b=true".into(),
            "q=\"x\"".into(),
        ])
        .unwrap();
        assert_eq!(c[0].1, Value::from(3));
        assert_eq!(c[1].1, Value::from("hello"));
        assert_eq!(c[2].1, Value::from(true));
        assert_eq!(c[3].1, Value::from("\"x\""));
        assert!(parse_claims(&["novalue".into()]).is_err());
    }

    #[test]
    fn huge_ttl_does_not_overflow() {
        let config = r#"
upstreams: {app: {builtin: echo}}
consumers:
  - {name: u, jwt: {key: u, secret: "0123456789abcdef0123456789abcdef"}}
authenticators:
  cj: {type: jwt}
routes:
  - {name: r, match: {path_prefix: /}, upstream: app, auth: [cj]}
"#;
        let ttl = parse_duration("99999999999999999h").unwrap();
        let t = mint_from_text(config, Path::new("."), "u", ttl, &[], &[]).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["exp"], Value::from(u64::MAX));
    }
}
