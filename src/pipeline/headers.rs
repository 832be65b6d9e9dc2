//! Header policy (SPEC §4): underscore policy, the collision guard, removal of client-sent
//! identity and hop-by-hop headers, and the X-Forwarded-* / Forwarded chain.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::hop_by_hop;
use super::refusal::Refusal;
use super::trace::{RemovalCause, Stage, Trace};
use super::upstream::deadline::RequestTimer;
use crate::config::file::UnderscorePolicy;
use crate::reason::Reason;
use crate::session::cookie::{CookieJar, strip_prefixed};

/// Put in a request's extensions by the server when the raw head carried conflicting framing
/// (hyper drops Content-Length when Transfer-Encoding is present, so the head says no more).
#[derive(Clone, Copy, Debug)]
pub struct ConflictingFraming;

/// Prefixes of headers only keyway may set towards an upstream.
const IDENTITY_PREFIXES: [&str; 2] = ["x-keyway-", "x-auth-request-"];
/// Prefixes and names keyway sets, strips or rewrites: a client spelling that folds to one of
/// these is removed, and no claim may be mapped to one.
const GUARDED_PREFIXES: [&str; 3] = ["x-keyway-", "x-auth-request-", "x-forwarded-"];
const GUARDED_NAMES: [&str; 2] = ["forwarded", "x-real-ip"];

/// Whether keyway sets, strips or rewrites the header `folded` (lower-case, `_` as `-`).
pub fn keyway_owned(folded: &str) -> bool {
    GUARDED_PREFIXES.iter().any(|p| folded.starts_with(p)) || GUARDED_NAMES.contains(&folded)
}

#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    pub underscores: UnderscorePolicy,
    /// Lower-case names exempt from drop/reject/normalize.
    pub allow: HashSet<String>,
    /// Folded names keyway sets on upstream requests (`inject`, `claims_to_headers`).
    pub guarded: HashSet<String>,
    /// `claims_to_headers` names: identity headers only keyway may set, so a client-sent copy
    /// is removed on every route, not only on those whose authenticator sets it.
    pub claim_headers: Vec<HeaderName>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// The session cookie name and sign-in state cookie prefix of each oidc authenticator.
    pub keyway_cookies: Vec<(String, String)>,
}

/// Lower-case with `_` folded to `-`: how CGI-style backends see a header name.
pub fn fold(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase().replace('_', "-"))
    } else {
        Cow::Borrowed(name)
    }
}

impl HeaderPolicy {
    fn is_guarded(&self, folded: &str) -> bool {
        keyway_owned(folded) || self.guarded.contains(folded)
    }

