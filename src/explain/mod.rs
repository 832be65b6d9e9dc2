//! Explain: one described request through the pipeline's own stages (`pipeline::dry_run`), and
//! the report of every step for people (`text`) and machines (the `Report` as JSON). The CLI
//! (`keyway explain`, `keyway test`) and the admin `POST /explain` share this module, so they
//! print the same thing.

pub mod report;
pub mod text;

use std::net::{IpAddr, Ipv4Addr};

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Uri, header};
use serde::Deserialize;

use crate::pipeline::dry_run;
use crate::pipeline::runtime::Runtime;

pub use self::report::Report;
pub use crate::pipeline::dry_run::Where;

/// A request as explain's callers describe it. Its header and cookie values may be
/// credentials: its `Debug` shows names only.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asked {
    pub method: String,
    pub url: String,
    #[serde(default, deserialize_with = "pairs")]
    pub headers: Vec<(String, String)>,
    #[serde(default, deserialize_with = "pairs")]
    pub cookies: Vec<(String, String)>,
    /// The client address (default 127.0.0.1), checked against `trusted_proxies`.
    #[serde(default)]
    pub peer: Option<IpAddr>,
}

impl std::fmt::Debug for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().map(|(n, _)| n.clone()).collect()
        };
        f.debug_struct("Asked")
            .field("method", &self.method)
            .field("path", &path_only(&self.url))
            .field("headers", &names(&self.headers))
            .field("cookies", &names(&self.cookies))
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A described URL's path: no user info, no query (either may hold a credential).
pub fn path_only(url: &str) -> String {
    url.parse::<http::Uri>()
        .map_or_else(|_| "(not a URL)".to_owned(), |u| u.path().to_owned())
}

/// `{"Name": "value"}` as pairs, or `[["Name","value"]]` when a name repeats.
fn pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Pairs {
        Map(serde_json::Map<String, serde_json::Value>),
        List(Vec<(String, String)>),
    }
    Ok(match Pairs::deserialize(d)? {
        Pairs::Map(m) => m
            .into_iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k, v)
            })
            .collect(),
        Pairs::List(l) => l,
    })
}

pub const DEFAULT_PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs the described request through the pipeline and reports every step.
pub async fn explain(rt: &Runtime, request: &Asked, at: Where) -> Result<Report, String> {
    let (parts, tls) = build(rt, request)?;
    let original = parts.clone();
    let peer = request.peer.unwrap_or(DEFAULT_PEER);
    let run = dry_run::dry_run(rt, parts, peer, tls, at).await;
    Ok(report::build(rt, request, &original, peer, run))
}

/// The request head: an absolute URL gives the scheme (TLS for https) and the Host, as a client
/// would send them; a path alone takes its Host from the headers or keyway's first listener.
fn build(rt: &Runtime, request: &Asked) -> Result<(Parts, bool), String> {
    let method = Method::from_bytes(request.method.trim().as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", request.method))?;
    let uri: Uri = request
        .url
        .parse()
        .map_err(|_| format!("{:?} is not a URL or a path", request.url))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // Clients send user info as `Authorization: Basic`, never in Host; and it is a password,
        // which a report must not show.
        return Err(
            "the URL carries user info (user:password@host): a client sends that as an Authorization header; give it with -H instead".to_owned(),
        );
    }
    let tls = uri.scheme_str() == Some("https");
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(target)
        .version(http::Version::HTTP_11)
        .body(())
        .map_err(|e| format!("cannot build the request: {e}"))?
        .into_parts();
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
        parts.headers.append(name, value);
    }
    if !request.cookies.is_empty() {
        let joined: Vec<String> = request
            .cookies
            .iter()
            .map(|(n, v)| format!("{}={}", n.trim(), v.trim()))
            .collect();
        let value = HeaderValue::from_str(&joined.join("; "))
            .map_err(|_| "a cookie is not a valid header value".to_owned())?;
        parts.headers.append(header::COOKIE, value);
    }
    if !parts.headers.contains_key(header::HOST) {
        let host = match uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => rt
                .listen
                .first()
                .map_or_else(|| "localhost".to_owned(), ToString::to_string),
        };
        let value =
            HeaderValue::from_str(&host).map_err(|_| format!("{host:?} is not a valid host"))?;
        parts.headers.insert(header::HOST, value);
    }
    Ok((parts, tls))
}

/// `Name: value` from the command line.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("-H {text:?}: expected 'Name: value'"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// `name=value` from the command line (several may be joined with `;`).
pub fn parse_cookies(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("--cookie {pair:?}: expected name=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_never_values() {
        let asked = Asked {
            method: "GET".to_owned(),
            url: "http://u:hunter2@h/api/x?access_token=tok-in-query".to_owned(),
            headers: vec![("x-api-key".to_owned(), "key-in-header".to_owned())],
            cookies: vec![("session".to_owned(), "cookie-value".to_owned())],
            peer: None,
        };
        let shown = format!("{asked:?}");
        assert!(
            shown.contains("/api/x") && shown.contains("x-api-key") && shown.contains("session")
        );
        for secret in ["hunter2", "tok-in-query", "key-in-header", "cookie-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
