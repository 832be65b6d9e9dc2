//! Validation (every error at once, each with its place) and compilation of the config file
//! into the `Runtime` the stages read; pitfall warnings (`lint`).

pub mod lint;
mod upstream_tls;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use crate::config::file::{
    AccessLogFile, AuthenticatorFile, AuthenticatorType, ConsumerFile, FileConfig,
    OnUnauthenticated, RouteFile, SpellingFile, UpstreamFile, UpstreamTlsFile, Workers,
};
use crate::config::types::Text;
use crate::config::{ConfigError, Source as ConfigSource, Warning};
use crate::pipeline::authn::source::Source;
use crate::pipeline::authn::{Authenticator, api_key, jwt};
use crate::pipeline::authz::Allow;
use crate::pipeline::canonical::{PathPolicy, Spelling};
use crate::pipeline::endpoints::Endpoints;
use crate::pipeline::headers::{HeaderPolicy, fold};
use crate::pipeline::router::{HostMatch, Matcher, PathMatch, Router};
use crate::pipeline::runtime::{
    AccessLogDestination, Admin, Consumer, Limits, Route, Runtime, Target, Timeouts, Upstream,
};
use crate::pipeline::upstream::pool::Pool;
use crate::secret::Secret;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub struct Loaded {
    pub runtime: Runtime,
    pub warnings: Vec<Warning>,
    /// The config as written, for warnings that name their places (`check --token`, probes).
    pub file: FileConfig,
}

pub fn load(source: &ConfigSource) -> Result<Loaded, Vec<ConfigError>> {
    match source {
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigError {
                    message: format!("cannot read {}: {e}", path.display()),
                    path: String::new(),
                    line: 0,
                    column: 0,
                }]
            })?;
            let dir = path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            load_str(&text, &dir)
        }
        ConfigSource::Embedded { text, base_dir } => load_str(text, base_dir),
    }
}

pub fn load_str(text: &str, base_dir: &Path) -> Result<Loaded, Vec<ConfigError>> {
    crate::config::interpolate::with_base_dir(base_dir, || {
        let file = crate::config::parse(text).map_err(|e| vec![e])?;
        let (runtime, warnings) = compile(&file)?;
        Ok(Loaded {
            runtime,
            warnings,
            file,
        })
    })
}

/// Collects errors and warnings while compiling.
#[derive(Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl Diagnostics {
    pub fn error(
        &mut self,
        at: Option<&Location>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = at.map_or((0, 0), |l| (l.line() as u32, l.column() as u32));
        self.errors.push(ConfigError {
            message: message.into(),
            path: path.into(),
            line,
            column,
        });
    }

    /// Adds a warning; chain `.at(..)` for its place and `.fix(..)` for the remedy.
    pub fn warn(&mut self, code: &'static str, message: impl Into<String>) -> &mut Warning {
        self.warnings.push(Warning {
            code,
            message: message.into(),
            path: String::new(),
            line: 0,
            column: 0,
            fix: String::new(),
        });
        let last = self.warnings.len() - 1;
        &mut self.warnings[last]
    }
}

/// A consumer as written, with its compiled form; authenticators pick what they need.
pub struct ConsumerEntry<'a> {
    pub file: &'a ConsumerFile,
    pub at: &'a Location,
    pub index: usize,
    pub runtime: Arc<Consumer>,
}

