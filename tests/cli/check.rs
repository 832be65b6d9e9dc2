//! `keyway check`: valid configs, pitfall warnings, the `--json` format (SPEC §11), and bad
//! configs each reported with message, path, line and column (SPEC §2, §3).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{Output, keyway, write_config};

/// A config checked twice: as text and as `--json`.
struct Checked {
    _dir: tempfile::TempDir,
    file: String,
    text: Output,
    json: Output,
}

impl Checked {
    fn errors(&self) -> Vec<Value> {
        self.json.json()["errors"]
            .as_array()
            .expect("errors array")
            .clone()
    }

    fn warning_codes(&self) -> Vec<String> {
        self.json.json()["warnings"]
            .as_array()
            .expect("warnings array")
            .iter()
            .map(|w| w["code"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Asserts the check failed with exactly `n` errors, in both output formats.
    fn fails_with(&self, n: usize) -> &Self {
        assert_eq!(self.json.code, 1, "{:?}", self.json);
        assert_eq!(self.text.code, 1, "{:?}", self.text);
        assert_eq!(self.errors().len(), n, "{:#}", self.json.json());
        assert!(
            self.text.stdout.contains(&format!("{n} error(s)")),
            "{}",
            self.text.stdout
        );
        self
    }

    /// Asserts an error at `line:column` with `path` whose message contains every `needle`, in
    /// the JSON and as `FILE:LINE:COLUMN: PATH: MESSAGE` in the text output.
    fn has_error(&self, line: u64, column: u64, path: &str, needles: &[&str]) -> &Self {
        let errors = self.errors();
        let found = errors.iter().find(|e| {
            e["line"] == line
                && e["column"] == column
                && e["path"] == path
                && needles
                    .iter()
                    .all(|n| e["message"].as_str().unwrap_or("").contains(n))
        });
        let Some(error) = found else {
            panic!(
                "no error at {line}:{column} path {path:?} containing {needles:?} in {errors:#?}"
            );
        };
        let message = error["message"].as_str().unwrap();
        let prefix = if path.is_empty() {
            format!("{}:{line}:{column}: ", self.file)
        } else {
            format!("{}:{line}:{column}: {path}: ", self.file)
        };
        assert!(
            self.text.stdout.contains(&format!("{prefix}{message}")),
            "text output lacks {prefix}{message}:\n{}",
            self.text.stdout
        );
        self
    }
}

fn check(yaml: &str) -> Checked {
    check_with(yaml, &[], &[])
}

fn check_with(yaml: &str, files: &[(&str, &str)], envs: &[(&str, &str)]) -> Checked {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    let file = write_config(dir.path(), "keyway.yaml", yaml);
    let text = keyway(&["check", "-c", &file], envs, None);
    let json = keyway(&["check", "-c", &file, "--json"], envs, None);
    Checked {
        _dir: dir,
        file,
        text,
        json,
    }
}

const FOO_HASH: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

/// Upstreams, consumers and authenticators for route tests; routes follow from line 9.
fn base() -> String {
    format!(
        r#"upstreams:
  app: {{url: "http://127.0.0.1:3000"}}
consumers:
  - name: desk
    api_keys: ["{FOO_HASH}"]
authenticators:
  desk-token: {{type: api_key, header: x-api-key}}
routes:
"#
    )
}

#[test]
fn valid_config_exits_0_and_lists_pitfall_warnings() {
    let yaml = r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
consumers:
  - name: desk
    api_keys: ["plaintext-key-4821"]
authenticators:
  desk-token: {type: api_key, header: api_access_token}
routes:
  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: [desk-token]}
"#;
    let c = check(yaml);
    assert_eq!(c.text.code, 0, "{:?}", c.text);
    assert_eq!(c.json.code, 0, "{:?}", c.json);
    assert!(
        c.text
            .stdout
            .contains("warning[credential_header_underscore]: authenticator desk-token reads header api_access_token"),
        "{}",
        c.text.stdout
    );
    assert!(
        c.text.stdout.contains("api-access-token"),
        "the warning names the hyphen twin: {}",
        c.text.stdout
    );
    assert!(
        c.text.stdout.contains("warning[plaintext_api_key]"),
        "{}",
        c.text.stdout
    );
    assert!(
        c.text.stdout.contains("ok (2 warning(s))"),
        "{}",
        c.text.stdout
    );

    // --json: {"errors":[],"warnings":[{"code","message", and where and how to fix}]}.
    let v = c.json.json();
    let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["errors", "warnings"]), "{v:#}");
    assert_eq!(v["errors"], serde_json::json!([]));
    for w in v["warnings"].as_array().unwrap() {
        let keys: BTreeSet<&str> = w.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["code", "message", "path", "line", "column", "fix"]),
            "{w:#}"
        );
        assert!(w["line"].as_u64().unwrap() > 0, "{w:#}");
        assert!(!w["fix"].as_str().unwrap().is_empty(), "{w:#}");
    }
    let codes = c.warning_codes();
    assert!(
        codes.contains(&"credential_header_underscore".to_owned()),
        "{codes:?}"
    );
    assert!(codes.contains(&"plaintext_api_key".to_owned()), "{codes:?}");
    // The plaintext key itself is never printed.
    assert!(!c.text.all().contains("plaintext-key-4821"));
    assert!(!c.json.all().contains("plaintext-key-4821"));
}