    /// Limits stage: header size and count, and framing that smuggling relies on.
    pub fn check_limits(
        &self,
        parts: &http::request::Parts,
        trace: &mut Trace,
    ) -> Result<(), Refusal> {
        let headers = &parts.headers;
        let count = headers.len();
        if count > self.max_headers {
            trace.step(Stage::Limits, "too many headers");
            return Err(Refusal::new(
                Reason::HeaderTooLarge,
                format!(
                    "The request has {count} headers; the limit is {}.",
                    self.max_headers
                ),
            )
            .hint("Raise headers.max_request_headers if this is expected."));
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if bytes > self.max_header_bytes {
            trace.step(Stage::Limits, "headers too large");
            return Err(Refusal::new(
                Reason::HeaderTooLarge,
                format!(
                    "The request headers take {bytes} bytes; the limit is {}.",
                    self.max_header_bytes
                ),
            )
            .hint("Raise headers.max_request_header_bytes if this is expected."));
        }
        // hyper drops Content-Length when Transfer-Encoding is present; the connection's framing
        // scanner saw the original head.
        let conflicting = parts.extensions.get::<ConflictingFraming>().is_some()
            || (headers.contains_key(header::TRANSFER_ENCODING)
                && headers.contains_key(header::CONTENT_LENGTH));
        if conflicting {
            trace.step(Stage::Limits, "both content-length and transfer-encoding");
            return Err(Refusal::new(
                Reason::HeaderFraming,
                "The request carries both Content-Length and Transfer-Encoding; keyway refuses ambiguous framing.",
            ));
        }
        Ok(())
    }

    /// Headers stage: underscore policy, collision guard, identity and hop-by-hop removal.
    pub fn sanitize(
        &self,
        headers: &mut HeaderMap,
        upgrade: bool,
        trace: &mut Trace,
    ) -> Result<(), Refusal> {
        let mut found = self.classify(headers);
        if found.underscore {
            self.underscore_names(headers, trace)?;
            // Normalizing can make a name that the removals below must see.
            found = self.classify(headers);
        }
        if found.identity {
            remove_identity_headers(headers, &self.claim_headers, trace);
        }
        if found.hop_by_hop {
            hop_by_hop::strip(headers, upgrade, |name| {
                trace.removed(name, RemovalCause::HopByHop)
            });
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Ok(())
    }

    /// Removes keyway's own session and sign-in cookies (every chunk) from a request about to be
    /// forwarded: an upstream never sees a session, and split cookies cannot push it over its
    /// header limit.
    pub fn strip_keyway_cookies(&self, headers: &mut HeaderMap, trace: &mut Trace) {
        if self.keyway_cookies.is_empty() || !headers.contains_key(header::COOKIE) {
            return;
        }
        let mut removed = 0;
        for (session, state_prefix) in &self.keyway_cookies {
            removed += CookieJar::new(session, "/", false).map_or(0, |jar| jar.strip(headers));
            removed += strip_prefixed(headers, state_prefix);
        }
        if removed > 0 {
            trace.removed("cookie (keyway session)", RemovalCause::KeywayCookie);
            trace.step(
                Stage::Inject,
                format!("removed {removed} keyway session cookie(s) from the Cookie header"),
            );
        }
    }

    /// What the request's header names call for, in one pass: most requests need none of it.
    fn classify(&self, headers: &HeaderMap) -> NamesFound {
        let mut found = NamesFound::default();
        let claims = !self.claim_headers.is_empty();
        for name in headers.keys() {
            let text = name.as_str();
            found.underscore |= text.as_bytes().contains(&b'_');
            // Identity prefixes start with x, hop-by-hop names with c, h, k, p, t or u: the
            // first byte passes most names over.
            match text.as_bytes().first() {
                Some(b'x') => {
                    found.identity |= IDENTITY_PREFIXES.iter().any(|p| text.starts_with(p))
                }
                Some(b'c' | b'h' | b'k' | b'p' | b't' | b'u') => {
                    found.hop_by_hop |= hop_by_hop::is_hop_by_hop(text)
                }
                _ => {}
            }
            found.identity |= claims && self.claim_headers.contains(name);
        }
        found
    }

    fn underscore_names(&self, headers: &mut HeaderMap, trace: &mut Trace) -> Result<(), Refusal> {
        let underscored: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        let mut folded_seen: HashSet<String> = HashSet::new();
        for name in &underscored {
            let folded = fold(name.as_str()).into_owned();
            if headers.contains_key(folded.as_str()) || !folded_seen.insert(folded.clone()) {
                trace.step(Stage::Headers, format!("{name} is ambiguous"));
                return Err(Refusal::new(
                    Reason::HeaderAmbiguous,
                    format!(
                        "The request carries two headers that fold to {folded:?} (one is {:?}); backends that fold '_' to '-' could take either.",
                        name.as_str()
                    ),
                )
                .hint("Send the header once, spelled one way."));
            }
        }
        for name in underscored {
            let folded = fold(name.as_str()).into_owned();
            if self.is_guarded(&folded) {
                headers.remove(&name);
                trace.removed(name.as_str(), RemovalCause::Collision);
                trace.step(
                    Stage::Headers,
                    format!("removed {name}: folds to {folded}, which keyway sets"),
                );
                continue;
            }
            if self.allow.contains(name.as_str()) {
                continue;
            }
            match self.underscores {
                UnderscorePolicy::Pass => {}
                UnderscorePolicy::Drop => {
                    headers.remove(&name);
                    trace.removed(name.as_str(), RemovalCause::UnderscorePolicy);
                    trace.step(
                        Stage::Headers,
                        format!("dropped {name} (headers.underscores: drop)"),
                    );
                }
                UnderscorePolicy::Reject => {
                    trace.step(Stage::Headers, format!("rejected {name}"));
                    return Err(Refusal::new(
                        Reason::HeaderUnderscore,
                        format!(
                            "Header {:?} contains '_' and headers.underscores is reject.",
                            name.as_str()
                        ),
                    )
                    .hint(format!(
                        "Send {folded:?} instead, or add {:?} to headers.allow.",
                        name.as_str()
                    )));
                }
                UnderscorePolicy::Normalize => {
                    let Ok(new_name) = HeaderName::from_bytes(folded.as_bytes()) else {
                        continue;
                    };
                    let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
                    headers.remove(&name);
                    for v in values {
                        headers.append(new_name.clone(), v);
                    }
                    trace.step(Stage::Headers, format!("normalized {name} to {folded}"));
                }
            }
        }
        Ok(())
    }
}

/// Kinds of header names a request carries, as far as the headers stage cares.
#[derive(Default)]
struct NamesFound {
    underscore: bool,
    identity: bool,
    hop_by_hop: bool,
}

/// A header only keyway may set towards an upstream.
fn is_identity_header(name: &HeaderName, claim_headers: &[HeaderName]) -> bool {
    let text = name.as_str();
    IDENTITY_PREFIXES.iter().any(|p| text.starts_with(p)) || claim_headers.contains(name)
}

fn remove_identity_headers(
    headers: &mut HeaderMap,
    claim_headers: &[HeaderName],
    trace: &mut Trace,
) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_header(k, claim_headers))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
        trace.removed(name.as_str(), RemovalCause::IdentitySpoof);
        trace.step(
            Stage::Headers,
            format!("removed client-sent identity header {name}"),
        );
    }
}

