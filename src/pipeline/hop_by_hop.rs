//! Hop-by-hop headers (RFC 9110 §7.6.1): the one table, applied to requests on their way
//! upstream and to responses on their way back. They describe one connection, so a proxy
//! removes them, and every header the `Connection` header names.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Hop-by-hop by definition (RFC 9110 §7.6.1 and the `Proxy-*` pair, which belong to the proxy
/// they address), `Upgrade`, which only a WebSocket handshake keeps, and `HTTP2-Settings`,
/// which belongs to an `Upgrade: h2c` keyway never forwards (RFC 7540 §3.2.1).
/// Whether a lower-case header name is in the table; a first byte rules most names out.
#[inline]
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name.as_bytes().first(),
        Some(b'c' | b'h' | b'k' | b'p' | b't' | b'u')
    ) && matches!(
        name,
        "connection"
            | "http2-settings"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether any name is hop-by-hop: one pass over the names.
pub fn any(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| is_hop_by_hop(name.as_str()))
}

/// Removes the hop-by-hop headers and those `Connection` names; `keep_upgrade` keeps `Upgrade`
/// (a WebSocket handshake). `removed` hears of each removal worth recording: neither
/// `Connection` nor `Upgrade`, which every proxied connection has. One pass over the names
/// finds what goes, and nothing is allocated in the common case: most responses carry just
/// `Connection: keep-alive`, which names nothing beyond this table.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool, mut removed: impl FnMut(&str)) {
    let listed = Listed::of(headers);
    // Gone first, so that in the common case one pass over the names finds nothing more.
    headers.remove(header::CONNECTION);
    let doomed = |name: &HeaderName| {
        let name = name.as_str();
        (is_hop_by_hop(name) || listed.names(name)) && !(keep_upgrade && name == "upgrade")
    };
    while let Some(name) = headers.keys().find(|name| doomed(name)).cloned() {
        headers.remove(&name);
        if name != header::CONNECTION && name != header::UPGRADE {
            removed(name.as_str());
        }
    }
}

/// The `Connection` values that name headers beyond the hop-by-hop table (and beyond
/// `close`, an option rather than a name): almost always none.
enum Listed {
    None,
    One(HeaderValue),
    Several(Vec<HeaderValue>),
}

impl Listed {
    fn of(headers: &HeaderMap) -> Listed {
        let mut values = headers.get_all(header::CONNECTION).iter();
        match (values.next(), values.next()) {
            (None, _) => Listed::None,
            (Some(one), None) if names_nothing(one) => Listed::None,
            (Some(one), None) => Listed::One(one.clone()),
            (Some(_), Some(_)) => Listed::Several(
                headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// Whether a (lower-case) header name is listed.
    fn names(&self, name: &str) -> bool {
        let in_value =
            |value: &HeaderValue| tokens(value).any(|t| t.eq_ignore_ascii_case(name.as_bytes()));
        match self {
            Listed::None => false,
            Listed::One(value) => in_value(value),
            Listed::Several(values) => values.iter().any(in_value),
        }
    }
}

/// Whether a `Connection` value names no header beyond the table: `keep-alive` and `close`
/// are answered without splitting.
fn names_nothing(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.eq_ignore_ascii_case(b"keep-alive")
        || bytes.eq_ignore_ascii_case(b"close")
        || tokens(value).all(is_hop_by_hop_token)
}

/// A `Connection` token that names a header of the table (or is `close`), in any case.
fn is_hop_by_hop_token(token: &[u8]) -> bool {
    // Lower-cased on the stack: the longest name in the table has 19 bytes.
    let mut folded = [0u8; 19];
    let Some(folded) = folded.get_mut(..token.len()) else {
        return false;
    };
    for (to, from) in folded.iter_mut().zip(token) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(folded).is_ok_and(|t| t == "close" || is_hop_by_hop(t))
}

/// A `Connection` value's tokens, as bytes: a byte that is not ASCII in one token (which then
/// names no header) must not hide the others, as it would if the value were read as text.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn every_connection_value_is_honoured_not_only_the_first() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-one"),
            ("connection", "X-Two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "3"),
            ("te", "trailers"),
        ]);
        let mut recorded = Vec::new();
        strip(&mut headers, false, |name| recorded.push(name.to_owned()));
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        recorded.sort();
        assert_eq!(recorded, ["te", "x-one", "x-two"]);
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let mut headers = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("http2-settings", "AAA"),
        ]);
        let mut recorded = Vec::new();
        strip(&mut headers, true, |name| recorded.push(name.to_owned()));
        assert_eq!(headers.get("upgrade").unwrap(), "websocket");
        assert!(headers.get("connection").is_none());
        assert_eq!(recorded, ["http2-settings"]);
    }

    #[test]
    fn junk_in_connection_hides_no_other_name_and_never_panics() {
        let mut headers = HeaderMap::new();
        let junk = HeaderValue::from_bytes(b" , ,bad name,\xff\xfe,x-y").unwrap();
        headers.append(header::CONNECTION, junk);
        headers.append("x-y", HeaderValue::from_static("hop"));
        strip(&mut headers, false, |_| {});
        assert!(headers.is_empty());
    }
}
