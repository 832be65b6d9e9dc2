//! The compiled, immutable configuration requests are served with. Swapped whole on reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::file::{DetailLevel, OnUnauthenticated};
use crate::pipeline::authn::Authenticator;
use crate::pipeline::authz::Allow;
use crate::pipeline::canonical::PathPolicy;
use crate::pipeline::endpoints::Endpoints;
use crate::pipeline::headers::HeaderPolicy;
use crate::pipeline::router::{Matcher, Router};
use crate::pipeline::upstream::pool::Pool;
use crate::secret::Secret;

#[derive(Debug)]
pub struct Runtime {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `None`: one worker per core.
    pub workers: Option<usize>,
    pub admin: Option<Admin>,
    pub headers: HeaderPolicy,
    pub paths: PathPolicy,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub detail: DetailLevel,
    /// Where access lines go; `None`: no access log.
    pub access_log: Option<AccessLogDestination>,
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
    pub authenticators: Vec<Arc<Authenticator>>,
    /// keyway's own endpoints (`/_keyway/…`, oidc callback and back-channel paths).
    pub endpoints: Endpoints,
}

impl Runtime {
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub fn is_ready(&self) -> bool {
        self.authenticators.iter().all(|a| a.is_ready())
    }

    /// What keeps keyway from being ready: each authenticator not loaded yet, and why.
    pub fn not_ready(&self) -> Vec<String> {
        self.authenticators
            .iter()
            .filter_map(|a| {
                a.not_ready_because()
                    .map(|why| format!("authenticator {}: {why}", a.name()))
            })
            .collect()
    }
}

#[derive(Debug)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token: Option<Secret<String>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Arc<[String]>,
    /// `name`, and `groups` joined with commas, as identity header values: built once here
    /// rather than on every request.
    pub name_value: Option<HeaderValue>,
    pub groups_value: Option<HeaderValue>,
}

impl Consumer {
    pub fn new(name: &str, groups: Vec<String>) -> Self {
        let groups_value = (!groups.is_empty())
            .then(|| HeaderValue::from_str(&groups.join(",")).ok())
            .flatten();
        Consumer {
            name: Arc::from(name),
            groups: Arc::from(groups),
            name_value: HeaderValue::from_str(name).ok(),
            groups_value,
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub upstream: Arc<Upstream>,
    pub auth: Vec<Arc<Authenticator>>,
    pub allow: Option<Allow>,
    pub on_unauthenticated: OnUnauthenticated,
    pub forward_client_credentials: bool,
    pub strip_prefix: bool,
    /// `preflight: pass`: CORS preflights skip authentication.
    pub preflight_pass: bool,
    pub websocket: crate::websocket::Settings,
    /// A multiplexer endpoint (keyway.mux.v1) rather than a proxied route.
    pub mux: Option<crate::websocket::MuxSettings>,
}

impl Route {
    /// The oidc authenticator an unauthenticated browser signs in with: the route's first.
    pub fn sign_in(&self) -> Option<&crate::oidc::OidcAuth> {
        self.auth.iter().find_map(|a| a.as_oidc())
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    Http {
        scheme: Scheme,
        authority: Authority,
        base_path: String,
        /// Connections, shared by every worker.
        pool: Arc<Pool>,
    },
    Echo,
    /// A multiplexer route's streams go to the routes their paths match.
    Mux,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub target: Target,
    pub timeouts: Timeouts,
    /// Headers set on every request to this upstream; values are secrets.
    pub inject: Vec<(HeaderName, Secret<HeaderValue>)>,
    pub probe_path: String,
}

impl Upstream {
    /// `scheme://authority` for messages (never with credentials).
    pub fn origin(&self) -> String {
        match &self.target {
            Target::Http {
                scheme, authority, ..
            } => format!("{scheme}://{authority}"),
            Target::Echo => "builtin:echo".to_owned(),
            Target::Mux => "keyway:mux".to_owned(),
        }
    }
}

/// Where the access log is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogDestination {
    Stderr,
    /// Appended to; reopened on SIGUSR1 (after logrotate moved it).
    File(PathBuf),
}
