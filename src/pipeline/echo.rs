//! The builtin `echo` upstream: answers with what an upstream would have received. A WebSocket
//! handshake to it is accepted: the first message says what the upstream handshake carried,
//! then every message is sent back (`websocket::echo`).

use std::collections::BTreeMap;

use http::request::Parts;
use http::{HeaderValue, Response, header};
use serde_json::{Value, json};

use super::authn::Identity;
use super::body::Body;
use crate::pipeline::runtime::Upstream;

pub fn respond(parts: &Parts, upstream: &Upstream, identity: Option<&Identity>) -> Response<Body> {
    json(describe(parts, upstream, identity).to_string())
}

pub fn json(body: String) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What an upstream would have received: method, path, query, headers (injected and
/// sensitive values redacted) and identity. A WebSocket handshake gets it as its first message.
pub fn describe(parts: &Parts, upstream: &Upstream, identity: Option<&Identity>) -> Value {
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let injected = upstream.inject.iter().any(|(n, _)| n == name);
        let text = if injected {
            "<injected, redacted>".to_owned()
        } else if value.is_sensitive() {
            // A token keyway passes on (pass_access_token, pass_id_token).
            "<sensitive, redacted>".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers
            .entry(name.as_str())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    let identity = identity.map_or(Value::Null, |id| {
        json!({
            "subject": &*id.subject,
            "consumer": id.consumer_name(),
            "groups": &*id.groups,
            "authenticator": &*id.authenticator,
        })
    });
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "identity": identity,
    })
}
