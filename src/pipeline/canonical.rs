//! The request's one authority and one path (SPEC §4). Derived once, before routing, from the
//! request line, HTTP/2 `:authority` and `Host`; the router matches them and the upstream receives
//! them, so no spelling can make keyway check one route while the upstream serves another.

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri, Version, header};

use super::refusal::Refusal;
use super::trace::{RequestPath, Stage, Trace};
use crate::reason::Reason;

/// What to do with a path spelling that some upstreams read differently from keyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Spelling {
    /// 400: the upstream could see another path than the one routed.
    #[default]
    Reject,
    /// Routed and forwarded as sent (still encoded).
    Keep,
}

/// `paths:` in the config.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathPolicy {
    /// `%2F`, `%5C` and a raw `\`.
    pub encoded_slashes: Spelling,
    /// A `;` in the path: servlet containers (Tomcat, Jetty) cut `;params` from every segment
    /// before matching, so `/admin;x/` is `/admin/` to them.
    pub semicolons: Spelling,
}

/// The authority the request is routed on and sent upstream with.
#[derive(Clone, Debug)]
pub struct Authority {
    /// `host[:port]`, lower case, without a trailing dot or the listener's default port.
    pub value: HeaderValue,
    /// Length of the host in `value` (without `:port`).
    host_len: usize,
    /// The client's spelling when it differs from `value`.
    pub received: Option<HeaderValue>,
}

impl Authority {
    /// The host routes match (no port).
    pub fn host(&self) -> &str {
        // `value` is built from validated ASCII only.
        self.value
            .to_str()
            .ok()
            .and_then(|v| v.get(..self.host_len))
            .unwrap_or("")
    }

    /// The client's value with its port, for `X-Forwarded-Host` and `Forwarded: host=`.
    pub fn client_value(&self) -> &HeaderValue {
        self.received.as_ref().unwrap_or(&self.value)
    }
}

/// The authority stage: one authority from the request-target and `Host` (RFC 9112 §3.2,
/// RFC 9113 §8.3.1), or a refusal. `None` only for an HTTP/1.0 request that names none.
pub fn authority(
    parts: &Parts,
    tls: bool,
    trace: &mut Trace,
) -> Result<Option<Authority>, Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        trace.step(Stage::Canonical, "more than one Host");
        return Err(Refusal::new(
            Reason::HostConflicting,
            "The request carries more than one Host header; keyway could route on one while the upstream serves the other.",
        )
        .hint("Send one Host header."));
    }
    let target = parts.uri.authority().map(|a| a.as_str().as_bytes());
    let received = match (target, host) {
        (Some(target), Some(host)) => {
            let a = normalize(target, tls).map_err(|e| invalid(e, "request-target", trace))?;
            let b = normalize(host.as_bytes(), tls).map_err(|e| invalid(e, "Host", trace))?;
            if a.bytes() != b.bytes() {
                trace.step(Stage::Canonical, "Host disagrees with the request-target");
                return Err(Refusal::new(
                    Reason::HostConflicting,
                    format!(
                        "The request-target names {:?} but the Host header names {:?}; keyway could route on one while the upstream serves the other.",
                        a.text(),
                        b.text()
                    ),
                )
                .hint("Send the same authority in the request-target (or :authority) and in Host."));
            }
            return Ok(Some(a.into_authority(host.clone(), trace)));
        }
        // HTTP/1.1 requires Host even beside an absolute-form target (RFC 9112 §3.2); HTTP/2
        // may carry the authority in `:authority` alone.
        (Some(target), None) if parts.version != Version::HTTP_11 => {
            let a = normalize(target, tls).map_err(|e| invalid(e, "request-target", trace))?;
            // The normalised form was checked byte by byte, so the target is a valid value.
            let received = HeaderValue::from_bytes(target)
                .map_err(|_| invalid(HostError::Character, "request-target", trace))?;
            return Ok(Some(a.into_authority(received, trace)));
        }
        (None, Some(host)) => host,
        // HTTP/1.0 may name no host.
        (None, None) if matches!(parts.version, Version::HTTP_10 | Version::HTTP_09) => {
            return Ok(None);
        }
        _ => {
            trace.step(Stage::Canonical, "no Host");
            let place = if parts.version == Version::HTTP_2 {
                "no Host header and no :authority"
            } else {
                "no Host header"
            };
            return Err(Refusal::new(
                Reason::HostMissing,
                format!("The {:?} request names no host ({place}).", parts.version),
            )
            .hint("Send a Host header."));
        }
    };
    let n = normalize(received.as_bytes(), tls).map_err(|e| invalid(e, "Host", trace))?;
    Ok(Some(n.into_authority(received.clone(), trace)))
}