#[test]
fn clean_config_has_no_warnings() {
    let c = check(&format!(
        "{}  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}\n",
        base()
    ));
    assert_eq!(c.json.code, 0, "{:?}", c.json);
    assert_eq!(
        c.json.json(),
        serde_json::json!({"errors": [], "warnings": []})
    );
    assert!(
        c.text.stdout.contains("ok (0 warning(s))"),
        "{}",
        c.text.stdout
    );
}

#[test]
fn json_errors_have_exactly_message_path_line_column() {
    let c = check(&format!(
        "{}  - name: api\n    match: {{path_prefix: /api/}}\n    upstream: nope\n    auth: []\n",
        base()
    ));
    c.fails_with(1);
    let v = c.json.json();
    let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["errors", "warnings"]), "{v:#}");
    let e = &v["errors"][0];
    let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["message", "path", "line", "column"]),
        "{e:#}"
    );
    assert!(e["line"].is_u64() && e["column"].is_u64() && e["path"].is_string());
}

#[test]
fn unknown_key_is_reported_at_its_line_with_the_nearest_valid_key() {
    let c = check(&format!(
        "{}  - name: api\n    match: {{path_prefix: /api/}}\n    upstrem: app\n    auth: []\n",
        base()
    ));
    c.fails_with(1).has_error(
        11,
        5,
        "",
        &["unknown field `upstrem`", "did you mean `upstream`?"],
    );

    // At the top level too.
    let c = check("upstream:\n  app: {url: \"http://127.0.0.1:3000\"}\n");
    c.fails_with(1).has_error(
        1,
        1,
        "",
        &["unknown field `upstream`", "did you mean `upstreams`?"],
    );

    // And an unknown enum value.
    let c = check("headers:\n  underscores: dorp\n");
    c.fails_with(1).has_error(
        2,
        16,
        "",
        &["unknown variant `dorp`", "did you mean `drop`?"],
    );
}

#[test]
fn type_errors_are_reported_at_the_value() {
    let c = check("workers: [1]\n");
    c.fails_with(1).has_error(
        1,
        10,
        "",
        &["workers must be a number of threads", "or auto"],
    );

    let c = check(&format!(
        "{}  - name: api\n    match: {{path_prefix: /api/}}\n    upstream: app\n    auth: []\n    forward_client_credentials: maybe\n",
        base()
    ));
    c.fails_with(1)
        .has_error(13, 33, "", &["invalid boolean", "true or false"]);
}

#[test]
fn unknown_upstream_authenticator_and_consumer_names_are_listed_with_suggestions() {
    let c = check(&format!(
        r#"{}  - name: api
    match: {{path_prefix: /api/}}
    upstream: ap
    auth: [desk-token, desk-tokn]
    allow: {{consumers: [dsk]}}
"#,
        base()
    ));
    c.fails_with(3)
        .has_error(
            11,
            15,
            "routes[0].upstream",
            &[
                "unknown upstream \"ap\"",
                "known: app",
                "did you mean \"app\"?",
            ],
        )
        .has_error(
            12,
            24,
            "routes[0].auth[1]",
            &[
                "unknown authenticator \"desk-tokn\"",
                "known: desk-token",
                "did you mean \"desk-token\"?",
            ],
        )
        .has_error(
            13,
            25,
            "routes[0].allow.consumers[0]",
            &[
                "unknown consumer \"dsk\"",
                "known: desk",
                "did you mean \"desk\"?",
            ],
        );
}

#[test]
fn a_route_without_auth_is_an_error() {
    let c = check(&format!(
        "{}  - name: api\n    match: {{path_prefix: /api/}}\n    upstream: app\n",
        base()
    ));
    c.fails_with(1).has_error(
        9,
        5,
        "routes[0].auth",
        &["route \"api\" has no auth", "auth: [] for a public route"],
    );
}

