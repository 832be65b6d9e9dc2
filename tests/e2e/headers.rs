//! Item 6 (header policy, SPEC §4): underscore policies, `allow`, the collision guard, removal
//! of client identity and hop-by-hop headers, the X-Forwarded-* / Forwarded chain, and the
//! removal metrics.

use keyway::pipeline::authn::api_key::hashed_form;

use crate::support::*;

const KEY: &str = "desk-key-123";

/// A public route `/pub/`, an api_key route `/api/` reading `api_access_token`, and an upstream
/// that injects `X-Tools-Key`.
fn config(up: &Upstream, headers: &str) -> String {
    format!(
        r#"
headers: {headers}
admin: {{listen: 127.0.0.1:0}}
upstreams:
  app:
    url: "{url}"
    inject: {{X-Tools-Key: injected-secret}}
consumers:
  - {{name: desk, groups: [support, users], api_keys: ["{hash}"]}}
authenticators:
  desk-token: {{type: api_key, header: api_access_token}}
routes:
  - {{name: pub, match: {{path_prefix: /pub/}}, upstream: app, auth: []}}
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}
"#,
        url = up.url(),
        hash = hashed_form(KEY),
    )
}

/// Starts keyway with the header policy `headers` and sends `GET /pub/x` (a public route) with
/// `sent`; asserts 200 and returns what the upstream saw.
async fn public_get(headers: &str, sent: &[(&str, &str)]) -> (Gateway, Upstream, Seen) {
    let up = upstream_ok().await;
    let gw = start(&config(&up, headers)).await;
    let answer = get(&gw.url("/pub/x"), sent).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = up.last();
    (gw, up, seen)
}

#[track_caller]
fn assert_absent(seen: &Seen, names: &[&str]) {
    for name in names {
        assert!(
            !seen.headers.contains_key(*name),
            "{name} reached the upstream"
        );
    }
}

/// Asserts `keyway_header_removals_total` for each `(cause, count)`.
async fn assert_removals(gw: &Gateway, want: &[(&str, f64)]) {
    let m = metrics(gw).await;
    for (cause, count) in want {
        let series = format!(r#"keyway_header_removals_total{{cause="{cause}"}}"#);
        assert_eq!(sample(&m, &series), *count, "{cause}: {m}");
    }
}

/// The forwarding headers keyway sets, alone, for the test client (127.0.0.1, plain http) and
/// `Host: gw.example`.
#[track_caller]
fn assert_own_chain(seen: &Seen) {
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "gw.example");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"gw.example\""
    );
}

#[tokio::test]
async fn pass_forwards_underscore_headers_unchanged() {
    let (gw, up, seen) = public_get(
        "{}",
        &[("api_access_token", "t0k3n"), ("X_Custom_Thing", "v")],
    )
    .await;
    assert_eq!(seen.headers["api_access_token"], "t0k3n");
    assert_eq!(seen.headers["x_custom_thing"], "v");
    assert!(!seen.headers.contains_key("x-custom-thing"));

    // F1: the support-desk credential header authenticates.
    let answer = get(&gw.url("/api/x"), &[("api_access_token", KEY)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().headers["x-keyway-consumer"], "desk");
    gw.stop().await;
}

#[tokio::test]
async fn drop_removes_underscore_headers_and_the_refusal_says_so() {
    let (gw, up, seen) =
        public_get("{underscores: drop}", &[("x_custom", "v"), ("x-kept", "k")]).await;
    assert!(!seen.headers.contains_key("x_custom"), "{seen:?}");
    assert!(!seen.headers.contains_key("x-custom"), "{seen:?}");
    assert_eq!(seen.headers["x-kept"], "k");

    // The credential header is dropped by the policy: the refusal names it and the policy.
    let answer = get(&gw.url("/api/x"), &[("api_access_token", KEY)]).await;
    let problem = assert_problem(&answer, 401, "credentials.missing");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("header api_access_token (or api-access-token)"),
        "{detail}"
    );
    assert!(
        detail.contains(
            "A header \"api_access_token\" was present but removed by headers.underscores: drop."
        ),
        "{detail}"
    );
    assert!(
        problem["hint"]
            .as_str()
            .unwrap()
            .contains("send api-access-token instead"),
        "{problem}"
    );
    assert_eq!(up.requests().len(), 1);

    // The hyphen twin survives the policy.
    let answer = get(&gw.url("/api/x"), &[("api-access-token", KEY)]).await;
    assert_eq!(answer.status, 200);
    assert!(!up.last().headers.contains_key("api-access-token"));

    assert_removals(&gw, &[("underscore_policy", 2.0)]).await;
    gw.stop().await;
}

