//! The F4 incident and the sign-in flow: a browser navigation goes to the provider's real login
//! page and comes back signed in; an API call, with or without a token, gets 401, never a
//! redirect; the state and code of a sign-in cannot be forged, skipped or replayed.

use crate::support::idp::{Idp, sign_in, sign_in_via};
use crate::support::*;
use crate::{config, idp_config, sso};

fn api_jwt(idp: &Idp) -> String {
    format!(
        "  api-jwt: {{type: jwt, issuer: \"{i}\", jwks_url: \"{i}/jwks\", audience: keyway}}\n",
        i = idp.issuer
    )
}

const NAVIGATE: (&str, &str) = ("sec-fetch-mode", "navigate");
const CHROME_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_navigations_sign_in_and_api_calls_get_401_never_a_redirect() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &format!("{}{}", sso(&idp, "store: cookie", ""), api_jwt(&idp)),
        "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}\n  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [api-jwt, sso]}\n",
        "",
    ))
    .await;

    // The incident: API calls without a token, with an invalid one, from scripts.
    for (path, headers, reason) in [
        ("/app", vec![], "credentials.missing"),
        ("/app", vec![("accept", "*/*")], "credentials.missing"),
        (
            "/app",
            vec![("accept", "application/json")],
            "credentials.missing",
        ),
        (
            "/app",
            vec![NAVIGATE, ("x-requested-with", "XMLHttpRequest")],
            "credentials.missing",
        ),
        (
            "/app",
            vec![("sec-fetch-mode", "cors"), ("accept", CHROME_ACCEPT)],
            "credentials.missing",
        ),
        (
            "/api/x",
            vec![NAVIGATE, ("authorization", "Bearer not.a.jwt")],
            "jwt.malformed",
        ),
        (
            "/api/x",
            vec![("accept", CHROME_ACCEPT), ("authorization", "Bearer x.y.z")],
            "jwt.malformed",
        ),
    ] {
        let answer = get(&gw.url(path), &headers).await;
        let problem = assert_problem(&answer, 401, reason);
        assert!(
            answer
                .header("www-authenticate")
                .starts_with("Bearer realm=\"keyway\"")
        );
        assert!(!answer.headers.contains_key("location"), "{problem}");
    }
    let post = send("POST", &gw.url("/app"), &[NAVIGATE]).await;
    assert_problem(&post, 401, "credentials.missing");

    // A navigation: to the provider, with PKCE S256, state and nonce, the way back preserved.
    for headers in [vec![NAVIGATE], vec![("accept", CHROME_ACCEPT)]] {
        let answer = get(&gw.url("/app/page?x=1"), &headers).await;
        assert_eq!(answer.status, 302, "{:?}", answer.body);
        let location = answer.header("location");
        assert!(
            location.starts_with(&format!("{}/auth?", idp.issuer)),
            "{location}"
        );
        let query: std::collections::HashMap<String, String> =
            form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["code_challenge"].len(), 43);
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["client_id"], "keyway");
        assert_eq!(query["scope"], "openid email profile");
        assert_eq!(query["redirect_uri"], gw.url("/_keyway/callback"));
        assert!(query["state"].len() >= 43 && query["nonce"].len() >= 43);
        let cookie = answer.header("set-cookie");
        for attribute in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/_keyway/callback",
            "Max-Age=600",
        ] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    }

    // Through the provider's real login and consent pages, and back to the page.
    let signed = sign_in(&gw.url("/app/page?x=1"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    assert_eq!(signed.status(), 200);
    assert_eq!(signed.url(), gw.url("/app/page?x=1"));
    assert_eq!(signed.body(), "ok");
    let session = signed.cookie_header();
    assert!(session.starts_with("keyway_session="), "{session}");
    let seen = up.last();
    assert_eq!(seen.uri, "/app/page?x=1");
    assert_eq!(seen.headers["x-keyway-subject"], "alice");
    assert_eq!(seen.headers["x-keyway-email"], "alice@example.com");
    assert_eq!(seen.headers["x-keyway-groups"], "users");
    assert_eq!(seen.headers["x-keyway-authenticator"], "sso");
    assert!(!seen.headers.contains_key("authorization"));
    // keyway's session cookie never reaches the upstream; the application's own cookies do.
    let answer = get(
        &gw.url("/app/again"),
        &[("cookie", &format!("theme=dark; {session}; lang=en"))],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().headers["cookie"], "theme=dark; lang=en");

    // The session works for API calls too; a presented token still decides.
    let answer = get(&gw.url("/api/x"), &[("cookie", &session)]).await;
    assert_eq!(answer.status, 200);
    let answer = get(
        &gw.url("/api/x"),
        &[("cookie", &session), ("authorization", "Bearer not.a.jwt")],
    )
    .await;
    assert_problem(&answer, 401, "jwt.malformed");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unauthenticated_status_redirect_and_403s() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &format!("{}{}", sso(&idp, "store: cookie", ""), api_jwt(&idp)),
        r#"  - {name: status, match: {path_prefix: /status/}, upstream: app, auth: [sso], on_unauthenticated: status}
  - {name: redirect, match: {path_prefix: /redirect/}, upstream: app, auth: [api-jwt, sso], on_unauthenticated: redirect}
  - {name: jwt-only, match: {path_prefix: /jwt/}, upstream: app, auth: [api-jwt]}
  - {name: admins, match: {path_prefix: /admin/}, upstream: app, auth: [sso], allow: {groups: [admin]}}
  - {name: example-only, match: {path_prefix: /example/}, upstream: app, auth: [sso], allow: {email_domains: [example.com]}}
  - {name: other-only, match: {path_prefix: /other/}, upstream: app, auth: [sso], allow: {email_domains: [other.test]}}
  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}
"#,
        "",
    ))
    .await;
    assert_problem(
        &get(&gw.url("/status/x"), &[NAVIGATE]).await,
        401,
        "credentials.missing",
    );
    // redirect: even curl goes to sign in; a presented token never does.
    assert_eq!(get(&gw.url("/redirect/x"), &[]).await.status, 302);
    let answer = get(&gw.url("/redirect/x"), &[("authorization", "Bearer x.y.z")]).await;
    assert_problem(&answer, 401, "jwt.malformed");
    // No oidc authenticator on the route: nothing to sign in to.
    assert_problem(
        &get(&gw.url("/jwt/x"), &[NAVIGATE]).await,
        401,
        "credentials.missing",
    );

    let signed = sign_in(&gw.url("/"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    let session = signed.cookie_header();
    // A 403 is never a redirect, even for a navigation.
    let answer = get(&gw.url("/admin/x"), &[NAVIGATE, ("cookie", &session)]).await;
    let problem = assert_problem(&answer, 403, "authz.denied");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("subject alice"),
        "{problem}"
    );
    assert_eq!(
        get(&gw.url("/example/x"), &[("cookie", &session)])
            .await
            .status,
        200
    );
    let answer = get(&gw.url("/other/x"), &[("cookie", &session)]).await;
    let problem = assert_problem(&answer, 403, "authz.denied");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("email alice@example.com"),
        "{problem}"
    );
    // The admin is admitted by group (from the ID token's groups claim).
    let admin = sign_in(&gw.url("/admin/x"), Some("admin"), None).await;
    assert_eq!(admin.status(), 200, "{:#}", admin.json);
    assert_eq!(up.last().headers["x-keyway-groups"], "admin,users");
    gw.stop().await;
}

