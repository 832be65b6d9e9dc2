//! `keyway demo` (SPEC §2, §11): it serves on the given ports, prints ready-to-paste curl
//! commands, each of which gives the outcome its description promises; SIGTERM stops it cleanly.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Proc, free_port};
use crate::support::keyway_bin;

const DEMO_KEY: &str = "demo-key-123";

/// Starts the demo on freshly picked ports (retrying if one was taken in between) and waits for
/// its instructions.
async fn start_demo() -> (Proc, u16, u16, String) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let admin = free_port();
        if port == admin {
            continue;
        }
        let mut demo = Proc::keyway(
            &[
                "demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
            ],
            &[],
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = demo.stdout();
            if out.contains("Stop with Ctrl-C") {
                return (demo, port, admin, out);
            }
            if demo.try_exit().is_some() || tokio::time::Instant::now() > deadline {
                last = format!("stdout:\n{out}\nstderr:\n{}", demo.stderr());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("keyway demo did not start:\n{last}");
}

/// One printed command, the description above it, and what running it gave.
struct Ran {
    description: String,
    command: String,
    status: u16,
    headers: String,
    body: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}):\n{}", self.command, self.body))
    }

    fn context(&self) -> String {
        format!(
            "{}\n  {}\n→ {}\n{}{}",
            self.description, self.command, self.status, self.headers, self.body
        )
    }
}

/// Runs a printed command with `sh -c`, adding only `-w` to learn the status code.
fn run_curl(command: &str) -> (u16, String, String) {
    let bin_dir = std::path::Path::new(keyway_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} -w '\\n%{{http_code}}'"))
        .env("PATH", path)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{command}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').expect("status line");
    let status = code.trim().parse().expect("status code");
    // With -i the head comes first.
    let (headers, body) = match rest.split_once("\r\n\r\n") {
        Some((h, b)) if h.starts_with("HTTP/") => (h.to_owned(), b.to_owned()),
        _ => (String::new(), rest.to_owned()),
    };
    (status, headers, body)
}

/// A dotted reason code named in a description, like `(reason api_key.invalid)`.
fn named_reason(description: &str) -> Option<String> {
    let rest = description.split("reason ").nth(1)?;
    let code: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
        .collect();
    code.contains('.').then_some(code)
}

/// A status code named in a description, like `(403, ...`.
fn named_status(description: &str) -> Option<u16> {
    description
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse().ok())
        .find(|s| (100..600).contains(s))
}