/// The client end of a connection. The forwarding values that depend only on it are formatted
/// once per connection rather than once per request, and an HTTP/1 connection's requests share
/// one upstream request timer.
#[derive(Debug)]
pub struct Client {
    pub ip: IpAddr,
    pub tls: bool,
    ip_value: HeaderValue,
    /// This hop's Forwarded element without its host: `for=<node>;proto=<scheme>`.
    forwarded: HeaderValue,
    /// The values for the host the connection's last request named: a keep-alive client nearly
    /// always names the same one.
    last_host: Mutex<Option<(HeaderValue, HostValues)>>,
    /// HTTP/1 only: its requests never overlap.
    request_timer: Option<RequestTimer>,
}

/// X-Forwarded-Host and this hop's Forwarded element for one host (cloned by reference count).
#[derive(Clone, Debug)]
pub struct HostValues {
    x_forwarded_host: HeaderValue,
    forwarded: HeaderValue,
}

impl Client {
    pub fn new(ip: IpAddr, tls: bool) -> Self {
        let ip_text = ip.to_string();
        let node = if ip.is_ipv6() {
            format!("\"[{ip_text}]\"")
        } else {
            ip_text.clone()
        };
        let forwarded = format!("for={node};proto={}", Self::proto(tls));
        Client {
            ip,
            tls,
            // An IP address is always a valid header value.
            ip_value: HeaderValue::from_str(&ip_text)
                .unwrap_or(HeaderValue::from_static("unknown")),
            // Built from an IP address and a scheme: always a valid header value.
            forwarded: HeaderValue::from_str(&forwarded)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
            last_host: Mutex::new(None),
            request_timer: None,
        }
    }

    /// For a connection whose requests come one after another (HTTP/1).
    pub fn with_request_timer(mut self) -> Self {
        self.request_timer = Some(RequestTimer::default());
        self
    }

    pub fn request_timer(&self) -> Option<&RequestTimer> {
        self.request_timer.as_ref()
    }

    /// X-Forwarded-Host and this hop's Forwarded element for `host`, the client's value with its
    /// port (validated by the authority stage: no quote or backslash can be in it).
    pub fn host_values(&self, host: &HeaderValue) -> Option<HostValues> {
        if let Ok(last) = self.last_host.lock()
            && let Some((_, values)) = last.as_ref().filter(|(h, _)| h == host)
        {
            return Some(values.clone());
        }
        let mut element = BytesMut::with_capacity(self.forwarded.len() + host.len() + 8);
        element.extend_from_slice(self.forwarded.as_bytes());
        element.extend_from_slice(b";host=\"");
        element.extend_from_slice(host.as_bytes());
        element.extend_from_slice(b"\"");
        let values = HostValues {
            x_forwarded_host: host.clone(),
            forwarded: HeaderValue::from_maybe_shared(element.freeze()).ok()?,
        };
        if let Ok(mut last) = self.last_host.lock() {
            *last = Some((host.clone(), values.clone()));
        }
        Some(values)
    }

    fn proto(tls: bool) -> &'static str {
        if tls { "https" } else { "http" }
    }
}

