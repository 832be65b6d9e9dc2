//! `keyway explain`: the demo's field failures dry-run through the real pipeline, the exit
//! code, what would reach the upstream with secrets redacted, and why more specific routes lost.

use serde_json::{Value, json};

use crate::common::{Output, keyway, write_config};

const ALICE_SECRET: &str = "demo-alice-secret-0123456789abcdef";

fn explain(args: &[&str]) -> Output {
    let mut all = vec!["explain", "--demo"];
    all.extend_from_slice(args);
    keyway(&all, &[], None)
}

fn explain_json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = explain(&all);
    (out.code, out.json())
}

/// A demo token: signed with alice's secret, with `claims` (and a one-hour `exp`).
pub fn demo_token(claims: Value) -> String {
    let mut claims = claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 3600);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ALICE_SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn f1_an_underscore_credential_header_is_allowed_and_consumed() {
    let (code, r) = explain_json(&[
        "GET",
        "http://127.0.0.1:8080/api/tickets",
        "-H",
        "api_access_token: demo-key-123",
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["route"], "api");
    assert_eq!(r["identity"]["consumer"], "support-desk");
    assert_eq!(
        r["authenticators"][0]["found"],
        "header api_access_token (or api-access-token)"
    );
    let headers = r["upstream"]["headers"].to_string();
    assert!(headers.contains("x-keyway-consumer"), "{headers}");
    // The consumed credential does not reach the upstream, and is printed nowhere.
    assert!(!headers.contains("api_access_token"), "{headers}");
    assert!(!r.to_string().contains("demo-key-123"), "{r:#}");
}

#[test]
fn f1_without_the_header_the_refusal_says_where_keyway_looked() {
    let out = explain(&["GET", "http://127.0.0.1:8080/api/tickets"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("REFUSE 401 credentials.missing"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("looked in  header api_access_token (or api-access-token)")
    );
    assert!(
        out.stdout.contains("the route has no oidc authenticator"),
        "{}",
        out.stdout
    );
    // Piped: no colour codes.
    assert!(!out.stdout.contains('\x1b'), "{}", out.stdout);
}

#[test]
fn f2_a_token_without_the_consumer_claim_names_its_claims_never_the_token() {
    let token = demo_token(json!({"sub": "alice"}));
    let bearer = format!("Authorization: Bearer {token}");
    let (code, r) = explain_json(&["GET", "http://127.0.0.1:8080/jwt/orders", "-H", &bearer]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["refusal"]["reason"], "jwt.consumer_claim_missing");
    assert_eq!(
        r["authenticators"][0]["claims"],
        json!(["exp", "iat", "sub"])
    );
    assert_eq!(
        r["authenticators"][0]["decided"],
        "refused: jwt.consumer_claim_missing"
    );
    let text = explain(&["GET", "http://127.0.0.1:8080/jwt/orders", "-H", &bearer]);
    assert!(text.stdout.contains("consumer_claim"), "{}", text.stdout);
    for out in [r.to_string(), text.all()] {
        assert!(!out.contains(&token), "{out}");
        assert!(!out.contains(token.split('.').nth(1).unwrap()), "{out}");
    }
}

#[test]
fn f2_a_token_naming_its_consumer_is_allowed() {
    let token = demo_token(json!({"sub": "alice", "key": "alice-key"}));
    let (code, r) = explain_json(&[
        "GET",
        "http://127.0.0.1:8080/jwt/orders",
        "-H",
        &format!("authorization: Bearer {token}"),
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["identity"]["consumer"], "alice");
    assert_eq!(r["identity"]["claims"], json!(["exp", "iat", "key", "sub"]));
    // jwt-admin (/jwt/admin/) is more specific and lost on its path.
    let lost: Vec<&str> = r["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["route"].as_str().unwrap())
        .collect();
    assert!(lost.contains(&"jwt-admin"), "{lost:?}");
    assert!(!r.to_string().contains(&token));
}

#[test]
fn f5_injected_credentials_are_described_redacted() {
    let (code, r) = explain_json(&[
        "POST",
        "http://127.0.0.1:8080/tools/search?q=1",
        "-H",
        "api-access-token: demo-key-123",
        "--cookie",
        "theme=dark",
    ]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["upstream"]["name"], "tools");
    // strip_prefix: the upstream sees /search.
    assert_eq!(r["upstream"]["url"], "builtin:echo/search?q=1");
    let headers: Vec<(String, String)> =
        serde_json::from_value(r["upstream"]["headers"].clone()).unwrap();
    assert!(
        headers.contains(&("authorization".into(), "<redacted:authorization>".into())),
        "{headers:?}"
    );
    assert!(headers.contains(&("cookie".into(), "theme=<redacted:theme>".into())));
    assert!(!r.to_string().contains("demo-tools-secret"), "{r:#}");
    let text = explain(&[
        "GET",
        "http://127.0.0.1:8080/tools/x",
        "-H",
        "api-access-token: demo-key-123",
    ]);
    assert!(
        text.stdout
            .contains("authorization: <redacted:authorization>"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("injected authorization for upstream tools"),
        "{}",
        text.stdout
    );
}

#[test]
fn f4_an_api_call_claiming_to_navigate_gets_401_not_a_redirect() {
    let (code, r) = explain_json(&[
        "GET",
        "http://127.0.0.1:8080/api/tickets",
        "-H",
        "Sec-Fetch-Mode: navigate",
        "-H",
        "Accept: text/html",
    ]);
    assert_eq!(code, 1);
    assert_eq!(r["decision"], "refuse");
    assert_eq!(r["status"], 401);
    assert!(r["redirect"].is_null());
}

#[test]
fn authorisation_refusals_and_unrouted_requests() {
    let (code, r) = explain_json(&[
        "GET",
        "http://127.0.0.1:8080/admin/users",
        "-H",
        "api-access-token: demo-key-123",
    ]);
    assert_eq!(code, 1);
    assert_eq!(r["refusal"]["reason"], "authz.denied");
    assert_eq!(r["allow"], "groups [admin]");
    let (code, r) = explain_json(&["GET", "http://127.0.0.1:8080/nowhere"]);
    assert_eq!(code, 1);
    assert_eq!(r["refusal"]["reason"], "route.none");
    assert_eq!(r["status"], 404);
}

#[test]
fn a_more_specific_route_lost_on_its_host_and_method_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "keyway.yaml",
        r#"
trusted_proxies: [10.0.0.0/8]
upstreams:
  app: {builtin: echo}
  jwks-less: {builtin: echo}
authenticators:
  sso: {type: jwt, issuer: "http://127.0.0.1:9", jwks_url: "http://127.0.0.1:9/jwks", audience: [app]}
routes:
  - {name: admin-host, match: {host: admin.example, path_prefix: /api/}, upstream: app, auth: []}
  - {name: writes, match: {path_prefix: /api/, methods: [POST]}, upstream: app, auth: []}
  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [sso]}
"#,
    );
    let out = keyway(
        &[
            "explain",
            "-c",
            &config,
            "GET",
            "http://app.example/api/x",
            "--peer",
            "10.1.2.3",
        ],
        &[],
        None,
    );
    assert!(out.stdout.contains("lost: admin-host (host admin.example, path_prefix /api/): host app.example is not admin.example"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "lost: writes (path_prefix /api/, methods POST): method GET is not one of POST"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(in trusted_proxies)"),
        "{}",
        out.stdout
    );
    // The JWKS it tried to fetch for the token's key is named, with the fetch's failure.
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})),
        b64(json!({"sub": "x", "iss": "http://127.0.0.1:9", "aud": "app"}))
    );
    let bearer = format!("Authorization: Bearer {token}");
    let out = keyway(
        &[
            "explain",
            "-c",
            &config,
            "GET",
            "http://app.example/api/x",
            "-H",
            &bearer,
            "--json",
        ],
        &[],
        None,
    );
    let r = out.json();
    assert_eq!(
        r["authenticators"][0]["jwks"]["url"],
        "http://127.0.0.1:9/jwks"
    );
    assert!(
        r["authenticators"][0]["jwks"]["state"]
            .as_str()
            .unwrap()
            .starts_with("failed"),
        "{r:#}"
    );
    assert_eq!(r["request"]["trusted_peer"], false);
    assert_eq!(out.code, 1);
}

