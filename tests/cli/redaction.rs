//! SPEC §1 F5, §6.1: no secret anywhere. One `keyway run` at KEYWAY_LOG=trace serves API-key,
//! JWT, injected-credential and OIDC routes with known secrets; then the logs, `/metrics`,
//! `/decisions`, `POST /explain`, `keyway explain` (text and JSON), every refusal body and
//! header, and `keyway check --probe` are searched for each secret.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Proc, keyway_async, write_config};
use crate::support::idp::{CLIENT_SECRET, Idp, sign_in};
use crate::support::{get, send_body, upstream_ok};

const API_KEY: &str = "redaction-api-key-7f3a91c2e5d4";
const WRONG_KEY: &str = "redaction-wrong-key-0a9b8c7d6e";
const JWT_SECRET: &str = "redaction-jwt-secret-0123456789abcdef-9z";
const INJECTED: &str = "redaction-inject-value-5e1d0b77";
const SESSION_SECRET: &str = "redaction-session-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "redaction-admin-token-31c9e0aa";

/// A request sent: method, path and query, headers.
type Sent = (&'static str, String, Vec<(&'static str, String)>);

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_metrics_decisions_explain_refusals_or_probes() {
    let idp = Idp::start(json!({"keySeed": "redaction"})).await;
    let app = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0, token: "${{ADMIN_TOKEN}}"}}
upstreams:
  app: {{url: "{app}"}}
  tools:
    url: "{app}"
    inject: {{Authorization: "Bearer ${{TOOLS_KEY}}"}}
  echo: {{builtin: echo}}
consumers:
  - {{name: desk, groups: [users], api_keys: ["sha256:{hash}"]}}
  - name: alice
    jwt: {{key: alice-key, secret: "${{JWT_SECRET}}"}}
authenticators:
  desk-token: {{type: api_key, header: api_access_token}}
  consumer-jwt: {{type: jwt, from: ["header:Authorization", "query:jwt"]}}
  sso:
    type: oidc
    issuer: "{issuer}"
    client_id: keyway
    client_secret: "${{OIDC_SECRET}}"
    pass_access_token: true
    session: {{secret: "${{SESSION_SECRET}}"}}
routes:
  - {{name: api, match: {{path_prefix: /api/}}, upstream: app, auth: [desk-token]}}
  - {{name: tools, match: {{path_prefix: /tools/}}, upstream: tools, auth: [desk-token]}}
  - {{name: jwt, match: {{path_prefix: /jwt/}}, upstream: app, auth: [consumer-jwt]}}
  - {{name: ui, match: {{path_prefix: /ui/}}, upstream: echo, auth: [sso]}}
