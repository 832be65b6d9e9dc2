//! Picks the route for a request: most specific first (host, exact path, longest prefix,
//! methods, headers), never file order.

use std::collections::HashMap;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};

use super::canonical::Authority;
use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::pipeline::runtime::Route;
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
    pub fn specificity(&self) -> (u8, u8, usize, u8, usize) {
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

    #[inline]
    fn matches(&self, host: Option<&str>, path: &str, method: &Method, parts: &Parts) -> bool {
        self.miss(host, path, method, parts).is_none()
    }

    /// The first criterion the request fails, in a fixed order; `None` when it matches. The
    /// router and explain both ask this, so explain's reason is the router's.
    #[inline]
    fn miss(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        parts: &Parts,
    ) -> Option<Miss<'_>> {
        let host_ok = match (&self.host, host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(h), Some(got)) => h.eq_ignore_ascii_case(got),
            (HostMatch::Suffix(s), Some(got)) => {
                got.len() > s.len()
                    && got.as_bytes()[got.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            (_, None) => false,
        };
        if !host_ok {
            return Some(Miss::Host);
        }
        let path_ok = match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path_has_prefix(path, p),
        };
        if !path_ok {
            return Some(Miss::Path);
        }
        if !(self.methods.is_empty() || self.methods.contains(method)) {
            return Some(Miss::Method);
        }
        self.headers
            .iter()
            .find(|(name, value)| !parts.headers.get_all(name).iter().any(|v| v == value))
            .map(|(name, value)| Miss::Header(name, value))
    }

    /// Why this matcher refuses the request, in words (explain only).
    fn mismatch(&self, host: Option<&str>, parts: &Parts) -> Option<String> {
        let path = parts.uri.path();
        Some(match self.miss(host, path, &parts.method, parts)? {
            Miss::Host => {
                let wanted = match &self.host {
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Suffix(s) => format!("*{s}"),
                    HostMatch::Any => "any host".to_owned(),
                };
                format!("host {} is not {wanted}", host.unwrap_or("(none)"))
            }
            Miss::Path => match &self.path {
                PathMatch::Exact(p) => format!("path {path} is not exactly {p}"),
                PathMatch::Prefix(p) => format!("path {path} is not under {p}"),
            },
            Miss::Method => {
                let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
                format!("method {} is not one of {}", parts.method, names.join(", "))
            }
            Miss::Header(name, value) => format!(
                "header {name}: {} is not sent",
                String::from_utf8_lossy(value.as_bytes())
            ),
        })
    }
}

/// The criterion a request failed.
enum Miss<'a> {
    Host,
    Path,
    Method,
    Header(&'a HeaderName, &'a HeaderValue),
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
    /// With many routes, the routes a path can match, found by hash instead of trying each.
    index: Option<PathIndex>,
}

/// From this many routes on, the router finds candidates through a `PathIndex`: a request path
/// costs a few hash lookups, while trying a route costs about 20 instructions.
const INDEX_FROM: usize = 24;

