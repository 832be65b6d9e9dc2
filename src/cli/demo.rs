//! `keyway demo`: the embedded demo config, and curl commands that show F1, F2, F3 (with a
//! browser-console line for the WebSocket itself), F4 (the API half and forward-auth; browser
//! sign-in needs an OpenID provider, see the README) and F5.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::process::ExitCode;

use crate::config::Source;

pub(super) const DEMO_CONFIG: &str = include_str!("demo.yaml");

pub fn demo(listen: SocketAddr, admin_listen: SocketAddr) -> ExitCode {
    let source = Source::Embedded {
        text: DEMO_CONFIG,
        base_dir: std::env::current_dir().unwrap_or_default(),
    };
    let mut loaded = match crate::pipeline::compile::load(&source) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                eprintln!("demo config: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let tokens = match demo_tokens(&std::env::current_dir().unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("demo tokens: {e}");
            return ExitCode::FAILURE;
        }
    };
    loaded.runtime.listen = vec![listen];
    if let Some(admin) = loaded.runtime.admin.as_mut() {
        admin.listen = admin_listen;
    }
    super::run::serve_then(loaded, source, |running| {
        let base = running
            .addrs
            .first()
            .map_or_else(String::new, |a| format!("http://{a}"));
        let admin = running
            .admin_addr
            .map_or_else(String::new, |a| format!("http://{a}"));
        println!("{}", instructions(&base, &admin));
        println!("{}", jwt_instructions(&base, &tokens));
    })
}

/// Tokens the demo prints: alice's, ops', and one "minted elsewhere" that carries `sub` only.
struct DemoTokens {
    alice: String,
    ops: String,
    foreign: String,
}

fn demo_tokens(base_dir: &std::path::Path) -> Result<DemoTokens, String> {
    let ttl = std::time::Duration::from_secs(3600);
    let mint = |consumer: &str, omit: &[&str]| {
        super::token::mint_from_text(DEMO_CONFIG, base_dir, consumer, ttl, &[], omit)
    };
    Ok(DemoTokens {
        alice: mint("alice", &[])?,
        ops: mint("ops", &[])?,
        foreign: mint("alice", &["key"])?,
    })
}

fn jwt_instructions(base: &str, t: &DemoTokens) -> String {
    format!(
        r#"
JWT consumers (tokens valid for one hour; mint more with: keyway token --consumer alice -c FILE):
F2: the token's "key" claim names consumer alice, whose own secret verifies it
  curl -s {base}/jwt/orders -H 'Authorization: Bearer {alice}'
F2: a token minted elsewhere carries sub but no "key" claim; the refusal lists its claims and names the setting (reason jwt.consumer_claim_missing)
  curl -s {base}/jwt/orders -H 'Authorization: Bearer {foreign}'
Consumers have their own groups: alice may not use the admin route (403, reason authz.denied)
  curl -s {base}/jwt/admin/stats -H 'Authorization: Bearer {alice}'
Consumer ops, in group admin, may
  curl -s {base}/jwt/admin/stats -H 'Authorization: Bearer {ops}'
A tampered token (reason jwt.signature_invalid), with WWW-Authenticate error="invalid_token"
  curl -si {base}/jwt/orders -H 'Authorization: Bearer {alice}x'
F3: a WebSocket handshake without its token is refused at the handshake, saying where a browser can put it (reason credentials.missing)
  curl -si {base}/live/feed -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
F3: a browser's WebSocket cannot set Authorization, so it offers alice's token as a subprotocol; open {base}/public/ in a browser and paste in its console (the first message shows what the upstream received: no token)
  new WebSocket('{ws}/live/feed', ['base64url.bearer.authorization.k8s.io.{alice_protocol}', 'demo.v1']).onmessage = (m) => console.log(m.data)

Stop with Ctrl-C."#,
        alice = t.alice,
        ops = t.ops,
        foreign = t.foreign,
        ws = base.replacen("http", "ws", 1),
        alice_protocol = URL_SAFE_NO_PAD.encode(&t.alice),
    )
}

fn instructions(base: &str, admin: &str) -> String {
    format!(
        r#"keyway demo is serving on {base} (admin {admin}). Upstreams are the builtin echo: each answer shows
what the upstream received. Try, in another terminal:

F1: a credential header with an underscore is passed, not silently dropped
  curl -s {base}/api/tickets -H 'api_access_token: demo-key-123'
F1: behind a proxy that drops '_' names (nginx does), send the hyphen twin
  curl -s {base}/api/tickets -H 'api-access-token: demo-key-123'
F1: without a credential, the refusal says where keyway looked (reason credentials.missing)
  curl -s {base}/api/tickets
A wrong key (reason api_key.invalid), with the WWW-Authenticate header
  curl -si {base}/api/tickets -H 'api-access-token: wrong'
F5: the tools upstream gets keyway's injected Authorization; the client's key is removed
  curl -s {base}/tools/search -H 'api-access-token: demo-key-123'
Authenticated but not allowed (403, reason authz.denied)
  curl -s {base}/admin/users -H 'api-access-token: demo-key-123'
Underscore headers reach the upstream; client-sent identity headers do not
  curl -s {base}/headers -H 'x_tenant_id: 42' -H 'X-Keyway-Subject: spoofed'
F4: an API call is answered 401, never redirected to a login page, even when it claims to be a browser navigation (reason credentials.missing)
  curl -si {base}/api/tickets -H 'Sec-Fetch-Mode: navigate' -H 'Accept: text/html'
F4: forward-auth, as nginx auth_request and Caddy forward_auth call it: 401 without a credential, never a redirect (reason credentials.missing)
  curl -si {base}/_keyway/auth -H 'X-Original-URL: {base}/api/tickets'
F4: forward-auth with the key: 200, and who it is in X-Auth-Request-User for the proxy to pass on
  curl -si {base}/_keyway/auth -H 'X-Original-URL: {base}/api/tickets' -H 'api-access-token: demo-key-123'
Explain any request step by step, without sending it (exit 0 allowed, 1 refused)
  keyway explain --demo GET {base}/api/tickets -H 'api_access_token: demo-key-123'
Policy tests: the demo's own cases, as an operator's CI would run them for a config
  keyway test --demo
Metrics, and the decision page (recent decisions, live; explain from a form)
  curl -s {admin}/metrics
  open {admin}/"#
    )
}
