//! Certificates made at test time with the openssl command.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A self-signed certificate (`CA:FALSE`: the trust anchor and the leaf at once) for `sans`
/// (`IP:127.0.0.1`, `DNS:name`), as `cert.pem` and `key.pem` in `dir`, readable by nginx's
/// workers (nobody).
pub fn self_signed(dir: &Path, sans: &[&str]) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=keyway-test"])
        .args(["-addext", &format!("subjectAltName={}", sans.join(","))])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("this test needs the openssl command");
    assert!(status.success(), "openssl req failed");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["key.pem", "cert.pem"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// nginx serving TLS with `dir`'s `cert.pem` and `key.pem` (see `self_signed`), its server block
/// holding the directives `inside`.
pub async fn tls_nginx(dir: &Path, inside: String) -> super::nginx::Nginx {
    let d = dir.display().to_string();
    super::nginx::Nginx::start(move |port| {
        format!(
            "    server {{\n        listen 127.0.0.1:{port} ssl;\n        ssl_certificate {d}/cert.pem;\n        ssl_certificate_key {d}/key.pem;\n{inside}\n    }}"
        )
    })
    .await
}
