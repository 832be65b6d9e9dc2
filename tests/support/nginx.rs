//! A real nginx for tests: a private prefix (config, pid, logs, temp paths) in a temp dir, one
//! worker, listening on a loopback port. Dropping it stops nginx.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    pub port: u16,
    child: Child,
    // Removed after nginx has stopped (fields drop in order, `Drop::drop` first).
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with the `server { … }` blocks `servers(port)` returns inside its `http`
    /// block, and waits until the port accepts connections.
    pub async fn start(servers: impl Fn(u16) -> String) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} not found: this test needs a real nginx (apt-get install nginx)"
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
            let d = dir.path().display();
            let conf = format!(
                r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
{servers}
}}
"#,
                servers = servers(port)
            );
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut exited = false;
            let up = wait_until(Duration::from_secs(10), || {
                exited = exited || child.try_wait().ok().flatten().is_some();
                let done = exited;
                async move {
                    done || tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                }
            })
            .await;
            if up && !exited && child.try_wait().ok().flatten().is_none() {
                return Nginx { port, child, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_error = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start:\n{last_error}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers; KILL only if it does not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}
