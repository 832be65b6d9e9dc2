//! `keyway check`'s pitfall warnings for the field failures: each with its code, its place in
//! the file and a fix (F1 underscore headers, F2 `--token`, F4 redirects on API paths, a public
//! route that takes part of a protected one). F5's probe warnings are in probe_f5.rs.

use serde_json::{Value, json};

use crate::common::{Output, keyway, write_config};

const FOO_HASH: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

struct Checked {
    _dir: tempfile::TempDir,
    file: String,
    text: Output,
    json: Value,
}

impl Checked {
    fn warnings(&self, code: &str) -> Vec<Value> {
        self.json["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["code"] == code)
            .cloned()
            .collect()
    }

    /// The one warning `code`, at `line`, also printed as `FILE:LINE:COL: warning[code]`.
    fn one(&self, code: &str, line: u64) -> Value {
        let found = self.warnings(code);
        assert_eq!(found.len(), 1, "{code}: {:#}", self.json);
        let w = found[0].clone();
        assert_eq!(w["line"], line, "{w:#}");
        let prefix = format!("{}:{line}:{}: warning[{code}]: ", self.file, w["column"]);
        assert!(
            self.text.stdout.contains(&prefix),
            "{prefix} in {}",
            self.text.stdout
        );
        assert!(
            self.text
                .stdout
                .contains(&format!("  fix: {}", w["fix"].as_str().unwrap())),
            "{}",
            self.text.stdout
        );
        w
    }
}

fn check(yaml: &str, extra: &[&str]) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "keyway.yaml", yaml);
    let mut args = vec!["check", "-c", file.as_str()];
    args.extend_from_slice(extra);
    let text = keyway(&args, &[], None);
    args.push("--json");
    let json = keyway(&args, &[], None);
    assert_eq!(json.code, 0, "{}", json.all());
    Checked {
        _dir: dir,
        file,
        text,
        json: json.json(),
    }
}

#[test]
fn f1_an_underscore_credential_header_names_the_proxy_settings_and_the_twin() {
    let c = check(
        &format!(
            r#"upstreams:
  app: {{url: "http://127.0.0.1:3000"}}
consumers:
  - {{name: desk, api_keys: ["{FOO_HASH}"]}}
authenticators:
  desk-token:
    type: api_key
    header: api_access_token
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}
"#
        ),
        &[],
    );
    let w = c.one("credential_header_underscore", 7);
    let message = w["message"].as_str().unwrap();
    for needle in [
        "underscores_in_headers",
        "enable-underscores-in-headers",
        "api-access-token",
    ] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    assert!(w["fix"].as_str().unwrap().contains("api-access-token"));
    assert_eq!(w["path"], "authenticators.desk-token");
}

const JWT_CONFIG: &str = r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
consumers:
  - name: alice
    jwt: {key: alice-key, secret: "alice-secret-0123456789abcdef0123456789"}
authenticators:
  consumer-jwt: {type: jwt}
  by-sub: {type: jwt, consumer_claim: sub}
routes:
  - {name: orders, match: {path_prefix: /orders/}, upstream: app, auth: [consumer-jwt]}
  - {name: reports, match: {path_prefix: /reports/}, upstream: app, auth: [by-sub]}
"#;

fn token_file(dir: &std::path::Path, claims: Value) -> String {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"minted-elsewhere-0123456789abcdef"),
    )
    .unwrap();
    write_config(dir, "token.jwt", &format!("{token}\n"))
}

#[test]
fn f2_check_token_names_the_routes_that_would_refuse_it_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(
        dir.path(),
        json!({"sub": "alice", "user_id": "u-7731", "exp": 4102444800u64}),
    );
    let c = check(JWT_CONFIG, &["--token", &token]);
    let w = c.one("token_lacks_consumer_claim", 10);
    let message = w["message"].as_str().unwrap();
    assert!(message.contains("route orders"), "{message}");
    assert!(message.contains("\"key\""), "{message}");
    assert!(
        message.contains("claims present: exp, sub, user_id"),
        "{message}"
    );
    assert!(
        w["fix"].as_str().unwrap().contains("consumer_claim"),
        "{w:#}"
    );
    // The route whose authenticator reads `sub` is fine with it.
    assert!(
        !c.text.stdout.contains("route reports"),
        "{}",
        c.text.stdout
    );
    for out in [c.text.all(), c.json.to_string()] {
        assert!(!out.contains("u-7731"), "a claim value was printed: {out}");
    }
    // A token that has `key` draws no warning; a file without a JWT is an error.
    let good = token_file(dir.path(), json!({"key": "alice-key", "sub": "alice"}));
    let c = check(JWT_CONFIG, &["--token", &good]);
    assert!(
        c.warnings("token_lacks_consumer_claim").is_empty(),
        "{:#}",
        c.json
    );
    let not_jwt = write_config(dir.path(), "nope.txt", "hello\n");
    let cfg = write_config(dir.path(), "keyway.yaml", JWT_CONFIG);
    let out = keyway(&["check", "-c", &cfg, "--token", &not_jwt], &[], None);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not hold a JWT"), "{}", out.stderr);
}

