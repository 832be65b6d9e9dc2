//! Helpers for driving the keyway binary (and nginx) as real child processes: output captured
//! by reader threads so tests can poll it, signals sent with `kill`, a Drop guard that never
//! leaves a child behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::keyway_bin;

/// Finished run of a short command (`check`, `hash-key`, ...).
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }

    /// Both streams, for "this string appears nowhere" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `keyway ARGS` to completion (stdin optional), with `envs` added to a clean env.
pub fn keyway(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(keyway_bin());
    cmd.args(args)
        .env_remove("KEYWAY_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn keyway");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for keyway");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `keyway` from async tests: runs on a blocking thread so in-process upstreams keep serving.
pub async fn keyway_async(args: Vec<String>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        keyway(&args, &envs, None)
    })
    .await
    .expect("keyway task")
}

/// A long-running child whose stdout and stderr are collected as they arrive.
/// Dropping it terminates the child (TERM, then KILL) and reaps it.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    buf
}

impl Proc {
    pub fn spawn(mut cmd: Command, name: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// `keyway ARGS` as a long-running child with `envs` added.
    pub fn keyway(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(keyway_bin());
        cmd.args(args).env_remove("KEYWAY_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, "keyway")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...) with the `kill` command, to this child only.
    pub fn signal(&self, sig: &str) {
        let status = kill(sig, self.pid()).expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Polls until the child exits, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until stdout or stderr (as chosen) satisfies `check`, up to `limit`; panics with the
    /// captured output otherwise (also when the child exits first).
    pub async fn wait_output(
        &mut self,
        limit: Duration,
        what: &str,
        stderr: bool,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = if stderr { self.stderr() } else { self.stdout() };
            if check(&text) {
                return text;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited ({status}) before {what}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} from {}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address a `keyway run` child logged as bound (`listening`).
    pub async fn keyway_addr(&mut self) -> SocketAddr {
        self.keyway_addrs(false).await.0
    }

    /// The addresses a `keyway run` child logged as bound (`listening`, and `admin listening`
    /// when `admin` says the config has an admin listener).
    pub async fn keyway_addrs(&mut self, admin: bool) -> (SocketAddr, Option<SocketAddr>) {
        let text = self
            .wait_output(
                Duration::from_secs(10),
                "the listening log lines",
                true,
                |t| {
                    let lines = log_lines(t);
                    let has = |m: &str| lines.iter().any(|l| l["message"] == m);
                    has("listening") && (!admin || has("admin listening"))
                },
            )
            .await;
        let lines = log_lines(&text);
        let addr_of = |message: &str| {
            lines
                .iter()
                .find(|l| l["message"] == message)
                .and_then(|l| l["addr"].as_str())
                .map(|a| a.parse::<SocketAddr>().expect("logged addr"))
        };
        (
            addr_of("listening").expect("listening addr"),
            addr_of("admin listening"),
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // TERM first so a master process (nginx) takes its workers down with it.
        let _ = kill("TERM", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIG PID` with the shell's builtin `kill` (no procps needed), for one child's pid.
fn kill(sig: &str, pid: u32) -> std::io::Result<ExitStatus> {
    Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid}")])
        .status()
}

/// Every complete line of a JSON-lines log, each parsed; panics on a line that is not JSON.
pub fn log_lines(text: &str) -> Vec<Value> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}\nfull log:\n{text}"))
        })
        .collect()
}

/// A loopback port that was free a moment ago (bind :0, read, release). Callers retry when the
/// port is taken in between.
pub fn free_port() -> u16 {
    for _ in 0..20 {
        if let Ok(a) = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            return a.port();
        }
    }
    panic!("cannot bind any loopback port");
}

/// Writes `text` as a config file in `dir` and returns its path as a string.
pub fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Sends one request without panicking on connection errors (for readiness polls).
pub async fn try_get(url: &str, headers: &[(&str, &str)]) -> Option<crate::support::Answer> {
    use http_body_util::{BodyExt, Full};
    let mut req = http::Request::get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = crate::support::client()
        .request(req.body(Full::new(bytes::Bytes::new())).ok()?)
        .await
        .ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some(crate::support::Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