pub fn compile(file: &FileConfig) -> Result<(Runtime, Vec<Warning>), Vec<ConfigError>> {
    let mut d = Diagnostics::default();
    let listen = compile_listen(file, &mut d);
    let tls = file
        .tls
        .as_ref()
        .and_then(|t| compile_tls(&t.value.cert.0, &t.value.key.0, &t.referenced, &mut d));
    let workers = file.workers.as_ref().and_then(|w| match &w.value {
        Workers::Count(0) => {
            d.error(
                Some(&w.referenced),
                "workers",
                "workers must be at least 1, or auto",
            );
            None
        }
        Workers::Count(n) => Some(*n),
        Workers::Auto(t) if t.0 == "auto" => None,
        Workers::Auto(t) => {
            d.error(
                Some(&w.referenced),
                "workers",
                format!("workers must be a number or auto, not {:?}", t.0),
            );
            None
        }
    });
    let admin = file.admin.as_ref().and_then(|a| {
        let listen = parse_addr(
            &a.listen.value.0,
            Some(&a.listen.referenced),
            "admin.listen",
            &mut d,
        )?;
        let token = a
            .token
            .as_ref()
            .filter(|t| !t.0.expose().is_empty())
            .map(|t| Secret::new(t.0.expose().clone()));
        Some(Admin { listen, token })
    });
    let trusted_proxies = compile_trusted(file, &mut d);
    let upstreams = compile_upstreams(file, &mut d);
    let consumers = compile_consumers(file, &mut d);
    let authenticators = compile_authenticators(file, &consumers, &mut d);
    let routes = compile_routes(file, &upstreams, &authenticators, &mut d);
    lint::routes(file, &routes, &mut d);
    let headers = compile_header_policy(file, &upstreams, &authenticators);
    if file.routes.is_empty() {
        d.error(
            None,
            "routes",
            "the config has no routes: every request would be refused with 404 route.none; add at least one route (a public one says auth: [])",
        );
    }
    let access_log = compile_access_log(file.access_log.as_ref(), &mut d);
    lint::check(file, &mut d);
    if !d.errors.is_empty() {
        return Err(d.errors);
    }
    let limits = Limits {
        header_read_timeout: file
            .limits
            .header_read_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        shutdown_grace: file
            .limits
            .shutdown_grace
            .map_or(Duration::from_secs(30), |d| d.0),
    };
    let runtime = Runtime {
        listen,
        tls,
        workers,
        admin,
        headers,
        paths: PathPolicy {
            encoded_slashes: spelling(file.paths.encoded_slashes),
            semicolons: spelling(file.paths.semicolons),
        },
        limits,
        trusted_proxies,
        detail: file.errors.detail,
        access_log,
        router: Router::new(routes),
        upstreams: upstreams.into_values().collect(),
        endpoints: Endpoints::new(&authenticators.values().cloned().collect::<Vec<_>>()),
        authenticators: authenticators.into_values().collect(),
    };
    Ok((runtime, d.warnings))
}

fn spelling(s: SpellingFile) -> Spelling {
    match s {
        SpellingFile::Reject => Spelling::Reject,
        SpellingFile::Keep => Spelling::Keep,
    }
}

fn parse_addr(
    text: &str,
    at: Option<&Location>,
    path: &str,
    d: &mut Diagnostics,
) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(
                at,
                path,
                format!("{text:?} is not an address like 127.0.0.1:8080 or [::1]:8080"),
            );
            None
        }
    }
}

fn compile_listen(file: &FileConfig, d: &mut Diagnostics) -> Vec<SocketAddr> {
    let (texts, at): (Vec<String>, Option<&Location>) = match &file.listen {
        None => (vec![DEFAULT_LISTEN.to_owned()], None),
        Some(l) => (
            l.value
                .clone()
                .into_vec()
                .into_iter()
                .map(|t| t.0)
                .collect(),
            Some(&l.referenced),
        ),
    };
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| parse_addr(t, at, &format!("listen[{i}]"), d))
        .collect()
}

/// Where access lines go. A file is opened (created) now, as nginx does when checking its
/// config, so that a path keyway cannot write is an error before any traffic.
fn compile_access_log(
    file: Option<&Spanned<AccessLogFile>>,
    d: &mut Diagnostics,
) -> Option<AccessLogDestination> {
    let Some(spanned) = file else {
        return Some(AccessLogDestination::Stderr);
    };
    match &spanned.value {
        AccessLogFile::On(true) => Some(AccessLogDestination::Stderr),
        AccessLogFile::On(false) => None,
        AccessLogFile::To(to) => {
            let path = crate::config::interpolate::resolve_path(&to.path.0);
            if let Err(e) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                d.error(
                    Some(&spanned.referenced),
                    "access_log.path",
                    format!("cannot open {} for appending: {e}", path.display()),
                );
            }
            Some(AccessLogDestination::File(path))
        }
    }
}

