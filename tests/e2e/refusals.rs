//! Item 8 (refusals, SPEC §6.1 and §11): every refusal is problem+json whose `request_id` is
//! the `X-Request-Id` response header; a well-formed client request id is kept and forwarded, a
//! malformed one replaced; `errors: {detail: reason}` omits detail and hint.

use keyway::pipeline::authn::api_key::hashed_form;

use crate::support::*;

fn config(up: &Upstream, extra: &str) -> String {
    format!(
        r#"
{extra}
headers: {{underscores: reject, max_request_headers: 20}}
upstreams:
  app: {{url: "{url}"}}
  down: {{url: "http://127.0.0.1:1"}}
consumers:
  - {{name: alice, groups: [users], api_keys: ["{hash}"]}}
authenticators:
  keys: {{type: api_key}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [keys]}}
  - {{name: admin, match: {{path_prefix: /admin/}}, upstream: app, auth: [keys], allow: {{groups: [admin]}}}}
  - {{name: down, match: {{path_prefix: /down/}}, upstream: down, auth: []}}
"#,
        url = up.url(),
        hash = hashed_form("alice-key"),
    )
}

/// A request (path, headers) and the status and reason it is refused with.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    u16,
    &'static str,
);

/// One request per refusal keyway generates before or after the upstream.
fn refusals() -> Vec<Case> {
    vec![
        ("/nowhere", vec![], 404, "route.none"),
        ("/api/../admin/x", vec![], 400, "request.bad_path"),
        ("/api/x", vec![("x_a", "1")], 400, "header.underscore"),
        (
            "/api/x",
            vec![("x-a_b", "1"), ("x_a-b", "2")],
            400,
            "header.ambiguous",
        ),
        ("/api/x", vec![], 401, "credentials.missing"),
        (
            "/api/x",
            vec![("x-api-key", "nope")],
            401,
            "api_key.invalid",
        ),
        (
            "/admin/x",
            vec![("x-api-key", "alice-key")],
            403,
            "authz.denied",
        ),
        ("/down/x", vec![], 502, "upstream.unreachable"),
    ]
}

#[tokio::test]
async fn every_refusal_is_problem_json_with_the_request_id() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "")).await;
    for (path, headers, status, reason) in refusals() {
        let answer = get(&gw.url(path), &headers).await;
        let problem = assert_problem(&answer, status, reason);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{problem}"
        );
        // Minted ids are 32 hex characters.
        let id = answer.header("x-request-id");
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    // Too many headers (431) as well.
    let names: Vec<String> = (0..25).map(|i| format!("x-n{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_problem(
        &get(&gw.url("/api/x"), &many).await,
        431,
        "header.too_large",
    );
    assert!(up.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_well_formed_client_request_id_is_kept_and_forwarded() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "")).await;
    let id = "Req-1.2_3:abc";
    let answer = get(
        &gw.url("/api/x"),
        &[("x-request-id", id), ("x-api-key", "alice-key")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-request-id"), id);
    assert_eq!(up.last().headers["x-request-id"], id);
    assert_eq!(up.last().headers.get_all("x-request-id").iter().count(), 1);

    // On a refusal too.
    let answer = get(&gw.url("/api/x"), &[("x-request-id", id)]).await;
    let problem = assert_problem(&answer, 401, "credentials.missing");
    assert_eq!(problem["request_id"], id);

    // 128 characters is the longest kept.
    let long = "a".repeat(128);
    let answer = get(&gw.url("/nowhere"), &[("x-request-id", &long)]).await;
    assert_eq!(answer.header("x-request-id"), long);
    gw.stop().await;
}

#[tokio::test]
async fn a_malformed_client_request_id_is_replaced() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "")).await;
    let too_long = "a".repeat(129);
    for bad in [
        "has space",
        "semi;colon",
        "slash/y",
        "quote\"d",
        too_long.as_str(),
    ] {
        let answer = get(
            &gw.url("/api/x"),
            &[("x-request-id", bad), ("x-api-key", "alice-key")],
        )
        .await;
        assert_eq!(answer.status, 200, "{bad}");
        let minted = answer.header("x-request-id");
        assert_ne!(minted, bad);
        assert_eq!(minted.len(), 32, "{bad}: {minted}");
        assert_eq!(up.last().headers["x-request-id"], minted, "{bad}");

        let answer = get(&gw.url("/nowhere"), &[("x-request-id", bad)]).await;
        let problem = assert_problem(&answer, 404, "route.none");
        assert_ne!(problem["request_id"], bad);
    }
    gw.stop().await;
}

#[tokio::test]
async fn detail_reason_omits_detail_and_hint() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "errors: {detail: reason}")).await;
    for (path, headers, status, reason) in refusals() {
        let answer = get(&gw.url(path), &headers).await;
        let problem = assert_problem(&answer, status, reason);
        assert!(problem.get("detail").is_none(), "{problem}");
        assert!(problem.get("hint").is_none(), "{problem}");
    }
    // Refusals of the HTTP parser too.
    let answer = raw(
        gw.addr,
        "GET /api/x HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), Some(400), "{}", answer.text());
    let problem: serde_json::Value = serde_json::from_str(&answer.body()).unwrap();
    assert_eq!(problem["reason"], "header.malformed");
    assert!(problem.get("detail").is_none(), "{problem}");
    // The 401 challenge carries the reason code, not the detail sentence.
    let answer = get(&gw.url("/api/x"), &[("x-api-key", "nope")]).await;
    assert_eq!(
        answer.header("www-authenticate"),
        "Bearer realm=\"keyway\", error=\"invalid_token\", error_description=\"api_key.invalid\""
    );

    // With the default (full), detail and hint are present.
    let gw_full = start(&config(&up, "")).await;
    let answer = get(&gw_full.url("/api/x"), &[]).await;
    let problem = assert_problem(&answer, 401, "credentials.missing");
    assert!(problem["detail"].is_string() && problem["hint"].is_string());
    gw_full.stop().await;
    gw.stop().await;
}