/// What a request knows about its client: the connection, and whether the running config trusts
/// it (decided per request, so a reload of `trusted_proxies` applies to open connections).
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub client: &'a Client,
    /// The peer is in `trusted_proxies`: its forwarding headers are believed.
    pub trusted: bool,
}

/// The forwarding headers a request arrived with, found in one pass over its header names.
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardingSent {
    x_forwarded_for: bool,
    x_forwarded_proto: bool,
    x_forwarded_host: bool,
    x_real_ip: bool,
    forwarded: bool,
}

impl ForwardingSent {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut sent = ForwardingSent::default();
        for name in headers.keys() {
            match name.as_str() {
                "x-forwarded-for" => sent.x_forwarded_for = true,
                "x-forwarded-proto" => sent.x_forwarded_proto = true,
                "x-forwarded-host" => sent.x_forwarded_host = true,
                "x-real-ip" => sent.x_real_ip = true,
                "forwarded" => sent.forwarded = true,
                _ => {}
            }
        }
        sent
    }

    /// Any of X-Forwarded-For/-Proto/-Host or Forwarded (the chains a client could forge).
    pub fn any_chain(&self) -> bool {
        self.x_forwarded_for || self.x_forwarded_proto || self.x_forwarded_host || self.forwarded
    }
}

/// Sets X-Forwarded-For/-Proto/-Host, X-Real-IP and Forwarded: appended to the incoming chain
/// from a trusted peer, replacing it otherwise.
pub fn set_forwarding(headers: &mut HeaderMap, peer: Peer<'_>, host: Option<&HeaderValue>) {
    let sent = ForwardingSent::of(headers);
    let host_values = host.and_then(|h| peer.client.host_values(h));
    apply_forwarding(headers, peer, host_values, sent);
}

/// `set_forwarding` for a request whose sent headers and host values are already known.
pub fn apply_forwarding(
    headers: &mut HeaderMap,
    peer: Peer<'_>,
    host_values: Option<HostValues>,
    sent: ForwardingSent,
) {
    let client = peer.client;
    let keep = |was_sent: bool| peer.trusted && was_sent;
    let xff = match keep(sent.x_forwarded_for)
        .then(|| chain_of(headers, &X_FORWARDED_FOR))
        .flatten()
    {
        Some(existing) => joined(&existing, client.ip_value.as_bytes()),
        None => Some(client.ip_value.clone()),
    };
    put(headers, &X_FORWARDED_FOR, xff);
    if !keep(sent.x_forwarded_proto) {
        let proto = HeaderValue::from_static(Client::proto(client.tls));
        headers.insert(X_FORWARDED_PROTO.clone(), proto);
    }
    if !keep(sent.x_forwarded_host) {
        match &host_values {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST.clone(), v.x_forwarded_host.clone());
            }
            None if sent.x_forwarded_host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if !keep(sent.x_real_ip) {
        headers.insert(X_REAL_IP.clone(), client.ip_value.clone());
    }
    let element = match host_values {
        Some(v) => v.forwarded,
        None => client.forwarded.clone(),
    };
    let forwarded = match keep(sent.forwarded)
        .then(|| chain_of(headers, &header::FORWARDED))
        .flatten()
    {
        Some(existing) => joined(&existing, element.as_bytes()),
        None => Some(element),
    };
    put(headers, &header::FORWARDED, forwarded);
}