/// Why an authority is not one keyway can route on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostError {
    Empty,
    Userinfo,
    Character,
    Label,
    Port,
    Literal,
}

impl HostError {
    fn describe(self) -> &'static str {
        match self {
            HostError::Empty => "is empty",
            HostError::Userinfo => "carries userinfo (user@host)",
            HostError::Character => {
                "has a character a host name cannot have (letters, digits, '-', '_' and '.' only)"
            }
            HostError::Label => "has an empty label (a leading dot or two dots in a row)",
            HostError::Port => "has a port that is not a number from 0 to 65535",
            HostError::Literal => "is not a well-formed IPv6 literal",
        }
    }
}

fn invalid(e: HostError, place: &str, trace: &mut Trace) -> Refusal {
    trace.step(Stage::Canonical, "invalid authority");
    Refusal::new(
        Reason::HostInvalid,
        format!("The authority in the {place} {}.", e.describe()),
    )
    .hint("Send the host name (and port) the service is published under.")
}

/// A normalised authority: the client's bytes when they are canonical already (the common case,
/// no copy), else the rewritten text.
struct Normalized<'a> {
    raw: &'a [u8],
    rewritten: Option<String>,
    host_len: usize,
}

impl Normalized<'_> {
    fn bytes(&self) -> &[u8] {
        self.rewritten.as_deref().map_or(self.raw, str::as_bytes)
    }

    fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    fn into_authority(self, received: HeaderValue, trace: &mut Trace) -> Authority {
        let same = std::ptr::eq(self.raw, received.as_bytes()) && self.rewritten.is_none()
            || self.bytes() == received.as_bytes();
        if same {
            return Authority {
                value: received,
                host_len: self.host_len,
                received: None,
            };
        }
        trace.step(
            Stage::Canonical,
            format!(
                "authority {:?} normalised to {:?}",
                String::from_utf8_lossy(received.as_bytes()),
                self.text()
            ),
        );
        // Only validated host characters, digits and ':' are in it.
        let value = HeaderValue::from_bytes(self.bytes()).unwrap_or_else(|_| received.clone());
        Authority {
            value,
            host_len: self.host_len,
            received: Some(received),
        }
    }
}

/// Byte classes of an authority's fast check.
const NAME: u8 = 0;
const DOT: u8 = 1;
const COLON: u8 = 2;
const OTHER: u8 = 3;

const fn authority_classes() -> [u8; 256] {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' {
            t[b] = NAME;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t[b':' as usize] = COLON;
    t
}
static AUTHORITY_CLASSES: [u8; 256] = authority_classes();

/// The host length of an authority that is canonical as sent: a lower-case name or IPv4 address
/// without empty labels or a trailing dot, and at most a port that is not the default one, has
/// no leading zero and fits in 16 bits. Anything else takes the full check in `normalize`.
fn already_canonical(raw: &[u8], tls: bool) -> Option<usize> {
    let mut previous = DOT;
    let mut host_len = raw.len();
    for (i, &b) in raw.iter().enumerate() {
        match AUTHORITY_CLASSES[b as usize] {
            NAME => previous = NAME,
            DOT if previous == NAME => previous = DOT,
            COLON => {
                host_len = i;
                break;
            }
            _ => return None,
        }
    }
    if previous != NAME {
        return None;
    }
    if host_len == raw.len() {
        return Some(host_len);
    }
    let port = &raw[host_len + 1..];
    let fits = match port.len() {
        1..=4 => true,
        5 => port <= b"65535".as_slice(),
        _ => false,
    };
    let default: &[u8] = if tls { b"443" } else { b"80" };
    (fits && port[0] != b'0' && port.iter().all(u8::is_ascii_digit) && port != default)
        .then_some(host_len)
}

/// Lower case, no trailing dot, no default port (80, or 443 on a TLS listener). Refuses userinfo,
/// percent-encoding and every character a DNS name or IP literal cannot have.
fn normalize(raw: &[u8], tls: bool) -> Result<Normalized<'_>, HostError> {
    match already_canonical(raw, tls) {
        Some(host_len) => Ok(Normalized {
            raw,
            rewritten: None,
            host_len,
        }),
        None => normalize_fully(raw, tls),
    }
}

