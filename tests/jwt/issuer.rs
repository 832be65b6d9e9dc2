//! Issuer mode: keys from a JWKS endpoint served over HTTP by the test (rotation without
//! restart, the endpoint going down, readiness), and from local key files.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::jwt_support::*;
use crate::start_keys;
use crate::support::*;

fn config(upstream: &str, jwks_url: &str, min_refetch: &str) -> String {
    format!(
        r#"
admin: {{listen: "127.0.0.1:0"}}
upstreams: {{app: {{url: "{upstream}"}}}}
authenticators:
  sso:
    type: jwt
    issuer: https://idp.test
    audience: [keyway]
    jwks_url: "{jwks_url}"
    jwks_min_refetch: {min_refetch}
    groups_claim: roles
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [sso]}}
"#
    )
}

fn token(key_file: &str, kid: &str, jti: u32) -> String {
    mint(
        Algorithm::RS256,
        &rsa_key(key_file),
        Some(kid),
        &json!({"sub": "u1", "iss": "https://idp.test", "aud": "keyway", "exp": now() + 600, "jti": jti, "roles": ["dev"]}),
    )
}

fn auth(t: &str) -> [(&'static str, String); 1] {
    [("authorization", format!("Bearer {t}"))]
}

async fn call(gw: &Gateway, t: &str) -> Answer {
    let h = auth(t);
    get(&gw.url("/api/x"), &[(h[0].0, h[0].1.as_str())]).await
}

#[tokio::test]
async fn jwks_key_rotation_without_restart() {
    let up = upstream_ok().await;
    let idp = JwksServer::start(jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")])).await;
    let gw = start_keys(&config(&up.url(), &idp.url(), "0s"), &[]).await;

    let a = call(&gw, &token("rsa.key.pem", "k1", 1)).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    assert_eq!(up.last().headers["x-keyway-subject"], "u1");
    assert_eq!(up.last().headers["x-keyway-groups"], "dev");

    // The issuer rotates: k2 replaces k1. A token signed with k2 works at once, through the
    // refetch on an unknown kid.
    idp.set(200, jwks(&[jwk("rsa2.key.pem", Algorithm::RS256, "k2")]));
    let a = call(&gw, &token("rsa2.key.pem", "k2", 2)).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));

    // k1 is gone: its tokens, even one verified and cached before, no longer pass.
    let a = call(&gw, &token("rsa.key.pem", "k1", 1)).await;
    let p = assert_problem(&a, 401, "jwt.key_unknown");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("kid \"k1\""), "{detail}");
    assert!(detail.contains("\"k2\""), "{detail}");
    gw.stop().await;
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_endpoint_is_down() {
    let up = upstream_ok().await;
    let idp = JwksServer::start(jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")])).await;
    let gw = start_keys(&config(&up.url(), &idp.url(), "0s"), &[]).await;
    assert_eq!(call(&gw, &token("rsa.key.pem", "k1", 1)).await.status, 200);

    idp.set(500, "down".into());
    // An unknown kid makes keyway try the endpoint, which fails...
    let before = idp.served();
    let a = call(&gw, &token("rsa2.key.pem", "k9", 2)).await;
    assert_problem(&a, 401, "jwt.key_unknown");
    assert!(idp.served() > before, "keyway did not try to refetch");
    // ...and the last good set stays: new tokens signed with k1 still verify.
    for jti in 3..6 {
        let a = call(&gw, &token("rsa.key.pem", "k1", jti)).await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    }
    gw.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let up = upstream_ok().await;
    let idp = JwksServer::start(jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")])).await;
    let gw = start_keys(&config(&up.url(), &idp.url(), "1h"), &[]).await;
    assert_eq!(call(&gw, &token("rsa.key.pem", "k1", 1)).await.status, 200);
    let served = idp.served();
    for i in 0..20 {
        let a = call(&gw, &token("rsa.key.pem", &format!("random-{i}"), i)).await;
        assert_problem(&a, 401, "jwt.key_unknown");
    }
    assert_eq!(
        idp.served(),
        served,
        "bogus kids must not hammer the JWKS endpoint"
    );
    gw.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_successful_fetch() {
    let up = upstream_ok().await;
    let idp = JwksServer::start(String::new()).await;
    idp.set(500, "not yet".into());
    let gw = start_keys(&config(&up.url(), &idp.url(), "0s"), &[]).await;
    let readyz = format!("http://{}/readyz", gw.admin.unwrap());
    let fetched = wait_until(Duration::from_secs(5), || async { idp.served() > 0 }).await;
    assert!(fetched, "the refresher did not start with the server");
    assert_eq!(get(&readyz, &[]).await.status, 503);

    let a = call(&gw, &token("rsa.key.pem", "k1", 1)).await;
    let p = assert_problem(&a, 503, "jwt.keys_unavailable");
    assert!(p["detail"].as_str().unwrap().contains("500"), "{p}");
    assert!(up.requests().is_empty());

    idp.set(200, jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")]));
    let ready = wait_until(Duration::from_secs(10), || async {
        get(&readyz, &[]).await.status == 200
    })
    .await;
    assert!(ready, "/readyz did not turn ready after the JWKS came up");
    assert_eq!(call(&gw, &token("rsa.key.pem", "k1", 2)).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn keys_files_pem_and_jwks() {
    let up = upstream_ok().await;
    let local = jwks(&[
        jwk("ed.key.pem", Algorithm::EdDSA, "ed1"),
        jwk("ec.key.pem", Algorithm::ES256, "ec1"),
    ]);
    let gw = start_keys(
        &format!(
            r#"
upstreams: {{app: {{url: "{}"}}}}
authenticators:
  pem: {{type: jwt, keys_file: ec.pub.pem, audience: keyway}}
  set: {{type: jwt, keys_file: local.jwks.json, audience: keyway, identity_claim: email}}
routes:
  - {{name: pem, match: {{path_prefix: /pem/}}, upstream: app, auth: [pem]}}
  - {{name: set, match: {{path_prefix: /set/}}, upstream: app, auth: [set]}}
"#,
            up.url()
        ),
        &[("local.jwks.json", local.as_bytes())],
    )
    .await;
    let claims = json!({"sub": "u", "email": "u@example.com", "aud": "keyway", "exp": now() + 600});
    let es = mint(Algorithm::ES256, &ec_key("ec.key.pem"), None, &claims);
    let a = get(
        &gw.url("/pem/x"),
        &[("authorization", &format!("Bearer {es}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    let ed = mint(
        Algorithm::EdDSA,
        &ed_key("ed.key.pem"),
        Some("ed1"),
        &claims,
    );
    let a = get(
        &gw.url("/set/x"),
        &[("authorization", &format!("Bearer {ed}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().headers["x-keyway-subject"], "u@example.com");
    // Without a kid, every key bound to the token's alg is tried.
    let es_nokid = mint(Algorithm::ES256, &ec_key("ec.key.pem"), None, &claims);
    let a = get(
        &gw.url("/set/x"),
        &[("authorization", &format!("Bearer {es_nokid}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    // A PEM key has no kid, so a token's kid cannot name it and is ignored (issuers set one
    // whatever the verifier holds); in a set whose keys have kids, an unknown kid is refused.
    let es_kid = mint(
        Algorithm::ES256,
        &ec_key("ec.key.pem"),
        Some("issuer-kid-7"),
        &claims,
    );
    let a = get(
        &gw.url("/pem/x"),
        &[("authorization", &format!("Bearer {es_kid}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    let a = get(
        &gw.url("/set/x"),
        &[("authorization", &format!("Bearer {es_kid}"))],
    )
    .await;
    assert_problem(&a, 401, "jwt.key_unknown");
    // The EC key verifies ES256 only.
    let rs = mint(Algorithm::RS256, &rsa_key("rsa.key.pem"), None, &claims);
    let a = get(
        &gw.url("/pem/x"),
        &[("authorization", &format!("Bearer {rs}"))],
    )
    .await;
    assert_problem(&a, 401, "jwt.alg_not_allowed");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_refetch() {
    let up = upstream_ok().await;
    let idp = JwksServer::start(jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")])).await;
    let gw = start_keys(&config(&up.url(), &idp.url(), "0s"), &[]).await;
    assert_eq!(call(&gw, &token("rsa.key.pem", "k1", 1)).await.status, 200);
    idp.set(
        200,
        jwks(&[
            jwk("rsa.key.pem", Algorithm::RS256, "k1"),
            jwk("rsa2.key.pem", Algorithm::RS256, "k2"),
        ]),
    );
    let before = idp.served();
    let url = gw.url("/api/x");
    let mut set = tokio::task::JoinSet::new();
    for jti in 0..20 {
        let url = url.clone();
        let t = token("rsa2.key.pem", "k2", 100 + jti);
        set.spawn(async move {
            get(&url, &[("authorization", &format!("Bearer {t}"))])
                .await
                .status
        });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(
        idp.served() - before,
        1,
        "one fetch served every waiting request"
    );
    gw.stop().await;
}
