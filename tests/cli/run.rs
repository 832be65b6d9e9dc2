//! `keyway run` (SPEC §2, §10): serving, reload on SIGHUP and `POST /reload` (a broken config
//! is refused and the running one kept), graceful exit on SIGTERM, JSON-lines logs with one
//! access line per request, `--log-format text`, and no secret in any log line.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Proc, keyway_async, log_lines, write_config};
use crate::support::*;

const KEY: &str = "run-key-valid-7f3a";
const WRONG_KEY: &str = "run-key-wrong-91c2";
const CLIENT_TOKEN: &str = "client-bearer-token-5521";
const INJECTED: &str = "injected-secret-3141";

fn hashed(key: &str) -> String {
    keyway::pipeline::authn::api_key::hashed_form(key)
}

/// One authenticated route; `extra` is appended to `routes:`. With `inject`, the upstream gets
/// `X-Service-Key` from `$RUN_INJECTED`.
fn config_with(app: &str, inject: bool, extra: &str) -> String {
    let inject = if inject {
        ", inject: {X-Service-Key: \"${RUN_INJECTED}\"}"
    } else {
        ""
    };
    format!(
        r#"listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
upstreams:
  app: {{url: "{app}"{inject}}}
consumers:
  - name: desk
    api_keys: ["{}"]
authenticators:
  desk-token: {{type: api_key, from: [header:x-api-key, query:api_key]}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}
{extra}"#,
        hashed(KEY)
    )
}

fn config(app: &str, extra: &str) -> String {
    config_with(app, false, extra)
}

async fn status_of(url: String, headers: &[(&str, &str)]) -> u16 {
    crate::common::try_get(&url, headers)
        .await
        .map_or(0, |a| a.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reloads_on_sighup_and_post_reload_and_keeps_serving_when_the_new_config_is_broken() {
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "keyway.yaml", &config(&app.url(), ""));
    let mut kw = Proc::keyway(&["run", "-c", &file], &[]);
    let (addr, admin) = kw.keyway_addrs(true).await;
    let admin = admin.expect("admin listener");
    let url = |p: &str| format!("http://{addr}{p}");

    assert_eq!(status_of(url("/api/x"), &[("x-api-key", KEY)]).await, 200);
    let none = get(&url("/public/x"), &[]).await;
    assert_eq!(none.status, 404);
    assert_eq!(none.reason(), "route.none");

    // SIGHUP with a valid edit: the new route starts working.
    let v2 = config(
        &app.url(),
        "  - {name: public, match: {path_prefix: /public/}, upstream: app, auth: []}\n",
    );
    std::fs::write(&file, &v2).unwrap();
    kw.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(10), || {
        let u = url("/public/x");
        async move { status_of(u, &[]).await == 200 }
    })
    .await;
    assert!(
        reloaded,
        "the reloaded route never answered:\n{}",
        kw.stderr()
    );
    kw.wait_output(Duration::from_secs(5), "config reloaded", true, |t| {
        log_lines(t)
            .iter()
            .any(|l| l["message"] == "config reloaded")
    })
    .await;

    // SIGHUP with a broken config: refused, logged as JSON, the running config keeps serving.
    let broken = v2.replace("upstream: app, auth: []", "upstream: ap, auth: []");
    std::fs::write(&file, &broken).unwrap();
    kw.signal("HUP");
    let log = kw
        .wait_output(Duration::from_secs(10), "the refused reload", true, |t| {
            log_lines(t).iter().any(|l| {
                l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("reload refused")
            })
        })
        .await;
    let refused = log_lines(&log)
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .contains("reload refused")
        })
        .unwrap();
    assert_eq!(refused["level"], "ERROR", "{refused}");
    let error = refused["error"].as_str().unwrap_or("");
    assert!(
        error.contains("unknown upstream \"ap\"") && error.contains("routes[1].upstream"),
        "{refused}"
    );
    assert_eq!(status_of(url("/public/x"), &[]).await, 200);
    assert_eq!(status_of(url("/api/x"), &[("x-api-key", KEY)]).await, 200);

    // POST /reload with the broken config: 400 with exactly what `check --json` prints.
    let answer = send("POST", &format!("http://{admin}/reload"), &[]).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let check = keyway_async(
        vec!["check".into(), "-c".into(), file.clone(), "--json".into()],
        vec![],
    )
    .await;
    assert_eq!(check.code, 1);
    assert_eq!(answer.json(), check.json());
    // Reported where `ap` is written.
    let (line, text) = broken
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("upstream: ap,"))
        .unwrap();
    let column = text.find("upstream: ap,").unwrap() + "upstream: ".len() + 1;
    assert_eq!(answer.json()["errors"][0]["line"], line + 1);
    assert_eq!(answer.json()["errors"][0]["column"], column);
    assert_eq!(status_of(url("/public/x"), &[]).await, 200);

    // POST /reload with a fixed config: 200, the `check --json` body, and the new route serves.
    let v3 = format!(
        "{v2}  - {{name: more, match: {{path_prefix: /more/}}, upstream: app, auth: []}}\n"
    );
    std::fs::write(&file, &v3).unwrap();
    let answer = send("POST", &format!("http://{admin}/reload"), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({"errors": [], "warnings": []})
    );
    assert_eq!(status_of(url("/more/x"), &[]).await, 200);

    kw.signal("TERM");
    let status = kw.wait_exit(Duration::from_secs(10)).await.expect("exit");
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        kw.stderr()
    );
    // Every stderr line, start to end, is JSON.
    let lines = log_lines(&kw.stderr());
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down")),
        "{}",
        kw.stderr()
    );
}

