//! `/decisions`, `POST /explain`, the admin token and the operational metrics, on a gateway
//! started in-process with real sockets.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{self, Gateway, get, metrics, sample, send_body, start, wait_until};

pub const TOKEN: &str = "admin-token-for-tests-0123456789";

/// An API-key route `api` (F1's desk token), a public route, and an echo route with an
/// injected credential, behind an admin listener with a token.
pub fn config(upstream: &str) -> String {
    format!(
        r#"
admin:
  listen: 127.0.0.1:0
  token: {TOKEN}
upstreams:
  app: {{url: "{upstream}"}}
  echo:
    builtin: echo
    inject: {{Authorization: "Bearer injected-upstream-secret-42"}}
consumers:
  - name: support-desk
    groups: [users]
    api_keys: ["sha256:a52782e3a2d4dd2f95f640b9abfb3b2a6b8e722c65f55be830f6e5f619f7f873"]
authenticators:
  desk-token: {{type: api_key, header: api_access_token}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}
  - {{name: tools, match: {{path_prefix: /tools/}}, upstream: echo, auth: [desk-token]}}
  - {{name: public, match: {{path_prefix: /public/}}, upstream: app, auth: []}}
"#
    )
}

pub fn admin_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.admin.expect("admin listener"))
}

pub fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

pub async fn admin_get(gw: &Gateway, path: &str) -> support::Answer {
    let (n, v) = bearer();
    get(&admin_url(gw, path), &[(n, &v)]).await
}

pub async fn explain(gw: &Gateway, body: &Value) -> support::Answer {
    let (n, v) = bearer();
    send_body(
        "POST",
        &admin_url(gw, "/explain"),
        &[(n, &v), ("content-type", "application/json")],
        Bytes::from(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn decisions_are_newest_first_filtered_and_name_the_reason() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    assert_eq!(get(&gw.url("/api/tickets"), &[]).await.status, 401);
    let ok = get(
        &gw.url("/api/tickets?page=2"),
        &[("api_access_token", "demo-key-123")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(get(&gw.url("/nowhere"), &[]).await.status, 404);
    let all = admin_get(&gw, "/decisions").await;
    assert_eq!(all.status, 200);
    let all = all.json();
    let reasons: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["route.none", "", "credentials.missing"]);
    let allowed = &all[1];
    for key in [
        "time",
        "request_id",
        "method",
        "path",
        "route",
        "status",
        "reason",
        "authenticator",
        "consumer",
        "subject",
        "duration_ms",
    ] {
        assert!(allowed.get(key).is_some(), "{key} missing in {allowed}");
    }
    assert_eq!(allowed["path"], "/api/tickets", "never the query");
    assert_eq!(allowed["consumer"], "support-desk");
    assert_eq!(allowed["authenticator"], "desk-token");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["request_id"], ok.header("x-request-id"));
    assert!(allowed["time"].as_str().unwrap().ends_with('Z'));
    let refused = admin_get(&gw, "/decisions?reason=credentials.missing")
        .await
        .json();
    assert_eq!(refused.as_array().unwrap().len(), 1);
    assert_eq!(refused[0]["status"], 401);
    let by_route = admin_get(&gw, "/decisions?route=api&limit=1").await.json();
    assert_eq!(by_route.as_array().unwrap().len(), 1);
    assert_eq!(by_route[0]["status"], 200);
    assert_eq!(admin_get(&gw, "/decisions?limit=x").await.status, 400);
    gw.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_everything_but_health_and_the_page_shell() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(get(&admin_url(&gw, path), &[]).await.status, 200, "{path}");
    }
    let page = get(&admin_url(&gw, "/"), &[]).await;
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'")
    );
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/decisions"),
        ("POST", "/explain"),
        ("POST", "/reload"),
    ] {
        let none = send_body(method, &admin_url(&gw, path), &[], Bytes::new()).await;
        assert_eq!(none.status, 401, "{method} {path}");
        assert!(none.header("www-authenticate").starts_with("Bearer"));
        let wrong = send_body(
            method,
            &admin_url(&gw, path),
            &[("authorization", "Bearer admin-token-for-tests-0123456780")],
            Bytes::new(),
        )
        .await;
        assert_eq!(wrong.status, 401, "{method} {path}");
    }
    assert_eq!(admin_get(&gw, "/decisions").await.status, 200);
    gw.stop().await;
}

/// Keys whose values differ between two runs of the same request.
fn without_volatile(mut v: Value) -> Value {
    v["request"]["request_id"] = Value::Null;
    for step in v["steps"].as_array_mut().unwrap() {
        step["at_us"] = Value::Null;
    }
    // Minted for each run, as for a live request without one.
    if let Some(headers) = v["upstream"]["headers"].as_array_mut() {
        headers.retain(|h| h[0] != "x-request-id");
    }
    v
}

