//! `/_keyway/auth` called directly, as nginx `auth_request`, ingress-nginx, Traefik and Caddy
//! call it: the original request comes from headers believed only from trusted proxies; the
//! answer is 200 with the identity, or 401/403, never a redirect.

use crate::support::idp::{Idp, sign_in};
use crate::support::*;
use crate::{config, idp_config, sso};

const KEY: &str = "forward-auth-api-key";

fn gateway_config(up: &str, idp: &Idp, trusted: &str) -> String {
    let authenticators = format!(
        "{}  key: {{type: api_key}}\n",
        sso(idp, "store: cookie", "")
    );
    config(
        up,
        &authenticators,
        r#"  - {name: app, match: {host: app.example, path_prefix: /}, upstream: app, auth: [sso]}
  - {name: api, match: {host: app.example, path_prefix: /api/}, upstream: app, auth: [key], preflight: pass}
"#,
        &format!(
            "trusted_proxies: {trusted}\nconsumers:\n  - {{name: tools, groups: [bots], api_keys: [\"{}\"]}}",
            keyway::pipeline::authn::api_key::hashed_form(KEY)
        ),
    )
    .replace(
        "app: {url:",
        "app: {inject: {X-Tools-Key: \"upstream-secret\"}, url:",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_answers_200_401_or_403_from_the_described_request() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&gateway_config(&up.url(), &idp, "[127.0.0.1/32]")).await;
    let auth = gw.url("/_keyway/auth");

    // No description of the original request.
    assert_problem(&get(&auth, &[]).await, 403, "forward_auth.no_original");
    // No session: 401, even for a browser navigation; never a redirect.
    for headers in [
        vec![("x-original-url", "http://app.example/page")],
        vec![
            ("x-original-url", "http://app.example/page"),
            ("sec-fetch-mode", "navigate"),
        ],
        vec![
            ("x-forwarded-uri", "/page"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
        ],
        vec![("x-original-uri", "/page"), ("host", "app.example")],
    ] {
        let answer = get(&auth, &headers).await;
        assert_problem(&answer, 401, "credentials.missing");
        assert!(answer.header("www-authenticate").starts_with("Bearer"));
        assert!(!answer.headers.contains_key("location"));
    }
    // An original request no route serves: 403 (nginx turns a 404 into a 500).
    let answer = get(&auth, &[("x-original-url", "http://other.example/")]).await;
    assert_problem(&answer, 403, "route.none");
    // A malformed one: 403 too.
    let answer = get(&auth, &[("x-original-url", "http://app.example/a/../b")]).await;
    assert_problem(&answer, 403, "request.bad_path");

    // An API key on the original request.
    let answer = get(
        &auth,
        &[
            ("x-original-url", "http://app.example/api/x?y=1"),
            ("x-original-method", "POST"),
            ("x-api-key", KEY),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("x-auth-request-user"), "tools");
    assert_eq!(answer.header("x-auth-request-groups"), "bots");
    assert_eq!(answer.header("x-keyway-consumer"), "tools");
    assert!(
        !answer.headers.contains_key("x-tools-key"),
        "inject only when asked"
    );
    let answer = get(
        &gw.url("/_keyway/auth?inject=1"),
        &[
            ("x-original-url", "http://app.example/api/x"),
            ("x-api-key", KEY),
        ],
    )
    .await;
    assert_eq!(answer.header("x-tools-key"), "upstream-secret");
    let answer = get(
        &auth,
        &[
            ("x-original-url", "http://app.example/api/x"),
            ("x-api-key", "wrong"),
        ],
    )
    .await;
    assert_problem(&answer, 401, "api_key.invalid");
    // A CORS preflight on a route that passes them.
    let answer = get(
        &auth,
        &[
            ("x-original-url", "http://app.example/api/x"),
            ("x-original-method", "OPTIONS"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);

    // A browser session: its identity, with the email and groups from the ID token.
    let signed = sign_in(&gw.url("/_keyway/signin?rd=/"), Some("alice"), None).await;
    let cookie = signed.cookie_header();
    assert!(cookie.starts_with("keyway_session="), "{:#}", signed.json);
    let answer = get(
        &auth,
        &[
            ("x-original-url", "http://app.example/page"),
            ("cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("x-auth-request-user"), "alice");
    assert_eq!(answer.header("x-auth-request-email"), "alice@example.com");
    assert_eq!(answer.header("x-auth-request-groups"), "users");
    assert_eq!(answer.header("x-keyway-subject"), "alice");
    assert_eq!(answer.header("cache-control"), "no-store");
    assert!(up.requests().is_empty(), "forward-auth forwards nothing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_from_an_untrusted_peer_believes_no_header() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    // 127.0.0.1 is not trusted here.
    let gw = start(&gateway_config(&up.url(), &idp, "[10.0.0.0/8]")).await;
    let answer = get(
        &gw.url("/_keyway/auth"),
        &[
            ("x-original-url", "http://app.example/api/x"),
            ("x-api-key", KEY),
        ],
    )
    .await;
    assert_problem(&answer, 403, "forward_auth.untrusted");
    gw.stop().await;
}