fn compile_tls(
    cert: &str,
    key: &str,
    at: &Location,
    d: &mut Diagnostics,
) -> Option<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = crate::config::interpolate::resolve_path(cert);
    let key_path = crate::config::interpolate::resolve_path(key);
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(&cert_path).and_then(|it| it.collect());
    let certs = match certs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            d.error(
                Some(at),
                "tls.cert",
                format!("{} holds no certificate", cert_path.display()),
            );
            return None;
        }
        Err(e) => {
            d.error(
                Some(at),
                "tls.cert",
                format!("cannot read {}: {e}", cert_path.display()),
            );
            return None;
        }
    };
    let key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(k) => k,
        Err(e) => {
            d.error(
                Some(at),
                "tls.key",
                format!("cannot read {}: {e}", key_path.display()),
            );
            return None;
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| e.to_string())
        });
    match config {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(Arc::new(c))
        }
        Err(e) => {
            d.error(Some(at), "tls", format!("TLS setup failed: {e}"));
            None
        }
    }
}

fn compile_trusted(file: &FileConfig, d: &mut Diagnostics) -> Vec<IpNet> {
    let Some(spanned) = &file.trusted_proxies else {
        return ["127.0.0.1/32", "::1/128"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
    };
    spanned
        .value
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let text = t.0.as_str();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net),
                Err(_) => {
                    d.error(
                        Some(&spanned.referenced),
                        format!("trusted_proxies[{i}]"),
                        format!("{text:?} is not an IP address or CIDR range"),
                    );
                    None
                }
            }
        })
        .collect()
}

fn compile_upstreams(file: &FileConfig, d: &mut Diagnostics) -> BTreeMap<String, Arc<Upstream>> {
    let mut out = BTreeMap::new();
    for (name, spanned) in &file.upstreams {
        let path = format!("upstreams.{name}");
        if let Some(u) = compile_upstream(name, &spanned.value, &spanned.referenced, &path, d) {
            out.insert(name.clone(), Arc::new(u));
        }
    }
    out
}