#[tokio::test]
async fn post_explain_answers_what_the_cli_prints() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    let body = json!({
        "method": "POST",
        "url": "http://127.0.0.1:8080/tools/run?x=1",
        // A JSON object's names come in sorted order; the CLI gets them in the same order.
        "headers": {"X-Trace": "t1", "api-access-token": "demo-key-123"},
        "cookies": {"theme": "dark"}
    });
    let answer = explain(&gw, &body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let from_admin = answer.json();
    assert_eq!(from_admin["decision"], "allow");
    assert_eq!(from_admin["upstream"]["url"], "builtin:echo/tools/run?x=1");
    let config = gw.config_path.to_str().unwrap().to_owned();
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(support::keyway_bin())
            .args([
                "explain",
                "-c",
                &config,
                "POST",
                "http://127.0.0.1:8080/tools/run?x=1",
                "-H",
                "X-Trace: t1",
                "-H",
                "api-access-token: demo-key-123",
                "--cookie",
                "theme=dark",
                "--json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(cli.status.code(), Some(0));
    let from_cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(
        without_volatile(from_admin.clone()),
        without_volatile(from_cli)
    );
    // A refusal, and a body that is not an explain request.
    let refused = explain(&gw, &json!({"method": "GET", "url": "http://h/api/x"}))
        .await
        .json();
    assert_eq!(refused["refusal"]["reason"], "credentials.missing");
    let bad = explain(&gw, &json!({"url": 3})).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("method"));
    gw.stop().await;
}

#[tokio::test]
async fn metrics_count_connections_upstream_latency_and_refusals() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    // One open keep-alive connection shows in the gauge while it is open.
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let text = admin_get(&gw, "/metrics").await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    assert_eq!(sample(&text, "keyway_client_connections"), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "keyway_upstream_response_seconds_count{upstream=\"app\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE keyway_websocket_streams gauge"),
        "{text}"
    );
    drop(stream);
    let closed = wait_until(Duration::from_secs(5), || async {
        let t = admin_get(&gw, "/metrics").await;
        sample(
            &String::from_utf8_lossy(&t.body),
            "keyway_client_connections",
        ) == 0.0
    })
    .await;
    assert!(closed, "the gauge did not come back to 0");
    assert_eq!(get(&gw.url("/api/x"), &[]).await.status, 401);
    // The builtin echo has no upstream latency; refusals are counted by reason.
    let text = admin_get(&gw, "/metrics").await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    assert_eq!(
        sample(
            &text,
            "keyway_requests_total{route=\"api\",status=\"401\",reason=\"credentials.missing\"}"
        ),
        1.0,
        "{text}"
    );
    let _ = metrics;
    gw.stop().await;
}

#[tokio::test]
async fn metrics_count_jwks_fetches_and_verified_token_cache_lookups() {
    use crate::jwt_support::{JwksServer, jwk, jwks, mint, now, rsa_key};
    use jsonwebtoken::Algorithm;
    let keys = JwksServer::start(jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")])).await;
    let up = support::upstream_ok().await;
    let yaml = format!(
        r#"
admin: {{listen: 127.0.0.1:0}}
upstreams: {{app: {{url: "{}"}}}}
authenticators:
  sso: {{type: jwt, issuer: "https://issuer.test", audience: [app], jwks_url: "{}"}}
routes:
  - {{name: api, match: {{path_prefix: /}}, upstream: app, auth: [sso]}}
"#,
        up.url(),
        keys.url()
    );
    let gw = start(&yaml).await;
    let claims =
        json!({"iss": "https://issuer.test", "aud": "app", "sub": "u1", "exp": now() + 600});
    let token = mint(
        Algorithm::RS256,
        &rsa_key("rsa.key.pem"),
        Some("k1"),
        &claims,
    );
    let bearer = format!("Bearer {token}");
    for _ in 0..3 {
        let answer = get(&gw.url("/x"), &[("authorization", &bearer)]).await;
        assert_eq!(answer.status, 200);
    }
    let text = metrics(&gw).await;
    assert!(
        sample(
            &text,
            "keyway_jwks_fetches_total{authenticator=\"sso\",result=\"ok\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keyway_jwks_fetches_total{authenticator=\"sso\",result=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "keyway_jwt_cache_lookups_total{authenticator=\"sso\",result=\"miss\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keyway_jwt_cache_lookups_total{authenticator=\"sso\",result=\"hit\"}"
        ),
        2.0,
        "{text}"
    );
    // Metrics never carry a token.
    assert!(!text.contains(&token[..40]));
    promtool_check(&text);
    gw.stop().await;
}

/// `promtool check metrics` (Debian's prometheus package) on the exposition: no lint problem.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus) is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_speak_openmetrics_to_whoever_asks() {
    let up = support::upstream_ok().await;
    let gw = start(&config(&up.url())).await;
    // Every family with samples: an allowed request, a refusal, an upstream exchange.
    assert_eq!(get(&gw.url("/public/x"), &[]).await.status, 200);
    assert_eq!(get(&gw.url("/api/x"), &[]).await.status, 401);
    let (n, v) = bearer();
    let classic = get(&admin_url(&gw, "/metrics"), &[(n, &v)]).await;
    assert_eq!(
        classic.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = String::from_utf8_lossy(&classic.body).into_owned();
    assert!(
        classic.contains("# TYPE keyway_requests_total counter"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"));
    promtool_check(&classic);
    // What Prometheus sends: OpenMetrics, counters named by family, ended by `# EOF`.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let open = get(&admin_url(&gw, "/metrics"), &[(n, &v), ("accept", accept)]).await;
    assert!(
        open.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = String::from_utf8_lossy(&open.body).into_owned();
    assert!(open.contains("# TYPE keyway_requests counter"), "{open}");
    assert!(open.trim_end().ends_with("# EOF"));
    // The same samples in both.
    let samples = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(samples(&classic).len(), samples(&open).len());
    gw.stop().await;
}