impl Router {
    pub fn new(mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.matcher.specificity()));
        let matches_hosts = routes.iter().any(|r| r.matcher.host != HostMatch::Any);
        let index = (routes.len() >= INDEX_FROM)
            .then(|| PathIndex::new(routes.iter().map(|r| &r.matcher.path)));
        Router {
            routes,
            matches_hosts,
            index,
        }
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The most specific route for the request, whose canonical host (without port) is `host`.
    pub fn find(&self, parts: &Parts, host: Option<&str>) -> Option<&Arc<Route>> {
        let host = host.filter(|_| self.matches_hosts);
        let path = parts.uri.path();
        let matches = |route: &Route| route.matcher.matches(host, path, &parts.method, parts);
        match &self.index {
            Some(index) => index
                .first_match(path, |i| self.routes.get(i).is_some_and(|r| matches(r)))
                .and_then(|i| self.routes.get(i)),
            None => self.routes.iter().find(|r| matches(r)),
        }
    }

    /// Every route in the order the router tries them, up to and including the one that
    /// matches, each with why it did not match (`None` for the match). For explain only: the
    /// hot path uses `find`, which stops at the first match without saying why.
    pub fn candidates(
        &self,
        parts: &Parts,
        host: Option<&str>,
    ) -> Vec<(Arc<Route>, Option<String>)> {
        let host = host.filter(|_| self.matches_hosts);
        let mut out = Vec::new();
        for route in &self.routes {
            let why = route.matcher.mismatch(host, parts);
            let matched = why.is_none();
            out.push((route.clone(), why));
            if matched {
                break;
            }
        }
        out
    }

    /// The router stage, on the canonical host the trace holds: the route, or 404 `route.none`.
    pub fn route(&self, parts: &Parts, trace: &mut Trace) -> Result<Arc<Route>, Refusal> {
        let host = trace.authority.as_ref().map(Authority::host);
        match self.find(parts, host).cloned() {
            Some(route) => {
                trace.route = Some(route.name.clone());
                // The route itself is in `trace.route`; a static note keeps the hot path allocation-free.
                trace.step(Stage::Router, "matched");
                Ok(route)
            }
            None => {
                trace.step(Stage::Router, "no route matched");
                Err(Refusal::new(
                    Reason::RouteNone,
                    format!(
                        "No route matches {} {} on host {}.",
                        parts.method,
                        parts.uri.path(),
                        trace.authority.as_ref().map_or("(none)", Authority::host)
                    ),
                )
                .hint("Run `keyway explain METHOD URL` to see why each route did not match."))
            }
        }
    }
}

/// The positions (in specificity order) of the routes whose path matcher can accept a path,
/// looked up by the pieces of the path `path_has_prefix` would compare.
#[derive(Debug, Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefix: HashMap<Box<str>, Vec<usize>>,
    /// Prefixes that end in `/`, without it: `/api/` also matches the path `/api`.
    prefix_without_slash: HashMap<Box<str>, Vec<usize>>,
    /// No piece of a path longer than this can be a prefix: a long path with many `/` costs no
    /// more lookups, nor longer ones, than the config's longest prefix allows.
    longest_prefix: usize,
}