/// The mode and the claims come from the compiled authenticator: a `secret` without `issuer`
/// is issuer mode (the token needs `sub`, not `key`), and a consumer-mode `identity_claim` is
/// required too.
#[test]
fn check_token_reads_the_claims_the_compiled_authenticator_requires() {
    let yaml = r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
consumers:
  - name: alice
    jwt: {key: alice-key, secret: "alice-secret-0123456789abcdef0123456789"}
authenticators:
  shared: {type: jwt, secret: "shared-secret-0123456789abcdef0123456789", audience: [app]}
  named: {type: jwt, identity_claim: email}
routes:
  - {name: shared, match: {path_prefix: /shared/}, upstream: app, auth: [shared]}
  - {name: named, match: {path_prefix: /named/}, upstream: app, auth: [named]}
"#;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(
        dir.path(),
        json!({"sub": "alice", "aud": "app", "key": "alice-key"}),
    );
    let c = check(yaml, &["--token", &token]);
    assert!(
        c.warnings("token_lacks_consumer_claim").is_empty(),
        "{:#}",
        c.json
    );
    let w = c.one("token_lacks_identity_claim", 11);
    let message = w["message"].as_str().unwrap();
    assert!(
        message.contains("route named")
            && message.contains("\"email\"")
            && message.contains("jwt.claim_missing"),
        "{message}"
    );
    // Without `sub`, the issuer-mode route is named, with its setting.
    let no_sub = token_file(
        dir.path(),
        json!({"aud": "app", "key": "alice-key", "email": "a@x"}),
    );
    let c = check(yaml, &["--token", &no_sub]);
    let w = c.one("token_lacks_identity_claim", 10);
    assert!(
        w["message"].as_str().unwrap().contains("route shared"),
        "{w:#}"
    );
    assert!(
        w["fix"].as_str().unwrap().contains("set identity_claim"),
        "{w:#}"
    );
}

fn oidc_config(routes: &str) -> String {
    format!(
        r#"upstreams:
  app: {{url: "http://127.0.0.1:3000"}}
authenticators:
  sso:
    type: oidc
    issuer: "http://127.0.0.1:9"
    client_id: keyway
    client_secret: "client-secret-0123456789"
    session: {{secret: "session-secret-0123456789abcdef0123456789"}}
routes:
{routes}"#
    )
}

#[test]
fn f4_a_redirecting_route_on_an_api_path_is_warned() {
    let c = check(
        &oidc_config(
            "  - {name: ui, match: {path_prefix: /app/}, upstream: app, auth: [sso], on_unauthenticated: redirect}
  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [sso], on_unauthenticated: redirect}
  - {name: gql, match: {path: /graphql}, upstream: app, auth: [sso], on_unauthenticated: redirect}
  - {name: v2, match: {path_prefix: /svc/v2/}, upstream: app, auth: [sso], on_unauthenticated: redirect}
  - {name: auto, match: {path_prefix: /api2/v1/}, upstream: app, auth: [sso]}
",
        ),
        &[],
    );
    let found = c.warnings("redirect_on_api_route");
    let routes: Vec<&str> = found.iter().map(|w| w["path"].as_str().unwrap()).collect();
    assert_eq!(
        routes,
        [
            "routes[1].on_unauthenticated",
            "routes[2].on_unauthenticated",
            "routes[3].on_unauthenticated"
        ],
        "{:#}",
        c.json
    );
    assert_eq!(found[0]["line"], 12);
    assert!(
        found[0]["message"].as_str().unwrap().contains("401"),
        "{:#}",
        found[0]
    );
    assert!(
        found[0]["fix"]
            .as_str()
            .unwrap()
            .contains("on_unauthenticated: auto")
    );
}

