//! Item 5 (router): host, exact path, longest prefix, methods and headers; specificity, not file
//! order; strip_prefix; 404 `route.none`; dot segments → 400 `request.bad_path`.

use crate::support::*;

/// Each upstream answers with its own name, so the test sees which route was taken.
async fn named(name: &'static str) -> Upstream {
    upstream(move |_| http::Response::new(http_body_util::Full::new(name.into()))).await
}

async fn routed_to(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let answer = send(method, &gw.url(path), headers).await;
    assert_eq!(
        answer.status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    String::from_utf8_lossy(&answer.body).into_owned()
}

#[tokio::test]
async fn most_specific_route_wins_regardless_of_file_order() {
    most_specific_route_wins(0).await;
}

/// From 24 routes on the router finds candidates through its path index: the same choices.
#[tokio::test]
async fn most_specific_route_wins_among_many_routes() {
    most_specific_route_wins(40).await;
}

/// The specificity cases, with `fillers` more prefix routes (`/filler-N/`, to upstream beta).
async fn most_specific_route_wins(fillers: usize) {
    let names = [
        "catchall",
        "api",
        "api_v2",
        "exact",
        "exact_slash",
        "host",
        "wildcard",
        "post",
        "beta",
    ];
    let mut ups = Vec::new();
    for n in names {
        ups.push(named(n).await);
    }
    let url = |n: &str| ups[names.iter().position(|x| *x == n).unwrap()].url();
    // The broad routes come first in the file.
    let gw = start(&format!(
        r#"
upstreams:
  catchall: {{url: "{}"}}
  api: {{url: "{}"}}
  api_v2: {{url: "{}"}}
  exact: {{url: "{}"}}
  exact_slash: {{url: "{}"}}
  host: {{url: "{}"}}
  wildcard: {{url: "{}"}}
  post: {{url: "{}"}}
  beta: {{url: "{}"}}
routes:
  - {{name: catchall, match: {{path_prefix: /}}, upstream: catchall, auth: []}}
  - {{name: api, match: {{path_prefix: /api/}}, upstream: api, auth: []}}
  - {{name: api_v2, match: {{path_prefix: /api/v2/}}, upstream: api_v2, auth: []}}
  - {{name: exact, match: {{path: /api/v2/status}}, upstream: exact, auth: []}}
  - {{name: exact_slash, match: {{path: /api}}, upstream: exact_slash, auth: []}}
  - {{name: host, match: {{host: admin.example.com, path_prefix: /}}, upstream: host, auth: []}}
  - {{name: wildcard, match: {{host: "*.tenants.example", path_prefix: /}}, upstream: wildcard, auth: []}}
  - {{name: post, match: {{path_prefix: /api/, methods: [POST, put]}}, upstream: post, auth: []}}
  - {{name: beta, match: {{path_prefix: /api/, headers: {{x-beta: "1"}}}}, upstream: beta, auth: []}}
{}"#,
        url("catchall"),
        url("api"),
        url("api_v2"),
        url("exact"),
        url("exact_slash"),
        url("host"),
        url("wildcard"),
        url("post"),
        url("beta"),
        (0..fillers)
            .map(|i| format!(
                "  - {{name: filler-{i}, match: {{path_prefix: /filler-{i}/}}, upstream: beta, auth: []}}\n"
            ))
            .collect::<String>(),
    ))
    .await;
    for i in [0, fillers / 2, fillers.saturating_sub(1)]
        .into_iter()
        .take(fillers)
    {
        let path = format!("/filler-{i}/x");
        assert_eq!(routed_to(&gw, "GET", &path, &[]).await, "beta", "{path}");
        let near = format!("/filler-{i}x");
        assert_eq!(
            routed_to(&gw, "GET", &near, &[]).await,
            "catchall",
            "{near}"
        );
    }

    assert_eq!(routed_to(&gw, "GET", "/", &[]).await, "catchall");
    assert_eq!(routed_to(&gw, "GET", "/apix", &[]).await, "catchall");
    assert_eq!(routed_to(&gw, "GET", "/api/users", &[]).await, "api");
    // Longest prefix.
    assert_eq!(routed_to(&gw, "GET", "/api/v2/users", &[]).await, "api_v2");
    // Exact path beats every prefix that also matches it.
    assert_eq!(routed_to(&gw, "GET", "/api/v2/status", &[]).await, "exact");
    assert_eq!(
        routed_to(&gw, "GET", "/api/v2/status/x", &[]).await,
        "api_v2"
    );
    // `/api/` also matches `/api`, but the exact route is more specific.
    assert_eq!(routed_to(&gw, "GET", "/api", &[]).await, "exact_slash");
    // Host, case-insensitive and without the port; wildcard hosts.
    assert_eq!(
        routed_to(
            &gw,
            "GET",
            "/api/users",
            &[("host", "Admin.Example.com:8443")]
        )
        .await,
        "host"
    );
    assert_eq!(
        routed_to(&gw, "GET", "/x", &[("host", "acme.tenants.example")]).await,
        "wildcard"
    );
    assert_eq!(
        routed_to(&gw, "GET", "/x", &[("host", "tenants.example")]).await,
        "catchall"
    );
    // Methods and headers.
    assert_eq!(routed_to(&gw, "POST", "/api/users", &[]).await, "post");
    assert_eq!(routed_to(&gw, "PUT", "/api/users", &[]).await, "post");
    assert_eq!(routed_to(&gw, "DELETE", "/api/users", &[]).await, "api");
    assert_eq!(
        routed_to(&gw, "GET", "/api/users", &[("x-beta", "1")]).await,
        "beta"
    );
    assert_eq!(
        routed_to(&gw, "GET", "/api/users", &[("x-beta", "2")]).await,
        "api"
    );
    gw.stop().await;
}

#[tokio::test]
async fn strip_prefix_forwards_the_rest_of_the_path_and_the_query() {
    let up = upstream_ok().await;
    let gw = start(&format!(
        r#"
upstreams:
  tools: {{url: "{0}"}}
  based: {{url: "{0}/base/"}}
routes:
  - {{name: tools, match: {{path_prefix: /tools/}}, strip_prefix: true, upstream: tools, auth: []}}
  - {{name: based, match: {{path_prefix: /b}}, strip_prefix: true, upstream: based, auth: []}}
  - {{name: kept, match: {{path_prefix: /kept/}}, upstream: tools, auth: []}}
"#,
        up.url()
    ))
    .await;
    for (path, upstream_saw) in [
        ("/tools/run?x=1&y=%20z", "/run?x=1&y=%20z"),
        ("/tools/a/b/", "/a/b/"),
        ("/tools", "/"),
        ("/tools/", "/"),
        ("/b/x?q", "/base/x?q"),
        ("/b", "/base/"),
        ("/kept/x?q=1", "/kept/x?q=1"),
    ] {
        let answer = get(&gw.url(path), &[]).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(up.last().uri, upstream_saw, "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn no_matching_route_is_404_route_none() {
    let up = upstream_ok().await;
    let routes = r#"
  - {name: api, match: {path_prefix: /api/, methods: [GET]}, upstream: app, auth: []}
  - {name: internal, match: {host: internal.example, path_prefix: /}, upstream: app, auth: []}
"#;
    let gw = start(&app_config(&up.url(), "", routes)).await;
    for (method, path, host) in [
        ("GET", "/other", None),
        ("POST", "/api/x", None),
        ("GET", "/", Some("public.example")),
    ] {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let answer = send(method, &gw.url(path), &headers).await;
        let problem = assert_problem(&answer, 404, "route.none");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(path), "{detail}");
        assert!(problem.get("route").is_none(), "{problem}");
    }
    assert!(up.requests().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn dot_segments_in_any_spelling_are_400_bad_path() {
    let up = upstream_ok().await;
    let routes = "  - {name: public, match: {path_prefix: /public/}, upstream: app, auth: []}\n";
    let gw = start(&app_config(&up.url(), "", routes)).await;
    for path in [
        "/public/../admin",
        "/public/./x",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
    ] {
        let answer = get(&gw.url(path), &[]).await;
        assert_problem(&answer, 400, "request.bad_path");
    }
    // Encoded separators are refused on their own, dot segment or not.
    for path in [
        "/public%2f..%2fadmin",
        "/public/..%2Fadmin",
        "/public/..%5cadmin",
        "/public/group%2Fname",
    ] {
        let answer = get(&gw.url(path), &[]).await;
        assert_problem(&answer, 400, "path.encoded_slash");
    }
    // Path parameters are refused by default (Tomcat reads `..;x` as `..`).
    let answer = get(&gw.url("/public/..;x/admin"), &[]).await;
    assert_problem(&answer, 400, "path.semicolon");
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // Dots inside a segment are ordinary paths.
    for path in ["/public/a..b", "/public/.well-known"] {
        assert_eq!(get(&gw.url(path), &[]).await.status, 200, "{path}");
        assert_eq!(up.last().uri, path);
    }
    gw.stop().await;
}