impl PathIndex {
    fn new<'a>(paths: impl Iterator<Item = &'a PathMatch>) -> Self {
        let mut index = PathIndex::default();
        for (i, path) in paths.enumerate() {
            match path {
                PathMatch::Exact(p) => index.exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Prefix(p) => {
                    index.longest_prefix = index.longest_prefix.max(p.len());
                    index.prefix.entry(p.as_str().into()).or_default().push(i);
                    if let Some(trimmed) = p.strip_suffix('/').filter(|t| !t.is_empty()) {
                        index
                            .prefix_without_slash
                            .entry(trimmed.into())
                            .or_default()
                            .push(i);
                    }
                }
            }
        }
        index
    }

    /// The first position, in specificity order, whose route `matches`.
    fn first_match(&self, path: &str, matches: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut consider = |positions: Option<&Vec<usize>>| {
            // Ascending: past the best so far, nothing in this list can win.
            for &i in positions.into_iter().flatten() {
                if best.is_some_and(|b| i >= b) {
                    break;
                }
                if matches(i) {
                    best = Some(i);
                    break;
                }
            }
        };
        consider(self.exact.get(path));
        consider(self.prefix_without_slash.get(path));
        // The prefix `/` accepts every path.
        consider(self.prefix.get("/"));
        // Every other prefix `path_has_prefix` accepts is the path up to a `/` (included), up to
        // just before one, or the whole path.
        let bytes = path.as_bytes();
        for end in 2..=bytes.len().min(self.longest_prefix) {
            if bytes[end - 1] == b'/' || bytes.get(end).is_none_or(|&b| b == b'/') {
                consider(path.get(..end).and_then(|piece| self.prefix.get(piece)));
            }
        }
        best
    }
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
    fn candidates_stop_at_the_match_and_say_why_each_lost() {
        // Compiled from YAML, so the test needs no knowledge of a route's fields.
        let yaml = r#"
upstreams: {app: {builtin: echo}}
routes:
  - {name: all, match: {path_prefix: /}, upstream: app, auth: []}
  - {name: api, match: {path_prefix: /api/}, upstream: app, auth: []}
  - {name: admin, match: {host: admin.example, path_prefix: /api/}, upstream: app, auth: []}
  - {name: posts, match: {path_prefix: /api/, methods: [POST]}, upstream: app, auth: []}
  - {name: env, match: {path_prefix: /api/v1/, headers: {x-env: prod}}, upstream: app, auth: []}
  - {name: exact, match: {path: /api/x}, upstream: app, auth: []}
"#;
        let loaded = crate::pipeline::compile::load_str(yaml, std::path::Path::new(".")).unwrap();
        let router = &loaded.runtime.router;
        let parts = http::Request::get("/api/v1/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let got: Vec<(String, Option<String>)> = router
            .candidates(&parts, Some("app.example"))
            .into_iter()
            .map(|(r, why)| (r.name.to_string(), why))
            .collect();
        let want = [
            ("admin", Some("host app.example is not admin.example")),
            ("exact", Some("path /api/v1/x is not exactly /api/x")),
            ("env", Some("header x-env: prod is not sent")),
            ("posts", Some("method GET is not one of POST")),
            ("api", None),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(n, w)| (n.to_string(), w.map(str::to_owned)))
            .collect();
        assert_eq!(got, want);
        // The same route `find` picks.
        let found = router.find(&parts, Some("app.example")).unwrap();
        assert_eq!(&*found.name, "api");
    }

    /// The index must pick exactly the route that trying every route in order picks.
    #[test]
    fn the_path_index_agrees_with_trying_every_route() {
        const PATHS: [&str; 12] = [
            "/", "/api", "/api/", "/api/v1", "/api/v1/", "/apix", "/a", "/a/", "/a/b", "/a/b/",
            "/a/b/c", "/x/",
        ];
        const REQUESTS: [&str; 20] = [
            "/",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/users",
            "/apix",
            "/apix/y",
            "/a",
            "/a/",
            "/a/b",
            "/a/b/",
            "/a/b/c",
            "/a/b/c/d",
            "/x",
            "/x/y",
            "/zzz",
            "//",
            "/api//v1",
            "/a/b/c/d/e/f/g/h/i/j/k",
            "//////////////",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut compared = 0;
        for _ in 0..300 {
            let mut matchers: Vec<Matcher> = (0..1 + next(40))
                .map(|_| Matcher {
                    host: match next(3) {
                        0 => HostMatch::Any,
                        1 => HostMatch::Exact("a.example".into()),
                        _ => HostMatch::Suffix(".example".into()),
                    },
                    path: match next(2) {
                        0 => PathMatch::Exact(PATHS[next(PATHS.len())].into()),
                        _ => PathMatch::Prefix(PATHS[next(PATHS.len())].into()),
                    },
                    methods: [vec![], vec![Method::GET], vec![Method::POST]][next(3)].clone(),
                    headers: if next(4) == 0 {
                        vec![(
                            HeaderName::from_static("x-env"),
                            HeaderValue::from_static("prod"),
                        )]
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            matchers.sort_by_key(|m| std::cmp::Reverse(m.specificity()));
            let index = PathIndex::new(matchers.iter().map(|m| &m.path));
            for _ in 0..50 {
                let path = REQUESTS[next(REQUESTS.len())];
                let host = ["a.example", "b.example", "other.test"][next(3)];
                let mut request = http::Request::builder()
                    .method([Method::GET, Method::POST][next(2)].clone())
                    .uri(path);
                if next(2) == 0 {
                    request = request.header("x-env", "prod");
                }
                let parts = request.body(()).unwrap().into_parts().0;
                let matches =
                    |i: usize| matchers[i].matches(Some(host), path, &parts.method, &parts);
                let tried = (0..matchers.len()).find(|&i| matches(i));
                assert_eq!(
                    index.first_match(path, matches),
                    tried,
                    "{path} on {host}: {matchers:#?}"
                );
                compared += usize::from(tried.is_some());
            }
        }
        // Most requests found a route: the comparison is not between two `None`s.
        assert!(compared > 5_000, "{compared}");
    }
}
