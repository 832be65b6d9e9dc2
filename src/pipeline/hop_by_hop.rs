//! Hop-by-hop headers (RFC 9110 §7.6.1): the one table, applied to requests on their way
//! upstream and to responses on their way back. They describe one connection, so a proxy
//! removes them, and every header the `Connection` header names.

use http::{HeaderMap, HeaderName, header};

/// Hop-by-hop by definition (RFC 9110 §7.6.1 and the `Proxy-*` pair, which belong to the proxy
/// they address), `Upgrade`, which only a WebSocket handshake keeps, and `HTTP2-Settings`,
/// which belongs to an `Upgrade: h2c` keyway never forwards (RFC 7540 §3.2.1).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
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

/// Whether any name is hop-by-hop: one pass over the names, a first byte ruling most out.
pub fn any(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        matches!(
            name.as_str().as_bytes().first(),
            Some(b'c' | b'h' | b'k' | b'p' | b't' | b'u')
        ) && is_hop_by_hop(name.as_str())
    })
}

/// Removes the hop-by-hop headers and those `Connection` names; `keep_upgrade` keeps `Upgrade`
/// (a WebSocket handshake). `removed` hears of each removal worth recording: neither
/// `Connection` nor `Upgrade`, which every proxied connection has.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool, mut removed: impl FnMut(&HeaderName)) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k.as_str()) && !(keep_upgrade && *k == header::UPGRADE))
        .cloned()
        .collect();
    for name in listed.iter().chain(&present) {
        let recorded = name != header::CONNECTION && name != header::UPGRADE;
        if headers.remove(name).is_some() && recorded {
            removed(name);
        }
    }
}