/// (path, headers, expected status, expected route, expected reason)
type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_one_json_access_line_per_request_and_never_a_secret() {
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with(
        &app.url(),
        true,
        "  - {name: public, match: {path_prefix: /public/}, upstream: app, auth: []}\n",
    );
    let file = write_config(dir.path(), "keyway.yaml", &yaml);
    let mut kw = Proc::keyway(&["run", "-c", &file], &[("RUN_INJECTED", INJECTED)]);
    let addr = kw.keyway_addr().await;
    let url = |p: &str| format!("http://{addr}{p}");

    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let query = format!("/api/q?api_key={KEY}&x=1");
    let cases: Vec<Case> = vec![
        ("/api/a".into(), vec![("x-api-key", KEY)], 200, "api", ""),
        (
            "/api/b".into(),
            vec![("x-api-key", WRONG_KEY)],
            401,
            "api",
            "api_key.invalid",
        ),
        ("/api/c".into(), vec![], 401, "api", "credentials.missing"),
        (query.clone(), vec![], 200, "api", ""),
        (
            "/public/d".into(),
            vec![
                ("authorization", bearer.as_str()),
                ("x-request-id", "client-id-1"),
            ],
            200,
            "public",
            "",
        ),
        (
            "/nowhere".into(),
            vec![("x-api-key", KEY)],
            404,
            "",
            "route.none",
        ),
    ];
    let mut ids = Vec::new();
    for (path, headers, status, _, _) in &cases {
        let a = get(&url(path), headers).await;
        assert_eq!(a.status, *status, "{path}: {:?}", a.body);
        let body = String::from_utf8_lossy(&a.body);
        for secret in [KEY, WRONG_KEY, CLIENT_TOKEN, INJECTED] {
            assert!(
                !body.contains(secret),
                "{path}: {secret} in the answer {body}"
            );
        }
        ids.push(a.header("x-request-id").to_owned());
    }
    assert_eq!(ids[4], "client-id-1");
    // The upstream got the injected key; the query credential was removed.
    let seen = app.requests();
    assert!(seen.iter().all(|s| s.headers["x-service-key"] == INJECTED));
    assert!(seen.iter().any(|s| s.uri == "/api/q?x=1"), "{seen:#?}");

    // The access log is written asynchronously: poll for every line.
    let log = kw
        .wait_output(Duration::from_secs(10), "the access lines", true, |t| {
            log_lines(t)
                .iter()
                .filter(|l| l["target"] == "keyway::access")
                .count()
                >= cases.len()
        })
        .await;
    let access: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|l| l["target"] == "keyway::access")
        .collect();
    assert_eq!(access.len(), cases.len(), "{log}");
    for ((path, _, status, route, reason), id) in cases.iter().zip(&ids) {
        let line = access
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no access line for {path} ({id}):\n{log}"));
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["route"], *route, "{line}");
        assert_eq!(line["reason"], *reason, "{line}");
        assert!(line["duration_us"].is_u64(), "{line}");
        assert_eq!(line["path"], path.split('?').next().unwrap(), "{line}");
        // Where the credential was found: named for the two accepted keys, empty otherwise.
        let source = match path.as_str() {
            "/api/a" => "header x-api-key",
            p if p.starts_with("/api/q") => "query parameter api_key",
            _ => "",
        };
        assert_eq!(line["credential_source"], source, "{line}");
    }

    kw.signal("TERM");
    let status = kw.wait_exit(Duration::from_secs(10)).await.expect("exit");
    assert!(status.success(), "{status}");
    let stderr = kw.stderr();
    log_lines(&stderr);
    for secret in [KEY, WRONG_KEY, CLIENT_TOKEN, INJECTED] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_text_is_for_people() {
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "keyway.yaml", &config(&app.url(), ""));
    let mut kw = Proc::keyway(&["--log-format", "text", "run", "-c", &file], &[]);
    let log = kw
        .wait_output(Duration::from_secs(10), "the listening line", true, |t| {
            t.lines().any(|l| l.contains("listening addr="))
        })
        .await;
    let addr = log
        .lines()
        .find(|l| l.contains("listening addr=") && !l.contains("admin"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("addr")
        .to_owned();
    let a = get(&format!("http://{addr}/api/x"), &[("x-api-key", WRONG_KEY)]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.reason(), "api_key.invalid");
    let log = kw
        .wait_output(Duration::from_secs(10), "the access line", true, |t| {
            t.contains("keyway::access")
        })
        .await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_err(),
            "text format wrote JSON: {line}"
        );
    }
    let access = log.lines().find(|l| l.contains("keyway::access")).unwrap();
    assert!(
        access.contains("status=401") && access.contains("api_key.invalid"),
        "{access}"
    );
    assert!(!log.contains(WRONG_KEY), "{log}");
    kw.signal("TERM");
    let status = kw.wait_exit(Duration::from_secs(10)).await.expect("exit");
    assert!(status.success(), "{status}");
}

#[test]
fn run_with_a_broken_config_exits_1_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "keyway.yaml",
        "upstreams:\n  app: {url: \"http://127.0.0.1:3000\"}\nroutes:\n  - {name: a, match: {path: /a}, upstream: app}\n",
    );
    let out = crate::common::keyway(&["run", "-c", &file], &[], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{file}:4:5: routes[0].auth: route \"a\" has no auth"
        )),
        "{}",
        out.stderr
    );
}
