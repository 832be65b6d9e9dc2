//! JWT test helpers: fixed test keys (tests/jwt/keys), token minting, raw token construction for
//! attacks, and a JWKS endpoint served over HTTP whose answer the test controls.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::support::{Upstream, upstream};

pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jwt/keys")
}

pub fn key_bytes(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every test key file, to hand to `start_with_files` so configs can name them.
pub fn key_files() -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(keys_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pem"))
        .map(|n| {
            let b = key_bytes(&n);
            (n, b)
        })
        .collect()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `base` (a JSON object) with `changes` applied: each member set, or removed where its value is
/// null.
pub fn patched(mut base: Value, changes: Value) -> Value {
    let object = base.as_object_mut().expect("an object");
    for (k, v) in changes.as_object().expect("an object") {
        if v.is_null() {
            object.remove(k);
        } else {
            object.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A signed token with an optional `kid`.
pub fn mint(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

pub fn hs(secret: &str, claims: &Value) -> String {
    mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        None,
        claims,
    )
}

pub fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_bytes(name)).expect("rsa key")
}

pub fn ec_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&key_bytes(name)).expect("ec key")
}

pub fn ed_key(name: &str) -> EncodingKey {
    EncodingKey::from_ed_pem(&key_bytes(name)).expect("ed key")
}

/// A token from raw header and payload JSON text and a raw signature part.
pub fn raw_token(header: &str, payload: &str, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(payload))
}

/// A token from raw header and payload JSON text, signed with `alg` and `key` whatever the
/// header says (to build tokens a correct signer would never produce).
pub fn signed_raw(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

/// The public JWK of a private key file, with `kid`.
pub fn jwk(private_pem: &str, alg: Algorithm, kid: &str) -> Value {
    let bytes = key_bytes(private_pem);
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&bytes),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&bytes),
        _ => EncodingKey::from_rsa_pem(&bytes),
    }
    .expect("key");
    let jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
    let mut v = serde_json::to_value(jwk).expect("json");
    v["kid"] = Value::from(kid);
    v
}

pub fn jwks(keys: &[Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// What the JWKS endpoint answers; change it to rotate keys or to fail.
#[derive(Clone)]
pub struct JwksState {
    pub status: u16,
    pub body: String,
}

/// A JWKS endpoint over real HTTP. `served()` counts the requests it answered.
pub struct JwksServer {
    pub upstream: Upstream,
    pub state: Arc<Mutex<JwksState>>,
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let state = Arc::new(Mutex::new(JwksState { status: 200, body }));
        let s = state.clone();
        let upstream = upstream(move |_| {
            let st = s.lock().unwrap().clone();
            let mut r = Response::new(Full::new(Bytes::from(st.body)));
            *r.status_mut() = StatusCode::from_u16(st.status).unwrap();
            r
        })
        .await;
        JwksServer { upstream, state }
    }

    pub fn url(&self) -> String {
        format!("{}/jwks", self.upstream.url())
    }

    pub fn set(&self, status: u16, body: String) {
        *self.state.lock().unwrap() = JwksState { status, body };
    }

    pub fn served(&self) -> usize {
        self.upstream.requests().len()
    }
}
