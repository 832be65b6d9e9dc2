//! The access log at nginx's cost (issue 15 §7): lines batched by a writer thread, written to a
//! file, complete and in order, flushed before a reload and at SIGTERM, reopened on SIGUSR1
//! after logrotate moved the file, and a destination that fails (a full disk) never holds a
//! request back: its lines are counted as dropped.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Proc, write_config};
use crate::support::*;

fn config(app: &str, log: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
access_log: {{path: {log}}}
upstreams:
  app: {{url: "{app}"}}
routes:
  - {{name: all, match: {{path_prefix: /}}, upstream: app, auth: []}}
"#
    )
}

/// The file's lines, each parsed; panics on a line that is not whole JSON.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn paths(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["message"] == "request")
        .map(|l| l["path"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_whole_in_order_flushed_on_reload_and_sigterm_and_reopened_on_sigusr1() {
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let file = write_config(dir.path(), "keyway.yaml", &config(&app.url(), "access.log"));
    let mut kw = Proc::keyway(&["run", "-c", &file], &[]);
    let (addr, _) = kw.keyway_addrs(true).await;

    // In order: one client, one request after another.
    for i in 0..300 {
        let answer = get(&format!("http://{addr}/first/{i}"), &[]).await;
        assert_eq!(answer.status, 200);
    }
    // A reload writes every line before the new config serves: no waiting for the batch.
    kw.signal("HUP");
    kw.wait_output(Duration::from_secs(10), "config reloaded", true, |t| {
        t.contains("\"config reloaded\"")
    })
    .await;
    let first = lines(&log);
    let expected: Vec<String> = (0..300).map(|i| format!("/first/{i}")).collect();
    assert_eq!(paths(&first), expected, "every line, in order, at reload");
    let line = &first[0];
    for field in [
        "timestamp",
        "level",
        "message",
        "request_id",
        "method",
        "path",
        "route",
        "status",
        "reason",
        "authenticator",
        "consumer",
        "credential_source",
        "duration_us",
        "target",
    ] {
        assert!(line.get(field).is_some(), "{field} missing: {line}");
    }
    assert_eq!(line["status"], 200);
    assert_eq!(line["target"], "keyway::access");
    assert_eq!(line["route"], "all");

    // logrotate: the file is moved away, SIGUSR1, and new lines go to a new file at the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    kw.signal("USR1");
    let reopened = wait_until(Duration::from_secs(10), || {
        let log = log.clone();
        let url = format!("http://{addr}/probe");
        async move {
            get(&url, &[]).await;
            log.exists()
        }
    })
    .await;
    assert!(reopened, "no new file after SIGUSR1:\n{}", kw.stderr());
    for i in 0..200 {
        get(&format!("http://{addr}/second/{i}"), &[]).await;
    }
    // SIGTERM right after the last answer: the lines are written before keyway exits.
    kw.signal("TERM");
    let status = kw.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success());
    let old = paths(&lines(&rotated));
    let new = paths(&lines(&log));
    assert!(
        old.iter().all(|p| !p.starts_with("/second/")),
        "a line written to the rotated file after SIGUSR1"
    );
    let second: Vec<&String> = new.iter().filter(|p| p.starts_with("/second/")).collect();
    let expected: Vec<String> = (0..200).map(|i| format!("/second/{i}")).collect();
    assert_eq!(
        second,
        expected.iter().collect::<Vec<_>>(),
        "every line after SIGUSR1, in order, written before exit"
    );
    // Access lines no longer go to stderr when a file is configured.
    assert!(!kw.stderr().contains("\"/first/0\""));
}

/// A destination that fails every write (a full disk) never holds a request back; its lines
/// are counted in `keyway_access_log_dropped_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_destination_never_blocks_a_request_and_drops_are_counted() {
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "keyway.yaml", &config(&app.url(), "/dev/full"));
    let mut kw = Proc::keyway(&["run", "-c", &file], &[]);
    let (addr, admin) = kw.keyway_addrs(true).await;
    let admin = admin.unwrap();
    let started = std::time::Instant::now();
    for i in 0..500 {
        assert_eq!(get(&format!("http://{addr}/x/{i}"), &[]).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let counted = wait_until(Duration::from_secs(10), || {
        let url = format!("http://{admin}/metrics");
        async move {
            let text = String::from_utf8_lossy(&get(&url, &[]).await.body).into_owned();
            sample(&text, "keyway_access_log_dropped_total") >= 500.0
        }
    })
    .await;
    assert!(counted, "dropped lines not counted:\n{}", kw.stderr());
    kw.signal("TERM");
    assert!(
        kw.wait_exit(Duration::from_secs(10))
            .await
            .expect("exits")
            .success()
    );
}

/// A path keyway cannot write is a config error with its place, before any traffic.
#[test]
fn an_unwritable_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "keyway.yaml",
        &config("http://127.0.0.1:9", "no-such-dir/access.log"),
    );
    let out = crate::common::keyway(&["check", "-c", &file], &[], None);
    assert_eq!(out.code, 1, "{out:?}");
    let text = out.all();
    assert!(text.contains("access_log.path"), "{text}");
    assert!(text.contains("no-such-dir"), "{text}");
}