#[test]
fn a_redis_session_is_not_opened_offline_explain_says_what_keyway_would_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "keyway.yaml",
        r#"
upstreams:
  app: {builtin: echo}
authenticators:
  sso:
    type: oidc
    issuer: "http://127.0.0.1:9"
    client_id: keyway
    client_secret: "client-secret-0123456789"
    session: {store: redis, url: "redis://127.0.0.1:9", secret: "session-secret-0123456789abcdef0123456789"}
routes:
  - {name: ui, match: {path_prefix: /}, upstream: app, auth: [sso]}
"#,
    );
    let out = keyway(
        &[
            "explain",
            "-c",
            &config,
            "GET",
            "http://a/x",
            "--cookie",
            "keyway_session=opaque-session-id",
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 2, "{}", out.all());
    let r = out.json();
    assert_eq!(r["decision"], "undecided");
    assert_eq!(r["route"], "ui");
    let why = r["undecided"].as_str().unwrap();
    assert!(
        why.contains("Redis") && why.contains("keyway_session"),
        "{why}"
    );
    assert!(!out.all().contains("opaque-session-id"));
}

/// A query credential whose name is percent-encoded (`api%5Fkey`) is the authenticator's
/// `api_key` once decoded: explain must redact it as such, in the request it shows and in the
/// upstream request. A URL with user info is refused without echoing the password.
#[test]
fn encoded_query_credentials_and_user_info_never_reach_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "keyway.yaml",
        r#"