fn normalize_fully(raw: &[u8], tls: bool) -> Result<Normalized<'_>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (host, port) = split_port(raw)?;
    let mut rewrite = false;
    let mut host_end = host.len();
    if host.first() == Some(&b'[') {
        // An IPv6 literal: hex digits, ':' and '.' (an embedded IPv4) between brackets.
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
        {
            return Err(HostError::Literal);
        }
        rewrite |= inner.iter().any(u8::is_ascii_uppercase);
    } else {
        if host.last() == Some(&b'.') {
            host_end -= 1;
            rewrite = true;
        }
        let name = &host[..host_end];
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.last() == Some(&b'.') {
            return Err(HostError::Label);
        }
        let mut previous = b'.';
        for &b in name {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                b'A'..=b'Z' => rewrite = true,
                b'.' if previous == b'.' => return Err(HostError::Label),
                b'.' => {}
                _ => return Err(HostError::Character),
            }
            previous = b;
        }
    }
    let default_port: u32 = if tls { 443 } else { 80 };
    let port = match port {
        None => None,
        Some([]) => {
            rewrite = true;
            None
        }
        Some(p) => {
            if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
                return Err(HostError::Port);
            }
            let number = p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            if number > 65535 {
                return Err(HostError::Port);
            }
            // A leading zero or the default port: spelled once, or not at all.
            rewrite |= p[0] == b'0' || number == default_port;
            (number != default_port).then_some(number)
        }
    };
    if !rewrite {
        return Ok(Normalized {
            raw,
            rewritten: None,
            host_len: host.len(),
        });
    }
    let mut text = String::with_capacity(raw.len());
    text.extend(
        host[..host_end]
            .iter()
            .map(|b| b.to_ascii_lowercase() as char),
    );
    let host_len = text.len();
    if let Some(port) = port {
        text.push(':');
        text.push_str(&port.to_string());
    }
    Ok(Normalized {
        raw,
        rewritten: Some(text),
        host_len,
    })
}

/// `host` and the digits after its `:`, if any; an IPv6 literal keeps its brackets.
fn split_port(raw: &[u8]) -> Result<(&[u8], Option<&[u8]>), HostError> {
    if raw[0] == b'[' {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Literal)?;
        let (host, rest) = raw.split_at(close + 1);
        return match rest {
            [] => Ok((host, None)),
            [b':', port @ ..] => Ok((host, Some(port))),
            _ => Err(HostError::Literal),
        };
    }
    match raw.iter().rposition(|&b| b == b':') {
        Some(i) => Ok((&raw[..i], Some(&raw[i + 1..]))),
        None => Ok((raw, None)),
    }
}

/// Why a path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathError {
    NotOrigin,
    Escape,
    Nul,
    DotSegment,
    EncodedSlash,
    Semicolon,
}

/// The path stage: the request's path in its one canonical form (RFC 3986 §6.2.2), written back
/// into the request so that routing, `strip_prefix` and the upstream all see it; the query is
/// left as sent.
pub fn path(parts: &mut Parts, policy: PathPolicy, trace: &mut Trace) -> Result<(), Refusal> {
    let received = parts.uri.path();
    let normalized = match normalize_path(received, policy) {
        Ok(None) => return Ok(()),
        Ok(Some(p)) => p,
        Err(e) => return Err(path_refusal(e, trace)),
    };
    let mut pq = normalized;
    let note = format!("path {received:?} normalised to {pq:?}");
    if let Some(query) = parts.uri.query() {
        pq.push('?');
        pq.push_str(query);
    }
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = PathAndQuery::try_from(pq).ok();
    match Uri::from_parts(uri) {
        Ok(uri) => parts.uri = uri,
        Err(_) => return Err(path_refusal(PathError::Escape, trace)),
    }
    trace.step(Stage::Canonical, note);
    trace.path = RequestPath::of(&parts.uri);
    Ok(())
}