/// All values of a header as one comma-separated list.
fn chain_of(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn joined(existing: &str, this_hop: &[u8]) -> Option<HeaderValue> {
    let mut v = Vec::with_capacity(existing.len() + 2 + this_hop.len());
    v.extend_from_slice(existing.as_bytes());
    v.extend_from_slice(b", ");
    v.extend_from_slice(this_hop);
    HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
}

fn put(headers: &mut HeaderMap, name: &HeaderName, value: Option<HeaderValue>) {
    if let Some(v) = value {
        headers.insert(name.clone(), v);
    }
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(underscores: UnderscorePolicy) -> HeaderPolicy {
        HeaderPolicy {
            underscores,
            allow: HashSet::from(["api_access_token".to_owned()]),
            guarded: HashSet::from(["x-user-email".to_owned()]),
            claim_headers: vec![HeaderName::from_static("x-user-email")],
            max_header_bytes: 65536,
            max_headers: 100,
            keyway_cookies: Vec::new(),
        }
    }

    fn trace() -> Trace {
        Trace::start(
            crate::pipeline::request_id::mint(),
            http::Method::GET,
            Default::default(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn ambiguous_pair_is_refused_under_every_policy() {
        for p in [
            UnderscorePolicy::Pass,
            UnderscorePolicy::Drop,
            UnderscorePolicy::Normalize,
            UnderscorePolicy::Reject,
        ] {
            let mut h = headers(&[("x-user_id", "a"), ("x-user-id", "b")]);
            let err = policy(p).sanitize(&mut h, false, &mut trace()).unwrap_err();
            assert_eq!(err.reason, Reason::HeaderAmbiguous);
        }
    }

    #[test]
    fn guarded_spellings_are_removed_and_recorded() {
        let mut h = headers(&[("x_forwarded_for", "1.2.3.4"), ("x-user_email", "evil")]);
        let mut t = trace();
        policy(UnderscorePolicy::Pass)
            .sanitize(&mut h, false, &mut t)
            .unwrap();
        assert!(h.is_empty());
        assert_eq!(t.removals.len(), 2);
        assert!(
            t.removals
                .iter()
                .all(|r| r.cause == RemovalCause::Collision)
        );
    }

    #[test]
    fn policies() {
        let mut h = headers(&[("my_header", "1"), ("api_access_token", "k")]);
        policy(UnderscorePolicy::Normalize)
            .sanitize(&mut h, false, &mut trace())
            .unwrap();
        assert!(h.contains_key("my-header") && h.contains_key("api_access_token"));

        let mut h = headers(&[("my_header", "1")]);
        policy(UnderscorePolicy::Drop)
            .sanitize(&mut h, false, &mut trace())
            .unwrap();
        assert!(h.is_empty());

        let mut h = headers(&[("my_header", "1")]);
        let err = policy(UnderscorePolicy::Reject)
            .sanitize(&mut h, false, &mut trace())
            .unwrap_err();
        assert_eq!(err.reason, Reason::HeaderUnderscore);
    }

    #[test]
    fn client_copies_of_claim_headers_are_removed() {
        let mut h = headers(&[("x-user-email", "spoofed@example.com"), ("accept", "*/*")]);
        let mut t = trace();
        policy(UnderscorePolicy::Pass)
            .sanitize(&mut h, false, &mut t)
            .unwrap();
        assert!(!h.contains_key("x-user-email"));
        assert_eq!(t.removals[0].cause, RemovalCause::IdentitySpoof);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_are_removed() {
        let mut h = headers(&[
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("x-keyway-subject", "admin"),
            ("accept", "*/*"),
        ]);
        policy(UnderscorePolicy::Pass)
            .sanitize(&mut h, false, &mut trace())
            .unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn each_hop_by_hop_name_alone_is_removed() {
        for name in [
            "connection",
            "http2-settings",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = headers(&[(name, "x"), ("accept", "*/*")]);
            policy(UnderscorePolicy::Pass)
                .sanitize(&mut h, false, &mut trace())
                .unwrap();
            assert!(!h.contains_key(name), "{name} was kept");
        }
    }

    #[test]
    fn normalized_names_are_checked_like_sent_ones() {
        // `transfer_encoding` becomes `transfer-encoding` under normalize: it must not reach the
        // upstream. Nor may a normalized identity header.
        let mut policy = policy(UnderscorePolicy::Normalize);
        policy.guarded.clear();
        let mut h = headers(&[("transfer_encoding", "chunked"), ("accept", "*/*")]);
        policy.sanitize(&mut h, false, &mut trace()).unwrap();
        assert!(!h.contains_key(header::TRANSFER_ENCODING), "{h:?}");
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn forwarding_chain_appends_only_for_trusted_peers() {
        let client = Client::new("127.0.0.1".parse().unwrap(), false);
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        let peer = Peer {
            client: &client,
            trusted: true,
        };
        set_forwarding(
            &mut h,
            peer,
            Some(&HeaderValue::from_static("example.com:8080")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1, for=127.0.0.1;proto=http;host=\"example.com:8080\""
        );
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1"), ("x-real-ip", "10.0.0.1")]);
        set_forwarding(
            &mut h,
            Peer {
                trusted: false,
                ..peer
            },
            Some(&HeaderValue::from_static("example.com:8080")),
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=http;host=\"example.com:8080\""
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let client = Client::new("::1".parse().unwrap(), true);
        let mut h = HeaderMap::new();
        let peer = Peer {
            client: &client,
            trusted: false,
        };
        set_forwarding(&mut h, peer, None);
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
