//! Consumer mode (SPEC §1 F2): the token names its consumer, whose own key verifies it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::jwt_support::*;
use crate::start_keys;
use crate::support::*;

const ALICE_SECRET: &str = "alice-secret-0123456789abcdef0123";

const SSO_SECRET: &str = "issuer-secret-0123456789abcdef0123";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET path` with `token` as the bearer token.
async fn call(gw: &Gateway, path: &str, token: &str) -> Answer {
    get(&gw.url(path), &[("authorization", &bearer(token))]).await
}

/// keyway with one upstream `app`, then `rest` (consumers, authenticators, routes).
async fn gateway(rest: &str) -> (Upstream, Gateway) {
    let up = upstream_ok().await;
    let yaml = format!("upstreams: {{app: {{url: \"{}\"}}}}\n{rest}", up.url());
    let gw = start_keys(&yaml, &[]).await;
    (up, gw)
}

/// keyway with the issuer-mode authenticator `sso` (HS256 with `SSO_SECRET`, then the YAML lines
/// `settings`, which may add authenticators) and `routes`.
async fn sso_gateway(settings: &str, routes: &str) -> (Upstream, Gateway) {
    gateway(&format!(
        "authenticators:\n  sso:\n    type: jwt\n    secret: \"{SSO_SECRET}\"\n{settings}routes:\n{routes}"
    ))
    .await
}

#[tokio::test]
async fn f2_foreign_tokens_are_explained_and_consumer_claim_makes_them_work() {
    let up = upstream_ok().await;
    let config = |claim: &str| {
        format!(
            r#"
upstreams: {{app: {{url: "{}"}}}}
consumers:
  - {{name: alice, groups: [users], jwt: {{key: alice, secret: "{ALICE_SECRET}"}}}}
authenticators:
  consumer-jwt: {{type: jwt{claim}}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [consumer-jwt]}}
"#,
            up.url()
        )
    };
    // A token minted by another system: the consumer is in `sub` and `user_id`, not `key`.
    let foreign = hs(
        ALICE_SECRET,
        &json!({"sub": "alice", "user_id": "alice", "iat": now(), "exp": now() + 600}),
    );
    let gw = start_keys(&config(""), &[]).await;
    let a = call(&gw, "/api/orders", &foreign).await;
    let p = assert_problem(&a, 401, "jwt.consumer_claim_missing");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("no claim \"key\""), "{detail}");
    assert!(detail.contains("authenticator consumer-jwt"), "{detail}");
    assert!(
        detail.contains("Claims present: exp, iat, sub, user_id."),
        "{detail}"
    );
    let hint = p["hint"].as_str().unwrap();
    assert!(hint.contains("consumer_claim: sub"), "{hint}");
    assert_eq!(p["authenticator"], "consumer-jwt");
    let www = a.header("www-authenticate");
    assert!(www.starts_with("Bearer realm=\"keyway\", error=\"invalid_token\", error_description=\"The token has no claim 'key'"), "{www}");
    assert!(
        up.requests().is_empty(),
        "a refused request reached the upstream"
    );
    gw.stop().await;

    // The fix the hint names: consumer_claim.
    let gw = start_keys(&config(", consumer_claim: user_id"), &[]).await;
    let a = call(&gw, "/api/orders", &foreign).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-consumer"], "alice");
    assert_eq!(seen.headers["x-keyway-subject"], "alice");
    assert_eq!(seen.headers["x-keyway-groups"], "users");
    assert_eq!(seen.headers["x-keyway-authenticator"], "consumer-jwt");
    assert!(
        !seen.headers.contains_key("authorization"),
        "the token was forwarded"
    );

    // A claim naming no consumer.
    let stranger = hs(
        ALICE_SECRET,
        &json!({"user_id": "mallory", "exp": now() + 600}),
    );
    let a = call(&gw, "/api/orders", &stranger).await;
    let p = assert_problem(&a, 401, "jwt.consumer_unknown");
    assert!(p["detail"].as_str().unwrap().contains("\"mallory\""), "{p}");
    gw.stop().await;
}

#[tokio::test]
async fn user_and_admin_consumers_have_their_own_keys() {
    let (up, gw) = gateway(&format!(
        r#"consumers:
  - {{name: user, groups: [users], jwt: {{key: user-key, secret: "{ALICE_SECRET}"}}}}
  - {{name: admin, groups: [admin], jwt: {{key: admin-key, public_key_file: rsa.pub.pem, algorithm: RS256}}}}
authenticators:
  cj: {{type: jwt}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [cj]}}
  - {{name: admin, match: {{path_prefix: /admin/}}, upstream: app, auth: [cj], allow: {{groups: [admin]}}}}
"#
    ))
    .await;
    let claims = |key: &str| json!({"key": key, "exp": now() + 600});
    let user = hs(ALICE_SECRET, &claims("user-key"));
    let admin = mint(
        Algorithm::RS256,
        &rsa_key("rsa.key.pem"),
        None,
        &claims("admin-key"),
    );

    let a = call(&gw, "/api/x", &user).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().headers["x-keyway-consumer"], "user");

    let a = call(&gw, "/admin/x", &user).await;
    let p = assert_problem(&a, 403, "authz.denied");
    assert!(
        p["detail"].as_str().unwrap().contains("consumer user"),
        "{p}"
    );

    let before = up.requests().len();
    let a = call(&gw, "/admin/x", &admin).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.requests().len(), before + 1);
    assert_eq!(up.last().headers["x-keyway-consumer"], "admin");
    assert_eq!(up.last().headers["x-keyway-groups"], "admin");

    // The user's secret cannot sign for the admin: the admin's key is bound to RS256.
    let forged = hs(ALICE_SECRET, &claims("admin-key"));
    let a = call(&gw, "/admin/x", &forged).await;
    let p = assert_problem(&a, 401, "jwt.alg_not_allowed");
    assert!(p["detail"].as_str().unwrap().contains("HS256"), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("RS256"), "{p}");

    // Nor can another secret sign for the user.
    let wrong = hs("another-secret-0123456789abcdef0123", &claims("user-key"));
    let a = call(&gw, "/api/x", &wrong).await;
    let p = assert_problem(&a, 401, "jwt.signature_invalid");
    assert!(
        p["detail"].as_str().unwrap().contains("consumer user"),
        "{p}"
    );
    assert_eq!(up.requests().len(), before + 1);
    gw.stop().await;
}

#[tokio::test]
async fn tokens_from_query_and_cookie_are_removed_and_conflicts_refused() {
    let (up, gw) = gateway(&format!(
        r#"consumers:
  - {{name: alice, jwt: {{key: alice, secret: "{ALICE_SECRET}"}}}}
authenticators:
  cj: {{type: jwt, from: [header:Authorization, query:jwt, cookie:jwt]}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [cj]}}
  - {{name: pass, match: {{path_prefix: /pass/}}, upstream: app, auth: [cj], forward_client_credentials: true}}
"#
    ))
    .await;
    let t = hs(ALICE_SECRET, &json!({"key": "alice", "exp": now() + 600}));
    let other = hs(ALICE_SECRET, &json!({"key": "alice", "exp": now() + 601}));

    let a = get(&gw.url(&format!("/api/x?a=1&jwt={t}&b=2")), &[]).await;
    assert_eq!(a.status, 200);
    let seen = up.last();
    assert!(seen.uri.ends_with("/api/x?a=1&b=2"), "{}", seen.uri);
    assert!(!seen.uri.contains(&t));

    let a = get(
        &gw.url("/api/x"),
        &[("cookie", &format!("theme=dark; jwt={t}"))],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().headers["cookie"], "theme=dark");

    // The same token in two places is one credential.
    let a = get(
        &gw.url(&format!("/api/x?jwt={t}")),
        &[("authorization", &bearer(&t))],
    )
    .await;
    assert_eq!(a.status, 200);

    let before = up.requests().len();
    let a = get(
        &gw.url(&format!("/api/x?jwt={other}")),
        &[("authorization", &bearer(&t))],
    )
    .await;
    let p = assert_problem(&a, 401, "credentials.conflicting");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("query parameter jwt"),
        "{p}"
    );
    assert!(!String::from_utf8_lossy(&a.body).contains(&t));
    assert_eq!(up.requests().len(), before);

    let a = call(&gw, "/pass/x", &t).await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().headers["authorization"], bearer(&t).as_str());
    gw.stop().await;
}

#[tokio::test]
async fn claims_become_headers_overwriting_client_values() {
    let secret = SSO_SECRET;
    let (up, gw) = sso_gateway(
        "    claims_to_headers: {email: X-User-Email, roles: X-User-Roles}\n",
        r#"  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [sso]}
  - {name: gold, match: {path_prefix: /gold/}, upstream: app, auth: [sso], allow: {claims: {tier: gold}}}
  - {name: open, match: {path_prefix: /open/}, upstream: app, auth: []}
"#,
    )
    .await;
    // On a route that does not use the authenticator, a client-sent copy of a mapped header is
    // removed too: an upstream behind several routes never sees a spoofed claim header.
    let a = get(&gw.url("/open/x"), &[("x-user-email", "boss@example.com")]).await;
    assert_eq!(a.status, 200);
    assert!(!up.last().headers.contains_key("x-user-email"));
    let t = hs(
        secret,
        &json!({"sub": "u1", "email": "u1@example.com", "roles": ["a", "b"], "groups": "ops, dev", "tier": "silver", "exp": now() + 600}),
    );
    let a = get(
        &gw.url("/api/x"),
        &[
            ("authorization", &bearer(&t)),
            ("x-user-email", "boss@example.com"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = up.last();
    let emails: Vec<_> = seen.headers.get_all("x-user-email").iter().collect();
    assert_eq!(emails, ["u1@example.com"], "overwritten, not appended");
    assert_eq!(seen.headers["x-user-roles"], "a,b");
    assert_eq!(seen.headers["x-keyway-subject"], "u1");
    assert_eq!(seen.headers["x-keyway-groups"], "ops,dev");
    assert!(!seen.headers.contains_key("x-keyway-consumer"));

    // A token without the claim: the client's value still does not pass.
    let bare = hs(secret, &json!({"sub": "u2", "exp": now() + 600}));
    let a = get(
        &gw.url("/api/x"),
        &[
            ("authorization", &bearer(&bare)),
            ("x-user-email", "boss@example.com"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().headers["x-user-email"], "");

    // Control characters in a mapped claim refuse the token instead of splitting a header.
    let evil = hs(
        secret,
        &json!({"sub": "u3", "email": "a\r\nX-Admin: 1", "exp": now() + 600}),
    );
    let a = call(&gw, "/api/x", &evil).await;
    assert_problem(&a, 401, "jwt.claim_invalid");

    // allow.claims reads the verified claims.
    let a = call(&gw, "/gold/x", &t).await;
    assert_problem(&a, 403, "authz.denied");
    let gold = hs(
        secret,
        &json!({"sub": "u4", "tier": "gold", "exp": now() + 600}),
    );
    let a = call(&gw, "/gold/x", &gold).await;
    assert_eq!(a.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn time_issuer_and_audience_rules_name_expected_and_found() {
    let secret = SSO_SECRET;
    let settings = format!(
        r#"    issuer: https://idp.test
    audience: [keyway, other]
    leeway: 5s
    max_lifetime: 1h
  lax: {{type: jwt, secret: "{secret}", require_exp: false}}
"#
    );
    let (_up, gw) = sso_gateway(
        &settings,
        r#"  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [sso]}
  - {name: lax, match: {path_prefix: /lax/}, upstream: app, auth: [lax]}
"#,
    )
    .await;
    let n = now();
    let base = |extra: serde_json::Value| {
        let c = json!({"sub": "u", "iss": "https://idp.test", "aud": "keyway", "iat": n, "exp": n + 600});
        hs(secret, &patched(c, extra))
    };
    let check = async |token: String, reason: &str, needles: &[&str]| {
        let a = call(&gw, "/api/x", &token).await;
        let p = assert_problem(&a, 401, reason);
        let detail = p["detail"].as_str().unwrap_or("").to_owned();
        for needle in needles {
            assert!(
                detail.contains(needle),
                "{reason}: {needle:?} not in {detail:?}"
            );
        }
    };
    assert_eq!(call(&gw, "/api/x", &base(json!({}))).await.status, 200);
    // Within the leeway.
    let within = base(json!({"exp": n - 2, "iat": n - 60}));
    assert_eq!(call(&gw, "/api/x", &within).await.status, 200);
    let refused: [(serde_json::Value, &str, &[&str]); 11] = [
        (
            json!({"exp": n - 125, "iat": n - 600}),
            "jwt.expired",
            &["expired 2m", "ago, at ", "Z (leeway 5s)"],
        ),
        (
            json!({"nbf": n + 120}),
            "jwt.not_yet_valid",
            &["not valid before", " from now (leeway 5s)"],
        ),
        (
            json!({"iat": n + 600, "exp": n + 900}),
            "jwt.not_yet_valid",
            &["issued in the future"],
        ),
        (
            json!({"exp": "1879318541"}),
            "jwt.claim_invalid",
            &["\"exp\"", "a string"],
        ),
        (json!({"exp": null}), "jwt.claim_missing", &["no \"exp\""]),
        (
            json!({"exp": n + 10 * 365 * 86_400}),
            "jwt.lifetime_too_long",
            &["max_lifetime is 1h"],
        ),
        (
            json!({"iss": "https://evil.test"}),
            "jwt.issuer_mismatch",
            &["\"https://evil.test\"", "expected \"https://idp.test\""],
        ),
        (json!({"iss": null}), "jwt.issuer_mismatch", &["no \"iss\""]),
        (
            json!({"aud": ["billing", "crm"]}),
            "jwt.audience_mismatch",
            &["\"billing\"", "\"keyway\", \"other\""],
        ),
        (
            json!({"aud": null}),
            "jwt.audience_mismatch",
            &["no \"aud\""],
        ),
        (
            json!({"sub": null}),
            "jwt.claim_missing",
            &["no \"sub\" claim"],
        ),
    ];
    for (extra, reason, needles) in refused {
        check(base(extra), reason, needles).await;
    }
    // An array audience with one match passes.
    let one_of = base(json!({"aud": ["crm", "other"]}));
    assert_eq!(call(&gw, "/api/x", &one_of).await.status, 200);

    // require_exp: false accepts a token without exp.
    let no_exp = hs(secret, &json!({"sub": "u"}));
    assert_eq!(call(&gw, "/lax/x", &no_exp).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn cached_tokens_expire_on_time_and_reload_flushes_the_cache() {
    let up = upstream_ok().await;
    let config = |secret: &str| {
        format!(
            r#"
upstreams: {{app: {{url: "{}"}}}}
consumers:
  - {{name: alice, jwt: {{key: alice, secret: "{secret}"}}}}
authenticators:
  cj: {{type: jwt, leeway: 0s}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [cj]}}
"#,
            up.url()
        )
    };
    let gw = start_keys(&config(ALICE_SECRET), &[]).await;
    // Expires within two seconds: the first use verifies and caches it.
    let short = hs(ALICE_SECRET, &json!({"key": "alice", "exp": now() + 2}));
    let a = call(&gw, "/api/x", &short).await;
    assert_eq!(a.status, 200);
    let url = gw.url("/api/x");
    let expired = wait_until(Duration::from_secs(10), || async {
        let a = get(&url, &[("authorization", &bearer(&short))]).await;
        a.status == 401 && a.reason() == "jwt.expired"
    })
    .await;
    assert!(expired, "a cached token must stop working when it expires");

    let t = hs(ALICE_SECRET, &json!({"key": "alice", "exp": now() + 600}));
    let a = call(&gw, "/api/x", &t).await;
    assert_eq!(a.status, 200);
    std::fs::write(
        &gw.config_path,
        config("rotated-secret-0123456789abcdef0123"),
    )
    .unwrap();
    gw.app.reload().expect("reload");
    let a = call(&gw, "/api/x", &t).await;
    assert_problem(&a, 401, "jwt.signature_invalid");
    gw.stop().await;
}

#[tokio::test]
async fn every_algorithm_family_through_the_gateway() {
    let (up, gw) = gateway(&format!(
        r#"consumers:
  - {{name: hs, jwt: {{key: hs, base64_secret: "{}", algorithm: HS512}}}}
  - {{name: rs, jwt: {{key: rs, public_key_file: rsa.pub.pem, algorithm: RS384}}}}
  - {{name: ps, jwt: {{key: ps, public_key_file: rsa.pub.pem, algorithm: PS256}}}}
  - {{name: es, jwt: {{key: es, public_key_file: ec384.pub.pem, algorithm: ES384}}}}
  - {{name: ed, jwt: {{key: ed, private_key_file: ed.key.pem, algorithm: EdDSA}}}}
authenticators:
  cj: {{type: jwt}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [cj]}}
"#,
        b64_std(&[7u8; 64])
    ))
    .await;
    let claims = |k: &str| json!({"key": k, "exp": now() + 600});
    let cases = [
        (
            "hs",
            mint(
                Algorithm::HS512,
                &EncodingKey::from_secret(&[7u8; 64]),
                None,
                &claims("hs"),
            ),
        ),
        (
            "rs",
            mint(
                Algorithm::RS384,
                &rsa_key("rsa.key.pem"),
                None,
                &claims("rs"),
            ),
        ),
        (
            "ps",
            mint(
                Algorithm::PS256,
                &rsa_key("rsa.key.pem"),
                None,
                &claims("ps"),
            ),
        ),
        (
            "es",
            mint(
                Algorithm::ES384,
                &ec_key("ec384.key.pem"),
                None,
                &claims("es"),
            ),
        ),
        (
            "ed",
            mint(Algorithm::EdDSA, &ed_key("ed.key.pem"), None, &claims("ed")),
        ),
    ];
    for (who, token) in &cases {
        let a = call(&gw, "/api/x", token).await;
        assert_eq!(
            a.status,
            200,
            "{who}: {:?}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(up.last().headers["x-keyway-consumer"], *who);
    }
    gw.stop().await;
}

fn b64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