#[test]
fn routes_whose_matchers_tie_are_an_error() {
    let c = check(&format!(
        r#"{}  - name: one
    match: {{path_prefix: /api/}}
    upstream: app
    auth: []
  - name: two
    match: {{path_prefix: /api/}}
    upstream: app
    auth: []
  - name: three
    match: {{path_prefix: /api/, methods: [GET]}}
    upstream: app
    auth: []
"#,
        base()
    ));
    c.fails_with(1).has_error(
        13,
        5,
        "routes[1].match",
        &[
            "routes \"one\" and \"two\" (line 9) match exactly the same requests",
            "more specific",
        ],
    );
}

#[test]
fn bad_upstream_urls_are_errors() {
    let c = check(
        r#"upstreams:
  a: {url: "127.0.0.1:3000"}
  b: {url: "ws://example.com/"}
  c: {url: "http:// bad"}
  d: {url: "http://127.0.0.1:3000"}
routes:
  - {name: all, match: {path_prefix: /}, upstream: d, auth: []}
"#,
    );
    c.fails_with(3)
        .has_error(2, 6, "upstreams.a.url", &["needs a scheme and host"])
        .has_error(3, 6, "upstreams.b.url", &["http:// or https://"])
        .has_error(4, 6, "upstreams.c.url", &["is not a URL"]);
}

#[test]
fn top_level_settings_are_reported_at_their_values() {
    let c = check(
        r#"listen: [127.0.0.1:8080, "nope"]
workers: 0
admin: {listen: "bad"}
trusted_proxies: [10.0.0.0/8, "x"]
tls: {cert: missing.pem, key: missing.key}
upstreams: {app: {url: "http://127.0.0.1:1"}}
routes:
  - {name: a, match: {path: /}, upstream: app, auth: []}
"#,
    );
    c.fails_with(5)
        .has_error(1, 9, "listen[1]", &["\"nope\" is not an address"])
        .has_error(2, 10, "workers", &["at least 1"])
        .has_error(3, 17, "admin.listen", &["\"bad\" is not an address"])
        .has_error(4, 18, "trusted_proxies[1]", &["not an IP address or CIDR"])
        .has_error(5, 6, "tls.cert", &["missing.pem"]);
}

#[test]
fn a_bad_duration_is_an_error_at_its_value() {
    let c = check(
        r#"upstreams:
  app:
    url: "http://127.0.0.1:3000"
    timeouts: {connect: 5 minutes}
"#,
    );
    c.fails_with(1).has_error(
        4,
        25,
        "",
        &["invalid duration \"5 minutes\"", "ms, s, m or h"],
    );
}

#[test]
fn duplicate_route_and_consumer_names_are_errors() {
    let c = check(
        r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
consumers:
  - name: desk
  - name: desk
routes:
  - {name: api, match: {path: /a}, upstream: app, auth: []}
  - {name: api, match: {path: /b}, upstream: app, auth: []}
"#,
    );
    c.fails_with(2)
        .has_error(
            5,
            5,
            "consumers[1].name",
            &["duplicate consumer name \"desk\""],
        )
        .has_error(8, 12, "routes[1].name", &["duplicate route name \"api\""]);
}

#[test]
fn an_unset_variable_without_default_names_the_variable() {
    let yaml = r#"upstreams:
  tools:
    url: "http://127.0.0.1:3000"
    inject: {Authorization: "Bearer ${KEYWAY_TEST_CLI_UNSET}"}
routes:
  - {name: all, match: {path_prefix: /}, upstream: tools, auth: []}
"#;
    let c = check(yaml);
    c.fails_with(1).has_error(
        4,
        29,
        "",
        &["environment variable KEYWAY_TEST_CLI_UNSET is not set"],
    );
    // Set, or with a default, it loads.
    let c = check_with(yaml, &[], &[("KEYWAY_TEST_CLI_UNSET", "x")]);
    assert_eq!(c.json.code, 0, "{:?}", c.json);
    let c = check(&yaml.replace("CLI_UNSET}", "CLI_UNSET:-fallback}"));
    assert_eq!(c.json.code, 0, "{:?}", c.json);
}

#[test]
fn a_missing_secret_file_is_an_error_and_paths_are_relative_to_the_config() {
    let yaml = r#"upstreams:
  tools:
    url: "http://127.0.0.1:3000"
    inject: {Authorization: "Bearer ${file:missing.txt}"}
routes:
  - {name: all, match: {path_prefix: /}, upstream: tools, auth: []}
"#;
    let c = check(yaml);
    let expected = std::path::Path::new(&c.file)
        .parent()
        .unwrap()
        .join("missing.txt");
    c.fails_with(1).has_error(
        4,
        29,
        "",
        &["cannot read secret file", expected.to_str().unwrap()],
    );
    // The same reference resolves against the config's folder, not the working directory.
    let c = check_with(yaml, &[("missing.txt", "s3cret-from-file\n")], &[]);
    assert_eq!(c.json.code, 0, "{:?}", c.json);
    assert!(!c.json.all().contains("s3cret-from-file"));
}