fn shadow_config(routes: &str) -> String {
    format!(
        r#"upstreams:
  app: {{url: "http://127.0.0.1:3000"}}
consumers:
  - {{name: desk, api_keys: ["{FOO_HASH}"]}}
authenticators:
  key: {{type: api_key}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [key]}}
  - {{name: admin-api, match: {{host: admin.example, path_prefix: /admin/}}, upstream: app, auth: [key]}}
{routes}"#
    )
}

#[test]
fn a_public_prefix_inside_a_protected_one_is_warned_naming_both() {
    let shadows = |routes: &str| {
        let c = check(&shadow_config(routes), &[]);
        c.warnings("public_route_shadows_protected")
            .iter()
            .map(|w| w["message"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let found = shadows(
        "  - {name: health, match: {path_prefix: /api/health/}, upstream: app, auth: []}\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("public route health (path_prefix /api/health/)"),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("protected route api (path_prefix /api/)"),
        "{}",
        found[0]
    );
    let c = check(
        &shadow_config(
            "  - {name: health, match: {path_prefix: /api/health/}, upstream: app, auth: []}\n",
        ),
        &[],
    );
    c.one("public_route_shadows_protected", 10);
    // Narrower by host or by method still takes those requests.
    assert_eq!(
        shadows("  - {name: gets, match: {path_prefix: /api/, methods: [GET]}, upstream: app, auth: []}\n").len(),
        1
    );
    assert_eq!(
        shadows("  - {name: a, match: {host: a.example, path_prefix: /api/v1/}, upstream: app, auth: []}\n").len(),
        1
    );
    // Not shadowing: one deliberate endpoint, a path outside, a less specific host (the
    // protected route keeps its host), a sibling prefix.
    for routes in [
        "  - {name: healthz, match: {path: /api/healthz}, upstream: app, auth: []}\n",
        "  - {name: pub, match: {path_prefix: /public/}, upstream: app, auth: []}\n",
        "  - {name: any, match: {path_prefix: /admin/}, upstream: app, auth: []}\n",
        "  - {name: apix, match: {path_prefix: /apix/}, upstream: app, auth: []}\n",
    ] {
        assert!(shadows(routes).is_empty(), "{routes}");
    }
}

fn websocket_config(websocket: &str) -> String {
    format!(
        r#"upstreams:
  app: {{url: "http://127.0.0.1:3000"}}
consumers:
  - {{name: desk, api_keys: ["{FOO_HASH}"]}}
authenticators:
  by-cookie: {{type: api_key, from: ["cookie:desk_key"]}}
  by-header: {{type: api_key}}
routes:
  - name: live
    match: {{path_prefix: /live/}}
    upstream: app
    auth: [by-header, by-cookie]
{websocket}
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [by-cookie], websocket: {{refuse_with: close}}}}
  - {{name: headers-only, match: {{path_prefix: /h/}}, upstream: app, auth: [by-header], websocket: {{refuse_with: close}}}}
"#
    )
}

#[test]
fn a_cookie_authenticated_websocket_route_without_allowed_origins_is_warned() {
    let c = check(
        &websocket_config("    websocket: {refuse_with: close}"),
        &[],
    );
    // `live` (line 9) and `api`: both declared for WebSocket, both reached by a cookie; the
    // header-only route is not warned.
    let found = c.warnings("websocket_cookie_without_origins");
    assert_eq!(found.len(), 2, "{:#}", c.json);
    let live = &found[0];
    assert_eq!(live["line"], 9, "{live:#}");
    let message = live["message"].as_str().unwrap();
    assert!(message.contains("route live"), "{message}");
    assert!(message.contains("authenticator by-cookie"), "{message}");
    assert!(message.contains("websocket.origin_denied"), "{message}");
    assert!(
        live["fix"].as_str().unwrap().contains("allowed_origins"),
        "{live:#}"
    );
    // Listing the origins silences it for that route.
    let c = check(
        &websocket_config("    websocket: {allowed_origins: [\"https://app.example\"]}"),
        &[],
    );
    let found = c.warnings("websocket_cookie_without_origins");
    assert_eq!(found.len(), 1, "{:#}", c.json);
    assert!(found[0]["message"].as_str().unwrap().contains("route api"));
}