fn path_refusal(e: PathError, trace: &mut Trace) -> Refusal {
    let (reason, detail, hint) = match e {
        PathError::NotOrigin => (
            Reason::PathInvalid,
            "The request-target is not a path starting with '/'.",
            "Send an origin-form request-target (/path?query).",
        ),
        PathError::Escape => (
            Reason::PathInvalid,
            "The path has a '%' that does not start a percent-encoded byte (two hex digits).",
            "Percent-encode '%' itself as %25.",
        ),
        PathError::Nul => (
            Reason::PathInvalid,
            "The path contains an encoded NUL byte (%00).",
            "Remove the NUL byte from the path.",
        ),
        PathError::DotSegment => (
            Reason::PathInvalid,
            "The path contains dot segments (., .., or encoded forms), which could reach a different route upstream.",
            "Send the normalized path.",
        ),
        PathError::EncodedSlash => (
            Reason::PathEncodedSlash,
            "The path contains an encoded slash or backslash (%2F, %5C or \\), which upstreams decode differently: keyway could route on one path while the upstream serves another.",
            "Send real slashes, or set paths.encoded_slashes: keep if the application needs encoded ones.",
        ),
        PathError::Semicolon => (
            Reason::PathSemicolon,
            "The path contains ';', which servlet containers (Tomcat, Jetty) cut from each segment with what follows: they could serve another path than the one keyway routed.",
            "Send the path without ';' parameters (percent-encode a literal ';' as %3B), or set paths.semicolons: keep if no upstream strips path parameters.",
        ),
    };
    trace.step(Stage::Canonical, "path refused");
    Refusal::new(reason, detail).hint(hint)
}

/// Bytes that make the fast scan hand the path to `rewrite_path`.
const fn special_bytes() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0x80;
    while i < 256 {
        t[i] = true;
        i += 1;
    }
    t[b'%' as usize] = true;
    t[b'\\' as usize] = true;
    t[b';' as usize] = true;
    t
}
static SPECIAL: [bool; 256] = special_bytes();

/// `None`: the path is canonical as sent (the common case: one pass, no copy).
fn normalize_path(path: &str, policy: PathPolicy) -> Result<Option<String>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOrigin);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if SPECIAL[b as usize] {
            break;
        }
        // "//" merges and "/." may start a dot segment.
        if b == b'/' && matches!(bytes.get(i + 1), Some(b'/' | b'.')) {
            break;
        }
        i += 1;
    }
    if i == bytes.len() {
        return Ok(None);
    }
    let out = rewrite_path(bytes, policy)?;
    if has_dot_segment(&out, policy) {
        return Err(PathError::DotSegment);
    }
    Ok((out != path).then_some(out))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Decodes percent-encoded unreserved characters, upper-cases the hex of the other escapes,
/// percent-encodes raw non-ASCII bytes and merges repeated slashes.
fn rewrite_path(bytes: &[u8], policy: PathPolicy) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = |k: usize| bytes.get(k).and_then(|&h| (h as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(PathError::Escape);
                };
                let decoded = (hi * 16 + lo) as u8;
                match decoded {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' if policy.encoded_slashes == Spelling::Reject => {
                        return Err(PathError::EncodedSlash);
                    }
                    d if is_unreserved(d) => out.push(d as char),
                    d => push_escaped(&mut out, d),
                }
                i += 3;
                continue;
            }
            b'\\' if policy.encoded_slashes == Spelling::Reject => {
                return Err(PathError::EncodedSlash);
            }
            b';' if policy.semicolons == Spelling::Reject => return Err(PathError::Semicolon),
            b'/' if out.ends_with('/') => {}
            0x80.. => push_escaped(&mut out, b),
            _ => out.push(b as char),
        }
        i += 1;
    }
    Ok(out)
}

/// A segment that is `.` or `..` — also before a `;params` part (Tomcat reads `..;x` as `..`),
/// and, when encoded slashes are kept, between `%2F`, `%5C` or `\` separators, which some
/// upstreams decode into real ones.
fn has_dot_segment(path: &str, policy: PathPolicy) -> bool {
    let keep_slashes = policy.encoded_slashes == Spelling::Keep;
    let mut unified;
    let mut text = path;
    if keep_slashes && (path.contains('%') || path.contains('\\')) {
        unified = path.replace("%2F", "/").replace("%5C", "/");
        unified = unified.replace('\\', "/");
        text = &unified;
    }
    text.split('/').any(|segment| {
        let segment = segment.split(';').next().unwrap_or(segment);
        segment == "." || segment == ".."
    })
}