#[test]
fn a_key_of_another_authenticator_type_is_an_error() {
    let c = check(
        r#"authenticators:
  desk-token:
    type: api_key
    header: x-api-key
    consumer_claim: sub
upstreams: {app: {url: "http://127.0.0.1:3000"}}
routes:
  - {name: all, match: {path_prefix: /}, upstream: app, auth: []}
"#,
    );
    c.fails_with(1).has_error(
        3,
        5,
        "authenticators.desk-token.consumer_claim",
        &[
            "consumer_claim is not a setting of api_key authenticators",
            "valid: header, from",
        ],
    );
}

#[test]
fn several_semantic_errors_are_reported_in_one_run() {
    let c = check(&format!(
        r#"{}  - name: a
    match: {{path_prefix: /a/}}
    upstream: missing-upstream
    auth: []
  - name: b
    match: {{path_prefix: /b/}}
    upstream: app
    auth: [missing-auth]
  - name: c
    match: {{path_prefix: /c/}}
    upstream: app
"#,
        base()
    ));
    c.fails_with(3)
        .has_error(
            11,
            15,
            "routes[0].upstream",
            &["unknown upstream \"missing-upstream\""],
        )
        .has_error(
            16,
            12,
            "routes[1].auth[0]",
            &["unknown authenticator \"missing-auth\""],
        )
        .has_error(17, 5, "routes[2].auth", &["route \"c\" has no auth"]);
}

#[test]
fn duplicate_yaml_mapping_keys_are_errors_not_a_silent_pick() {
    let c = check(
        r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
  app: {url: "http://127.0.0.1:4000"}
"#,
    );
    c.fails_with(1)
        .has_error(3, 3, "", &["duplicate key `app`", "only once"]);
    assert!(
        !c.json.stdout.contains("DuplicateKeyPolicy"),
        "no library internals in the message: {}",
        c.json.stdout
    );

    // Two top-level sections of the same name, and a repeated key inside an entry.
    let c = check(
        r#"upstreams:
  app: {url: "http://127.0.0.1:3000"}
upstreams:
  other: {url: "http://127.0.0.1:4000"}
"#,
    );
    c.fails_with(1)
        .has_error(3, 1, "", &["duplicate key `upstreams`"]);
    let c = check(
        r#"upstreams:
  app:
    url: "http://127.0.0.1:3000"
    url: "http://127.0.0.1:4000"
"#,
    );
    c.fails_with(1)
        .has_error(4, 5, "", &["duplicate key `url`"]);
}

#[test]
fn a_missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.yaml");
    let file = file.to_str().unwrap();
    let out = keyway(&["check", "-c", file, "--json"], &[], None);
    assert_eq!(out.code, 1, "{out:?}");
    let v = out.json();
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{v:#}"
    );
}

#[test]
fn a_config_without_routes_is_an_error_for_check_and_run() {
    // SIGHUP with an emptied file used to turn every request into 404: now nothing with no
    // routes loads, whether checked, run or reloaded (the reload case is in tests/e2e).
    for text in ["", "{}", "# only a comment\n", "listen: 127.0.0.1:8080\n"] {
        let c = check(text);
        c.fails_with(1);
        let error = &c.errors()[0];
        assert_eq!(error["path"], "routes", "{text:?}");
        assert!(error["message"].as_str().unwrap().contains("no routes"));
        assert!(
            c.text
                .stdout
                .contains(&format!("{}:routes: the config has no routes", c.file)),
            "{}",
            c.text.stdout
        );
        let run = keyway(&["run", "-c", &c.file], &[], None);
        assert_eq!(run.code, 1, "{text:?}: {run:?}");
        assert!(run.stderr.contains("no routes"), "{text:?}: {}", run.stderr);
    }
}

#[test]
fn route_paths_must_be_written_in_canonical_form() {
    let c = check(&format!(
        r#"{}  - {{name: a, match: {{path_prefix: //api}}, upstream: app, auth: []}}
  - {{name: b, match: {{path: /v1/things:batch}}, upstream: app, auth: []}}
  - {{name: c, match: {{path: /%61dmin}}, upstream: app, auth: []}}
"#,
        base()
    ));
    c.fails_with(3)
        .has_error(9, 5, "routes[0].match", &["write it as \"/api\""])
        .has_error(10, 5, "routes[1].match", &["reserved character ':'"])
        .has_error(11, 5, "routes[2].match", &["write it as \"/admin\""]);
}
