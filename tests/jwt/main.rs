//! The `jwt` authenticator end to end (issue #3): keyway in-process on real sockets, real
//! upstreams, JWKS endpoints served over HTTP by the tests, tokens minted with real keys.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/jwt.rs"]
mod jwt_support;

mod attacks;
mod cli;
mod consumer;
mod https;
mod issuer;

use support::{Gateway, start_with_files};

/// Starts keyway with `yaml` beside every test key file and the extra `files`.
pub async fn start_keys(yaml: &str, files: &[(&str, &[u8])]) -> Gateway {
    let keys = jwt_support::key_files();
    let mut all: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    all.extend_from_slice(files);
    start_with_files(yaml, &all).await
}
