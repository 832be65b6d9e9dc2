//! `keyway test`: policy cases run through explain, one line each, the first difference named,
//! and the exit code a CI job reads.

use crate::common::{keyway, write_config};

#[test]
fn the_demo_cases_pass() {
    let out = keyway(&["test", "--demo"], &[], None);
    assert_eq!(out.code, 0, "{}", out.all());
    let passes = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("pass  "))
        .count();
    assert!(passes >= 10, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("{passes} passed, 0 failed")),
        "{}",
        out.stdout
    );
}

#[test]
fn each_failing_case_names_its_first_difference() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write_config(
        dir.path(),
        "cases.yaml",
        r#"
- name: wants allow, gets refused
  request: {url: http://127.0.0.1:8080/api/tickets}
  expect: {allow: true}
- name: wrong reason
  request: {url: http://127.0.0.1:8080/jwt/orders, token: {consumer: alice, without: [key]}}
  expect: {status: 401, reason: jwt.expired}
- name: wrong route
  request: {url: http://127.0.0.1:8080/jwt/admin/x, token: {consumer: ops}}
  expect: {allow: true, route: jwt}
- name: wrong upstream
  request: {url: http://127.0.0.1:8080/tools/x, headers: {api-access-token: demo-key-123}}
  expect: {allow: true, upstream: app}
- name: wrong consumer
  request: {url: http://127.0.0.1:8080/api/x, headers: {api_access_token: demo-key-123}}
  expect: {identity: {consumer: alice}}
- name: missing group
  request: {url: http://127.0.0.1:8080/api/x, headers: {api_access_token: demo-key-123}}
  expect: {identity: {groups: [admin]}}
- name: wants refusal, gets allowed
  request: {url: http://127.0.0.1:8080/public/x}
  expect: {status: 401}
- name: right
  request: {url: http://127.0.0.1:8080/public/x, peer: 10.0.0.1}
  expect: {allow: true, route: public}
"#,
    );
    let out = keyway(&["test", "--demo", &cases], &[], None);
    assert_eq!(out.code, 1, "{}", out.all());
    let want = [
        "FAIL  wants allow, gets refused: expected allow, got refuse 401 (credentials.missing)",
        "FAIL  wrong reason: expected reason jwt.expired, got refuse 401 (jwt.consumer_claim_missing)",
        "FAIL  wrong route: expected route jwt, got jwt-admin",
        "FAIL  wrong upstream: expected upstream app, got tools",
        "FAIL  wrong consumer: expected consumer alice, got support-desk",
        "FAIL  missing group: expected group admin, got groups [users]",
        "FAIL  wants refusal, gets allowed: expected refusal, got allow 200",
        "pass  right",
        "1 passed, 7 failed",
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, want, "{}", out.stdout);
}

#[test]
fn a_config_file_and_its_cases() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "keyway.yaml",
        r#"
upstreams: {app: {url: "http://127.0.0.1:9"}}
consumers:
  - {name: bot, api_keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}
authenticators:
  key: {type: api_key}
routes:
  - {name: api, match: {path_prefix: /}, upstream: app, auth: [key]}
"#,
    );
    let cases = write_config(
        dir.path(),
        "cases.yaml",
        r#"
- name: the key of bot
  request: {method: POST, url: /orders, headers: {x-api-key: foo}}
  expect: {allow: true, identity: {consumer: bot}}
- name: a wrong key
  request: {url: /orders, headers: {x-api-key: bar}}
  expect: {status: 401, reason: api_key.invalid}
"#,
    );
    let out = keyway(&["test", "-c", &config, &cases], &[], None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.ends_with("2 passed, 0 failed\n"),
        "{}",
        out.stdout
    );
    // A malformed cases file is a usage error, not a failed case.
    let bad = write_config(
        dir.path(),
        "bad.yaml",
        "- name: x\n  expect: {allow: true}\n",
    );
    let out = keyway(&["test", "-c", &config, &bad], &[], None);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("request"), "{}", out.stderr);
}