upstreams:
  app: {builtin: echo}
consumers:
  - {name: desk, api_keys: ["sha256:a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873"]}
authenticators:
  keys: {type: api_key, from: ["query:api_key"]}
routes:
  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [keys], forward_client_credentials: true}
"#,
    );
    for format in [&[][..], &["--json"][..]] {
        let mut args = vec![
            "explain",
            "-c",
            &config,
            "GET",
            "http://a/api/x?api%5Fkey=demo-key-123&x=1",
        ];
        args.extend_from_slice(format);
        let out = keyway(&args, &[], None);
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(out.stdout.contains("api%5Fkey=<redacted"), "{}", out.stdout);
        assert!(!out.all().contains("demo-key-123"), "{}", out.all());
    }
    let out = keyway(
        &["explain", "-c", &config, "GET", "http://u:hunter2@a/api/x"],
        &[],
        None,
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("user info"), "{}", out.all());
    assert!(!out.all().contains("hunter2"), "{}", out.all());
}

/// The verdict per authenticator is the trace's: a token offered as a WebSocket subprotocol is
/// not in the request's headers as sent, and the authenticator that refused it still says so.
#[test]
fn a_subprotocol_token_refused_is_reported_as_refused_by_its_authenticator() {
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not.a.jwt");
    let protocol = format!("Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.{token}");
    let (code, r) = explain_json(&[
        "GET",
        "http://127.0.0.1:8080/live/x",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        &protocol,
    ]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["refusal"]["reason"], "jwt.malformed", "{r:#}");
    assert_eq!(r["authenticators"][0]["name"], "consumer-jwt", "{r:#}");
    assert_eq!(
        r["authenticators"][0]["decided"], "refused: jwt.malformed",
        "{r:#}"
    );
}

/// An injected header of any name is redacted: the value keyway sets is marked sensitive, and
/// explain redacts every sensitive value, not a list of names.
#[test]
fn an_injected_header_of_any_name_is_described_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "keyway.yaml",
        r#"
upstreams:
  tools: {builtin: echo, inject: {X-Tools-Key: "tools-secret-123"}}
routes:
  - {name: tools, match: {path_prefix: /}, upstream: tools, auth: []}
"#,
    );
    let out = keyway(
        &["explain", "-c", &config, "GET", "http://a/run", "--json"],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let r = out.json();
    let headers: Vec<(String, String)> =
        serde_json::from_value(r["upstream"]["headers"].clone()).unwrap();
    assert!(
        headers.contains(&("x-tools-key".into(), "<redacted:x-tools-key>".into())),
        "{headers:?}"
    );
    assert!(!out.all().contains("tools-secret-123"), "{}", out.all());
}