/// The canonical form of a route's configured path, or why it cannot be one. Routes may hold
/// only what every decoding upstream reads as keyway does: letters, digits, `-._~`, `/`, and
/// non-ASCII characters (raw or percent-encoded). A reserved character such as `:` or `!` may
/// reach keyway percent-encoded or not, and an upstream that decodes paths serves both spellings
/// from one place while keyway would see two.
pub fn route_path(path: &str) -> Result<String, String> {
    let policy = PathPolicy::default();
    let canonical = match normalize_path(path, policy) {
        Ok(None) => path.to_owned(),
        Ok(Some(p)) => p,
        Err(PathError::NotOrigin) => return Err(format!("path {path:?} must start with /")),
        Err(e) => {
            return Err(format!(
                "path {path:?} is not canonical ({}): routes match the normalised path",
                match e {
                    PathError::DotSegment => "it has a dot segment",
                    PathError::EncodedSlash => "it has an encoded slash or a backslash",
                    PathError::Semicolon => "it has a ';'",
                    _ => "it has an invalid percent-encoding",
                }
            ));
        }
    };
    if canonical != path {
        return Err(format!(
            "path {path:?} is not in canonical form: write it as {canonical:?} (requests are matched after percent-encoded letters, digits and -._~ are decoded, repeated slashes merged and other bytes percent-encoded in upper case)"
        ));
    }
    let mut bytes = canonical.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'/' => {}
            b if is_unreserved(b) => {}
            b'%' => {
                // Only the escapes of non-ASCII bytes remain in a canonical path here.
                let hi = bytes.next().and_then(|h| (h as char).to_digit(16));
                let _ = bytes.next();
                if hi.is_none_or(|h| h < 8) {
                    return Err(format!(
                        "path {path:?} has a percent-encoded reserved character: upstreams that decode paths read it as the character itself, and clients may send either spelling; route on a shorter prefix"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "path {path:?} has the reserved character {:?}: clients may send it percent-encoded or not and upstreams that decode paths serve both from one place, while keyway would match only one; route on a shorter prefix",
                    other as char
                ));
            }
        }
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REJECT: PathPolicy = PathPolicy {
        encoded_slashes: Spelling::Reject,
        semicolons: Spelling::Reject,
    };
    const KEEP: PathPolicy = PathPolicy {
        encoded_slashes: Spelling::Keep,
        semicolons: Spelling::Keep,
    };

    fn norm(p: &str, policy: PathPolicy) -> Result<String, PathError> {
        normalize_path(p, policy).map(|o| o.unwrap_or_else(|| p.to_owned()))
    }

    #[test]
    fn canonical_paths_are_left_alone() {
        for p in [
            "/",
            "/api/x",
            "/a-b_c.d~e/",
            "/a..b/c",
            "/.well/x",
            "/x.",
            "/a/b?",
        ] {
            assert_eq!(normalize_path(p, REJECT), Ok(None), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_slashes_merged() {
        assert_eq!(norm("/%61pi/x", REJECT).unwrap(), "/api/x");
        assert_eq!(norm("//api//x", REJECT).unwrap(), "/api/x");
        assert_eq!(norm("/%7euser/%2d", REJECT).unwrap(), "/~user/-");
        assert_eq!(norm("/a%20b%3a", REJECT).unwrap(), "/a%20b%3A");
        assert_eq!(norm("/caf\u{e9}", REJECT).unwrap(), "/caf%C3%A9");
        assert_eq!(norm("/a%2Fb", KEEP).unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%2fb", KEEP).unwrap(), "/a%2Fb");
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/public/%2e%2e/admin",
            "/p/%2E./x",
            "/..",
            "/a/.",
            "/public/..;x/admin",
            "/public/.;/admin",
            "/%2e",
            "//..//x",
        ] {
            assert_eq!(norm(bad, KEEP), Err(PathError::DotSegment), "{bad}");
        }
        for bad in ["/public%2F..%2Fadmin", "/p\\..\\x", "/p%5c..%5cx"] {
            assert_eq!(norm(bad, KEEP), Err(PathError::DotSegment), "{bad}");
            assert_eq!(norm(bad, REJECT), Err(PathError::EncodedSlash), "{bad}");
        }
    }

    #[test]
    fn refusals_name_their_class() {
        assert_eq!(norm("/a%2Fb", REJECT), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a\\b", REJECT), Err(PathError::EncodedSlash));
        assert_eq!(norm("/a;b", REJECT), Err(PathError::Semicolon));
        assert_eq!(norm("/a%3Bb", REJECT).unwrap(), "/a%3Bb");
        assert_eq!(norm("/a%zz", REJECT), Err(PathError::Escape));
        assert_eq!(norm("/a%2", REJECT), Err(PathError::Escape));
        assert_eq!(norm("/a%00", REJECT), Err(PathError::Nul));
        assert_eq!(norm("*", REJECT), Err(PathError::NotOrigin));
        assert_eq!(norm("", REJECT), Err(PathError::NotOrigin));
    }

    #[test]
    fn authorities_normalise_case_dot_and_default_port() {
        let n = |s: &str, tls| {
            normalize(s.as_bytes(), tls).map(|n| (n.text().into_owned(), n.host_len))
        };
        assert_eq!(n("example.com", false), Ok(("example.com".into(), 11)));
        assert_eq!(n("Example.COM.", false), Ok(("example.com".into(), 11)));
        assert_eq!(n("example.com:80", false), Ok(("example.com".into(), 11)));
        assert_eq!(
            n("example.com:443", false),
            Ok(("example.com:443".into(), 11))
        );
        assert_eq!(n("example.com:443", true), Ok(("example.com".into(), 11)));
        assert_eq!(n("example.com:", false), Ok(("example.com".into(), 11)));
        assert_eq!(n("example.com:0080", false), Ok(("example.com".into(), 11)));
        assert_eq!(
            n("example.com:08080", false),
            Ok(("example.com:8080".into(), 11))
        );
        assert_eq!(n("127.0.0.1:8080", false), Ok(("127.0.0.1:8080".into(), 9)));
        assert_eq!(n("[::1]:8080", false), Ok(("[::1]:8080".into(), 5)));
        assert_eq!(n("[FE80::1]", false), Ok(("[fe80::1]".into(), 9)));
        for (bad, e) in [
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("a..b", HostError::Label),
            (".a", HostError::Label),
            ("a.b..", HostError::Label),
            ("u@a.b", HostError::Userinfo),
            ("a b", HostError::Character),
            ("a%2eb", HostError::Character),
            ("a,b", HostError::Character),
            ("a:99999", HostError::Port),
            ("a:8o", HostError::Port),
            ("a:1:2", HostError::Character),
            ("[::1", HostError::Literal),
            ("[::g]", HostError::Literal),
            ("[::1]x", HostError::Literal),
        ] {
            assert_eq!(n(bad, false).map(|_| ()), Err(e), "{bad:?}");
        }
    }

    /// The fast check accepts only what the full one leaves unchanged.
    #[test]
    fn the_fast_authority_check_agrees_with_the_full_one() {
        let mut accepted = 0;
        for host in [
            "a",
            "a.b",
            "example.com",
            "127.0.0.1",
            "x-y_z.example",
            "A.b",
            "a.",
            ".a",
        ] {
            for port in [
                "", ":", ":1", ":80", ":443", ":8080", ":65535", ":65536", ":0", ":08", ":x",
                ":123456",
            ] {
                for tls in [false, true] {
                    let raw = format!("{host}{port}");
                    if let Some(len) = already_canonical(raw.as_bytes(), tls) {
                        accepted += 1;
                        let full = normalize_fully(raw.as_bytes(), tls).unwrap();
                        assert!(full.rewritten.is_none(), "{raw} {tls}");
                        assert_eq!(full.host_len, len, "{raw}");
                    }
                }
            }
        }
        assert!(accepted > 40, "{accepted}");
    }

    #[test]
    fn route_paths_must_be_canonical_and_unreserved() {
        assert_eq!(route_path("/api/").unwrap(), "/api/");
        assert_eq!(route_path("/caf%C3%A9").unwrap(), "/caf%C3%A9");
        assert!(route_path("/caf\u{e9}").unwrap_err().contains("/caf%C3%A9"));
        assert!(route_path("//api").unwrap_err().contains("\"/api\""));
        assert!(route_path("/%61pi").unwrap_err().contains("\"/api\""));
        assert!(route_path("/v1/x:batch").unwrap_err().contains("':'"));
        assert!(route_path("/a%3Ab").unwrap_err().contains("reserved"));
        assert!(route_path("/a/../b").unwrap_err().contains("dot segment"));
        assert!(route_path("api").unwrap_err().contains("start with /"));
    }
}
