//! Credential injection: what keyway adds to the upstream request once it is allowed.

use http::request::Parts;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::authn::Identity;
use super::headers::{ForwardingSent, Peer, apply_forwarding};
use super::router::PathMatch;
use super::trace::{Stage, Trace};
use crate::pipeline::runtime::{Route, Target, Upstream};

pub static X_KEYWAY_SUBJECT: HeaderName = HeaderName::from_static("x-keyway-subject");
pub static X_KEYWAY_CONSUMER: HeaderName = HeaderName::from_static("x-keyway-consumer");
pub static X_KEYWAY_GROUPS: HeaderName = HeaderName::from_static("x-keyway-groups");
pub static X_KEYWAY_AUTHENTICATOR: HeaderName = HeaderName::from_static("x-keyway-authenticator");
pub static X_KEYWAY_EMAIL: HeaderName = HeaderName::from_static("x-keyway-email");

/// Sets forwarding and identity headers, the upstream's `inject` headers, and the upstream URI.
pub fn apply(
    route: &Route,
    upstream: &Upstream,
    identity: Option<&Identity>,
    parts: &mut Parts,
    peer: Peer<'_>,
    trace: &mut Trace,
) {
    // The forwarding, request-id and identity headers in one allocation rather than several.
    parts.headers.reserve(8);
    let sent = ForwardingSent::of(&parts.headers);
    if !peer.trusted && sent.any_chain() {
        trace.step(
            Stage::Inject,
            "replaced the client's forwarding headers: the peer is not in trusted_proxies",
        );
    }
    let host_values = trace
        .authority
        .as_ref()
        .and_then(|a| peer.client.host_values(a.client_value()));
    apply_forwarding(&mut parts.headers, peer, host_values, sent);
    if let Some(id) = identity {
        identity_headers(&mut parts.headers, id, trace);
    }
    for (name, value) in &upstream.inject {
        parts.headers.insert(name.clone(), value.expose().clone());
    }
    if !upstream.inject.is_empty() {
        let names: Vec<&str> = upstream.inject.iter().map(|(n, _)| n.as_str()).collect();
        trace.step(
            Stage::Inject,
            format!(
                "injected {} for upstream {}",
                names.join(", "),
                upstream.name
            ),
        );
    }
    if let Some(uri) = upstream_uri(route, upstream, &parts.uri) {
        parts.uri = uri;
    }
}

/// The identity headers (`X-Keyway-*`, `claims_to_headers`, passed tokens): on the upstream
/// request, or on a forward-auth answer.
pub fn identity_headers(headers: &mut HeaderMap, id: &Identity, trace: &mut Trace) {
    // A value built with the config when there is one, else made from `text`.
    let mut put = |name: &HeaderName, prebuilt: Option<&HeaderValue>, text: &dyn Fn() -> String| {
        match prebuilt
            .cloned()
            .map_or_else(|| HeaderValue::try_from(text()), Ok)
        {
            Ok(v) => {
                headers.insert(name.clone(), v);
            }
            Err(_) => trace.step(
                Stage::Inject,
                format!("{name} not set: value is not a valid header value"),
            ),
        }
    };
    let consumer = id.consumer.as_deref();
    // An API-key subject is the consumer's name.
    let subject_value = consumer
        .filter(|c| *c.name == *id.subject)
        .and_then(|c| c.name_value.as_ref());
    put(&X_KEYWAY_SUBJECT, subject_value, &|| id.subject.to_string());
    if let Some(c) = consumer {
        put(&X_KEYWAY_CONSUMER, c.name_value.as_ref(), &|| {
            c.name.to_string()
        });
    }
    if !id.groups.is_empty() {
        let prebuilt = consumer
            .filter(|c| Arc::ptr_eq(&c.groups, &id.groups))
            .and_then(|c| c.groups_value.as_ref());
        put(&X_KEYWAY_GROUPS, prebuilt, &|| id.groups.join(","));
    }
    put(
        &X_KEYWAY_AUTHENTICATOR,
        id.authenticator_header.as_ref(),
        &|| id.authenticator.to_string(),
    );
    if let Some(email) = id.email() {
        put(&X_KEYWAY_EMAIL, None, &|| email.to_owned());
    }
    for (name, value) in &id.headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// The upstream's base path, plus the request path (less the matched prefix when
/// `strip_prefix`), plus the query: origin-form, as an HTTP/1.1 request line carries it (the
/// connection is already to the upstream, and Host names the site).
fn upstream_uri(route: &Route, upstream: &Upstream, uri: &Uri) -> Option<Uri> {
    let base_path = match &upstream.target {
        Target::Http { base_path, .. } => base_path.as_str(),
        Target::Echo | Target::Mux => "",
    };
    let mut path = uri.path();
    if route.strip_prefix
        && let PathMatch::Prefix(prefix) = &route.matcher.path
    {
        let trimmed = prefix.trim_end_matches('/');
        path = path.strip_prefix(trimmed).unwrap_or(path);
    }
    let base = base_path.trim_end_matches('/');
    // Nothing to rewrite: the request's own path and query, shared rather than copied.
    if base.is_empty()
        && path.len() == uri.path().len()
        && path.starts_with('/')
        && let Some(pq) = uri.path_and_query()
    {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq.clone());
        return Uri::from_parts(parts).ok();
    }
    let slash = if path.starts_with('/') { "" } else { "/" };
    // Exactly the length: the URI then takes the buffer over without another allocation.
    let len = base.len() + slash.len() + path.len() + uri.query().map_or(0, |q| q.len() + 1);
    let mut pq = String::with_capacity(len);
    pq.push_str(base);
    pq.push_str(slash);
    pq.push_str(path);
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::try_from(pq).ok()
}
