//! JWKS and OpenID discovery over `https://`: a real nginx serving them with a certificate made
//! at test time, keyway run as its own process trusting that certificate through
//! `SSL_CERT_FILE` (the system store does not know it, and a keyway without it must refuse).

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::jwt_support::*;
use crate::support::nginx::free_port;
use crate::support::tls::{self_signed, tls_nginx};
use crate::support::*;

struct Keyway {
    child: Child,
    port: u16,
    admin: u16,
}

impl Keyway {
    /// keyway on `yaml`, with listeners of its own, in `dir`.
    fn spawn(dir: &std::path::Path, yaml: &str, envs: &[(&str, &std::path::Path)]) -> Keyway {
        let (port, admin) = (free_port(), free_port());
        let config = dir.join(format!("keyway-{port}.yaml"));
        std::fs::write(
            &config,
            format!("listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}}}\n{yaml}"),
        )
        .unwrap();
        let mut cmd = Command::new(keyway_bin());
        cmd.args(["run", "-c"])
            .arg(&config)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in envs {
            cmd.env(name, value);
        }
        Keyway {
            child: cmd.spawn().expect("spawn keyway"),
            port,
            admin,
        }
    }

    /// `/readyz`'s status and body; `(0, "")` while the admin listener is not up yet.
    async fn readyz(&self) -> (u16, String) {
        if tokio::net::TcpStream::connect(("127.0.0.1", self.admin))
            .await
            .is_err()
        {
            return (0, String::new());
        }
        let r = get(&format!("http://127.0.0.1:{}/readyz", self.admin), &[]).await;
        (
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body).into_owned(),
        )
    }
}

impl Drop for Keyway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn jwks_and_discovery_are_fetched_over_https_from_a_trusted_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), &["IP:127.0.0.1"]);
    let d = dir.path().display().to_string();
    let server = tls_nginx(
        dir.path(),
        format!("        root {d}/www;\n        default_type application/json;"),
    )
    .await;
    let base = format!("https://127.0.0.1:{}", server.port);
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join(".well-known")).unwrap();
    std::fs::write(
        www.join("jwks.json"),
        jwks(&[jwk("rsa.key.pem", Algorithm::RS256, "k1")]),
    )
    .unwrap();
    std::fs::write(
        www.join(".well-known/openid-configuration"),
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks.json"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string(),
    )
    .unwrap();
    for entry in walk(&www) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let yaml = format!(
        r#"
upstreams:
  app: {{builtin: echo}}
authenticators:
  idp-jwt: {{type: jwt, issuer: "{base}", audience: [app], jwks_url: "{base}/jwks.json"}}
  sso:
    type: oidc
    issuer: "{base}"
    client_id: app
    client_secret: "a-client-secret-of-some-length-0123"
    session: {{secret: "0123456789abcdef0123456789abcdef"}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [idp-jwt]}}
  - {{name: web, match: {{path_prefix: /}}, upstream: app, auth: [sso]}}
"#
    );
    let token = mint(
        Algorithm::RS256,
        &rsa_key("rsa.key.pem"),
        Some("k1"),
        &json!({"iss": base, "aud": "app", "sub": "u1", "exp": now() + 600}),
    );
    let bearer = format!("Bearer {token}");

    // Trusting the certificate: ready (JWKS fetched, provider discovered), the token verifies.
    let trusted = Keyway::spawn(
        dir.path(),
        &yaml,
        &[("SSL_CERT_FILE", &dir.path().join("cert.pem"))],
    );
    let ready = wait_until(Duration::from_secs(15), || async {
        trusted.readyz().await.0 == 200
    })
    .await;
    assert!(ready, "not ready: {:?}", trusted.readyz().await);
    let url = format!("http://127.0.0.1:{}/api/x", trusted.port);
    let answer = get(&url, &[("authorization", &bearer)]).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );

    // With the system's store alone, which does not know it: nothing from that server is
    // believed, and /readyz says why.
    let untrusted = Keyway::spawn(dir.path(), &yaml, &[]);
    let said = wait_until(Duration::from_secs(15), || async {
        let (status, body) = untrusted.readyz().await;
        status == 503 && body.contains("certificate")
    })
    .await;
    let (_, body) = untrusted.readyz().await;
    assert!(said, "{body}");
    assert!(body.contains("idp-jwt") && body.contains("sso"), "{body}");
    let url = format!("http://127.0.0.1:{}/api/x", untrusted.port);
    let answer = get(&url, &[("authorization", &bearer)]).await;
    assert_eq!(
        answer.status,
        503,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}
