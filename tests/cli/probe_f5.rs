//! F5 (SPEC §1) reproduced: a tool server that answers 401 unless it gets its API key. Without
//! `inject`, `keyway check --probe` reports the 401 before any traffic; with `inject` from the
//! environment the probe passes and traffic flows; the secret never appears in any output.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::common::{Proc, free_port, keyway_async, log_lines, write_config};
use crate::support::*;

const SECRET: &str = "tools-secret";
const CLIENT_KEY: &str = "client-key-f5-5d2a";

/// The tool server: 401 unless `Authorization: Bearer tools-secret`.
async fn tool_server() -> Upstream {
    upstream(|seen| {
        let ok = seen
            .headers
            .get("authorization")
            .is_some_and(|v| v == "Bearer tools-secret");
        let (status, body) = if ok {
            (StatusCode::OK, "tools ok")
        } else {
            (
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: missing API key",
            )
        };
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    })
    .await
}

fn config(tools_url: &str, inject: bool) -> String {
    let inject = if inject {
        "\n    inject: {Authorization: \"Bearer ${TOOLS_KEY}\"}"
    } else {
        ""
    };
    format!(
        r#"listen: 127.0.0.1:0
upstreams:
  tools:
    url: "{tools_url}"{inject}
consumers:
  - name: chat-ui
    api_keys: ["{}"]
authenticators:
  ui-key: {{type: api_key, header: x-api-key}}
routes:
  - {{name: tools, match: {{path_prefix: /tools/}}, strip_prefix: true, upstream: tools, auth: [ui-key]}}
"#,
        keyway::pipeline::authn::api_key::hashed_form(CLIENT_KEY)
    )
}

