//! The differential test of issue 14: a generated corpus of request spellings (paths, percent
//! encodings of every character class, dot segments, slashes, backslashes, `;` parameters,
//! case, host spellings, absolute-form, HTTP/2 `:authority` against `host`) sent through keyway
//! to a real nginx with several virtual hosts and a protected location. For every request,
//! either keyway refuses it, or the route keyway chose is the one whose content nginx served.
//!
//! keyway's route reaches nginx as `X-Route` (each route has an upstream of its own that injects
//! it); nginx answers with the virtual host and location that served the request and that value,
//! so one response says what both sides decided.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyway::pipeline::authn::api_key::hashed_form;
use tokio::net::TcpStream;

use crate::support::nginx::Nginx;
use crate::support::*;

const KEY: &str = "differential-key";

/// keyway's routes and the nginx content each one stands for.
const ROUTES: [(&str, &str, &str, bool); 6] = [
    // (route, match, content nginx serves for it, public)
    ("catchall", "{path_prefix: /}", "default", true),
    (
        "public",
        "{host: public.example, path_prefix: /}",
        "public-root",
        true,
    ),
    (
        "api",
        "{host: public.example, path_prefix: /api/}",
        "public-api",
        false,
    ),
    (
        "admin",
        "{host: public.example, path: /admin}",
        "public-admin",
        false,
    ),
    (
        "internal",
        "{host: internal.example, path_prefix: /}",
        "internal",
        false,
    ),
    (
        "corp",
        "{host: \"*.corp.example\", path_prefix: /}",
        "corp",
        false,
    ),
];

