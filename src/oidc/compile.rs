//! Config → `OidcAuth`: every problem reported at its key, all at once.

use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Location;

use super::OidcAuth;
use super::provider::{Claims, Client, Provider, TokenAuth};
use super::redirect::HostPattern;
use crate::config::file::{AuthenticatorFile, SessionStoreFile, TokenAuthFile};
use crate::pipeline::authn::jwt::compile_claim_headers;
use crate::pipeline::authn::source::Source;
use crate::pipeline::compile::Diagnostics;
use crate::secret::Secret;
use crate::session::cookie::{CookieJar, Keys, Sealer};
use crate::session::redis::RedisStore;
use crate::session::store::{Backend, Sessions};

const DEFAULT_REDIRECT_PATH: &str = "/_keyway/callback";
const DEFAULT_BACKCHANNEL_PATH: &str = "/_keyway/backchannel-logout";
const DEFAULT_COOKIE: &str = "keyway_session";
const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Every Redis command is bounded by this: a stopped Redis is a fast 503, never a hang.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

pub fn compile(
    name: &Arc<str>,
    file: &AuthenticatorFile,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<OidcAuth> {
    let before = d.errors.len();
    let err = |d: &mut Diagnostics, key: &str, msg: String| {
        d.error(Some(at), format!("{path}.{key}"), msg);
    };
    let required = |d: &mut Diagnostics, key: &str, set: bool| {
        if !set {
            d.error(
                Some(at),
                format!("{path}.{key}"),
                format!("an oidc authenticator needs {key}"),
            );
        }
    };
    required(d, "issuer", file.issuer.is_some());
    required(d, "client_id", file.client_id.is_some());
    required(d, "client_secret", file.client_secret.is_some());
    required(d, "session", file.session.is_some());

    let path_setting = |d: &mut Diagnostics, key: &str, value: Option<&str>, default: &str| {
        let p = value.unwrap_or(default).to_owned();
        if let Err(e) = crate::pipeline::canonical::route_path(&p) {
            d.error(Some(at), format!("{path}.{key}"), e);
        }
        p
    };
    let redirect_path = path_setting(
        d,
        "redirect_path",
        file.redirect_path.as_ref().map(|t| t.0.as_str()),
        DEFAULT_REDIRECT_PATH,
    );
    let backchannel_logout_path = path_setting(
        d,
        "backchannel_logout_path",
        file.backchannel_logout_path.as_ref().map(|t| t.0.as_str()),
        DEFAULT_BACKCHANNEL_PATH,
    );
    if redirect_path == backchannel_logout_path {
        err(
            d,
            "backchannel_logout_path",
            "backchannel_logout_path must differ from redirect_path".to_owned(),
        );
    }
    let public_url = file.public_url.as_ref().and_then(|u| {
        let text = u.0.trim_end_matches('/');
        match text.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some()
                    && uri.path_and_query().is_none_or(|pq| pq.as_str() == "/" || pq.as_str().is_empty()) =>
            {
                Some(text.to_owned())
            }
            _ => {
                err(
                    d,
                    "public_url",
                    format!("public_url {:?} must be an origin such as https://app.example.com (no path)", u.0),
                );
                None
            }
        }
    });
    let scopes: Vec<String> = file.scopes.as_ref().map_or_else(
        || vec!["openid".into(), "email".into(), "profile".into()],
        |s| s.iter().map(|t| t.0.clone()).collect(),
    );
    if !scopes.iter().any(|s| s == "openid") {
        err(
            d,
            "scopes",
            "scopes must include openid (the ID token)".to_owned(),
        );
    }
    if scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        err(d, "scopes", "a scope is one word".to_owned());
    }
    let allowed_redirect_hosts: Vec<HostPattern> = file
        .allowed_redirect_hosts
        .iter()
        .flatten()
        .filter_map(|h| match HostPattern::parse(&h.0) {
            Ok(p) => Some(p),
            Err(e) => {
                err(d, "allowed_redirect_hosts", e);
                None
            }
        })
        .collect();
    let claims_to_headers = compile_claim_headers(file, &[], &mut |k, m| err(d, k, m));
    let sessions = file.session.as_ref().and_then(|s| {
        let secret = s.secret.as_ref().map(|t| t.0.expose().clone());
        let Some(secret) = secret else {
            err(
                d,
                "session.secret",
                "session.secret is required (at least 32 bytes): it seals the session and the sign-in state".to_owned(),
            );
            return None;
        };
        let old: Vec<String> = s
            .old_secrets
            .iter()
            .flatten()
            .map(|t| t.0.expose().clone())
            .collect();
        let old_refs: Vec<&[u8]> = old.iter().map(String::as_bytes).collect();
        let keys = match Keys::new(secret.as_bytes(), &old_refs) {
            Ok(k) => k,
            Err(e) => {
                err(d, "session.secret", format!("{e} (e.g. `openssl rand -base64 32`)"));
                return None;
            }
        };
        let cookie = s
            .cookie
            .as_ref()
            .map_or_else(|| DEFAULT_COOKIE.to_owned(), |c| c.0.clone());
        if let Err(e) = CookieJar::new(&cookie, "/", false) {
            err(d, "session.cookie", e);
            return None;
        }
        let backend = match s.store {
            SessionStoreFile::Cookie => {
                if s.url.is_some() {
                    err(d, "session.url", "session.url is for store: redis".to_owned());
                }
                Backend::Cookie
            }
            SessionStoreFile::Redis => {
                let Some(url) = &s.url else {
                    err(d, "session.url", "store: redis needs url: redis://host:port".to_owned());
                    return None;
                };
                match RedisStore::new(url.0.expose(), &format!("keyway:{name}:"), REDIS_TIMEOUT) {
                    Ok(store) => Backend::Redis(Box::new(store)),
                    Err(e) => {
                        err(d, "session.url", e);
                        return None;
                    }
                }
            }
        };
        let ttl = s.ttl.map_or(DEFAULT_TTL, |t| t.0);
        if ttl.is_zero() {
            err(d, "session.ttl", "session.ttl must be longer than 0s".to_owned());
        }
        Some(Sessions::new(name, cookie, Sealer::new(keys), backend, ttl))
    });
    let provider = match (&file.issuer, &file.client_id, &file.client_secret) {
        (Some(issuer), Some(id), Some(secret)) => {
            let client = Client {
                id: id.0.clone(),
                secret: Secret::new(secret.0.expose().clone()),
                auth: match file.token_auth {
                    Some(TokenAuthFile::ClientSecretPost) => TokenAuth::ClientSecretPost,
                    _ => TokenAuth::ClientSecretBasic,
                },
            };
            let claims = Claims {
                identity_claim: file
                    .identity_claim
                    .as_ref()
                    .map_or_else(|| "sub".to_owned(), |c| c.0.clone()),
                groups_claim: file
                    .groups_claim
                    .as_ref()
                    .map_or_else(|| "groups".to_owned(), |c| c.0.clone()),
                to_headers: claims_to_headers.clone(),
                leeway: file.leeway.map_or(DEFAULT_LEEWAY, |l| l.0),
            };
            match Provider::new(name, &issuer.0, client, claims) {
                Ok(p) => Some(p),
                Err(e) => {
                    err(d, "issuer", e);
                    None
                }
            }
        }
        _ => None,
    };
    if d.errors.len() > before {
        return None;
    }
    let sessions = sessions?;
    let source = Source::Cookie {
        cookie: sessions.cookie_name().to_owned(),
        label: format!("session cookie {}", sessions.cookie_name()).into(),
    };
    let auth = OidcAuth {
        name_header: crate::pipeline::authn::name_header(name),
        name: name.clone(),
        provider: provider?,
        sessions,
        source,
        scopes: scopes.join(" "),
        redirect_path,
        backchannel_logout_path,
        public_url,
        pass_access_token: file.pass_access_token.unwrap_or(false),
        pass_id_token: file.pass_id_token.unwrap_or(false),
        allowed_redirect_hosts,
        claims_to_headers,
        refresh: Default::default(),
        signins: Default::default(),
    };
    // Under a running server (a reload) discovery starts now; otherwise at server start.
    auth.start();
    Some(auth)
}