fn assert_echo(r: &Ran) -> Value {
    assert_eq!(r.status, 200, "{}", r.context());
    let v = r.json();
    assert!(
        v["headers"].is_object(),
        "not an echo answer: {}",
        r.context()
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_curl_commands_that_do_what_they_say() {
    let (mut demo, port, admin, out) = start_demo().await;
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}")),
        "the base URL is printed:\n{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{admin}")),
        "the admin URL is printed:\n{out}"
    );

    let mut description = String::new();
    let mut ran = Vec::new();
    let mut websockets = Vec::new();
    for line in out.lines() {
        if let Some(command) = line.strip_prefix("  ") {
            if command.starts_with("new WebSocket(") {
                websockets.push(command.to_owned());
            } else if command.starts_with("curl ") {
                let (status, headers, body) = run_curl(command);
                ran.push(Ran {
                    description: description.clone(),
                    command: command.to_owned(),
                    status,
                    headers,
                    body,
                });
            }
        } else if !line.trim().is_empty() {
            description = line.trim().to_owned();
        }
    }
    assert!(ran.len() >= 8, "expected the documented commands:\n{out}");

    let mut seen = std::collections::BTreeSet::new();
    for r in &ran {
        let d = r.description.as_str();
        if r.command.contains("/metrics") {
            assert_eq!(r.status, 200, "{}", r.context());
            assert!(r.body.contains("keyway_requests_total"), "{}", r.context());
            seen.insert("metrics");
        } else if r.command.contains("/_keyway/auth") && r.command.contains(DEMO_KEY) {
            assert_eq!(r.status, 200, "{}", r.context());
            let head = r.headers.to_ascii_lowercase();
            assert!(
                head.contains("x-auth-request-user: support-desk"),
                "{}",
                r.context()
            );
            assert!(!head.contains("location:"), "{}", r.context());
            seen.insert("f4-forward-auth-ok");
        } else if r.command.contains("x_tenant_id") {
            let v = assert_echo(r);
            assert_eq!(v["headers"]["x_tenant_id"], "42", "{}", r.context());
            assert_ne!(
                v["headers"]["x-keyway-subject"],
                "spoofed",
                "{}",
                r.context()
            );
            assert!(!r.body.contains("spoofed"), "{}", r.context());
            seen.insert("underscore");
        } else if d.starts_with("F5") {
            let v = assert_echo(r);
            assert_eq!(
                v["headers"]["authorization"],
                "<injected, redacted>",
                "{}",
                r.context()
            );
            assert!(
                v["headers"].get("api-access-token").is_none(),
                "{}",
                r.context()
            );
            assert!(!r.body.contains(DEMO_KEY), "{}", r.context());
            assert!(!r.body.contains("demo-tools-secret"), "{}", r.context());
            assert_eq!(v["identity"]["consumer"], "support-desk", "{}", r.context());
            seen.insert("f5");
        } else if let Some(reason) = named_reason(d) {
            let v = r.json();
            assert_eq!(v["reason"], reason.as_str(), "{}", r.context());
            let expected = match reason.as_str() {
                "authz.denied" => 403,
                "credentials.missing" | "api_key.invalid" => 401,
                _ => named_status(d).unwrap_or(v["status"].as_u64().unwrap_or(0) as u16),
            };
            assert_eq!(r.status, expected, "{}", r.context());
            assert_eq!(v["status"], r.status, "{}", r.context());
            match reason.as_str() {
                "credentials.missing" if d.starts_with("F3") => {
                    let hint = v["hint"].as_str().unwrap_or("");
                    assert!(
                        hint.contains("subprotocol base64url.bearer.authorization.k8s.io."),
                        "{}",
                        r.context()
                    );
                    seen.insert("f3-refused");
                }
                "credentials.missing" => {
                    let detail = v["detail"].as_str().unwrap_or("");
                    assert!(
                        detail.contains("api_access_token (or api-access-token)"),
                        "{}",
                        r.context()
                    );
                }
                "api_key.invalid" => {
                    let www = r.headers.to_ascii_lowercase();
                    assert!(
                        www.contains("www-authenticate: bearer realm=\"keyway\""),
                        "{}",
                        r.context()
                    );
                }
                _ => {}
            }
            if d.starts_with("F4") {
                assert!(
                    !r.headers.to_ascii_lowercase().contains("location:"),
                    "{}",
                    r.context()
                );
                seen.insert(if r.command.contains("/_keyway/auth") {
                    "f4-forward-auth-401"
                } else {
                    "f4-navigation-401"
                });
            }
            seen.insert(if reason == "authz.denied" {
                "authz"
            } else if reason == "credentials.missing" {
                "missing"
            } else if reason == "api_key.invalid" {
                "invalid"
            } else {
                "other"
            });
        } else if d.starts_with("F1") {
            let v = assert_echo(r);
            assert_eq!(v["identity"]["consumer"], "support-desk", "{}", r.context());
            assert_eq!(v["headers"]["x-keyway-consumer"], "support-desk");
            // The consumed key is not forwarded, in either spelling.
            assert!(!r.body.contains(DEMO_KEY), "{}", r.context());
            seen.insert(if r.command.contains("api_access_token") {
                "f1-underscore"
            } else {
                "f1-twin"
            });
        } else {
            // Commands added later: the status named in the description, else success.
            match named_status(d) {
                Some(s) => assert_eq!(r.status, s, "{}", r.context()),
                None => assert!((200..300).contains(&r.status), "{}", r.context()),
            }
        }
    }
    assert_eq!(websockets.len(), 1, "the F3 browser line:\n{out}");
    for line in &websockets {
        browser_console_websocket(line).await;
        seen.insert("f3-websocket");
    }
    for kind in [
        "f3-refused",
        "f3-websocket",
        "f1-underscore",
        "f1-twin",
        "missing",
        "invalid",
        "f5",
        "authz",
        "underscore",
        "metrics",
        "f4-forward-auth-ok",
        "f4-forward-auth-401",
        "f4-navigation-401",
    ] {
        assert!(seen.contains(kind), "no {kind} command was printed:\n{out}");
    }

    demo.signal("TERM");
    let status = demo
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("demo exits on SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    // No key or token a command sent appears in the log.
    let stderr = demo.stderr();
    assert!(!stderr.contains(DEMO_KEY), "{stderr}");
    for r in &ran {
        if let Some(rest) = r.command.split("Bearer ").nth(1) {
            let token = rest.split('\'').next().unwrap_or("");
            assert!(
                token.len() < 8 || !stderr.contains(token),
                "a token sent by {} is in the log:\n{stderr}",
                r.command
            );
        }
    }
}

/// Does what the printed browser-console line does: `new WebSocket(url, [protocols])`, then
/// checks the echo's first message (the upstream saw alice, never her token) and an echo.
async fn browser_console_websocket(line: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let quoted: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
    let (url, protocols) = quoted.split_first().expect("a URL and subprotocols");
    let token_protocol = protocols
        .iter()
        .find(|p| p.starts_with("base64url.bearer.authorization.k8s.io."))
        .expect("the bearer subprotocol");
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocols.join(", ").parse().expect("a header value"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(response.status(), 101, "{line}");
    // A browser fails a handshake that offered subprotocols and had none selected.
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "demo.v1",
        "{line}"
    );
    let Some(Ok(Message::Text(first))) = ws.next().await else {
        panic!("{line}: no greeting");
    };
    let v: Value = serde_json::from_str(&first).expect("a JSON greeting");
    assert_eq!(v["identity"]["consumer"], "alice", "{first}");
    assert_eq!(v["headers"]["sec-websocket-protocol"], "demo.v1", "{first}");
    let token = &token_protocol["base64url.bearer.authorization.k8s.io.".len()..];
    assert!(
        !first.contains(token),
        "the token reached the upstream: {first}"
    );
    assert!(v["headers"].get("authorization").is_none(), "{first}");
    ws.send(Message::text("ping from the console"))
        .await
        .expect("send");
    let Some(Ok(Message::Text(back))) = ws.next().await else {
        panic!("{line}: no echo");
    };
    assert_eq!(back.as_str(), "ping from the console");
    ws.close(None).await.ok();
}
