//! Where authenticators look for credentials: `header:NAME`, `query:NAME`, `cookie:NAME`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};
use http::request::Parts;

use crate::secret::Secret;

/// Each variant carries its `label`, built with the config: the trace names the source of every
/// authenticated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A header; `twin` is the hyphen spelling of a name with `_`. For `Authorization` the value
    /// must use the Bearer scheme and the token is what follows it.
    Header {
        name: HeaderName,
        twin: Option<HeaderName>,
        label: Arc<str>,
    },
    Query {
        param: String,
        label: Arc<str>,
    },
    Cookie {
        cookie: String,
        label: Arc<str>,
    },
}

impl Source {
    pub fn parse(spec: &str) -> Result<Source, String> {
        let (kind, name) = spec.split_once(':').ok_or_else(|| {
            format!("credential source {spec:?} must be header:NAME, query:NAME or cookie:NAME")
        })?;
        if name.is_empty() {
            return Err(format!("credential source {spec:?} has no name"));
        }
        match kind {
            "header" => Source::header(name),
            "query" => Ok(Source::Query {
                param: name.to_owned(),
                label: format!("query parameter {name}").into(),
            }),
            "cookie" => Ok(Source::Cookie {
                cookie: name.to_owned(),
                label: format!("cookie {name}").into(),
            }),
            _ => Err(format!(
                "credential source {spec:?}: the kind must be header, query or cookie"
            )),
        }
    }

    pub fn header(name: &str) -> Result<Source, String> {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name"))?;
        let twin = name
            .contains('_')
            .then(|| HeaderName::from_bytes(name.replace('_', "-").as_bytes()).ok())
            .flatten();
        let label = match &twin {
            _ if parsed == AUTHORIZATION => "header Authorization (Bearer)".to_owned(),
            Some(t) => format!("header {parsed} (or {t})"),
            None => format!("header {parsed}"),
        };
        Ok(Source::Header {
            name: parsed,
            twin,
            label: label.into(),
        })
    }

    /// How details and trace notes name the source ("header x-api-key").
    pub fn label(&self) -> &Arc<str> {
        match self {
            Source::Header { label, .. }
            | Source::Query { label, .. }
            | Source::Cookie { label, .. } => label,
        }
    }

    pub fn is_bearer_header(&self) -> bool {
        matches!(self, Source::Header { name, .. } if name == AUTHORIZATION)
    }

    /// Removes this credential from the request before it is forwarded.
    pub fn remove_from(&self, parts: &mut Parts) {
        match self {
            Source::Header { name, twin, .. } => {
                parts.headers.remove(name);
                if let Some(t) = twin {
                    parts.headers.remove(t);
                }
            }
            Source::Query { param, .. } => {
                let Some(query) = parts.uri.query() else {
                    return;
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let key = pair.split('=').next().unwrap_or("");
                        decode(key) != *param
                    })
                    .collect();
                let path = parts.uri.path();
                let rebuilt = if kept.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", kept.join("&"))
                };
                let mut uri_parts = parts.uri.clone().into_parts();
                if let Ok(pq) = rebuilt.parse() {
                    uri_parts.path_and_query = Some(pq);
                    if let Ok(uri) = http::Uri::from_parts(uri_parts) {
                        parts.uri = uri;
                    }
                }
            }
            Source::Cookie {
                cookie: cookie_name,
                ..
            } => {
                let kept: Vec<String> = parts
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty() && c.split('=').next() != Some(cookie_name.as_str()))
                    .map(str::to_owned)
                    .collect();
                parts.headers.remove(COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    parts.headers.insert(COOKIE, v);
                }
            }
        }
    }

    /// Every credential in this source, handed to `each` until it returns false: a header,
    /// parameter or cookie may be repeated, and a repeat with another value is a second
    /// credential. Values are borrowed from the request where they can be.
    fn each_value<'p>(&self, parts: &'p Parts, each: &mut dyn FnMut(Cow<'p, str>) -> bool) {
        match self {
            Source::Header { name, twin, .. } => {
                let values = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .chain(twin.iter().flat_map(|t| parts.headers.get_all(t).iter()));
                for value in values {
                    let Some(text) = value.to_str().ok().map(str::trim) else {
                        continue;
                    };
                    let credential = if name == AUTHORIZATION {
                        match text.split_once(' ') {
                            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                                token.trim()
                            }
                            _ => continue,
                        }
                    } else {
                        text
                    };
                    if !credential.is_empty() && !each(Cow::Borrowed(credential)) {
                        return;
                    }
                }
            }
            Source::Query { param, .. } => {
                let Some(query) = parts.uri.query() else {
                    return;
                };
                for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                    if k == param.as_str() && !v.is_empty() && !each(v) {
                        return;
                    }
                }
            }
            Source::Cookie {
                cookie: cookie_name,
                ..
            } => {
                let pairs = parts
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|c| c.trim().split_once('='));
                for (k, v) in pairs {
                    let v = v.trim_matches('"');
                    if k == cookie_name && !v.is_empty() && !each(Cow::Borrowed(v)) {
                        return;
                    }
                }
            }
        }
    }
}

