//! Unit tests of the whole verification path, without sockets. The crypto test doubles as the
//! guard that exactly one jsonwebtoken backend is compiled in (with none or two, signing and
//! verifying panic at run time).

use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::pipeline::authn::Authenticator;
use crate::pipeline::compile::load_str;

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/keys")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap()
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config() -> String {
    format!(
        r#"
upstreams: {{app: {{builtin: echo}}}}
consumers:
  - {{name: hs, jwt: {{key: hs, secret: "{SECRET}"}}}}
  - {{name: rs, jwt: {{key: rs, public_key_file: rsa.pub.pem, algorithm: RS256}}}}
  - {{name: ps, jwt: {{key: ps, public_key_file: rsa.pub.pem, algorithm: PS384}}}}
  - {{name: es, jwt: {{key: es, public_key_file: ec.pub.pem, algorithm: ES256}}}}
  - {{name: es384, jwt: {{key: es384, private_key_file: ec384.key.pem, algorithm: ES384}}}}
  - {{name: ed, jwt: {{key: ed, public_key_file: ed.pub.pem, algorithm: EdDSA}}}}
authenticators:
  cj: {{type: jwt}}
routes:
  - {{name: r, match: {{path_prefix: /}}, upstream: app, auth: [cj]}}
"#
    )
}

fn auth() -> Arc<Authenticator> {
    let loaded = load_str(&config(), &keys_dir()).unwrap_or_else(|e| panic!("{e:#?}"));
    loaded.runtime.authenticators[0].clone()
}

fn jwt(a: &Authenticator) -> &JwtAuth {
    match a {
        Authenticator::Jwt(j) => j,
        _ => panic!("not jwt"),
    }
}

fn mint(alg: Algorithm, key: &EncodingKey, consumer: &str) -> Secret<String> {
    let claims = json!({"key": consumer, "exp": claims::now() as u64 + 600});
    Secret::new(encode(&Header::new(alg), &claims, key).unwrap())
}

#[tokio::test]
async fn every_algorithm_family_verifies() {
    let a = auth();
    let j = jwt(&a);
    let cases = [
        (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET.as_bytes()),
            "hs",
        ),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap(),
            "rs",
        ),
        (
            Algorithm::PS384,
            EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap(),
            "ps",
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec.key.pem")).unwrap(),
            "es",
        ),
        (
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&read("ec384.key.pem")).unwrap(),
            "es384",
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed.key.pem")).unwrap(),
            "ed",
        ),
    ];
    for (alg, key, consumer) in &cases {
        let id = j
            .verify(mint(*alg, key, consumer).as_deref())
            .await
            .unwrap_or_else(|r| panic!("{consumer}: {r:?}"));
        assert_eq!(id.consumer_name(), Some(*consumer));
        // A second use is a cache hit and gives the same identity.
        let again = j
            .verify(mint(*alg, key, consumer).as_deref())
            .await
            .unwrap();
        assert_eq!(again.subject, id.subject);
    }
    // Each key verifies only its own algorithm.
    let rsa = EncodingKey::from_rsa_pem(&read("rsa.key.pem")).unwrap();
    let r = j
        .verify(mint(Algorithm::RS256, &rsa, "ps").as_deref())
        .await
        .unwrap_err();
    assert_eq!(r.reason, Reason::JwtAlgNotAllowed, "{r:?}");
    let other = EncodingKey::from_rsa_pem(&read("rsa2.key.pem")).unwrap();
    let r = j
        .verify(mint(Algorithm::RS256, &other, "rs").as_deref())
        .await
        .unwrap_err();
    assert_eq!(r.reason, Reason::JwtSignatureInvalid, "{r:?}");
}

#[tokio::test]
async fn cache_hits_recheck_time() {
    let a = auth();
    let j = jwt(&a);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    // Expired beyond the 30s leeway: refused on first use.
    let claims = json!({"key": "hs", "exp": claims::now() as u64 - 60});
    let t = Secret::new(encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap());
    let r = j.verify(t.as_deref()).await.unwrap_err();
    assert_eq!(r.reason, Reason::JwtExpired);
    assert!(r.detail.contains("ago, at 20"), "{}", r.detail);
    // A cached entry whose exp has passed is refused and dropped.
    let good = mint(Algorithm::HS256, &key, "hs");
    j.verify(good.as_deref()).await.unwrap();
    let h = cache::hash(good.expose());
    let mut entry = j.cache.get(&h).unwrap();
    entry.times.exp = Some(claims::now() - 100.0);
    j.cache.insert(h, entry, claims::now());
    let r = j.verify(good.as_deref()).await.unwrap_err();
    assert_eq!(r.reason, Reason::JwtExpired);
    assert!(j.cache.get(&h).is_none());
}

#[test]
fn config_errors_are_all_reported() {
    let yaml = r#"
upstreams: {app: {builtin: echo}}
consumers:
  - {name: a, jwt: {key: a, public_key_file: rsa.pub.pem}}
  - {name: b, jwt: {key: b, secret: "s3cr3t-but-long-enough-0123456789ab", algorithm: RS256}}
  - {name: c, jwt: {key: c, public_key_file: rsa1024.pub.pem, algorithm: RS256}}
  - {name: d, jwt: {key: d, public_key_file: ec.pub.pem, algorithm: ES384}}
  - {name: e, jwt: {key: e, public_key_file: missing.pem, algorithm: RS256}}
  - {name: f, jwt: {key: f, secret: "x", algorithm: none}}
authenticators:
  cj: {type: jwt}
  both: {type: jwt, secret: "0123456789abcdef0123456789abcdef", jwks_url: "http://127.0.0.1:1/jwks"}
  tls: {type: jwt, jwks_url: "https://idp.example/jwks"}
  ftp: {type: jwt, jwks_url: "ftp://svc:hunter2@idp.example/jwks?token=t0psecret"}
  bad: {type: jwt, jwks_url: "http://idp example/jwks?token=t0psecret"}
  hdr: {type: jwt, secret: "0123456789abcdef0123456789abcdef", claims_to_headers: {sub: X-Keyway-Subject}}
routes:
  - {name: r, match: {path_prefix: /}, upstream: app, auth: [cj]}
"#;
    let errors = match load_str(yaml, &keys_dir()) {
        Ok(_) => panic!("config must fail"),
        Err(e) => e,
    };
    let all = errors
        .iter()
        .map(|e| format!("{} {}", e.path, e.message))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "consumers[0].jwt.public_key_file HS256 verifies with secret",
        "consumers[1].jwt.secret RS256 verifies with public_key_file",
        "consumers[2].jwt.public_key_file",
        "1024 bits",
        "consumers[3].jwt.algorithm",
        "consumers[4].jwt.public_key_file cannot read",
        "consumers[5].jwt.algorithm algorithm none is never allowed",
        "authenticators.both.jwks_url set one of secret, keys_file or jwks_url",
        "authenticators.ftp.jwks_url jwks_url needs http://",
        "authenticators.bad.jwks_url jwks_url is not a URL",
        "authenticators.hdr.claims_to_headers.sub",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
    assert!(errors.iter().all(|e| e.line > 0), "{all}");
    // An https JWKS is fetched like an http one.
    assert!(!all.contains("authenticators.tls."), "{all}");
    // A jwks_url may carry a credential in its user info or query: never echoed.
    assert!(
        !all.contains("hunter2") && !all.contains("t0psecret"),
        "{all}"
    );
}
