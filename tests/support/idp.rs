//! A real OpenID provider (npm `oidc-provider`, run by `tests/idp/provider.mjs`), the HTTP
//! sign-in client `tests/idp/signin.mjs` and the chromium driver `tests/idp/browser.mjs`.
//! `npm ci` in tests/idp installs them (scripts/test.sh and CI do).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CLIENT_ID: &str = "keyway";
pub const CLIENT_SECRET: &str = "keyway-client-secret-0123456789abcdef";

pub fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

fn node_ready() {
    assert!(
        idp_dir().join("node_modules/oidc-provider").exists(),
        "tests/idp/node_modules is missing: run `npm ci` in tests/idp (scripts/test.sh does)"
    );
}

/// A running provider. Dropping it stops it.
pub struct Idp {
    pub issuer: String,
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    config: Value,
    /// The provider's stderr: one line per request (`[idp] POST /token 200 3ms`).
    log: Arc<Mutex<String>>,
}

impl Idp {
    /// Starts a provider with the config `config` (see tests/idp/README.md) on a free port.
    pub async fn start(config: Value) -> Idp {
        Idp::start_on(0, config).await
    }

    pub async fn start_on(port: u16, config: Value) -> Idp {
        node_ready();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(Mutex::new(String::new()));
        let (child, issuer, port) = spawn(dir.path(), port, &config, log.clone()).await;
        Idp {
            issuer,
            port,
            child,
            dir,
            config,
            log,
        }
    }

    /// Stops the provider and starts it again on the same port with `config` (a new key
    /// unless `keySeed` says otherwise: a JWKS rotation; sessions and grants are forgotten).
    pub async fn restart(&mut self, config: Option<Value>) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(c) = config {
            self.config = c;
        }
        let (child, issuer, port) =
            spawn(self.dir.path(), self.port, &self.config, self.log.clone()).await;
        assert_eq!(issuer, self.issuer);
        self.child = child;
        self.port = port;
    }

    /// Every request answers 503 until `come_back`.
    pub fn go_down(&self) {
        std::fs::write(self.dir.path().join("down"), b"down").expect("down file");
    }

    pub fn come_back(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("down"));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How many requests the provider answered with `method path` so far.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let needle = format!("[idp] {method} {path} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn spawn(
    dir: &Path,
    port: u16,
    config: &Value,
    log: Arc<Mutex<String>>,
) -> (Child, String, u16) {
    let config_path = dir.join("provider.json");
    std::fs::write(&config_path, config.to_string()).expect("provider config");
    let mut child = Command::new("node")
        .arg(idp_dir().join("provider.mjs"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--config")
        .arg(&config_path)
        .arg("--down-file")
        .arg(dir.join("down"))
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node provider.mjs (is node installed?)");
    let stderr = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the provider did not start within 30 s")
        .expect("provider stdout")
        .expect("the provider exited before it was ready");
    let v: Value = serde_json::from_str(&ready).expect("ready line");
    assert_eq!(v["ready"], true, "{ready}");
    let issuer = v["issuer"].as_str().expect("issuer").to_owned();
    let port = v["port"].as_u64().expect("port") as u16;
    // Keep draining stdout so the provider never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, issuer, port)
}

/// What `signin.mjs` reported.
#[derive(Debug)]
pub struct SignIn {
    pub ok: bool,
    pub json: Value,
}

impl SignIn {
    pub fn status(&self) -> u64 {
        self.json["status"].as_u64().unwrap_or(0)
    }

    pub fn body(&self) -> &str {
        self.json["body"].as_str().unwrap_or("")
    }

    pub fn url(&self) -> &str {
        self.json["url"].as_str().unwrap_or("")
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.json["cookies"][name].as_str()
    }

    /// The `Cookie` header a client would send to the gateway with the jar's cookies.
    pub fn cookie_header(&self) -> String {
        self.json["cookies"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    pub fn steps(&self) -> Vec<Value> {
        self.json["steps"].as_array().cloned().unwrap_or_default()
    }
}

/// Signs in at `url` (a gateway page) as `login` through the provider's real pages.
/// `cookie_file` keeps the jar between runs (a browser's cookie store).
pub async fn sign_in(url: &str, login: Option<&str>, cookie_file: Option<&Path>) -> SignIn {
    sign_in_via(url, None, login, cookie_file).await
}

/// `sign_in` starting at `url` elsewhere (a provider URL), stopping at `gateway`'s first answer.
pub async fn sign_in_via(
    url: &str,
    gateway: Option<&str>,
    login: Option<&str>,
    cookie_file: Option<&Path>,
) -> SignIn {
    node_ready();
    let mut cmd = Command::new("node");
    cmd.arg(idp_dir().join("signin.mjs")).arg("--url").arg(url);
    if let Some(g) = gateway {
        cmd.arg("--gateway").arg(g);
    }
    if let Some(l) = login {
        cmd.arg("--login").arg(l);
    }
    if let Some(f) = cookie_file {
        cmd.arg("--cookie-file").arg(f);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("signin.mjs took over 60 s")
        .expect("run signin.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "signin.mjs printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    SignIn {
        ok: out.status.success(),
        json,
    }
}

/// Runs a chromium scenario (see tests/idp/README.md) and returns its report.
pub async fn browser(scenario: Value) -> Value {
    node_ready();
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: apt-get install chromium (CI does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scenario.json");
    std::fs::write(&file, scenario.to_string()).expect("scenario");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg(idp_dir().join("browser.mjs"))
            .arg(&file)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("browser.mjs took over 120 s")
    .expect("run browser.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.mjs printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