fn decode(text: &str) -> String {
    form_urlencoded::parse(text.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the sources of one authenticator hold.
pub enum Lookup<'a, 'p> {
    None,
    /// One credential, possibly repeated in several sources (the same value twice is no conflict),
    /// borrowed from the request unless it had to be decoded.
    Found {
        credential: Secret<Cow<'p, str>>,
        sources: Sources<'a>,
    },
    /// Two different credentials in two sources.
    Conflict(&'a Source, &'a Source),
}

/// The sources a credential was found in, the first apart: nearly always the only one, and
/// then nothing is allocated.
#[derive(Debug)]
pub struct Sources<'a> {
    first: &'a Source,
    more: Vec<&'a Source>,
}

impl<'a> Sources<'a> {
    fn new(first: &'a Source) -> Self {
        Sources {
            first,
            more: Vec::new(),
        }
    }

    pub fn first(&self) -> &'a Source {
        self.first
    }

    /// Adds `source` unless it is already there.
    pub fn add(&mut self, source: &'a Source) {
        if !self.iter().any(|s| s == source) {
            self.more.push(source);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a Source> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

pub fn lookup<'a, 'p>(sources: &'a [Source], parts: &'p Parts) -> Lookup<'a, 'p> {
    let mut found: Option<(Cow<'p, str>, Sources<'a>)> = None;
    let mut conflict = None;
    for source in sources {
        source.each_value(parts, &mut |value| match &mut found {
            None => {
                found = Some((value, Sources::new(source)));
                true
            }
            Some((first, where_found)) if *first == value => {
                where_found.add(source);
                true
            }
            Some((_, where_found)) => {
                conflict = Some(Lookup::Conflict(where_found.first(), source));
                false
            }
        });
        if let Some(conflict) = conflict {
            return conflict;
        }
    }
    match found {
        None => Lookup::None,
        Some((value, sources)) => Lookup::Found {
            credential: Secret::new(value),
            sources,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn twin_header_and_bearer() {
        let src = Source::header("api_access_token").unwrap();
        let p = parts("/", &[("api-access-token", "k1")]);
        assert!(
            matches!(lookup(&[src], &p), Lookup::Found { credential, .. } if credential.expose() == "k1")
        );
        let bearer = Source::header("Authorization").unwrap();
        let p = parts("/", &[("authorization", "Basic abc")]);
        assert!(matches!(
            lookup(std::slice::from_ref(&bearer), &p),
            Lookup::None
        ));
        let p = parts("/", &[("authorization", "bearer t0k")]);
        assert!(
            matches!(lookup(&[bearer], &p), Lookup::Found { credential, .. } if credential.expose() == "t0k")
        );
    }

    #[test]
    fn conflict_only_for_different_values() {
        let sources = [
            Source::parse("header:x-api-key").unwrap(),
            Source::parse("query:key").unwrap(),
            Source::parse("cookie:key").unwrap(),
        ];
        let same = parts("/?key=a", &[("x-api-key", "a"), ("cookie", "key=a")]);
        assert!(
            matches!(lookup(&sources, &same), Lookup::Found { sources, .. } if sources.iter().count() == 3)
        );
        let diff = parts("/?key=b", &[("x-api-key", "a")]);
        assert!(matches!(lookup(&sources, &diff), Lookup::Conflict(..)));
    }

    #[test]
    fn removal_keeps_other_query_params_and_cookies() {
        let mut p = parts("/x?a=1&key=s&b=2", &[("cookie", "key=s; theme=dark")]);
        Source::parse("query:key").unwrap().remove_from(&mut p);
        Source::parse("cookie:key").unwrap().remove_from(&mut p);
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");
        assert_eq!(p.headers["cookie"], "theme=dark");
    }
}
