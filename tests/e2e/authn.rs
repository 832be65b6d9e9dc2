//! Item 7 (api_key authentication, SPEC §5): sources and the hyphen twin, hashed and plaintext
//! keys, refusals with WWW-Authenticate, the chain rule, conflicting credentials, `allow`,
//! identity headers, and removal of the consumed credential.

use keyway::pipeline::authn::api_key::hashed_form;

use crate::support::*;

const ALICE: &str = "alice-key-0001";
const OPS: &str = "ops-key-0002";
const BOT: &str = "plain-bot-key";

fn config(up: &Upstream) -> String {
    format!(
        r#"
upstreams:
  app: {{url: "{url}"}}
consumers:
  - {{name: alice, groups: [users], api_keys: ["{alice}"]}}
  - {{name: ops, groups: [admin, users], api_keys: ["{ops}"]}}
  - {{name: bot, api_keys: ["{BOT}"]}}
authenticators:
  desk: {{type: api_key, header: api_access_token}}
  multi: {{type: api_key, from: ["header:x-api-key", "query:api_key", "cookie:api_key"]}}
  first: {{type: api_key, from: ["header:x-first-key"]}}
  second: {{type: api_key, from: ["header:x-second-key"]}}
routes:
  - {{name: desk, match: {{path_prefix: /desk/}}, upstream: app, auth: [desk]}}
  - {{name: multi, match: {{path_prefix: /multi/}}, upstream: app, auth: [multi]}}
  - {{name: chain, match: {{path_prefix: /chain/}}, upstream: app, auth: [first, second]}}
  - name: admins
    match: {{path_prefix: /admin/}}
    upstream: app
    auth: [multi]
    allow: {{groups: [admin]}}
  - name: alice-only
    match: {{path_prefix: /alice/}}
    upstream: app
    auth: [multi]
    allow: {{consumers: [alice]}}
  - name: forward
    match: {{path_prefix: /forward/}}
    upstream: app
    auth: [multi]
    forward_client_credentials: true
"#,
        url = up.url(),
        alice = hashed_form(ALICE),
        ops = hashed_form(OPS),
    )
}