#[tokio::test]
async fn reject_refuses_underscore_headers_with_400() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "{underscores: reject}")).await;
    let answer = get(&gw.url("/pub/x"), &[("x_custom", "v")]).await;
    let problem = assert_problem(&answer, 400, "header.underscore");
    assert!(
        problem["detail"].as_str().unwrap().contains("\"x_custom\""),
        "{problem}"
    );
    assert!(
        problem["hint"].as_str().unwrap().contains("\"x-custom\""),
        "{problem}"
    );
    assert!(up.requests().is_empty());
    assert_eq!(
        get(&gw.url("/pub/x"), &[("x-custom", "v")]).await.status,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn normalize_turns_underscores_into_hyphens() {
    let (gw, _up, seen) = public_get(
        "{underscores: normalize}",
        &[("x_a", "1"), ("X_Multi_Part_Name", "2")],
    )
    .await;
    assert_eq!(seen.headers["x-a"], "1");
    assert_eq!(seen.headers["x-multi-part-name"], "2");
    assert!(!seen.headers.contains_key("x_a"));
    assert!(!seen.headers.contains_key("x_multi_part_name"));
    gw.stop().await;
}

#[tokio::test]
async fn allow_exempts_exact_names_from_every_policy() {
    for policy in ["drop", "reject", "normalize"] {
        let up = upstream_ok().await;
        let gw = start(&config(
            &up,
            &format!("{{underscores: {policy}, allow: [api_access_token, X_Legacy]}}"),
        ))
        .await;
        let answer = get(
            &gw.url("/pub/x"),
            &[("api_access_token", "t"), ("x_legacy", "l")],
        )
        .await;
        assert_eq!(answer.status, 200, "{policy}");
        let seen = up.last();
        assert_eq!(seen.headers["api_access_token"], "t", "{policy}");
        assert_eq!(seen.headers["x_legacy"], "l", "{policy}");
        // And the credential header authenticates under the policy.
        let answer = get(&gw.url("/api/x"), &[("api_access_token", KEY)]).await;
        assert_eq!(answer.status, 200, "{policy}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn names_that_fold_together_are_400_ambiguous_under_every_policy() {
    for policy in ["pass", "drop", "reject", "normalize"] {
        let up = upstream_ok().await;
        let gw = start(&config(
            &up,
            &format!("{{underscores: {policy}, allow: [x_user_id]}}"),
        ))
        .await;
        for pair in [
            [("x-user_id", "alice"), ("x-user-id", "bob")],
            [("x_user-id", "alice"), ("x-user_id", "bob")],
            [("x_user_id", "alice"), ("x-user-id", "bob")],
        ] {
            let answer = get(&gw.url("/pub/x"), &pair).await;
            let problem = assert_problem(&answer, 400, "header.ambiguous");
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("\"x-user-id\""),
                "{policy}: {problem}"
            );
        }
        assert!(up.requests().is_empty(), "{policy}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn spellings_that_fold_to_headers_keyway_sets_are_removed() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "{}")).await;
    let answer = get(
        &gw.url("/api/x"),
        &[
            ("api_access_token", KEY),
            ("X_Forwarded_For", "6.6.6.6"),
            ("x_forwarded-host", "evil.example"),
            ("x-keyway_subject", "admin"),
            ("X_Keyway_Groups", "admin"),
            ("x_auth_request_user", "admin"),
            ("x_real_ip", "6.6.6.6"),
            ("x_tools_key", "client-chosen"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = up.last();
    assert_absent(
        &seen,
        &[
            "x_forwarded_for",
            "x_forwarded-host",
            "x-keyway_subject",
            "x_keyway_groups",
            "x_auth_request_user",
            "x_real_ip",
            "x_tools_key",
        ],
    );
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-keyway-subject"], "desk");
    assert_eq!(seen.headers["x-keyway-groups"], "support,users");
    assert_eq!(seen.headers["x-tools-key"], "injected-secret");
    assert_eq!(seen.headers.get_all("x-tools-key").iter().count(), 1);
    // The credential header was consumed, not kept.
    assert!(!seen.headers.contains_key("api_access_token"));

    assert_removals(&gw, &[("collision", 7.0), ("consumed_credential", 1.0)]).await;
    gw.stop().await;
}

#[tokio::test]
async fn client_sent_identity_headers_are_removed() {
    let up = upstream_ok().await;
    let gw = start(&config(&up, "{}")).await;
    let spoofed = [
        ("X-Keyway-Subject", "admin"),
        ("X-Keyway-Consumer", "admin"),
        ("X-Keyway-Groups", "admin"),
        ("X-Keyway-Authenticator", "none"),
        ("X-Auth-Request-User", "admin"),
        ("X-Auth-Request-Email", "admin@example.com"),
    ];
    // A public route: no identity at all reaches the upstream.
    assert_eq!(get(&gw.url("/pub/x"), &spoofed).await.status, 200);
    let names: Vec<&str> = spoofed.iter().map(|(name, _)| *name).collect();
    assert_absent(&up.last(), &names);
    // An authenticated route: only keyway's values.
    let mut headers = spoofed.to_vec();
    headers.push(("api-access-token", KEY));
    assert_eq!(get(&gw.url("/api/x"), &headers).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-subject"], "desk");
    assert_eq!(seen.headers["x-keyway-consumer"], "desk");
    assert_eq!(seen.headers["x-keyway-groups"], "support,users");
    assert_eq!(seen.headers["x-keyway-authenticator"], "desk-token");
    assert_eq!(seen.headers.get_all("x-keyway-subject").iter().count(), 1);
    assert!(!seen.headers.contains_key("x-auth-request-user"));
    assert!(!seen.headers.contains_key("x-auth-request-email"));

    assert_removals(&gw, &[("identity_spoof", 12.0)]).await;
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (gw, _up, seen) = public_get(
        "{}",
        &[
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "secret-for-the-next-hop-only"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_absent(
        &seen,
        &["x-custom-hop", "keep-alive", "proxy-authorization", "te"],
    );
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_removals(&gw, &[("hop_by_hop", 4.0)]).await;
    gw.stop().await;
}

/// The same table applies to responses: an upstream's hop-by-hop headers, and those its
/// `Connection` names, do not reach the client; end-to-end ones do. The upstream writes its
/// response by hand so that no HTTP library tidies it first.
#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        head.clear();
                        let response = "HTTP/1.1 200 OK\r\n\
                            Connection: keep-alive, x-upstream-hop\r\n\
                            X-Upstream-Hop: for-keyway-only\r\n\
                            Keep-Alive: timeout=5\r\n\
                            Proxy-Authenticate: Basic realm=\"upstream-proxy\"\r\n\
                            Proxy-Connection: keep-alive\r\n\
                            TE: trailers\r\n\
                            X-End-To-End: kept\r\n\
                            Content-Length: 2\r\n\r\nok";
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let gw = start(&public_config(&format!("http://{addr}"), "")).await;
    let answer = get(&gw.url("/x"), &[]).await;
    assert_eq!(answer.status, 200);
    for name in [
        "x-upstream-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
    ] {
        assert!(
            answer.headers.get(name).is_none(),
            "{name} reached the client: {:?}",
            answer.headers
        );
    }
    assert_eq!(answer.header("x-end-to-end"), "kept");
    gw.stop().await;
}

const CLIENT_CHAIN: [(&str, &str); 6] = [
    ("host", "gw.example"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "public.example"),
    ("forwarded", "for=203.0.113.9;proto=https"),
    ("x-real-ip", "203.0.113.9"),
];

#[tokio::test]
async fn forwarding_chain_is_set_and_appended_for_a_trusted_peer() {
    // Default trusted_proxies: loopback, so the test client is a trusted proxy.
    let (gw, up, seen) = public_get("{}", &[("host", "gw.example")]).await;
    assert_own_chain(&seen);

    assert_eq!(get(&gw.url("/pub/x"), &CLIENT_CHAIN).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "public.example");
    assert_eq!(seen.headers["x-real-ip"], "203.0.113.9");
    assert_eq!(
        seen.headers["forwarded"],
        "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host=\"gw.example\""
    );
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_chain_is_replaced_for_an_untrusted_peer() {
    let up = upstream_ok().await;
    let gw = start(&format!(
        "trusted_proxies: [10.0.0.0/8]\n{}",
        config(&up, "{}")
    ))
    .await;
    assert_eq!(get(&gw.url("/pub/x"), &CLIENT_CHAIN).await.status, 200);
    assert_own_chain(&up.last());
    gw.stop().await;
}
