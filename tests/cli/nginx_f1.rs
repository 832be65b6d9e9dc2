//! F1 (SPEC §1) reproduced with a real nginx in its default header settings in front of keyway:
//! nginx silently drops `api_access_token`, keyway says which header it looked for, and the hyphen
//! twin `api-access-token` survives nginx and is accepted.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Proc, free_port, try_get};
use crate::support::*;

const NGINX: &str = "/usr/sbin/nginx";

/// An nginx master (and its workers) with a private prefix, config, pid file, logs and temp
/// paths in a temp dir. Dropping it stops nginx (the `Proc` guard sends TERM to the master).
struct Nginx {
    port: u16,
    _proc: Proc,
    // Kept after `_proc` so nginx is stopped before its prefix is removed.
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(backend: SocketAddr) -> Nginx {
        let installed = Path::new(NGINX).exists();
        assert!(
            installed,
            "{NGINX} not found: the F1 test needs a real nginx. Install it with `apt-get install nginx` (Debian/Ubuntu)"
        );
        let mut last_error = String::new();
        // The port is picked by binding :0 and releasing it; another process may take it in
        // between, in which case nginx exits with a bind error and we try another.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            // As root, nginx workers run as `nobody` and must traverse the prefix.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod prefix");
            let port = free_port();
            let conf = nginx_conf(dir.path(), port, backend);
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut cmd = Command::new(NGINX);
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .args(["-g", "daemon off;"]);
            let mut proc = Proc::spawn(cmd, "nginx");
            let url = format!("http://127.0.0.1:{port}/");
            let mut exited = false;
            let up = wait_until(Duration::from_secs(10), || {
                exited = exited || proc.try_exit().is_some();
                let url = url.clone();
                let done = exited;
                async move { done || try_get(&url, &[]).await.is_some() }
            })
            .await;
            if up && !exited && proc.try_exit().is_none() {
                return Nginx {
                    port,
                    _proc: proc,
                    _dir: dir,
                };
            }
            last_error = format!(
                "stderr: {}\nerror.log: {}",
                proc.stderr(),
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        panic!("nginx did not start:\n{last_error}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A plain reverse proxy. Header handling is nginx's default: no `underscores_in_headers`, no
/// `ignore_invalid_headers`, so names with `_` are dropped.
fn nginx_conf(dir: &Path, port: u16, backend: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{backend};
            proxy_set_header Host $host;
        }}
    }}
}}
"#
    )
}

const KEY: &str = "desk-key-f1-8c1e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_behind_default_nginx_the_underscore_header_vanishes_and_keyway_says_where_it_looked() {
    let up = upstream_ok().await;
    let hashed = keyway::pipeline::authn::api_key::hashed_form(KEY);
    let gw = start(&desk_config(&up.url(), "support-desk", &hashed)).await;
    let nginx = Nginx::start(gw.addr).await;

    // The incident: the client sends a valid key in `api_access_token`; nginx drops the header.
    let via_nginx = get(
        &nginx.url("/api/conversations"),
        &[("api_access_token", KEY)],
    )
    .await;
    assert_eq!(via_nginx.status, 401, "{:?}", via_nginx.body);
    assert_eq!(via_nginx.reason(), "credentials.missing");
    let problem = via_nginx.json();
    let detail = problem["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("api_access_token (or api-access-token)"),
        "the refusal must name the header keyway looked for: {detail}"
    );
    let hint = problem["hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("api-access-token") && hint.contains("nginx"),
        "the hint must point at the hyphen twin: {hint}"
    );
    assert!(
        !String::from_utf8_lossy(&via_nginx.body).contains(KEY),
        "the key must not be echoed"
    );
    assert!(
        up.requests().is_empty(),
        "nothing reaches the upstream without a credential"
    );

    // The hyphen twin survives nginx and is accepted.
    let twin = get(
        &nginx.url("/api/conversations"),
        &[("api-access-token", KEY)],
    )
    .await;
    assert_eq!(twin.status, 200, "{:?}", twin.body);
    let seen = up.last();
    assert_eq!(seen.headers["x-keyway-consumer"], "support-desk");
    assert!(
        !seen.headers.contains_key("api-access-token"),
        "the consumed credential is not forwarded"
    );

    // Without nginx in front, keyway passes and accepts the underscore header itself.
    let direct = get(&gw.url("/api/conversations"), &[("api_access_token", KEY)]).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    assert_eq!(up.requests().len(), 2);
    assert_eq!(up.last().headers["x-keyway-consumer"], "support-desk");

    drop(nginx);
    gw.stop().await;
}