"#,
        app = app.url(),
        issuer = idp.issuer
    );
    let file = write_config(dir.path(), "keyway.yaml", &yaml);
    let envs = [
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("TOOLS_KEY", INJECTED),
        ("JWT_SECRET", JWT_SECRET),
        ("OIDC_SECRET", CLIENT_SECRET),
        ("SESSION_SECRET", SESSION_SECRET),
    ];
    let mut run_envs = envs.to_vec();
    run_envs.push(("KEYWAY_LOG", "trace"));
    let mut kw = Proc::keyway(&["run", "-c", &file], &run_envs);
    let (addr, admin) = kw.keyway_addrs(true).await;
    let admin = admin.expect("admin listener");
    let base = format!("http://{addr}");

    let good = token(json!({"key": "alice-key", "sub": "alice", "exp": 4102444800u64}));
    let foreign = token(json!({"sub": "alice", "exp": 4102444800u64}));
    let signed = sign_in(&format!("{base}/ui/x"), Some("alice"), None).await;
    assert!(signed.ok, "{:#}", signed.json);
    let session = signed
        .cookie("keyway_session")
        .expect("session cookie")
        .to_owned();

    // (method, path, headers) of every request sent, for the gateway and for explain.
    let bearer = |t: &str| format!("Bearer {t}");
    let requests: Vec<Sent> = vec![
        (
            "GET",
            "/api/x".into(),
            vec![("api_access_token", API_KEY.into())],
        ),
        (
            "GET",
            "/api/x".into(),
            vec![("api-access-token", WRONG_KEY.into())],
        ),
        (
            "POST",
            "/tools/run".into(),
            vec![("api_access_token", API_KEY.into())],
        ),
        (
            "GET",
            "/jwt/x".into(),
            vec![("authorization", bearer(&good))],
        ),
        (
            "GET",
            "/jwt/x".into(),
            vec![("authorization", bearer(&foreign))],
        ),
        (
            "GET",
            "/jwt/x".into(),
            vec![("authorization", format!("{}x", bearer(&good)))],
        ),
        ("GET", format!("/jwt/q?jwt={good}"), vec![]),
        (
            "GET",
            "/ui/x".into(),
            vec![("cookie", format!("keyway_session={session}"))],
        ),
        (
            "GET",
            "/ui/x".into(),
            vec![("cookie", format!("keyway_session={session}x"))],
        ),
    ];
    let mut seen = Vec::new();
    for (method, path, headers) in &requests {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = send_body(method, &format!("{base}{path}"), &hs, Bytes::new()).await;
        // The request's own query holds a token: label the answer by its path alone.
        let label = path.split('?').next().unwrap();
        seen.push(format!(
            "{label} -> {} {:?} {}",
            answer.status,
            answer.headers,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let statuses: Vec<&str> = seen
        .iter()
        .map(|s| &s[s.find("-> ").unwrap() + 3..][..3])
        .collect();
    assert_eq!(
        statuses,
        [
            "200", "401", "200", "200", "401", "401", "200", "200", "401"
        ],
        "{seen:#?}"
    );
    // The injected key reached the upstream: the redaction below is not vacuous.
    assert!(app.requests().iter().any(|r| {
        r.headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap_or("").contains(INJECTED))
    }));

    let auth = format!("Bearer {ADMIN_TOKEN}");
    let admin_get = |path: &str| {
        let url = format!("http://{admin}{path}");
        let auth = auth.clone();
        async move {
            let a = get(&url, &[("authorization", &auth)]).await;
            assert_eq!(a.status, 200, "{url}");
            String::from_utf8_lossy(&a.body).into_owned()
        }
    };
    let mut outputs = vec![
        ("refusals and answers".to_owned(), seen.join("\n")),
        ("/metrics".to_owned(), admin_get("/metrics").await),
        (
            "/decisions".to_owned(),
            admin_get("/decisions?limit=1000").await,
        ),
    ];
    for (method, path, headers) in &requests {
        let mut header_map = serde_json::Map::new();
        let mut cookies = serde_json::Map::new();
        let mut cli_args = vec![
            "explain".to_owned(),
            "-c".to_owned(),
            file.clone(),
            method.to_string(),
            format!("{base}{path}"),
        ];
        for (n, v) in headers {
            if *n == "cookie" {
                let (cn, cv) = v.split_once('=').unwrap();
                cookies.insert(cn.to_owned(), cv.into());
                cli_args.extend(["--cookie".to_owned(), v.clone()]);
            } else {
                header_map.insert((*n).to_owned(), v.clone().into());
                cli_args.extend(["-H".to_owned(), format!("{n}: {v}")]);
            }
        }
        let body = json!({"method": method, "url": format!("{base}{path}"), "headers": header_map, "cookies": cookies});
        let posted = send_body(
            "POST",
            &format!("http://{admin}/explain"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from(body.to_string()),
        )
        .await;
        assert_eq!(posted.status, 200, "{:?}", posted.body);
        let label = path.split('?').next().unwrap();
        outputs.push((
            format!("POST /explain {label}"),
            String::from_utf8_lossy(&posted.body).into_owned(),
        ));
        let env: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let text = keyway_async(cli_args.clone(), env.clone()).await;
        cli_args.push("--json".to_owned());
        let json_out = keyway_async(cli_args, env).await;
        assert!(json_out.code == 0 || json_out.code == 1, "{json_out:?}");
        outputs.push((format!("keyway explain {label}"), text.all()));
        outputs.push((format!("keyway explain --json {label}"), json_out.all()));
    }
    let env: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for json_flag in [false, true] {
        let mut args = vec![
            "check".to_owned(),
            "-c".to_owned(),
            file.clone(),
            "--probe".to_owned(),
        ];
        if json_flag {
            args.push("--json".to_owned());
        }
        let out = keyway_async(args, env.clone()).await;
        outputs.push(("keyway check --probe".to_owned(), out.all()));
    }
    kw.signal("TERM");
    kw.wait_exit(std::time::Duration::from_secs(10)).await;
    let logs = format!("{}{}", kw.stdout(), kw.stderr());
    assert!(logs.contains("\"level\":\"TRACE\""), "not at trace level");
    outputs.push(("logs at trace".to_owned(), logs));

    // The outputs searched hold what they should: the redactions are not vacuous.
    let output = |name: &str| {
        outputs
            .iter()
            .find(|(w, _)| w == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    assert!(output("keyway explain --json /tools/run").contains("<redacted:authorization>"));
    assert!(output("POST /explain /jwt/q").contains("jwt=<redacted:jwt>"));
    assert!(output("keyway explain --json /ui/x").contains(r#""decision":"allow""#));
    assert!(output("keyway explain /ui/x").contains("cookies: keyway_session"));
    assert!(output("/decisions").contains("consumer_claim_missing"));
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    let secrets = [
        ("API key", API_KEY.to_owned()),
        ("wrong API key", WRONG_KEY.to_owned()),
        ("JWT secret", JWT_SECRET.to_owned()),
        ("token", good.clone()),
        ("token signature", signature(&good)),
        ("foreign token signature", signature(&foreign)),
        ("injected key", INJECTED.to_owned()),
        ("OIDC client secret", CLIENT_SECRET.to_owned()),
        ("session secret", SESSION_SECRET.to_owned()),
        ("session cookie", session[..40].to_owned()),
        ("admin token", ADMIN_TOKEN.to_owned()),
    ];
    for (where_, text) in &outputs {
        assert!(!text.is_empty(), "{where_} is empty");
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} is in {where_}:\n{text}"
            );
        }
    }
}