fn nginx_servers(port: u16) -> String {
    // The same routing, written as nginx users write it: keyway's prefix `/api/` also matches
    // `/api`, hence the exact location beside nginx's prefix one.
    format!(
        r#"
    server {{
        listen 127.0.0.1:{port} default_server;
        server_name _;
        location / {{ return 200 "default $http_x_route"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name public.example;
        location / {{ return 200 "public-root $http_x_route"; }}
        location /api/ {{ return 200 "public-api $http_x_route"; }}
        location = /api {{ return 200 "public-api $http_x_route"; }}
        location = /admin {{ return 200 "public-admin $http_x_route"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name internal.example;
        location / {{ return 200 "internal $http_x_route"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name *.corp.example;
        location / {{ return 200 "corp $http_x_route"; }}
    }}
"#
    )
}

fn keyway_config(nginx_port: u16) -> String {
    let mut yaml = format!(
        "consumers:\n  - {{name: ops, api_keys: [\"{}\"]}}\nauthenticators:\n  key: {{type: api_key}}\nupstreams:\n",
        hashed_form(KEY)
    );
    for (route, ..) in ROUTES {
        yaml.push_str(&format!(
            "  u-{route}: {{url: \"http://127.0.0.1:{nginx_port}\", inject: {{X-Route: {route}}}}}\n"
        ));
    }
    yaml.push_str("routes:\n");
    for (route, matcher, _, public) in ROUTES {
        let auth = if public { "[]" } else { "[key]" };
        yaml.push_str(&format!(
            "  - {{name: {route}, match: {matcher}, upstream: u-{route}, auth: {auth}}}\n"
        ));
    }
    yaml
}

/// Path spellings: every base path, and each with one mutation of every kind.
fn paths() -> Vec<String> {
    const BASES: [&str; 8] = [
        "/", "/api/x", "/api", "/api/", "/admin", "/admin/x", "/x/y", "/apix",
    ];
    let mut out: Vec<String> = BASES.iter().map(|b| b.to_string()).collect();
    for base in BASES {
        let bytes = base.as_bytes();
        // Each byte percent-encoded, in upper- and lower-case hex.
        for i in 0..bytes.len() {
            for encoded in [format!("%{:02X}", bytes[i]), format!("%{:02x}", bytes[i])] {
                out.push(format!("{}{encoded}{}", &base[..i], &base[i + 1..]));
            }
        }
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'/' {
                let (head, tail) = base.split_at(i);
                out.push(format!("{head}/{tail}"));
                out.push(format!("{head}//{tail}"));
                out.push(format!("{head}\\{}", &tail[1..]));
                if i > 0 {
                    for sep in ["%2F", "%2f", "%5C", "%5c"] {
                        out.push(format!("{head}{sep}{}", &tail[1..]));
                    }
                }
                // `;` parameters before this separator.
                if i > 0 {
                    out.push(format!("{head};{tail}"));
                    out.push(format!("{head};jsessionid=1{tail}"));
                    out.push(format!("{head}%3B{tail}"));
                }
            }
        }
        // Dot segments in every spelling, in front of, inside and after the path.
        for dots in [
            "..", ".", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "..;", "..;x", ".;", "%2e%2e;",
        ] {
            out.push(format!("/x/{dots}{base}"));
            out.push(format!("{base}/{dots}"));
            out.push(format!("/{dots}{base}"));
            out.push(format!("/x\\{dots}\\{}", base.trim_start_matches('/')));
            out.push(format!("/x%2F{dots}%2F{}", base.trim_start_matches('/')));
        }
        // Case.
        out.push(base.to_ascii_uppercase());
        // Reserved and other characters, raw and encoded, after the first segment.
        for c in [
            "!", "$", "&", "'", "(", ")", "*", "+", ",", ":", "=", "@", "~", "\"", "|",
        ] {
            out.push(format!("{base}{c}x"));
            out.push(format!("{base}%{:02X}x", c.as_bytes()[0]));
        }
        for other in [
            "%20",
            "%25",
            "%252F",
            "%2525",
            "%3F",
            "%23",
            "%00",
            "%zz",
            "%2",
            "%C3%A9",
            "\u{e9}",
            "%7f",
            "%ff",
            "#frag",
            "#/../api/x",
            "?/api/x",
            "?q=/../admin",
        ] {
            out.push(format!("{base}{other}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

const CANONICAL_HOSTS: [&str; 5] = [
    "public.example",
    "internal.example",
    "a.corp.example",
    "unknown.example",
    "127.0.0.1",
];

const HOST_SPELLINGS: [&str; 26] = [
    "public.example",
    "PUBLIC.example",
    "public.example.",
    "public.example:80",
    "public.example:8080",
    "public.example:",
    "public.example:0080",
    "internal.example",
    "Internal.Example.",
    "internal.example:80",
    "INTERNAL.EXAMPLE.:80",
    "a.corp.example",
    "A.Corp.Example.",
    "corp.example",
    "x.y.corp.example",
    "unknown.example",
    "127.0.0.1",
    "[::1]",
    "public.example..",
    ".internal.example",
    "internal.example@public.example",
    "public.example, internal.example",
    "internal%2eexample",
    "public.example:99999",
    "internal.example public.example",
    "internal.example\tx",
];

/// What happened to one request.
enum Outcome {
    Refused(String),
    Served { content: String, route: String },
    Other(String),
}

/// Checks one outcome against the invariant; `Err` describes a mismatch.
fn judge(
    outcome: &Outcome,
    with_key: bool,
    tally: &mut BTreeMap<String, usize>,
) -> Result<(), String> {
    match outcome {
        Outcome::Refused(reason) => {
            *tally.entry(format!("refused {reason}")).or_default() += 1;
            Ok(())
        }
        Outcome::Served { content, route } => {
            *tally.entry(format!("served by route {route}")).or_default() += 1;
            let Some((_, _, expected, public)) = ROUTES.iter().find(|r| r.0 == route) else {
                return Err(format!(
                    "nginx served {content:?} for an unknown route {route:?}"
                ));
            };
            if content != expected {
                return Err(format!(
                    "keyway chose route {route} but nginx served {content:?} (expected {expected:?})"
                ));
            }
            if !with_key && !public {
                return Err(format!(
                    "protected route {route} served without a credential"
                ));
            }
            Ok(())
        }
        Outcome::Other(text) => Err(format!("neither refused by keyway nor served: {text}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyway_and_nginx_never_disagree_on_the_route() {
    let nginx = Nginx::start(nginx_servers).await;
    let gw = start(&keyway_config(nginx.port)).await;

    let mut heads: Vec<String> = Vec::new();
    let paths = paths();
    for path in &paths {
        for host in CANONICAL_HOSTS {
            heads.push(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n"));
        }
    }
    for host in HOST_SPELLINGS {
        for path in ["/", "/api/x", "/admin", "//api/x", "/%61dmin"] {
            heads.push(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n"));
        }
        // Absolute-form: the request-target's authority against Host.
        for other in ["public.example", "internal.example", "Internal.Example."] {
            heads.push(format!(
                "GET http://{host}/api/x HTTP/1.1\r\nHost: {other}\r\n"
            ));
            heads.push(format!(
                "GET http://{other}/admin HTTP/1.1\r\nHost: {host}\r\n"
            ));
        }
        heads.push(format!("GET http://{host}/api/x HTTP/1.1\r\n"));
        // Two Host headers.
        heads.push(format!(
            "GET /api/x HTTP/1.1\r\nHost: public.example\r\nHost: {host}\r\n"
        ));
        heads.push(format!("GET /admin HTTP/1.0\r\nHost: {host}\r\n"));
    }
    heads.push("GET /api/x HTTP/1.1\r\n".to_owned());
    heads.push("GET /api/x HTTP/1.0\r\n".to_owned());

    let mut tally = BTreeMap::new();
    let mut mismatches = Vec::new();
    let mut sent = 0;
    for chunk in heads.chunks(32) {
        let mut tasks = Vec::new();
        for head in chunk {
            for with_key in [true, false] {
                let head = head.clone();
                let gw_addr = gw.addr;
                tasks.push(tokio::spawn(async move {
                    let gw = GatewayAddr(gw_addr);
                    (head.clone(), with_key, gw.send(&head, with_key).await)
                }));
            }
        }
        for task in tasks {
            let (head, with_key, outcome) = task.await.unwrap();
            sent += 1;
            if let Err(why) = judge(&outcome, with_key, &mut tally) {
                mismatches.push(format!("{head:?} (key: {with_key}): {why}"));
            }
        }
    }

    // HTTP/2: `:authority` against `host`.
    let mut h2_sent = 0;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for authority in HOST_SPELLINGS.iter().map(Some).chain([None]) {
        for host in [
            None,
            Some("public.example"),
            Some("internal.example"),
            Some("PUBLIC.EXAMPLE."),
        ] {
            for path in ["/api/x", "/admin", "//api/x", "/%61pi/x", "/x/../api/x"] {
                for with_key in [true, false] {
                    let uri = match authority {
                        Some(a) => format!("http://{a}{path}"),
                        None => path.to_owned(),
                    };
                    let Ok(uri) = uri.parse::<http::Uri>() else {
                        continue;
                    };
                    let mut req = Request::get(uri.clone());
                    if let Some(h) = host {
                        req = req.header("host", h);
                    }
                    if with_key {
                        req = req.header("x-api-key", KEY);
                    }
                    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                        continue;
                    };
                    let Ok(response) = h2.send_request(req).await else {
                        continue;
                    };
                    h2_sent += 1;
                    let reason = response
                        .headers()
                        .get("x-keyway-reason")
                        .map(|v| v.to_str().unwrap_or("").to_owned());
                    let status = response.status();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let outcome = match reason {
                        Some(r) => Outcome::Refused(r),
                        None if status == 200 => {
                            let (c, r) = body.split_once(' ').unwrap_or((&body, ""));
                            Outcome::Served {
                                content: c.to_owned(),
                                route: r.to_owned(),
                            }
                        }
                        None => Outcome::Other(format!("{status} {body}")),
                    };
                    if let Err(why) = judge(&outcome, with_key, &mut tally) {
                        mismatches.push(format!("h2 {uri} host {host:?} (key: {with_key}): {why}"));
                    }
                }
            }
        }
    }

    eprintln!(
        "differential corpus: {} paths, {} HTTP/1 request heads sent {sent} times (with and without a credential), {h2_sent} HTTP/2 requests; mismatches: {}",
        paths.len(),
        heads.len(),
        mismatches.len()
    );
    for (what, n) in &tally {
        eprintln!("  {n:6} {what}");
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}\nnginx error log:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        nginx.error_log()
    );
    // The corpus reaches every route both ways: the comparison is not between refusals alone.
    for (route, ..) in ROUTES {
        assert!(
            tally
                .get(&format!("served by route {route}"))
                .copied()
                .unwrap_or(0)
                > 10,
            "route {route} was hardly ever served: {tally:?}"
        );
    }
    assert!(sent + h2_sent > 5_000, "{sent} + {h2_sent}");
    gw.stop().await;
}

/// The gateway's address, for tasks that outlive a borrow of the `Gateway`.
struct GatewayAddr(std::net::SocketAddr);

impl GatewayAddr {
    async fn send(&self, head: &str, with_key: bool) -> Outcome {
        let key = if with_key {
            format!("x-api-key: {KEY}\r\n")
        } else {
            String::new()
        };
        let request = format!("{head}{key}Connection: close\r\n\r\n");
        let answer = raw(self.0, &request).await;
        classify(&answer)
    }
}

fn classify(answer: &RawAnswer) -> Outcome {
    match answer.header("x-keyway-reason") {
        Some(reason) => Outcome::Refused(reason),
        None if answer.status() == Some(200) => {
            let body = answer.body();
            let (content, route) = body.split_once(' ').unwrap_or((&body, ""));
            Outcome::Served {
                content: content.to_owned(),
                route: route.to_owned(),
            }
        }
        None => Outcome::Other(answer.text()),
    }
}