async fn check(file: &str, json: bool, envs: &[(&str, &str)]) -> crate::common::Output {
    let mut args = vec!["check".to_owned(), "-c".to_owned(), file.to_owned()];
    args.push("--probe".to_owned());
    if json {
        args.push("--json".to_owned());
    }
    let envs = envs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    keyway_async(args, envs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_probe_reports_the_401_before_traffic_and_passes_once_inject_is_configured() {
    let tools = tool_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();

    // The incident: no inject, the tool server answers 401.
    let file = write_config(dir.path(), "no-inject.yaml", &config(&tools.url(), false));
    let text = check(&file, false, &[]).await;
    assert_ne!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("probe tools: 401 FAILED")
            && text.stdout.contains("injects no credentials")
            && text.stdout.contains("add inject"),
        "{}",
        text.stdout
    );
    let json = check(&file, true, &[]).await;
    assert_eq!(json.code, 1, "{json:?}");
    let v = json.json();
    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");
    assert!(v["warnings"].is_array(), "{v:#}");
    let probes = v["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 1, "{v:#}");
    assert_eq!(probes[0]["upstream"], "tools");
    assert_eq!(probes[0]["status"], 401);
    assert_eq!(probes[0]["ok"], false);
    // The same finding as a warning with its code, the upstream's place and the fix.
    let warning = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "upstream_refuses_without_credentials")
        .unwrap_or_else(|| panic!("no upstream_refuses_without_credentials in {v:#}"));
    assert_eq!(warning["path"], "upstreams.tools", "{warning:#}");
    assert!(warning["line"].as_u64().unwrap() > 0, "{warning:#}");
    assert!(
        warning["fix"].as_str().unwrap().contains("inject"),
        "{warning:#}"
    );
    assert!(
        text.stdout
            .contains("warning[upstream_refuses_without_credentials]"),
        "{}",
        text.stdout
    );
    assert!(
        tools
            .requests()
            .iter()
            .all(|s| s.headers.get("authorization").is_none())
    );
    outputs.extend([text, json]);

    // The fix: inject the key from the environment.
    let file = write_config(dir.path(), "inject.yaml", &config(&tools.url(), true));
    let text = check(&file, false, &[("TOOLS_KEY", SECRET)]).await;
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("probe tools: 200 ok"),
        "{}",
        text.stdout
    );
    let json = check(&file, true, &[("TOOLS_KEY", SECRET)]).await;
    assert_eq!(json.code, 0, "{json:?}");
    let v = json.json();
    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["probes"][0]["upstream"], "tools");
    assert_eq!(v["probes"][0]["status"], 200);
    assert_eq!(v["probes"][0]["ok"], true);
    assert_eq!(tools.last().headers["authorization"], "Bearer tools-secret");
    assert_eq!(tools.last().headers["user-agent"], "keyway-probe");
    outputs.extend([text, json]);

    // A wrong key is reported as refused, without printing it.
    let text = check(&file, false, &[("TOOLS_KEY", "wrong-tools-key")]).await;
    assert_ne!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("probe tools: 401 FAILED")
            && text.stdout.contains("refused the injected credentials")
            && text
                .stdout
                .contains("warning[upstream_refuses_injected_credentials]"),
        "{}",
        text.stdout
    );
    assert!(!text.all().contains("wrong-tools-key"), "{text:?}");

    // The variable unset: a config error naming it, not an empty header.
    let json = check(&file, true, &[]).await;
    assert_eq!(json.code, 1, "{json:?}");
    let v = json.json();
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("TOOLS_KEY"),
        "{v:#}"
    );
    outputs.extend([text, json]);

    for out in &outputs {
        assert!(!out.all().contains(SECRET), "the secret leaked: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_closed_port_fails() {
    // Nothing listens on a port that was just released.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "closed.yaml",
        &format!(
            "upstreams:\n  gone:\n    url: \"http://127.0.0.1:{port}\"\n    timeouts: {{connect: 2s, request: 5s}}\nroutes:\n  - {{name: all, match: {{path_prefix: /}}, upstream: gone, auth: []}}\n"
        ),
    );
    let text = check(&file, false, &[]).await;
    assert_ne!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("probe gone: - FAILED") && text.stdout.contains("cannot reach"),
        "{}",
        text.stdout
    );
    let json = check(&file, true, &[]).await;
    assert_eq!(json.code, 1, "{json:?}");
    let v = json.json();
    let probe = &v["probes"][0];
    assert_eq!(probe["upstream"], "gone");
    assert_eq!(probe["ok"], false);
    assert!(probe["status"].is_null(), "{v:#}");
    assert!(
        probe["error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{port}")),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_traffic_carries_the_injected_key_and_never_the_clients() {
    let tools = tool_server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "keyway.yaml", &config(&tools.url(), true));
    let mut kw = Proc::keyway(&["run", "-c", &file], &[("TOOLS_KEY", SECRET)]);
    let addr = kw.keyway_addr().await;

    let ok = get(
        &format!("http://{addr}/tools/search?q=1"),
        &[("x-api-key", CLIENT_KEY)],
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(&ok.body[..], b"tools ok");
    let seen = tools.last();
    assert_eq!(seen.uri, "/search?q=1");
    assert_eq!(seen.headers["authorization"], "Bearer tools-secret");
    assert_eq!(seen.headers["x-keyway-consumer"], "chat-ui");
    for (name, value) in &seen.headers {
        assert!(
            !value.to_str().unwrap_or("").contains(CLIENT_KEY),
            "the client's key reached the tool server in {name}"
        );
    }

    // A client that brings its own Authorization does not override the injected one.
    let ok = get(
        &format!("http://{addr}/tools/search"),
        &[
            ("x-api-key", CLIENT_KEY),
            ("authorization", "Bearer client-forged"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(tools.last().headers["authorization"], "Bearer tools-secret");
    assert_eq!(tools.requests().len(), 2);

    kw.signal("TERM");
    let status = kw.wait_exit(Duration::from_secs(10)).await.expect("exit");
    assert!(status.success(), "{status}");
    let stderr = kw.stderr();
    assert_eq!(
        // Only this test's requests: a parallel test that probes a port it believes closed
        // may reach this keyway if the port was reused.
        log_lines(&stderr)
            .iter()
            .filter(|l| l["target"] == "keyway::access" && l["path"] == "/tools/search")
            .count(),
        2,
        "{stderr}"
    );
    for secret in [SECRET, CLIENT_KEY, "client-forged"] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
}