#[tokio::test]
async fn header_source_accepts_the_hyphen_twin() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    for header in ["api_access_token", "api-access-token", "API-Access-Token"] {
        let answer = get(&gw.url("/desk/x"), &[(header, ALICE)]).await;
        assert_eq!(answer.status, 200, "{header}");
        let seen = up.last();
        assert_eq!(seen.headers["x-keyway-consumer"], "alice", "{header}");
        assert!(!seen.headers.contains_key("api_access_token"), "{header}");
        assert!(!seen.headers.contains_key("api-access-token"), "{header}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn header_query_and_cookie_sources_with_hashed_and_plaintext_keys() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    for (key, consumer) in [(ALICE, "alice"), (OPS, "ops"), (BOT, "bot")] {
        let answer = get(&gw.url("/multi/h"), &[("x-api-key", key)]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(up.last().headers["x-keyway-consumer"], consumer);

        let answer = get(&gw.url(&format!("/multi/q?a=1&api_key={key}&b=2")), &[]).await;
        assert_eq!(answer.status, 200);
        let seen = up.last();
        assert_eq!(seen.headers["x-keyway-consumer"], consumer);
        assert_eq!(seen.uri, "/multi/q?a=1&b=2");

        let cookie = format!("theme=dark; api_key={key}; lang=en");
        let answer = get(&gw.url("/multi/c"), &[("cookie", &cookie)]).await;
        assert_eq!(answer.status, 200);
        let seen = up.last();
        assert_eq!(seen.headers["x-keyway-consumer"], consumer);
        assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
    }
    // A query that held only the key leaves no `?`; a cookie header that held only the key goes.
    let answer = get(&gw.url(&format!("/multi/only?api_key={ALICE}")), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().uri, "/multi/only");
    let cookie = format!("api_key={ALICE}");
    assert_eq!(
        get(&gw.url("/multi/c"), &[("cookie", &cookie)])
            .await
            .status,
        200
    );
    assert!(!up.last().headers.contains_key("cookie"));
    gw.stop().await;
}

#[tokio::test]
async fn wrong_key_is_401_api_key_invalid_with_an_invalid_token_challenge() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let answer = get(&gw.url("/multi/x"), &[("x-api-key", "not-a-known-key")]).await;
    let problem = assert_problem(&answer, 401, "api_key.invalid");
    assert_eq!(problem["authenticator"], "multi");
    assert_eq!(problem["route"], "multi");
    let challenge = answer.header("www-authenticate");
    assert!(
        challenge
            .starts_with("Bearer realm=\"keyway\", error=\"invalid_token\", error_description=\""),
        "{challenge}"
    );
    // Neither the presented key nor any configured key or hash is echoed.
    let text = format!("{challenge} {}", String::from_utf8_lossy(&answer.body));
    for secret in ["not-a-known-key", ALICE, OPS, BOT, &hashed_form(ALICE)[7..]] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(up.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn missing_key_is_401_credentials_missing_naming_every_source() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let answer = get(&gw.url("/multi/x?other=1"), &[("cookie", "theme=dark")]).await;
    let problem = assert_problem(&answer, 401, "credentials.missing");
    assert_eq!(answer.header("www-authenticate"), "Bearer realm=\"keyway\"");
    let detail = problem["detail"].as_str().unwrap();
    for source in [
        "header x-api-key [authenticator multi]",
        "query parameter api_key [authenticator multi]",
        "cookie api_key [authenticator multi]",
    ] {
        assert!(detail.contains(source), "{source} not in {detail}");
    }
    // Both authenticators of a chain are named.
    let answer = get(&gw.url("/chain/x"), &[]).await;
    let problem = assert_problem(&answer, 401, "credentials.missing");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("header x-first-key [authenticator first]"),
        "{detail}"
    );
    assert!(
        detail.contains("header x-second-key [authenticator second]"),
        "{detail}"
    );
    // An empty value is no credential.
    let answer = get(&gw.url("/multi/x?api_key="), &[]).await;
    assert_problem(&answer, 401, "credentials.missing");
    assert!(up.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn the_first_authenticator_that_finds_a_credential_decides() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    // first's credential is present but bad: refused with first's reason, although second's
    // credential is valid — a bad credential is never masked by the next authenticator.
    let answer = get(
        &gw.url("/chain/x"),
        &[("x-first-key", "wrong"), ("x-second-key", OPS)],
    )
    .await;
    let problem = assert_problem(&answer, 401, "api_key.invalid");
    assert_eq!(problem["authenticator"], "first");
    assert!(up.requests().is_empty());

    // No credential for first: second decides.
    let answer = get(&gw.url("/chain/x"), &[("x-second-key", OPS)]).await;
    assert_eq!(answer.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-authenticator"], "second");
    assert_eq!(seen.headers["x-keyway-consumer"], "ops");
    assert!(!seen.headers.contains_key("x-second-key"));

    // Both present and valid but different: second's key would be ignored and forwarded, so
    // the request is refused as ambiguous; nothing reaches the upstream.
    let before = up.requests().len();
    let answer = get(
        &gw.url("/chain/x"),
        &[("x-first-key", ALICE), ("x-second-key", OPS)],
    )
    .await;
    assert_problem(&answer, 401, "credentials.conflicting");
    assert_eq!(up.requests().len(), before);

    // The same key for both: first decides, and the key is consumed from both places.
    let answer = get(
        &gw.url("/chain/x"),
        &[("x-first-key", ALICE), ("x-second-key", ALICE)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-authenticator"], "first");
    assert_eq!(seen.headers["x-keyway-consumer"], "alice");
    assert!(!seen.headers.contains_key("x-first-key"));
    assert!(!seen.headers.contains_key("x-second-key"));
    gw.stop().await;
}

#[tokio::test]
async fn two_different_keys_conflict_and_the_same_key_twice_does_not() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let answer = get(
        &gw.url(&format!("/multi/x?api_key={OPS}")),
        &[("x-api-key", ALICE)],
    )
    .await;
    let problem = assert_problem(&answer, 401, "credentials.conflicting");
    assert_eq!(problem["authenticator"], "multi");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("header x-api-key") && detail.contains("query parameter api_key"),
        "{detail}"
    );
    assert!(!detail.contains(ALICE) && !detail.contains(OPS), "{detail}");
    assert!(up.requests().is_empty());

    let cookie = format!("api_key={ALICE}; theme=dark");
    let answer = get(
        &gw.url(&format!("/multi/x?api_key={ALICE}&page=2")),
        &[("x-api-key", ALICE), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-consumer"], "alice");
    // Every copy of the consumed credential is removed.
    assert!(!seen.headers.contains_key("x-api-key"));
    assert_eq!(seen.uri, "/multi/x?page=2");
    assert_eq!(seen.headers["cookie"], "theme=dark");
    gw.stop().await;
}

#[tokio::test]
async fn allow_by_group_and_by_consumer_answers_403_authz_denied() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let answer = get(&gw.url("/admin/x"), &[("x-api-key", ALICE)]).await;
    let problem = assert_problem(&answer, 403, "authz.denied");
    assert_eq!(problem["route"], "admins");
    assert_eq!(problem["authenticator"], "multi");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("consumer alice") && detail.contains("groups [admin]"),
        "{detail}"
    );
    assert!(answer.headers.get("www-authenticate").is_none());
    assert!(up.requests().is_empty());
    let answer = get(&gw.url("/admin/x"), &[("x-api-key", OPS)]).await;
    assert_eq!(answer.status, 200);

    let answer = get(&gw.url("/alice/x"), &[("x-api-key", OPS)]).await;
    assert_problem(&answer, 403, "authz.denied");
    let answer = get(&gw.url("/alice/x"), &[("x-api-key", BOT)]).await;
    let problem = assert_problem(&answer, 403, "authz.denied");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("consumer bot with no groups"),
        "{problem}"
    );
    let answer = get(&gw.url("/alice/x"), &[("x-api-key", ALICE)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.requests().len(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn identity_headers_reach_the_upstream() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    assert_eq!(
        get(&gw.url("/multi/x"), &[("x-api-key", OPS)]).await.status,
        200
    );
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-subject"], "ops");
    assert_eq!(seen.headers["x-keyway-consumer"], "ops");
    assert_eq!(seen.headers["x-keyway-groups"], "admin,users");
    assert_eq!(seen.headers["x-keyway-authenticator"], "multi");
    // A consumer without groups gets no groups header.
    assert_eq!(
        get(&gw.url("/multi/x"), &[("x-api-key", BOT)]).await.status,
        200
    );
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-subject"], "bot");
    assert!(!seen.headers.contains_key("x-keyway-groups"));
    gw.stop().await;
}

#[tokio::test]
async fn forward_client_credentials_keeps_the_credential() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let cookie = format!("api_key={ALICE}; theme=dark");
    let answer = get(
        &gw.url(&format!("/forward/x?api_key={ALICE}&a=1")),
        &[("x-api-key", ALICE), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-api-key"], ALICE);
    assert_eq!(seen.uri, format!("/forward/x?api_key={ALICE}&a=1"));
    assert_eq!(seen.headers["cookie"], cookie.as_str());
    assert_eq!(seen.headers["x-keyway-consumer"], "alice");
    gw.stop().await;
}

/// Two different values in one source (a repeated header, query parameter or cookie) are two
/// credentials as well: keyway could check one while an upstream that gets the credential
/// (`forward_client_credentials`) reads the other.
#[tokio::test]
async fn two_different_values_in_one_source_conflict() {
    let up = upstream_ok().await;
    let gw = start(&config(&up)).await;
    let twice_cookie = format!("api_key={ALICE}; api_key={OPS}");
    for (path, headers) in [
        (
            "/forward/x".to_owned(),
            vec![("x-api-key", ALICE), ("x-api-key", OPS)],
        ),
        (format!("/forward/x?api_key={ALICE}&api_key={OPS}"), vec![]),
        (
            "/forward/x".to_owned(),
            vec![("cookie", twice_cookie.as_str())],
        ),
    ] {
        let answer = get(&gw.url(&path), &headers).await;
        assert_problem(&answer, 401, "credentials.conflicting");
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());

    // The same value repeated is one credential.
    let answer = get(
        &gw.url(&format!("/multi/x?api_key={ALICE}&api_key={ALICE}")),
        &[("x-api-key", ALICE), ("x-api-key", ALICE)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = up.last();
    assert!(!seen.headers.contains_key("x-api-key"));
    assert_eq!(seen.uri, "/multi/x");
    gw.stop().await;
}