/// The callback URL the provider sent the browser to, from a sign-in's steps.
fn callback_url(steps: &[serde_json::Value]) -> String {
    steps
        .iter()
        .filter_map(|s| s["url"].as_str())
        .find(|u| u.contains("/_keyway/callback?"))
        .expect("no callback in the steps")
        .to_owned()
}

/// `name=value` of a Set-Cookie header value.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_state_cannot_be_forged_skipped_or_replayed() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", ""),
        "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}\n",
        "",
    ))
    .await;
    let forged = get(
        &gw.url("/_keyway/callback?code=abc&state=forged-state-value"),
        &[],
    )
    .await;
    assert_problem(&forged, 400, "oidc.state_invalid");
    let denied = get(
        &gw.url("/_keyway/callback?error=access_denied&error_description=no%20way&state=s"),
        &[],
    )
    .await;
    let problem = assert_problem(&denied, 401, "oidc.sign_in_failed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );
    let mixup = get(
        &gw.url("/_keyway/callback?code=a&state=s&iss=http%3A%2F%2Fevil.example"),
        &[],
    )
    .await;
    assert_problem(&mixup, 401, "oidc.sign_in_failed");

    // Sign-in 1, its state cookie kept aside: the provider's redirect arrives without it.
    let start1 = get(&gw.url("/app"), &[NAVIGATE]).await;
    let state1 = cookie_pair(start1.header("set-cookie"));
    let walked = sign_in_via(
        start1.header("location"),
        Some(&gw.url("")),
        Some("alice"),
        None,
    )
    .await;
    assert!(
        walked.body().contains("oidc.state_invalid"),
        "{:#}",
        walked.json
    );
    let callback1 = callback_url(&walked.steps());
    // With its cookie, the callback signs in and goes back to the page.
    let done = get(&callback1, &[("cookie", &state1)]).await;
    assert_eq!(done.status, 302, "{:?}", done.body);
    assert_eq!(done.header("location"), "/app");
    let set: Vec<&str> = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("keyway_session=") && c.contains("HttpOnly")),
        "{set:?}"
    );
    // The state cookie is cleared.
    assert!(
        set.iter()
            .any(|c| c.starts_with(&state1[..state1.find('=').unwrap() + 1])
                && c.contains("Max-Age=0")),
        "{set:?}"
    );
    // The same callback again, cookie and all: a replay.
    let replay = get(&callback1, &[("cookie", &state1)]).await;
    let problem = assert_problem(&replay, 400, "oidc.state_invalid");
    assert!(
        problem["detail"].as_str().unwrap().contains("replay"),
        "{problem}"
    );

    // Sign-in 2 fed the first sign-in's (used) code: the provider refuses it.
    let start2 = get(&gw.url("/app"), &[NAVIGATE]).await;
    let state2 = cookie_pair(start2.header("set-cookie"));
    let location2 = start2.header("location");
    let state2_value = form_urlencoded::parse(location2.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let code1 = form_urlencoded::parse(callback1.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let injected = get(
        &gw.url(&format!(
            "/_keyway/callback?code={code1}&state={state2_value}"
        )),
        &[("cookie", &state2)],
    )
    .await;
    assert_problem(&injected, 401, "oidc.code_rejected");
    // A state cookie altered by one character does not open.
    let start3 = get(&gw.url("/app"), &[NAVIGATE]).await;
    let mut state3 = cookie_pair(start3.header("set-cookie"));
    let flip = state3.len() - 5;
    let c = if &state3[flip..=flip] == "A" {
        "B"
    } else {
        "A"
    };
    state3.replace_range(flip..=flip, c);
    let state3_value = form_urlencoded::parse(
        start3
            .header("location")
            .split_once('?')
            .unwrap()
            .1
            .as_bytes(),
    )
    .find(|(k, _)| k == "state")
    .unwrap()
    .1
    .into_owned();
    let tampered = get(
        &gw.url(&format!("/_keyway/callback?code=x&state={state3_value}")),
        &[("cookie", &state3)],
    )
    .await;
    let problem = assert_problem(&tampered, 400, "oidc.state_invalid");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not open"),
        "{problem}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_sign_out_redirects_go_only_to_safe_places() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(
            &idp,
            "store: cookie",
            "    allowed_redirect_hosts: [app.example.com]\n",
        ),
        "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}\n",
        "",
    ))
    .await;
    // /_keyway/signin answers an API call with 401, a navigation with the provider.
    let api = get(&gw.url("/_keyway/signin?rd=/x"), &[]).await;
    assert_problem(&api, 401, "credentials.missing");
    for (rd, back) in [
        ("/dashboard?tab=2", "/dashboard?tab=2"),
        ("https://app.example.com/x", "https://app.example.com/x"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://app.example.com@evil.example/", "/"),
        ("%2F%2Fevil.example", "/"),
        ("javascript:alert(1)", "/"),
    ] {
        let url = gw.url(&format!(
            "/_keyway/signin?rd={}",
            form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        ));
        let signed = sign_in(&url, Some("alice"), None).await;
        // The callback's redirect is the last keyway redirect among the steps.
        let location = signed
            .steps()
            .iter()
            .rev()
            .find(|s| {
                s["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/_keyway/callback"))
            })
            .and_then(|s| s["location"].as_str().map(str::to_owned))
            .unwrap_or_default();
        assert_eq!(location, back, "rd {rd:?}");
    }
    // Sign-out sends the browser on only to a safe place too (no session: straight there).
    for (rd, back) in [
        ("/bye", "/bye"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
    ] {
        let url = format!(
            "/_keyway/signout?rd={}",
            form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        let answer = get(&gw.url(&url), &[]).await;
        assert_eq!(answer.status, 302);
        assert_eq!(answer.header("location"), back, "rd {rd:?}");
    }
    gw.stop().await;
}
