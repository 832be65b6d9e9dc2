//! F4 (SPEC §1, §6.2, §7, §9): browser sign-in with a real OpenID provider (npm
//! `oidc-provider`), sessions in a sealed cookie or in a real Redis, the browser-or-API decision,
//! forward-auth behind real nginx and Caddy, and a real browser (Debian's chromium).

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod forward_auth;
mod proxies;
mod sessions;
mod signin;

use serde_json::{Value, json};
use support::idp::{CLIENT_ID, CLIENT_SECRET, Idp};

pub const SESSION_SECRET: &str = "f4-session-secret-0123456789abcdef-0123";

/// The provider most tests use: the default client, and the back-channel logout URI on the
/// gateway that signed the user in.
pub fn idp_config() -> Value {
    json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": ["http://127.0.0.1/callback"],
            "post_logout_redirect_uris": ["http://127.0.0.1/"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_logout_uri": "/_keyway/backchannel-logout",
            "backchannel_logout_session_required": true
        }],
        "keySeed": "f4-keys"
    })
}

/// An oidc authenticator `sso` for `idp` with the session settings `session` (YAML flow map
/// body) and more keys `extra` (YAML lines indented by four spaces).
pub fn sso(idp: &Idp, session: &str, extra: &str) -> String {
    format!(
        r#"  sso:
    type: oidc
    issuer: "{issuer}"
    client_id: {CLIENT_ID}
    client_secret: {CLIENT_SECRET}
    session: {{secret: "{SESSION_SECRET}", {session}}}
{extra}"#,
        issuer = idp.issuer
    )
}

/// A gateway config: upstream `app` at `upstream`, the authenticators `authenticators` (YAML
/// lines under `authenticators:`), the routes `routes`, and top-level `extra`.
pub fn config(upstream: &str, authenticators: &str, routes: &str, extra: &str) -> String {
    format!(
        "{extra}\nupstreams:\n  app: {{url: \"{upstream}\"}}\nauthenticators:\n{authenticators}\nroutes:\n{routes}"
    )
}
