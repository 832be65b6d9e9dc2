//! Sessions: sealed cookies (tampered, truncated, foreign, rotated secrets, chunks), renewal
//! with refresh tokens (once for concurrent requests; a refused renewal ends the session),
//! sign-out, back-channel logout, Redis shared by two instances, and providers and Redis
//! going down and coming back.

use std::time::Duration;

use serde_json::json;

use crate::support::idp::{Idp, sign_in, sign_in_via};
use crate::support::redis::Redis;
use crate::support::*;
use crate::{SESSION_SECRET, config, idp_config, sso};

const APP_ROUTE: &str = "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [sso]}\n";

fn set_cookies(answer: &Answer) -> Vec<String> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The Cookie header that replaces the session cookies of `current` with those `answer` set.
fn updated(current: &str, answer: &Answer) -> String {
    let mut jar: Vec<(String, String)> = current
        .split("; ")
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    for set in set_cookies(answer) {
        let pair = set.split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        jar.retain(|(k, _)| k != name);
        if !set.contains("Max-Age=0") {
            jar.push((name.to_owned(), value.to_owned()));
        }
    }
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_cut_and_foreign_session_cookies_are_refused_and_cleared() {
    // carol is in 30 groups (about 5 KB in her ID token and session): several cookies.
    let mut idp_conf = idp_config();
    let groups: Vec<String> = (0..30)
        .map(|i| format!("group-with-a-long-name-{i:03}"))
        .collect();
    idp_conf["users"] = json!({"carol": {"groups": groups}});
    let idp = Idp::start(idp_conf).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", ""),
        APP_ROUTE,
        "",
    ))
    .await;

    let alice = sign_in(&gw.url("/"), Some("alice"), None)
        .await
        .cookie_header();
    let mut altered = alice.clone();
    let at = altered.len() - 10;
    let c = if &altered[at..=at] == "A" { "B" } else { "A" };
    altered.replace_range(at..=at, c);
    let api = get(&gw.url("/x"), &[("cookie", &altered)]).await;
    assert_problem(&api, 401, "session.invalid");
    assert!(
        set_cookies(&api)
            .iter()
            .any(|c| c.starts_with("keyway_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        set_cookies(&api)
    );
    // A navigation with a dead session is sent to sign in again, the dead cookie cleared.
    let nav = get(
        &gw.url("/x"),
        &[("cookie", &altered), ("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(nav.status, 302);
    assert!(
        set_cookies(&nav)
            .iter()
            .any(|c| c.starts_with("keyway_session=;"))
    );

    // Sealed by another keyway's secret.
    let other = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", "")
            .replace(SESSION_SECRET, "another-secret-0123456789abcdef-0123456"),
        APP_ROUTE,
        "",
    ))
    .await;
    assert_problem(
        &get(&other.url("/x"), &[("cookie", &alice)]).await,
        401,
        "session.invalid",
    );
    other.stop().await;

    // carol's session in chunks: every chunk under 4 KB, reassembled, stripped upstream.
    let carol = sign_in(&gw.url("/"), Some("carol"), None).await;
    assert!(carol.ok, "{:#}", carol.json);
    let names: Vec<String> = carol.json["cookies"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(
        names.len() >= 3 && names.iter().all(|n| n.starts_with("keyway_session_")),
        "{names:?}"
    );
    assert!(
        carol.json["cookies"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.as_str().unwrap().len() < 4000)
    );
    let jar = carol.cookie_header();
    let answer = get(&gw.url("/chunked"), &[("cookie", &format!("{jar}; app=1"))]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().headers["cookie"], "app=1");
    assert_eq!(up.last().headers["x-keyway-subject"], "carol");
    // A chunk lost on the way: the session does not open.
    let cut: String = jar
        .split("; ")
        .filter(|p| !p.starts_with("keyway_session_1="))
        .collect::<Vec<_>>()
        .join("; ");
    assert_problem(
        &get(&gw.url("/x"), &[("cookie", &cut)]).await,
        401,
        "session.invalid",
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_still_opens_old_cookies_and_reissues_them() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", ""),
        APP_ROUTE,
        "",
    ))
    .await;
    let old = sign_in(&gw.url("/"), Some("alice"), None)
        .await
        .cookie_header();
    let new_secret = "rotated-secret-0123456789abcdef-0123456";
    let rotated = config(
        &up.url(),
        &sso(
            &idp,
            &format!("store: cookie, old_secrets: [\"{SESSION_SECRET}\"]"),
            "",
        )
        .replace(
            &format!("secret: \"{SESSION_SECRET}\""),
            &format!("secret: \"{new_secret}\""),
        ),
        APP_ROUTE,
        "",
    );
    std::fs::write(&gw.config_path, &rotated).unwrap();
    gw.app.reload().expect("reload");
    let answer = get(&gw.url("/x"), &[("cookie", &old)]).await;
    assert_eq!(answer.status, 200);
    let reissued = updated(&old, &answer);
    assert_ne!(
        reissued, old,
        "the cookie was not re-issued with the new secret"
    );
    // Without the old secret, only the re-issued cookie opens.
    let only_new = rotated.replace(&format!(", old_secrets: [\"{SESSION_SECRET}\"]"), "");
    std::fs::write(&gw.config_path, &only_new).unwrap();
    gw.app.reload().expect("reload");
    assert_eq!(
        get(&gw.url("/x"), &[("cookie", &reissued)]).await.status,
        200
    );
    assert_problem(
        &get(&gw.url("/x"), &[("cookie", &old)]).await,
        401,
        "session.invalid",
    );
    gw.stop().await;
}

/// Sends `n` requests at once with `cookie`; their answers.
async fn burst(gw: &Gateway, cookie: &str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = gw.url(&format!("/burst/{i}"));
            let cookie = cookie.to_owned();
            tokio::spawn(async move { get(&url, &[("cookie", &cookie)]).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_renewed_once_before_expiry_and_end_when_renewal_is_refused() {
    let mut idp_conf = idp_config();
    idp_conf["ttl"] = json!({"AccessToken": 6, "IdToken": 6});
    let mut idp = Idp::start(idp_conf).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", "    pass_access_token: true\n"),
        APP_ROUTE,
        "",
    ))
    .await;
    let signed = sign_in(&gw.url("/"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    let first_token = up.last().headers["authorization"].clone();
    let cookie = signed.cookie_header();
    let refreshes_before = idp.count("POST", "/token");

    // Bursts of concurrent requests until one renews: all of that burst pass, one renewal.
    let renewed = poll(Duration::from_secs(20), || {
        let gw = &gw;
        let cookie = cookie.clone();
        async move {
            let answers = burst(gw, &cookie, 8).await;
            assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
            answers
                .iter()
                .find(|a| !set_cookies(a).is_empty())
                .map(|a| updated(&cookie, a))
        }
    })
    .await
    .expect("the session was never renewed");
    assert_eq!(
        idp.count("POST", "/token") - refreshes_before,
        1,
        "{}",
        idp.log()
    );
    let token = up.last().headers["authorization"].clone();
    assert_ne!(
        token, first_token,
        "the upstream still gets the old access token"
    );
    assert_eq!(
        get(&gw.url("/after"), &[("cookie", &renewed)]).await.status,
        200
    );

    // The provider forgets the grant (a restart; same keys): the next renewal is refused.
    idp.restart(None).await;
    let ended = poll(Duration::from_secs(20), || {
        let url = gw.url("/late");
        let cookie = renewed.clone();
        async move {
            let answer = get(&url, &[("cookie", &cookie)]).await;
            if answer.status == 401 {
                return Some(answer);
            }
            assert_eq!(answer.status, 200);
            None
        }
    })
    .await
    .expect("the refused renewal never ended the session");
    let problem = assert_problem(&ended, 401, "session.expired");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("refused to renew"),
        "{problem}"
    );
    assert!(
        set_cookies(&ended)
            .iter()
            .any(|c| c.starts_with("keyway_session=;"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_ends_the_session_here_and_at_the_provider() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", ""),
        APP_ROUTE,
        "",
    ))
    .await;
    let cookie = sign_in(&gw.url("/"), Some("alice"), None)
        .await
        .cookie_header();
    let answer = get(&gw.url("/_keyway/signout?rd=/bye"), &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, 302);
    let location = answer.header("location");
    assert!(
        location.starts_with(&format!("{}/session/end?", idp.issuer)),
        "{location}"
    );
    let query: std::collections::HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(query["post_logout_redirect_uri"], gw.url("/bye"));
    assert_eq!(query["client_id"], "keyway");
    assert_eq!(query["id_token_hint"].split('.').count(), 3);
    assert!(
        set_cookies(&answer)
            .iter()
            .any(|c| c.starts_with("keyway_session=;") && c.contains("Max-Age=0"))
    );
    // A copy of the signed-out cookie is refused (its provider session is remembered as ended).
    assert_problem(
        &get(&gw.url("/x"), &[("cookie", &cookie)]).await,
        401,
        "session.revoked",
    );
    // POST works too.
    let cookie = sign_in(&gw.url("/"), Some("bob"), None)
        .await
        .cookie_header();
    let answer = send("POST", &gw.url("/_keyway/signout"), &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, 302);
    gw.stop().await;
}

fn redis_session(redis: &Redis) -> String {
    format!("store: redis, url: \"{}\"", redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_redis_sessions_and_sign_out_ends_them_everywhere() {
    let idp = Idp::start(idp_config()).await;
    let mut redis = Redis::start().await;
    let up = upstream_ok().await;
    let yaml = config(
        &up.url(),
        &sso(&idp, &redis_session(&redis), ""),
        APP_ROUTE,
        "",
    );
    let a = start(&yaml).await;
    let b = start(&yaml).await;
    let signed = sign_in(&a.url("/"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    let cookie = signed.cookie_header();
    // The cookie holds an opaque id, not the session.
    assert!(cookie.len() < 80, "{cookie}");
    let on_b = get(&b.url("/x"), &[("cookie", &cookie)]).await;
    assert_eq!(on_b.status, 200);
    assert_eq!(up.last().headers["x-keyway-subject"], "alice");
    // Signed out on A: gone on B.
    assert_eq!(
        get(&a.url("/_keyway/signout"), &[("cookie", &cookie)])
            .await
            .status,
        302
    );
    assert_problem(
        &get(&b.url("/x"), &[("cookie", &cookie)]).await,
        401,
        "session.revoked",
    );

    // Redis stops: a clear 503 at once, nothing hangs; it comes back: keyway recovers.
    let cookie = sign_in(&b.url("/"), Some("alice"), None)
        .await
        .cookie_header();
    redis.stop().await;
    let started = std::time::Instant::now();
    let down = get(&a.url("/x"), &[("cookie", &cookie)]).await;
    assert_problem(&down, 503, "session.store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    redis.restart().await;
    // The restarted Redis lost its data (no persistence here): sign in again, on either.
    let came_back = wait_until(Duration::from_secs(10), || {
        let url = a.url("/x");
        let cookie = cookie.clone();
        async move { get(&url, &[("cookie", &cookie)]).await.status != 503 }
    })
    .await;
    assert!(came_back, "keyway did not recover when Redis came back");
    let again = sign_in(&a.url("/"), Some("alice"), None).await;
    assert!(again.ok, "{:#}", again.json);
    assert_eq!(
        get(&b.url("/x"), &[("cookie", &again.cookie_header())])
            .await
            .status,
        200
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_channel_logout_from_the_provider_ends_the_session() {
    let idp = Idp::start(idp_config()).await;
    let redis = Redis::start().await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, &redis_session(&redis), ""),
        APP_ROUTE,
        "",
    ))
    .await;
    let jar = tempfile::NamedTempFile::new().unwrap();
    let signed = sign_in(&gw.url("/"), Some("alice"), Some(jar.path())).await;
    assert!(signed.ok, "{:#}", signed.json);
    let cookie = signed.cookie_header();
    assert_eq!(get(&gw.url("/x"), &[("cookie", &cookie)]).await.status, 200);
    // alice signs out at the provider itself; it tells keyway through the back channel.
    let logout = sign_in_via(
        &idp.url("/session/end"),
        Some(&gw.url("")),
        None,
        Some(jar.path()),
    )
    .await;
    assert!(
        idp.log().contains("backchannel"),
        "{:#}\n{}",
        logout.json,
        idp.log()
    );
    let ended = wait_until(Duration::from_secs(10), || {
        let url = gw.url("/x");
        let cookie = cookie.clone();
        async move { get(&url, &[("cookie", &cookie)]).await.status == 401 }
    })
    .await;
    assert!(
        ended,
        "the back-channel logout did not end the session: {}",
        idp.log()
    );
    assert_problem(
        &get(&gw.url("/x"), &[("cookie", &cookie)]).await,
        401,
        "session.revoked",
    );
    // A forged logout token is refused.
    let forged = send_body(
        "POST",
        &gw.url("/_keyway/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded")],
        bytes::Bytes::from_static(b"logout_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"),
    )
    .await;
    assert_problem(&forged, 400, "oidc.logout_token_invalid");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyway_starts_with_the_provider_down_and_uses_it_once_it_is_up() {
    let port = crate::support::nginx::free_port();
    let up = upstream_ok().await;
    let placeholder = format!("http://127.0.0.1:{port}");
    let authenticators = format!(
        r#"  sso:
    type: oidc
    issuer: "{placeholder}"
    client_id: keyway
    client_secret: keyway-client-secret-0123456789abcdef
    session: {{secret: "{SESSION_SECRET}"}}
"#
    );
    let gw = start(&config(
        &up.url(),
        &authenticators,
        APP_ROUTE,
        "admin: {listen: 127.0.0.1:0}",
    ))
    .await;
    let admin = gw.admin.unwrap();
    let ready = get(&format!("http://{admin}/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    let missing = ready.json()["missing"].to_string();
    assert!(missing.contains("authenticator sso"), "{missing}");
    let answer = get(&gw.url("/x"), &[("sec-fetch-mode", "navigate")]).await;
    let problem = assert_problem(&answer, 503, "oidc.provider_unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains(&placeholder),
        "{problem}"
    );

    let idp = Idp::start_on(port, idp_config()).await;
    let ready = wait_until(Duration::from_secs(30), || {
        let url = format!("http://{admin}/readyz");
        let nav = gw.url("/x");
        async move {
            // A request that needs the provider cuts discovery's backoff short.
            let _ = get(&nav, &[("sec-fetch-mode", "navigate")]).await;
            get(&url, &[]).await.status == 200
        }
    })
    .await;
    assert!(ready, "keyway never discovered the provider");
    let signed = sign_in(&gw.url("/"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);

    // The provider goes down mid-flight: a session whose tokens are still valid keeps working.
    idp.go_down();
    assert_eq!(
        get(&gw.url("/x"), &[("cookie", &signed.cookie_header())])
            .await
            .status,
        200
    );
    // A sign-in started now cannot exchange its code: a 503 that says why.
    let start_again = get(&gw.url("/y"), &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(start_again.status, 302);
    let state_cookie = start_again
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let state = form_urlencoded::parse(
        start_again
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
    let callback = get(
        &gw.url(&format!("/_keyway/callback?code=anything&state={state}")),
        &[("cookie", &state_cookie)],
    )
    .await;
    assert_problem(&callback, 503, "oidc.provider_unavailable");
    idp.come_back();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_at_the_provider_is_picked_up() {
    let mut idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, "store: cookie", ""),
        APP_ROUTE,
        "",
    ))
    .await;
    assert!(sign_in(&gw.url("/"), Some("alice"), None).await.ok);
    // A new signing key, the old one gone from the JWKS.
    let mut rotated = idp_config();
    rotated["keySeed"] = json!("f4-keys-rotated");
    idp.restart(Some(rotated)).await;
    // keyway refetches the JWKS for the unknown kid (at most once per 10 s): poll until then.
    let last = std::sync::Mutex::new(None);
    let ok = wait_until(Duration::from_secs(30), || {
        let url = gw.url("/");
        let last = &last;
        async move {
            let signed = sign_in(&url, Some("alice"), None).await;
            let ok = signed.ok && signed.status() == 200;
            *last.lock().unwrap() = Some(signed.json);
            ok
        }
    })
    .await;
    assert!(
        ok,
        "no sign-in after the key rotation: {:#?}",
        last.lock().unwrap()
    );
    gw.stop().await;
}

/// `POST /explain` on the admin listener of a serving keyway.
async fn admin_explain(gw: &Gateway, cookie: &str) -> serde_json::Value {
    let admin = gw.admin.expect("the config has an admin listener");
    let body = json!({"method": "GET", "url": "/reports", "headers": {"cookie": cookie}});
    let answer = send_body(
        "POST",
        &format!("http://{admin}/explain"),
        &[("content-type", "application/json")],
        bytes::Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reads_a_redis_session_and_never_renews_one() {
    let mut idp_conf = idp_config();
    idp_conf["ttl"] = json!({"AccessToken": 6, "IdToken": 6});
    let idp = Idp::start(idp_conf).await;
    let redis = Redis::start().await;
    let up = upstream_ok().await;
    let gw = start(&config(
        &up.url(),
        &sso(&idp, &redis_session(&redis), ""),
        APP_ROUTE,
        "admin: {listen: 127.0.0.1:0}",
    ))
    .await;
    let signed = sign_in(&gw.url("/"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    let cookie = signed.cookie_header();
    // The serving keyway reads the session from Redis: a decision, not "undecided".
    let report = admin_explain(&gw, &cookie).await;
    assert_eq!(report["decision"], "allow", "{report:#}");
    assert_eq!(report["identity"]["subject"], "alice", "{report:#}");
    // Once the tokens are due, explain says it would renew them, and does not.
    let tokens_before = idp.count("POST", "/token");
    let due = poll(Duration::from_secs(15), || {
        let gw = &gw;
        let cookie = cookie.clone();
        async move {
            let report = admin_explain(gw, &cookie).await;
            let steps = report["steps"].to_string();
            steps.contains("due for renewal").then_some(report)
        }
    })
    .await
    .expect("explain never saw the session due for renewal");
    assert_eq!(due["decision"], "allow", "{due:#}");
    assert_eq!(idp.count("POST", "/token"), tokens_before, "{}", idp.log());
    // The real request renews it, once: the refresh token was not spent by explain.
    let answer = get(&gw.url("/reports"), &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(idp.count("POST", "/token"), tokens_before + 1);
    // Signed out: explain sees the session gone.
    assert_eq!(
        get(&gw.url("/_keyway/signout"), &[("cookie", &cookie)])
            .await
            .status,
        302
    );
    let report = admin_explain(&gw, &cookie).await;
    assert_eq!(report["refusal"]["reason"], "session.revoked", "{report:#}");
    // Offline, the CLI says what keyway would do instead of contacting Redis.
    let config = gw.config_path.to_str().unwrap().to_owned();
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(keyway_bin())
            .args([
                "explain", "-c", &config, "GET", "/reports", "--cookie", &cookie,
            ])
            .arg("--json")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(cli.status.code(), Some(2), "{cli:?}");
    gw.stop().await;
}