fn compile_upstream(
    name: &str,
    u: &UpstreamFile,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<Upstream> {
    let timeouts = Timeouts {
        connect: u.timeouts.connect.map_or(Duration::from_secs(2), |t| t.0),
        request: u.timeouts.request.map_or(Duration::from_secs(60), |t| t.0),
        idle: u.timeouts.idle.map_or(Duration::from_secs(90), |t| t.0),
    };
    let target = match (&u.url, &u.builtin) {
        (Some(url), None) => parse_upstream_url(&url.0, u.tls.as_ref(), &timeouts, at, path, d)?,
        (None, Some(b)) if b.0 == "echo" => Target::Echo,
        (None, Some(b)) => {
            d.error(
                Some(at),
                format!("{path}.builtin"),
                format!("unknown builtin {:?}; the builtin upstream is echo", b.0),
            );
            return None;
        }
        (Some(_), Some(_)) => {
            d.error(Some(at), path, "set either url or builtin, not both");
            return None;
        }
        (None, None) => {
            d.error(Some(at), path, "an upstream needs a url (or builtin: echo)");
            return None;
        }
    };
    let mut inject = Vec::new();
    for (header, value) in &u.inject {
        let Ok(hn) = HeaderName::from_bytes(header.as_bytes()) else {
            d.error(
                Some(at),
                format!("{path}.inject"),
                format!("{header:?} is not a valid header name"),
            );
            continue;
        };
        match HeaderValue::from_str(value.0.expose()) {
            Ok(mut v) => {
                v.set_sensitive(true);
                inject.push((hn, Secret::new(v)));
            }
            // Never echo the value: it is a secret.
            Err(_) => d.error(
                Some(at),
                format!("{path}.inject.{header}"),
                "the value is not a valid header value (control characters or newlines?)",
            ),
        }
    }
    Some(Upstream {
        name: Arc::from(name),
        target,
        timeouts,
        inject,
        probe_path: u
            .probe_path
            .as_ref()
            .map_or("/".to_owned(), |p| p.0.clone()),
    })
}

fn parse_upstream_url(
    url: &str,
    tls: Option<&UpstreamTlsFile>,
    timeouts: &Timeouts,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<Target> {
    let tls_path = format!("{path}.tls");
    let path = format!("{path}.url");
    let Ok(uri) = url.parse::<http::Uri>() else {
        d.error(Some(at), path, format!("{url:?} is not a URL"));
        return None;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        d.error(
            Some(at),
            path,
            format!("{url:?} needs a scheme and host, like http://127.0.0.1:3000"),
        );
        return None;
    };
    if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
        d.error(
            Some(at),
            path,
            format!("{url:?}: an upstream url is http:// or https://"),
        );
        return None;
    }
    if uri.query().is_some() || authority.as_str().contains('@') {
        d.error(
            Some(at),
            path,
            format!("{url:?}: an upstream url has no query or user info"),
        );
        return None;
    }
    let tls = if *scheme == Scheme::HTTPS {
        Some(upstream_tls::compile(tls, authority, at, &tls_path, d)?)
    } else {
        if tls.is_some() {
            d.error(
                Some(at),
                tls_path,
                format!("tls is for https:// upstreams, and {url:?} is http://"),
            );
        }
        None
    };
    Some(Target::Http {
        scheme: scheme.clone(),
        authority: authority.clone(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        pool: Pool::new(authority, timeouts, tls),
    })
}

fn compile_consumers(
    file: &FileConfig,
    d: &mut Diagnostics,
) -> Vec<(Arc<Consumer>, Vec<[u8; 32]>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, spanned) in file.consumers.iter().enumerate() {
        let c = &spanned.value;
        let path = format!("consumers[{i}]");
        if c.name.0.is_empty() {
            d.error(
                Some(&spanned.referenced),
                format!("{path}.name"),
                "a consumer needs a name",
            );
        } else if !seen.insert(c.name.0.clone()) {
            d.error(
                Some(&spanned.referenced),
                format!("{path}.name"),
                format!("duplicate consumer name {:?}", c.name.0),
            );
        }
        let mut hashes = Vec::new();
        for (k, key) in c.api_keys.iter().enumerate() {
            let text = key.0.expose();
            if let Some(hex_part) = text.strip_prefix("sha256:") {
                match hex::decode(hex_part) {
                    Ok(bytes) if bytes.len() == 32 => {
                        let mut h = [0u8; 32];
                        h.copy_from_slice(&bytes);
                        hashes.push(h);
                    }
                    _ => d.error(
                        Some(&spanned.referenced),
                        format!("{path}.api_keys[{k}]"),
                        "a sha256: key must be 64 hex digits (see `keyway hash-key`)",
                    ),
                }
            } else if text.is_empty() {
                d.error(
                    Some(&spanned.referenced),
                    format!("{path}.api_keys[{k}]"),
                    "empty API key",
                );
            } else {
                d.warn(
                    "plaintext_api_key",
                    format!(
                        "{path}.api_keys[{k}] (consumer {}) is plaintext: anyone who reads the config can use it",
                        c.name.0
                    ),
                )
                .at(Some(&spanned.referenced), format!("{path}.api_keys[{k}]"))
                .fix("store the output of `keyway hash-key KEY` (sha256:…) instead of the key");
                hashes.push(api_key::hash_key(text));
            }
        }
        let consumer = Arc::new(Consumer::new(
            &c.name.0,
            c.groups.iter().map(|g| g.0.clone()).collect(),
        ));
        out.push((consumer, hashes));
    }
    let mut all_keys = HashSet::new();
    for (consumer, hashes) in &out {
        for h in hashes {
            if !all_keys.insert(*h) {
                d.error(
                    None,
                    "consumers",
                    format!(
                        "consumer {} shares an API key with another consumer",
                        consumer.name
                    ),
                );
            }
        }
    }
    out
}

fn compile_authenticators(
    file: &FileConfig,
    consumers: &[(Arc<Consumer>, Vec<[u8; 32]>)],
    d: &mut Diagnostics,
) -> BTreeMap<String, Arc<Authenticator>> {
    let entries: Vec<ConsumerEntry<'_>> = file
        .consumers
        .iter()
        .zip(consumers)
        .enumerate()
        .map(|(index, (spanned, (runtime, _)))| ConsumerEntry {
            file: &spanned.value,
            at: &spanned.referenced,
            index,
            runtime: runtime.clone(),
        })
        .collect();
    let mut out = BTreeMap::new();
    for (name, spanned) in &file.authenticators {
        let a = &spanned.value;
        let at = &spanned.referenced;
        let path = format!("authenticators.{name}");
        let valid = a.kind.keys();
        let mut misplaced = false;
        for key in a.set_keys() {
            if !valid.contains(&key) {
                d.error(
                    Some(at),
                    format!("{path}.{key}"),
                    format!(
                        "{key} is not a setting of {} authenticators (valid: {})",
                        a.kind.as_str(),
                        valid.join(", ")
                    ),
                );
                misplaced = true;
            }
        }
        if misplaced {
            continue;
        }
        let name_arc: Arc<str> = Arc::from(name.as_str());
        let compiled = match a.kind {
            AuthenticatorType::ApiKey => {
                compile_api_key(&name_arc, a, at, &path, consumers, d).map(Authenticator::ApiKey)
            }
            AuthenticatorType::Jwt => {
                jwt::compile(&name_arc, a, at, &path, &entries, d).map(Authenticator::Jwt)
            }
            AuthenticatorType::Oidc => crate::oidc::compile::compile(&name_arc, a, at, &path, d)
                .map(|o| Authenticator::Oidc(Box::new(o))),
        };
        if let Some(c) = compiled {
            out.insert(name.clone(), Arc::new(c));
        }
    }
    out
}

/// `from: [...]` as sources, or `default` when absent.
pub fn compile_sources(
    from: Option<&Vec<Text>>,
    default: &[&str],
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Vec<Source> {
    let specs: Vec<String> = match from {
        Some(list) => list.iter().map(|t| t.0.clone()).collect(),
        None => default.iter().map(|s| (*s).to_owned()).collect(),
    };
    if specs.is_empty() {
        d.error(Some(at), format!("{path}.from"), "from: lists no sources");
    }
    specs
        .iter()
        .filter_map(|s| match Source::parse(s) {
            Ok(src) => Some(src),
            Err(e) => {
                d.error(Some(at), format!("{path}.from"), e);
                None
            }
        })
        .collect()
}

fn compile_api_key(
    name: &Arc<str>,
    a: &AuthenticatorFile,
    at: &Location,
    path: &str,
    consumers: &[(Arc<Consumer>, Vec<[u8; 32]>)],
    d: &mut Diagnostics,
) -> Option<api_key::ApiKeyAuth> {
    let sources = match (&a.header, &a.from) {
        (Some(_), Some(_)) => {
            d.error(Some(at), path, "set header or from, not both");
            return None;
        }
        (Some(h), None) => match Source::header(&h.0) {
            Ok(s) => vec![s],
            Err(e) => {
                d.error(Some(at), format!("{path}.header"), e);
                return None;
            }
        },
        (None, from) => compile_sources(from.as_ref(), &["header:x-api-key"], at, path, d),
    };
    let keys = api_key::KeyTable::new(
        consumers
            .iter()
            .flat_map(|(c, hashes)| hashes.iter().map(move |h| (*h, c.clone()))),
    );
    if keys.is_empty() {
        d.warn(
            "api_key_without_keys",
            format!("authenticator {name}: no consumer has api_keys, so every key is refused"),
        )
        .at(Some(at), path)
        .fix("give a consumer api_keys (sha256: hashes from `keyway hash-key`)");
    }
    Some(api_key::ApiKeyAuth {
        name_header: crate::pipeline::authn::name_header(name),
        name: name.clone(),
        sources,
        keys,
    })
}

fn compile_routes(
    file: &FileConfig,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    authenticators: &BTreeMap<String, Arc<Authenticator>>,
    d: &mut Diagnostics,
) -> Vec<Arc<Route>> {
    let mut names = HashSet::new();
    let mut out: Vec<(Arc<Route>, &Spanned<RouteFile>)> = Vec::new();
    for (i, spanned) in file.routes.iter().enumerate() {
        let r = &spanned.value;
        let at = &spanned.referenced;
        let path = format!("routes[{i}]");
        if !names.insert(r.name.value.0.clone()) {
            d.error(
                Some(&r.name.referenced),
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name.value.0),
            );
        }
        let Some(route) = compile_route(r, at, &path, upstreams, authenticators, file, d) else {
            continue;
        };
        for (other, other_span) in &out {
            if route.matcher.ties_with(&other.matcher) {
                d.error(
                    Some(at),
                    format!("{path}.match"),
                    format!(
                        "routes {:?} and {:?} (line {}) match exactly the same requests; make one more specific",
                        other.name, route.name, other_span.referenced.line()
                    ),
                );
            }
        }
        out.push((Arc::new(route), spanned));
    }
    out.into_iter().map(|(r, _)| r).collect()
}

fn compile_route(
    r: &RouteFile,
    at: &Location,
    path: &str,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    authenticators: &BTreeMap<String, Arc<Authenticator>>,
    file: &FileConfig,
    d: &mut Diagnostics,
) -> Option<Route> {
    let declared = &file.authenticators;
    let before = d.errors.len();
    let matcher = compile_matcher(r, at, path, d);
    let mux = compile_mux(r, at, path, d);
    let upstream = match &r.upstream {
        // A multiplexer's streams go to the routes their paths match.
        None if mux.is_some() => Some(Arc::new(Upstream {
            name: Arc::from("mux"),
            target: Target::Mux,
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(60),
                idle: Duration::from_secs(90),
            },
            inject: Vec::new(),
            probe_path: "/".to_owned(),
        })),
        Some(name) if mux.is_some() => {
            d.error(
                Some(&name.referenced),
                format!("{path}.upstream"),
                "a mux route has no upstream: each stream goes to the route its path matches",
            );
            None
        }
        None => {
            d.error(
                Some(at),
                format!("{path}.upstream"),
                format!("route {:?} has no upstream", r.name.value.0),
            );
            None
        }
        Some(name) => match upstreams.get(&name.value.0) {
            Some(u) => Some(u.clone()),
            // One that is declared but failed to compile has been reported already.
            None if file.upstreams.contains_key(&name.value.0) => None,
            None => {
                let known: Vec<&str> = file.upstreams.keys().map(String::as_str).collect();
                d.error(
                    Some(&name.referenced),
                    format!("{path}.upstream"),
                    unknown("upstream", &name.value.0, &known),
                );
                None
            }
        },
    };
    let mut auth = Vec::new();
    match &r.auth {
        None => d.error(
            Some(at),
            format!("{path}.auth"),
            format!(
                "route {:?} has no auth; list authenticators, or write auth: [] for a public route",
                r.name.value.0
            ),
        ),
        Some(list) => {
            for (k, name) in list.iter().enumerate() {
                match authenticators.get(&name.value.0) {
                    Some(a) => auth.push(a.clone()),
                    // One that is declared but failed to compile has been reported already.
                    None if declared.contains_key(&name.value.0) => {}
                    None => {
                        let known: Vec<&str> = declared.keys().map(String::as_str).collect();
                        d.error(
                            Some(&name.referenced),
                            format!("{path}.auth[{k}]"),
                            unknown("authenticator", &name.value.0, &known),
                        );
                    }
                }
            }
        }
    }
    if let Some(a) = &r.allow {
        let known: Vec<&str> = file
            .consumers
            .iter()
            .map(|c| c.value.name.0.as_str())
            .collect();
        for (k, name) in a.consumers.iter().enumerate() {
            if !known.contains(&name.value.0.as_str()) {
                d.error(
                    Some(&name.referenced),
                    format!("{path}.allow.consumers[{k}]"),
                    unknown("consumer", &name.value.0, &known),
                );
            }
        }
    }
    let allow = r.allow.as_ref().map(|a| Allow {
        consumers: a.consumers.iter().map(|t| t.value.0.clone()).collect(),
        groups: a.groups.iter().map(|t| t.0.clone()).collect(),
        claims: a
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        email_domains: a
            .email_domains
            .iter()
            .map(|t| t.0.trim_start_matches('@').to_ascii_lowercase())
            .collect(),
    });
    if allow.is_some() && r.auth.as_ref().is_some_and(Vec::is_empty) {
        d.error(
            Some(at),
            format!("{path}.allow"),
            "allow needs authentication: this route has auth: []",
        );
    }
    let on_unauthenticated = r.on_unauthenticated.unwrap_or_default();
    let has_oidc = auth.iter().any(|a| a.as_oidc().is_some());
    if on_unauthenticated == OnUnauthenticated::Redirect && !has_oidc {
        d.error(
            Some(at),
            format!("{path}.on_unauthenticated"),
            format!(
                "redirect sends browsers to an oidc authenticator's sign-in, and route {:?} lists none in auth",
                r.name.value.0
            ),
        );
    }
    // SPEC §11: an upstream gets one Authorization; keyway will not pick between two.
    if let Some(upstream) = &upstream {
        let injects_authorization = upstream
            .inject
            .iter()
            .any(|(n, _)| n == http::header::AUTHORIZATION);
        for a in auth.iter().filter_map(|a| a.as_oidc()) {
            if a.pass_access_token && injects_authorization {
                d.error(
                    Some(at),
                    format!("{path}.auth"),
                    format!(
                        "authenticator {} passes the access token as Authorization, and upstream {} injects Authorization too; drop one",
                        a.name, upstream.name
                    ),
                );
            }
        }
    }
    if r.strip_prefix && r.matcher.path_prefix.is_none() {
        d.error(
            Some(at),
            format!("{path}.strip_prefix"),
            "strip_prefix needs match.path_prefix",
        );
    }
    if d.errors.len() > before {
        return None;
    }
    Some(Route {
        name: Arc::from(r.name.value.0.as_str()),
        matcher: matcher?,
        // Missing only when an error was reported: the config is refused then.
        upstream: upstream?,
        auth,
        allow,
        on_unauthenticated,
        // A multiplexer presents the connection's credential again for every stream.
        forward_client_credentials: r.forward_client_credentials || mux.is_some(),
        strip_prefix: r.strip_prefix,
        preflight_pass: r.preflight == crate::config::file::PreflightFile::Pass,
        websocket: compile_websocket(r, at, path, d),
        mux,
    })
}

