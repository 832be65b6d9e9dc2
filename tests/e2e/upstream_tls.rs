//! `https://` upstreams: a real nginx with a certificate made at test time. keyway verifies it
//! against `tls.ca` (or the system's store, which does not know it), checks the name the
//! certificate carries (`tls.server_name`, default the url's host), reuses the TLS connection,
//! carries WebSocket upgrades and multiplexer streams over it, and probes it with `keyway check --probe`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::nginx::Nginx;
use crate::support::tls::{self_signed, tls_nginx};
use crate::support::*;

/// nginx over TLS: `/ws/` proxied to `ws` (a WebSocket echo), everything else answered with
/// what nginx saw of the TLS connection and the request.
async fn upstream_nginx(dir: &std::path::Path, ws: std::net::SocketAddr) -> Nginx {
    tls_nginx(
        dir,
        format!(
            r#"        location /ws/ {{
            proxy_pass http://{ws};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }}
        location / {{
            default_type text/plain;
            return 200 "uri=$request_uri sni=$ssl_server_name alpn=$ssl_alpn_protocol n=$connection_requests auth=$http_authorization\n";
        }}"#
        ),
    )
    .await
}

fn config(port: u16) -> String {
    format!(
        r#"
upstreams:
  secure:
    url: "https://127.0.0.1:{port}"
    tls: {{ca: cert.pem}}
    inject: {{Authorization: "Bearer upstream-secret"}}
  named: {{url: "https://127.0.0.1:{port}", tls: {{ca: cert.pem, server_name: upstream.test}}}}
  untrusted: {{url: "https://127.0.0.1:{port}"}}
  misnamed: {{url: "https://127.0.0.1:{port}", tls: {{ca: cert.pem, server_name: other.test}}}}
routes:
  - {{name: named, match: {{path_prefix: /named/}}, upstream: named, auth: []}}
  - {{name: untrusted, match: {{path_prefix: /untrusted/}}, upstream: untrusted, auth: []}}
  - {{name: misnamed, match: {{path_prefix: /misnamed/}}, upstream: misnamed, auth: []}}
  - {{name: mux, match: {{path: /mux}}, mux: true, auth: []}}
  - {{name: secure, match: {{path_prefix: /}}, upstream: secure, auth: []}}
"#
    )
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

#[tokio::test]
async fn an_https_upstream_is_verified_reused_and_carries_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), &["IP:127.0.0.1", "DNS:upstream.test"]);
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let (ws, handshakes) = crate::websocket::ws_echo().await;
    let server = upstream_nginx(dir.path(), ws).await;
    let gw = start_with_files(&config(server.port), &[("cert.pem", &cert)]).await;

    // Trusted through tls.ca; ALPN says HTTP/1.1; the second request rides the same TLS
    // connection (nginx counts 2 on it); the injected credential arrives.
    for n in 1..=2 {
        let answer = get(&gw.url("/app/page?x=1"), &[]).await;
        assert_eq!(answer.status, 200, "{}", text(&answer));
        assert_eq!(
            text(&answer),
            format!("uri=/app/page?x=1 sni= alpn=http/1.1 n={n} auth=Bearer upstream-secret\n")
        );
    }
    // tls.server_name: sent as SNI and checked against the certificate's names.
    let named = get(&gw.url("/named/x"), &[]).await;
    assert_eq!(named.status, 200, "{}", text(&named));
    assert!(
        text(&named).contains("sni=upstream.test "),
        "{}",
        text(&named)
    );

    // A certificate the trust does not know, or one for another name: 502 saying which.
    let untrusted = get(&gw.url("/untrusted/x"), &[]).await;
    let body = assert_problem(&untrusted, 502, "upstream.unreachable");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("TLS handshake") && detail.contains("UnknownIssuer"),
        "{body:#}"
    );
    assert!(
        body["hint"].as_str().unwrap().contains("tls.ca"),
        "{body:#}"
    );
    let misnamed = get(&gw.url("/misnamed/x"), &[]).await;
    let body = assert_problem(&misnamed, 502, "upstream.unreachable");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not valid for name \"other.test\""),
        "{body:#}"
    );

    // A WebSocket upgrade over the TLS connection, through nginx to the echo.
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", gw.addr)),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake refused");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over tls"));
    // A multiplexer stream: keyway's own WebSocket handshake to the upstream, over TLS.
    let mut request = format!("ws://{}/mux", gw.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "keyway.mux.v1".parse().unwrap());
    let (mut mux, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for frame in [
        json!({"type": "open", "id": "s", "path": "/ws/echo"}),
        json!({"type": "data", "id": "s", "data": "mux over tls"}),
    ] {
        mux.send(Message::text(frame.to_string())).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), mux.next())
            .await
            .expect("no mux answer")
            .unwrap()
            .unwrap();
        let answer: serde_json::Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
        let expected = if frame["type"] == "open" {
            json!({"type": "opened", "id": "s"})
        } else {
            frame.clone()
        };
        assert_eq!(answer["type"], expected["type"], "{answer}");
        assert_eq!(answer, expected, "{answer}");
    }
    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for headers in &seen {
        assert_eq!(headers["authorization"], "Bearer upstream-secret");
    }
    gw.stop().await;

    // `keyway check --probe` opens its connections the same way: the trusted upstreams answer,
    // the others fail naming why.
    let file = dir.path().join("keyway.yaml");
    std::fs::write(
        &file,
        format!("listen: 127.0.0.1:0\n{}", config(server.port)),
    )
    .unwrap();
    let out = tokio::process::Command::new(keyway_bin())
        .args(["check", "--probe", "--json", "-c"])
        .arg(&file)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let probe = |name: &str| {
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["upstream"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no probe of {name}: {v:#}"))
    };
    assert_eq!(probe("secure")["status"], 200, "{v:#}");
    assert_eq!(probe("named")["status"], 200, "{v:#}");
    let untrusted = probe("untrusted");
    assert_eq!(untrusted["ok"], false, "{v:#}");
    assert!(
        untrusted["error"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer"),
        "{v:#}"
    );
    assert_eq!(out.status.code(), Some(1), "{v:#}");
}

#[test]
fn tls_settings_are_checked_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let errors = |upstream: &str| {
        let yaml = format!(
            "upstreams:\n  app: {upstream}\nroutes:\n  - {{name: r, match: {{path_prefix: /}}, upstream: app, auth: []}}\n"
        );
        keyway::pipeline::compile::load_str(&yaml, dir.path())
            .err()
            .unwrap_or_else(|| panic!("{upstream} loaded"))
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = errors(r#"{url: "http://127.0.0.1:3000", tls: {ca: empty.pem}}"#);
    assert!(
        e.contains("upstreams.app.tls: tls is for https:// upstreams"),
        "{e}"
    );
    let e = errors(r#"{url: "https://127.0.0.1:3000", tls: {ca: missing.pem}}"#);
    assert!(
        e.contains("upstreams.app.tls.ca: cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    let e = errors(r#"{url: "https://127.0.0.1:3000", tls: {ca: empty.pem}}"#);
    assert!(e.contains("holds no usable CA certificate"), "{e}");
    let e = errors(r#"{url: "https://127.0.0.1:3000", tls: {server_name: "bad name!"}}"#);
    assert!(e.contains("upstreams.app.tls.server_name"), "{e}");
    let e = errors(r#"{url: "ftp://127.0.0.1:3000"}"#);
    assert!(e.contains("http:// or https://"), "{e}");
    // Unknown keys under tls are refused like any other.
    let e = errors(r#"{url: "https://127.0.0.1:3000", tls: {insecure: true}}"#);
    assert!(e.contains("insecure"), "{e}");
}
