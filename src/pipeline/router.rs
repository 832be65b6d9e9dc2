//! Picks the route for a request: most specific first (host, exact path, longest prefix,
//! methods, headers), never file order.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};

use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::config::runtime::Route;
use crate::reason::Reason;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub host: HostMatch,
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Matcher {
    /// Higher sorts first. Exact path beats any prefix; a longer prefix beats a shorter one.
    fn specificity(&self) -> (u8, u8, usize, u8, usize) {
        let host = match &self.host {
            HostMatch::Exact(_) => 2,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 0,
        };
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (1, p.len()),
            PathMatch::Prefix(p) => (0, p.len()),
        };
        // `kind` before `len`: the prefix `/api/` also matches `/api`, and is longer than the
        // exact path `/api`, which must still win.
        (
            host,
            kind,
            len,
            u8::from(!self.methods.is_empty()),
            self.headers.len(),
        )
    }

    /// Two matchers that accept exactly the same requests: a config error.
    pub fn ties_with(&self, other: &Matcher) -> bool {
        let mut a = self.methods.clone();
        let mut b = other.methods.clone();
        a.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        b.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        let mut ha = self.headers.clone();
        let mut hb = other.headers.clone();
        ha.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        hb.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        self.host == other.host && self.path == other.path && a == b && ha == hb
    }

    fn matches(&self, host: Option<&str>, path: &str, method: &Method, parts: &Parts) -> bool {
        let host_ok = match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(h), Some(got)) => h.eq_ignore_ascii_case(got),
            (HostMatch::Suffix(s), Some(got)) => {
                got.len() > s.len()
                    && got.as_bytes()[got.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            (_, None) => false,
        };
        host_ok
            && match &self.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => path_has_prefix(path, p),
            }
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(name, value)| parts.headers.get_all(name).iter().any(|v| v == value))
    }
}

/// `/api` matches `/api` and `/api/x` but not `/apix`; `/api/` matches `/api/x` and `/api`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    if let Some(rest) = path.strip_prefix(prefix) {
        return prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/');
    }
    prefix.ends_with('/') && path == &prefix[..prefix.len() - 1]
}

#[derive(Debug, Default)]
pub struct Router {
    /// Sorted most specific first.
    routes: Vec<Arc<Route>>,
    /// Some route matches on the host: only then is it read for routing.
    matches_hosts: bool,
}

impl Router {
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.matcher.specificity()));
        let matches_hosts = routes.iter().any(|r| r.matcher.host != HostMatch::Any);
        Router {
            routes,
            matches_hosts,
        }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn find(&self, parts: &Parts) -> Option<&Arc<Route>> {
        let host = if self.matches_hosts {
            request_host(parts)
        } else {
            None
        };
        let path = parts.uri.path();
        self.routes
            .iter()
            .find(|r| r.matcher.matches(host, path, &parts.method, parts))
    }

    /// The router stage: the route, or 404 `route.none`.
    pub fn route(&self, parts: &Parts, trace: &mut Trace) -> Result<Arc<Route>, Refusal> {
        match self.find(parts) {
            Some(route) => {
                trace.route = Some(route.name.clone());
                // The route itself is in `trace.route`; a static note keeps the hot path allocation-free.
                trace.step(Stage::Router, "matched");
                Ok(route.clone())
            }
            None => {
                trace.step(Stage::Router, "no route matched");
                Err(Refusal::new(
                    Reason::RouteNone,
                    format!(
                        "No route matches {} {} on host {}.",
                        parts.method,
                        parts.uri.path(),
                        host_for_display(parts)
                    ),
                )
                .hint("Check the routes' match rules with `keyway explain`."))
            }
        }
    }
}

/// The request's host without port: the URI authority (HTTP/2, absolute-form) or `Host`.
pub fn request_host(parts: &Parts) -> Option<&str> {
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn host_for_display(parts: &Parts) -> String {
    request_host(parts).unwrap_or("(none)").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_boundaries() {
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(path_has_prefix("/api", "/api/"));
        assert!(path_has_prefix("/api/x", "/api"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(!path_has_prefix("/apix", "/api/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