fn compile_websocket(
    r: &RouteFile,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> crate::websocket::Settings {
    let Some(w) = &r.websocket else {
        return crate::websocket::Settings::default();
    };
    let mut allowed_origins = Vec::new();
    for o in &w.allowed_origins {
        let lower = o.0.trim_end_matches('/').to_ascii_lowercase();
        let valid = lower
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && u.path_and_query().is_none_or(|pq| pq.as_str() == "/")
            })
            .is_some();
        if valid {
            allowed_origins.push(lower);
        } else {
            d.error(
                Some(at),
                format!("{path}.websocket.allowed_origins"),
                format!("{:?} is not an origin such as https://app.example.com", o.0),
            );
        }
    }
    crate::websocket::Settings {
        allowed_origins,
        refuse_with: match w.refuse_with {
            crate::config::file::RefuseWithFile::Status => crate::websocket::RefuseWith::Status,
            crate::config::file::RefuseWithFile::Close => crate::websocket::RefuseWith::Close,
        },
    }
}

fn compile_mux(
    r: &RouteFile,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<crate::websocket::MuxSettings> {
    let defaults = crate::websocket::MuxSettings::default();
    match r.mux.as_ref()? {
        crate::config::file::MuxFile::On(false) => None,
        crate::config::file::MuxFile::On(true) => Some(defaults),
        crate::config::file::MuxFile::Settings(s) => {
            let settings = crate::websocket::MuxSettings {
                max_streams: s.max_streams.unwrap_or(defaults.max_streams),
                max_frame_bytes: s.max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
                grace: s.grace.map_or(defaults.grace, |g| g.0),
            };
            if settings.max_streams == 0 || settings.max_frame_bytes < 1024 {
                d.error(
                    Some(at),
                    format!("{path}.mux"),
                    "mux.max_streams must be at least 1 and mux.max_frame_bytes at least 1024",
                );
            }
            Some(settings)
        }
    }
}

fn compile_matcher(
    r: &RouteFile,
    at: &Location,
    path: &str,
    d: &mut Diagnostics,
) -> Option<Matcher> {
    let m = &r.matcher;
    let path_match = match (&m.path, &m.path_prefix) {
        (Some(_), Some(_)) => {
            d.error(
                Some(at),
                format!("{path}.match"),
                "set path or path_prefix, not both",
            );
            return None;
        }
        (Some(p), None) => PathMatch::Exact(p.0.clone()),
        (None, Some(p)) => PathMatch::Prefix(p.0.clone()),
        (None, None) => PathMatch::Prefix("/".to_owned()),
    };
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &path_match;
    // Requests are routed on their canonical path: a route written otherwise could never match,
    // or match a spelling upstreams read as another path.
    if let Err(message) = crate::pipeline::canonical::route_path(p) {
        d.error(Some(at), format!("{path}.match"), message);
    }
    let host = match &m.host {
        None => HostMatch::Any,
        Some(h) => match h.0.strip_prefix("*.") {
            Some(rest) => HostMatch::Suffix(format!(".{}", rest.to_ascii_lowercase())),
            None => HostMatch::Exact(h.0.to_ascii_lowercase()),
        },
    };
    let mut methods = Vec::new();
    for mtext in m.methods.iter().flatten() {
        match Method::from_bytes(mtext.0.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => d.error(
                Some(at),
                format!("{path}.match.methods"),
                format!("{:?} is not an HTTP method", mtext.0),
            ),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in m.headers.iter().flatten() {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value.0),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => d.error(
                Some(at),
                format!("{path}.match.headers"),
                format!("{name:?} is not a valid header match"),
            ),
        }
    }
    Some(Matcher {
        host,
        path: path_match,
        methods,
        headers,
    })
}

fn compile_header_policy(
    file: &FileConfig,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    authenticators: &BTreeMap<String, Arc<Authenticator>>,
) -> HeaderPolicy {
    let mut guarded: HashSet<String> = upstreams
        .values()
        .flat_map(|u| u.inject.iter().map(|(n, _)| n.as_str().to_owned()))
        .collect();
    let claim_headers: Vec<HeaderName> = authenticators
        .values()
        .flat_map(|a| a.header_names())
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    guarded.extend(claim_headers.iter().map(|n| n.as_str().to_owned()));
    let guarded = guarded.iter().map(|n| fold(n).into_owned()).collect();
    HeaderPolicy {
        underscores: file.headers.underscores,
        allow: file
            .headers
            .allow
            .iter()
            .map(|t| t.0.to_ascii_lowercase())
            .collect(),
        guarded,
        claim_headers,
        max_header_bytes: file.headers.max_request_header_bytes.unwrap_or(65536),
        max_headers: file.headers.max_request_headers.unwrap_or(100),
        keyway_cookies: authenticators
            .values()
            .filter_map(|a| a.as_oidc())
            .map(|o| (o.sessions.cookie_name().to_owned(), o.state_cookie_prefix()))
            .collect(),
    }
}

/// "unknown upstream "ap"; known: app, tools (did you mean "app"?)".
pub fn unknown(kind: &str, name: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown {kind} {name:?}");
    if known.is_empty() {
        msg.push_str(&format!("; no {kind}s are defined"));
        return msg;
    }
    msg.push_str(&format!("; known: {}", known.join(", ")));
    if let Some(best) = known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        msg.push_str(&format!(" (did you mean {:?}?)", best.1));
    }
    msg
}
