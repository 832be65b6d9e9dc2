//! Config → `JwtAuth`. Every problem is reported (all at once, each at its key); keys are loaded
//! and bound to their algorithms here, so a request never meets a half-usable key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_saphyr::Location;

use super::cache::Cache;
use super::claims::TimeRules;
use super::jwks::Jwks;
use super::keys::{self, PublicKey, VerifyKey, alg_name};
use super::{CACHE_CAPACITY, ConsumerKey, JwtAuth, Mode, token};
use crate::config::file::{AuthenticatorFile, ConsumerJwtFile};
use crate::config::interpolate::resolve_path;
use crate::pipeline::compile::{ConsumerEntry, Diagnostics, compile_sources};

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Headers `claims_to_headers` may not set besides keyway's own (`headers::keyway_owned`):
/// they carry credentials, route, or frame the request.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "authorization",
    "cookie",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "x-request-id",
];

pub fn compile(
    name: &Arc<str>,
    file: &AuthenticatorFile,
    at: &Location,
    path: &str,
    consumers: &[ConsumerEntry<'_>],
    d: &mut Diagnostics,
) -> Option<JwtAuth> {
    let before = d.errors.len();
    let err = |d: &mut Diagnostics, key: &str, msg: String| {
        let p = if key.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{key}")
        };
        d.error(Some(at), p, msg);
    };
    let sources = compile_sources(file.from.as_ref(), &["header:Authorization"], at, path, d);
    let key_settings: Vec<&str> = [
        ("secret", file.secret.is_some()),
        ("keys_file", file.keys_file.is_some()),
        ("jwks_url", file.jwks_url.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if key_settings.len() > 1 {
        err(
            d,
            key_settings[1],
            format!(
                "set one of secret, keys_file or jwks_url, not {}",
                key_settings.join(" and ")
            ),
        );
    }
    let issuer_mode = !key_settings.is_empty();
    if issuer_mode && file.consumer_claim.is_some() {
        err(
            d,
            "consumer_claim",
            format!(
                "consumer_claim selects consumer mode (keys from consumers[].jwt); {} selects issuer mode. Use one mode per authenticator",
                key_settings[0]
            ),
        );
    }
    if !issuer_mode {
        if file.algorithms.is_some() {
            err(
                d,
                "algorithms",
                "algorithms restricts issuer mode; in consumer mode each consumer's jwt.algorithm binds its key".to_owned(),
            );
        }
        if file.groups_claim.is_some() {
            err(
                d,
                "groups_claim",
                "groups_claim applies to issuer mode; in consumer mode the groups are the consumer's".to_owned(),
            );
        }
    }
    let restrict = file.algorithms.as_ref().map(|list| {
        list.iter()
            .filter_map(|t| match token::algorithm(&t.0) {
                Some(a) => Some(a),
                None => {
                    let why = if t.0.eq_ignore_ascii_case("none") {
                        "none is never allowed".to_owned()
                    } else {
                        format!(
                            "{:?} is not an algorithm keyway verifies (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)",
                            t.0
                        )
                    };
                    err(d, "algorithms", why);
                    None
                }
            })
            .collect::<Vec<Algorithm>>()
    });
    if restrict.as_ref().is_some_and(Vec::is_empty)
        && file.algorithms.as_ref().is_some_and(|l| l.is_empty())
    {
        err(
            d,
            "algorithms",
            "algorithms is empty; omit it to accept the keys' own algorithms".to_owned(),
        );
    }
    let leeway = file.leeway.map_or(DEFAULT_LEEWAY, |l| l.0);
    if leeway > Duration::from_secs(600) {
        d.warn(
            "jwt_large_leeway",
            format!(
                "authenticator {name}: leeway {leeway:?} accepts tokens long after they expire"
            ),
        )
        .at(Some(at), format!("{path}.leeway"))
        .fix("keep leeway at a few seconds to a minute (default 30s): it only covers clock skew");
    }
    let max_lifetime = file.max_lifetime.map(|m| m.0);
    if max_lifetime.is_some_and(|m| m.is_zero()) {
        err(
            d,
            "max_lifetime",
            "max_lifetime must be more than 0s".to_owned(),
        );
    }
    let require_exp = file.require_exp.unwrap_or(true);
    if !require_exp && max_lifetime.is_some() {
        err(
            d,
            "require_exp",
            "max_lifetime needs exp: require_exp: false cannot be combined with it".to_owned(),
        );
    }
    let audience: Vec<String> = file
        .audience
        .clone()
        .map(|a| a.into_vec().into_iter().map(|t| t.0).collect())
        .unwrap_or_default();
    if audience.iter().any(String::is_empty)
        || file.audience.as_ref().is_some() && audience.is_empty()
    {
        err(
            d,
            "audience",
            "audience must name at least one non-empty audience".to_owned(),
        );
    }
    let issuer = file.issuer.as_ref().map(|i| i.0.clone());
    if issuer.as_ref().is_some_and(String::is_empty) {
        err(d, "issuer", "issuer is empty".to_owned());
    }
    let claims_to_headers = compile_claim_headers(file, &sources, &mut |k, m| err(d, k, m));
    if file.identity_claim.as_ref().is_some_and(|c| c.0.is_empty()) {
        err(d, "identity_claim", "identity_claim is empty".to_owned());
    }
    if file.groups_claim.as_ref().is_some_and(|c| c.0.is_empty()) {
        err(d, "groups_claim", "groups_claim is empty".to_owned());
    }

    let mode = if issuer_mode {
        if audience.is_empty() && file.secret.is_none() {
            d.warn(
                "jwt_without_audience",
                format!(
                    "authenticator {name} accepts any token its issuer signs, whatever service it was meant for; set audience"
                ),
            )
            .at(Some(at), path)
            .fix("set audience: [the name the issuer puts in aud for this service]");
        }
        compile_issuer_keys(name, file, restrict, path, at, d)
    } else {
        let claim = file
            .consumer_claim
            .as_ref()
            .map_or_else(|| "key".to_owned(), |c| c.0.clone());
        if claim.is_empty() {
            err(d, "consumer_claim", "consumer_claim is empty".to_owned());
        }
        let map = compile_consumers(name, consumers, d);
        Some(Mode::Consumer {
            claim,
            consumers: map,
        })
    };
    if d.errors.len() > before {
        return None;
    }
    let auth = JwtAuth {
        name_header: crate::pipeline::authn::name_header(name),
        name: name.clone(),
        sources,
        mode: Box::new(mode?),
        rules: TimeRules {
            leeway: leeway.as_secs_f64(),
            require_exp,
            max_lifetime: max_lifetime.map(|m| m.as_secs_f64()),
        },
        issuer,
        audience,
        identity_claim: file
            .identity_claim
            .as_ref()
            .map(|c| c.0.clone())
            .or_else(|| issuer_mode.then(|| "sub".to_owned())),
        groups_claim: file
            .groups_claim
            .as_ref()
            .map_or_else(|| "groups".to_owned(), |c| c.0.clone()),
        claims_to_headers,
        cache: Cache::new(CACHE_CAPACITY),
    };
    // Under a running server (a reload) the JWKS fetch starts now; otherwise at server start.
    auth.start();
    Some(auth)
}

pub fn compile_claim_headers(
    file: &AuthenticatorFile,
    sources: &[crate::pipeline::authn::source::Source],
    err: &mut dyn FnMut(&str, String),
) -> Vec<(String, HeaderName)> {
    let mut out: Vec<(String, HeaderName)> = Vec::new();
    for (claim, header) in file.claims_to_headers.iter().flatten() {
        let key = format!("claims_to_headers.{claim}");
        let Ok(name) = HeaderName::from_bytes(header.0.as_bytes()) else {
            err(&key, format!("{:?} is not a valid header name", header.0));
            continue;
        };
        let lower = name.as_str();
        let folded = lower.replace('_', "-");
        if RESERVED_HEADERS.contains(&folded.as_str())
            || crate::pipeline::headers::keyway_owned(&folded)
        {
            err(
                &key,
                format!(
                    "{} is set or removed by keyway itself; map the claim to another header",
                    header.0
                ),
            );
            continue;
        }
        let is_source = sources.iter().any(|s| match s {
            crate::pipeline::authn::source::Source::Header { name: n, .. } => {
                n.as_str().replace('_', "-") == folded
            }
            _ => false,
        });
        if is_source {
            err(
                &key,
                format!("{} is where this authenticator reads its token", header.0),
            );
            continue;
        }
        if out
            .iter()
            .any(|(_, h)| h.as_str().replace('_', "-") == folded)
        {
            err(&key, format!("two claims map to header {}", header.0));
            continue;
        }
        if claim.is_empty() {
            err(&key, "empty claim name".to_owned());
            continue;
        }
        out.push((claim.clone(), name));
    }
    out
}

fn compile_issuer_keys(
    name: &Arc<str>,
    file: &AuthenticatorFile,
    restrict: Option<Vec<Algorithm>>,
    path: &str,
    at: &Location,
    d: &mut Diagnostics,
) -> Option<Mode> {
    if let Some(secret) = &file.secret {
        let p = format!("{path}.secret");
        let algs = match &restrict {
            None => vec![Algorithm::HS256],
            Some(list) => {
                let (hs, other): (Vec<Algorithm>, Vec<Algorithm>) = list
                    .iter()
                    .partition(|a| a.family() == AlgorithmFamily::Hmac);
                if !other.is_empty() {
                    d.error(
                        Some(at),
                        format!("{path}.algorithms"),
                        format!(
                            "algorithms lists {}, but secret is an HMAC secret: it verifies only HS256/384/512",
                            keys::names(&other)
                        ),
                    );
                }
                hs
            }
        };
        let bytes = secret.0.expose().as_bytes();
        check_secret(bytes, &algs, &p, &format!("authenticator {name}"), at, d);
        return Some(Mode::Static {
            keys: vec![VerifyKey {
                kid: None,
                algs,
                key: DecodingKey::from_secret(bytes),
                rsa_bytes: 0,
            }],
            origin: format!("the secret of authenticator {name}"),
        });
    }
    if let Some(kf) = &file.keys_file {
        let p = format!("{path}.keys_file");
        let full = resolve_path(&kf.0);
        let bytes = match std::fs::read(&full) {
            Ok(b) => b,
            Err(e) => {
                d.error(Some(at), p, format!("cannot read {}: {e}", full.display()));
                return None;
            }
        };
        let keys = if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            match keys::parse_jwks(&bytes, restrict.as_deref(), true) {
                Ok(parsed) => {
                    for note in parsed.skipped {
                        d.warn("jwt_key_skipped", format!("{}: {note}", full.display()))
                            .at(Some(at), p.clone())
                            .fix("remove the key from the file, or fix its parameters");
                    }
                    parsed.keys
                }
                Err(e) => {
                    d.error(Some(at), p, format!("{}: {e}", full.display()));
                    return None;
                }
            }
        } else {
            pem_keys(
                &bytes,
                restrict.as_deref(),
                &full.display().to_string(),
                &p,
                at,
                d,
            )?
        };
        return Some(Mode::Static {
            keys,
            origin: format!("the keys of keys_file {}", kf.0),
        });
    }
    // The URL is never echoed: its query or user info may carry a credential.
    let url_text = file.jwks_url.as_ref()?;
    let p = format!("{path}.jwks_url");
    let uri = match url_text.0.parse::<http::Uri>() {
        Ok(u) => u,
        Err(_) => {
            d.error(Some(at), p, "jwks_url is not a URL");
            return None;
        }
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        d.error(Some(at), p, "jwks_url needs http:// or https:// and a host");
        return None;
    }
    if uri.authority().is_none_or(|a| a.as_str().contains('@')) {
        d.error(Some(at), p, "jwks_url needs a host and no user info");
        return None;
    }
    let refresh = file.jwks_refresh.map_or(DEFAULT_REFRESH, |r| r.0);
    if refresh < Duration::from_secs(1) {
        d.error(
            Some(at),
            format!("{path}.jwks_refresh"),
            "jwks_refresh must be at least 1s",
        );
    }
    let min_refetch = file.jwks_min_refetch.map_or(DEFAULT_MIN_REFETCH, |r| r.0);
    Some(Mode::Remote(Jwks::new(uri, refresh, min_refetch, restrict)))
}

fn pem_keys(
    bytes: &[u8],
    restrict: Option<&[Algorithm]>,
    shown: &str,
    p: &str,
    at: &Location,
    d: &mut Diagnostics,
) -> Option<Vec<VerifyKey>> {
    let blocks = match pem::parse_many(bytes) {
        Ok(b) if !b.is_empty() => b,
        _ => {
            d.error(
                Some(at),
                p,
                format!("{shown} is neither a JWKS (JSON) nor PEM public keys"),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let text = pem::encode(block);
        let key = match keys::public_pem(text.as_bytes()) {
            Ok(k) => k,
            Err(e) => {
                d.error(Some(at), p, format!("{shown}, key {}: {e}", i + 1));
                continue;
            }
        };
        let algs = default_algs(&key, restrict);
        if algs.is_empty() {
            d.error(
                Some(at),
                p,
                format!(
                    "{shown}, key {}: it can verify {}, none of which is in algorithms",
                    i + 1,
                    keys::names(&key.usable)
                ),
            );
            continue;
        }
        out.push(VerifyKey {
            kid: None,
            algs,
            key: key.key,
            rsa_bytes: key.rsa_bytes,
        });
    }
    Some(out)
}

/// A PEM key's algorithms: `algorithms` ∩ what the key can do, or by default RS256 for RSA
/// (PS* and larger hashes must be asked for) and the curve's algorithm for EC and Ed25519.
fn default_algs(key: &PublicKey, restrict: Option<&[Algorithm]>) -> Vec<Algorithm> {
    match restrict {
        Some(list) => key
            .usable
            .iter()
            .copied()
            .filter(|a| list.contains(a))
            .collect(),
        None if key.family == AlgorithmFamily::Rsa => vec![Algorithm::RS256],
        None => key.usable.clone(),
    }
}

fn check_secret(
    bytes: &[u8],
    algs: &[Algorithm],
    path: &str,
    whose: &str,
    at: &Location,
    d: &mut Diagnostics,
) {
    if bytes.is_empty() {
        error_once(
            d,
            at,
            path,
            "the secret is empty; an empty HMAC secret lets anyone sign tokens",
        );
        return;
    }
    let need = algs
        .iter()
        .map(|a| keys::hmac_min_len(*a))
        .max()
        .unwrap_or(32);
    if bytes.len() < need {
        let msg = format!(
            "{whose}: the HMAC secret is {} bytes; RFC 7518 wants at least {need} for {} (short secrets can be brute-forced offline)",
            bytes.len(),
            keys::names(algs)
        );
        if !d.warnings.iter().any(|w| w.message == msg) {
            d.warn("jwt_weak_secret", msg)
                .at(Some(at), path)
                .fix(format!(
                    "use a random secret of at least {need} bytes (e.g. `openssl rand -base64 48`)"
                ));
        }
    }
}

/// Consumer errors may be reached from several jwt authenticators: report each once.
fn error_once(d: &mut Diagnostics, at: &Location, path: &str, msg: &str) {
    if !d.errors.iter().any(|e| e.path == path && e.message == msg) {
        d.error(Some(at), path, msg);
    }
}

fn compile_consumers(
    name: &Arc<str>,
    consumers: &[ConsumerEntry<'_>],
    d: &mut Diagnostics,
) -> HashMap<String, ConsumerKey> {
    let mut map: HashMap<String, ConsumerKey> = HashMap::new();
    for entry in consumers {
        let Some(jwt) = &entry.file.jwt else {
            continue;
        };
        let path = format!("consumers[{}].jwt", entry.index);
        let Some(key) = consumer_key(entry, jwt, &path, d) else {
            continue;
        };
        if jwt.key.0.is_empty() {
            error_once(
                d,
                entry.at,
                &format!("{path}.key"),
                "jwt.key is empty; it is the value of the consumer claim that names this consumer",
            );
            continue;
        }
        if let Some(other) = map.get(&jwt.key.0) {
            let msg = format!(
                "consumers {} and {} have the same jwt.key {:?}; each key must name one consumer",
                other.consumer.name, entry.runtime.name, jwt.key.0
            );
            error_once(d, entry.at, &format!("{path}.key"), &msg);
            continue;
        }
        map.insert(
            jwt.key.0.clone(),
            ConsumerKey {
                consumer: entry.runtime.clone(),
                key,
            },
        );
    }
    if map.is_empty() && consumers.iter().all(|c| c.file.jwt.is_none()) {
        d.warn(
            "jwt_without_consumers",
            format!("authenticator {name} is in consumer mode but no consumer has a jwt credential, so every token is refused"),
        )
        .fix("give a consumer jwt: {key, secret or public_key_file}, or make the authenticator issuer-mode (issuer + keys)");
    }
    map
}

/// One consumer's key, bound to its algorithm (default HS256).
fn consumer_key(
    entry: &ConsumerEntry<'_>,
    jwt: &ConsumerJwtFile,
    path: &str,
    d: &mut Diagnostics,
) -> Option<VerifyKey> {
    let at = entry.at;
    let who = format!("consumer {}", entry.runtime.name);
    let alg = match &jwt.algorithm {
        None => Algorithm::HS256,
        Some(t) => match token::algorithm(&t.0) {
            Some(a) => a,
            None => {
                let msg = if t.0.eq_ignore_ascii_case("none") {
                    "algorithm none is never allowed".to_owned()
                } else {
                    format!(
                        "{:?} is not an algorithm keyway verifies (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)",
                        t.0
                    )
                };
                error_once(d, at, &format!("{path}.algorithm"), &msg);
                return None;
            }
        },
    };
    let set: Vec<&str> = [
        ("secret", jwt.secret.is_some()),
        ("base64_secret", jwt.base64_secret.is_some()),
        ("public_key_file", jwt.public_key_file.is_some()),
        ("private_key_file", jwt.private_key_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, s)| s.then_some(k))
    .collect();
    let name = alg_name(alg);
    if alg.family() == AlgorithmFamily::Hmac {
        let misplaced: Vec<&str> = set
            .iter()
            .copied()
            .filter(|k| k.ends_with("_file"))
            .collect();
        if !misplaced.is_empty() {
            error_once(
                d,
                at,
                &format!("{path}.{}", misplaced[0]),
                &format!(
                    "{name} verifies with secret or base64_secret; {} is a key file (an HS secret is never an RSA, EC or Ed25519 key). Set algorithm to the key's algorithm, or use a secret",
                    misplaced.join(" and ")
                ),
            );
            return None;
        }
        let bytes = match (&jwt.secret, &jwt.base64_secret) {
            (Some(_), Some(_)) => {
                error_once(
                    d,
                    at,
                    &format!("{path}.base64_secret"),
                    "set secret or base64_secret, not both",
                );
                return None;
            }
            (Some(s), None) => s.0.expose().as_bytes().to_vec(),
            (None, Some(b)) => match keys::decode_base64_secret(b.0.expose()) {
                Ok(v) => v,
                Err(e) => {
                    error_once(d, at, &format!("{path}.base64_secret"), &e);
                    return None;
                }
            },
            (None, None) => {
                error_once(
                    d,
                    at,
                    &format!("{path}.secret"),
                    &format!("{who}: {name} needs secret or base64_secret"),
                );
                return None;
            }
        };
        let p = format!("{path}.secret");
        let before = d.errors.len();
        check_secret(&bytes, &[alg], &p, &who, at, d);
        if d.errors.len() > before || bytes.is_empty() {
            return None;
        }
        return Some(VerifyKey {
            kid: None,
            algs: vec![alg],
            key: DecodingKey::from_secret(&bytes),
            rsa_bytes: 0,
        });
    }
    if let Some(s) = set.iter().find(|k| k.contains("secret")) {
        error_once(
            d,
            at,
            &format!("{path}.{s}"),
            &format!(
                "{name} verifies with public_key_file (or private_key_file); a secret cannot be used with {name}"
            ),
        );
        return None;
    }
    let (key_path, public) = if let Some(f) = &jwt.public_key_file {
        let p = format!("{path}.public_key_file");
        let full = resolve_path(&f.0);
        let loaded = std::fs::read(&full)
            .map_err(|e| format!("cannot read {}: {e}", full.display()))
            .and_then(|b| keys::public_pem(&b).map_err(|e| format!("{} is {e}", full.display())));
        (p, loaded)
    } else if let Some(f) = &jwt.private_key_file {
        let p = format!("{path}.private_key_file");
        let full = resolve_path(&f.0);
        let loaded = std::fs::read(&full)
            .map_err(|e| format!("cannot read {}: {e}", full.display()))
            .and_then(|b| {
                keys::private_pem(&b, alg)
                    .map(|(_, public)| public)
                    .map_err(|e| format!("{} is {e}", full.display()))
            });
        (p, loaded)
    } else {
        error_once(
            d,
            at,
            &format!("{path}.public_key_file"),
            &format!("{who}: {name} needs public_key_file (or private_key_file)"),
        );
        return None;
    };
    let public = match public {
        Ok(k) => k,
        Err(e) => {
            error_once(d, at, &key_path, &e);
            return None;
        }
    };
    if let Err(e) = keys::bind(alg, &public) {
        error_once(d, at, &format!("{path}.algorithm"), &format!("{who}: {e}"));
        return None;
    }
    Some(VerifyKey {
        kid: None,
        algs: vec![alg],
        key: public.key,
        rsa_bytes: public.rsa_bytes,
    })
}
