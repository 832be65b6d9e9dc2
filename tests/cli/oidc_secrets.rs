//! F4 and SPEC §6.1: a whole browser sign-in, its failures and a sign-out through the `keyway`
//! binary at debug log level, and not one secret in its logs: not the client secret, the
//! session secret, the authorization code, a token or a cookie value.

use crate::common::{Proc, write_config};
use crate::support::idp::{CLIENT_SECRET, Idp, sign_in};
use crate::support::*;

const SESSION_SECRET: &str = "cli-session-secret-0123456789abcdef-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_and_its_failures_log_no_secret() {
    let idp = Idp::start(serde_json::json!({"keySeed": "cli"})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "keyway.yaml",
        &format!(
            r#"listen: 127.0.0.1:0
upstreams:
  echo: {{builtin: echo}}
authenticators:
  sso:
    type: oidc
    issuer: "{issuer}"
    client_id: keyway
    client_secret: "${{OIDC_SECRET}}"
    pass_access_token: true
    pass_id_token: true
    session: {{secret: "${{SESSION_SECRET}}"}}
routes:
  - {{name: app, match: {{path_prefix: /}}, upstream: echo, auth: [sso]}}
"#,
            issuer = idp.issuer
        ),
    );
    let mut kw = Proc::keyway(
        &["run", "-c", &file],
        &[
            ("OIDC_SECRET", CLIENT_SECRET),
            ("SESSION_SECRET", SESSION_SECRET),
            ("KEYWAY_LOG", "debug"),
        ],
    );
    let addr = kw.keyway_addr().await;
    let base = format!("http://{addr}");
    let signed = sign_in(&format!("{base}/x"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    // The echo upstream shows what it was passed, with the tokens redacted.
    let echoed: serde_json::Value = serde_json::from_str(signed.body()).unwrap();
    assert_eq!(echoed["headers"]["authorization"], "<sensitive, redacted>");
    assert_eq!(
        echoed["headers"]["x-keyway-id-token"],
        "<sensitive, redacted>"
    );
    let cookie = signed.cookie("keyway_session").unwrap().to_owned();
    let code = signed
        .steps()
        .iter()
        .filter_map(|s| s["url"].as_str())
        .find(|u| u.contains("/_keyway/callback?"))
        .and_then(|u| {
            form_urlencoded::parse(u.split_once('?').unwrap().1.as_bytes())
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .expect("the callback's code");
    // Failures: a replayed callback, a tampered cookie, a sign-out.
    let _ = get(&format!("{base}/_keyway/callback?code={code}&state=x"), &[]).await;
    let _ = get(
        &format!("{base}/x"),
        &[("cookie", &format!("keyway_session={cookie}x"))],
    )
    .await;
    let _ = get(
        &format!("{base}/_keyway/signout"),
        &[("cookie", &format!("keyway_session={cookie}"))],
    )
    .await;
    kw.signal("TERM");
    kw.wait_exit(std::time::Duration::from_secs(10)).await;
    let logs = format!("{}{}", kw.stdout(), kw.stderr());
    assert!(logs.contains("\"status\":200"), "no access line: {logs}");
    for (what, secret) in [
        ("client secret", CLIENT_SECRET),
        ("session secret", SESSION_SECRET),
        ("authorization code", code.as_str()),
        ("session cookie", &cookie[..40]),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs:\n{logs}");
    }
    // No JWT (three base64url parts) in any log line.
    let jwt_like = logs
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .any(|w| w.split('.').count() == 3 && w.len() > 100 && w.starts_with("eyJ"));
    assert!(!jwt_like, "a token is in the logs:\n{logs}");
}
