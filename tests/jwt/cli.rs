//! `keyway token` mints tokens keyway accepts; `keyway demo` prints one.

use std::process::Command;

use crate::jwt_support::*;
use crate::start_keys;
use crate::support::*;

fn config(upstream: &str) -> String {
    format!(
        r#"
upstreams: {{app: {{url: "{upstream}"}}}}
consumers:
  - {{name: alice, groups: [users], jwt: {{key: alice-key, secret: "alice-secret-0123456789abcdef0123"}}}}
  - {{name: ops, groups: [admin], jwt: {{key: ops-key, private_key_file: rsa.key.pem, algorithm: RS256}}}}
  - {{name: viewer, jwt: {{key: viewer-key, public_key_file: ec.pub.pem, algorithm: ES256}}}}
authenticators:
  cj: {{type: jwt, consumer_claim: user_id, issuer: https://keyway.test, audience: [api]}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [cj], allow: {{claims: {{tier: gold}}}}}}
"#
    )
}

fn token(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(keyway_bin())
        .arg("token")
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .expect("run keyway token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn minted_tokens_are_accepted() {
    let up = upstream_ok().await;
    let gw = start_keys(&config(&up.url()), &[]).await;
    for consumer in ["alice", "ops"] {
        let (ok, t, err) = token(
            &gw.config_path,
            &[
                "--consumer",
                consumer,
                "--ttl",
                "10m",
                "--claim",
                "tier=gold",
            ],
        );
        assert!(ok, "{err}");
        assert_eq!(t.split('.').count(), 3, "{t}");
        let a = get(
            &gw.url("/api/x"),
            &[("authorization", &format!("Bearer {t}"))],
        )
        .await;
        assert_eq!(
            a.status,
            200,
            "{consumer}: {:?}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(up.last().headers["x-keyway-consumer"], consumer);
    }
    let (ok, _, err) = token(&gw.config_path, &["--consumer", "viewer"]);
    assert!(!ok);
    assert!(err.contains("only a public key"), "{err}");
    let (ok, _, err) = token(&gw.config_path, &["--consumer", "nobody"]);
    assert!(!ok);
    assert!(err.contains("alice, ops, viewer"), "{err}");
    let (ok, _, err) = token(&gw.config_path, &["--consumer", "alice", "--ttl", "soon"]);
    assert!(!ok);
    assert!(err.contains("--ttl"), "{err}");
    // The secret never appears in what the command prints.
    assert!(!err.contains("alice-secret"));
    gw.stop().await;
}

#[test]
fn token_help_names_every_flag() {
    let out = Command::new(keyway_bin())
        .args(["token", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--consumer", "--config", "--ttl", "--claim"] {
        assert!(text.contains(flag), "{flag} missing:\n{text}");
    }
    let _ = now();
}
