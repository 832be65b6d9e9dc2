//! The WebSocket handshake's own credential places and checks.
//!
//! A browser's `WebSocket` cannot set headers, so clients of Kubernetes-style APIs put the
//! bearer token in a subprotocol (`base64url.bearer.authorization.k8s.io.<token>`): keyway
//! takes it out (never forwarded, never echoed) and treats it as `Authorization: Bearer`. A
//! browser does send cookies with a handshake from any site, so a cookie-authenticated handshake
//! must come from an allowed `Origin` (cross-site WebSocket hijacking).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use http::{HeaderValue, header};

use super::Settings;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::trace::{Stage, Trace};
use crate::reason::Reason;

const BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

fn bad_subprotocol(detail: &str, trace: &mut Trace) -> Refusal {
    trace.step(Stage::Headers, "bad bearer subprotocol");
    Refusal::new(Reason::WebsocketBadSubprotocol, detail)
        .hint("Offer one subprotocol base64url.bearer.authorization.k8s.io.<token>, the token in unpadded base64url.")
}

/// Moves a token offered as the Kubernetes bearer subprotocol into `Authorization`.
pub fn bearer_subprotocol(parts: &mut Parts, trace: &mut Trace) -> Result<(), Refusal> {
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let mut bearer = offered.iter().filter(|p| p.starts_with(BEARER_PREFIX));
    let Some(entry) = bearer.next() else {
        return Ok(());
    };
    if bearer.next().is_some() {
        return Err(bad_subprotocol(
            "The handshake offers more than one bearer-token subprotocol; keyway will not pick one.",
            trace,
        ));
    }
    let encoded = &entry[BEARER_PREFIX.len()..];
    let token = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()));
    let Some(token) = token else {
        return Err(bad_subprotocol(
            "The bearer-token subprotocol is not a token in unpadded base64url.",
            trace,
        ));
    };
    // The other subprotocols go on to the upstream; this one never does.
    let rest: Vec<&str> = offered
        .iter()
        .filter(|p| !p.starts_with(BEARER_PREFIX))
        .map(String::as_str)
        .collect();
    parts.headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !rest.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rest.join(", "))
    {
        parts.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    let bearer = format!("Bearer {token}");
    if let Some(existing) = parts.headers.get(header::AUTHORIZATION) {
        if existing.as_bytes() != bearer.as_bytes() {
            trace.step(Stage::Authn, "two different bearer tokens");
            return Err(Refusal::new(
                Reason::CredentialsConflicting,
                "The handshake carries different tokens in Authorization and in the bearer-token subprotocol.",
            )
            .hint("Send one token, in one place.")
            .token_presented());
        }
        return Ok(());
    }
    let Ok(mut value) = HeaderValue::from_str(&bearer) else {
        return Err(bad_subprotocol(
            "The bearer-token subprotocol holds an unusable token.",
            trace,
        ));
    };
    value.set_sensitive(true);
    parts.headers.insert(header::AUTHORIZATION, value);
    trace.step(
        Stage::Headers,
        "bearer token taken from the Kubernetes subprotocol (not forwarded)",
    );
    Ok(())
}

/// A handshake authenticated by a cookie must come from an allowed origin: by default the
/// request's own (`origin` of the site), else one of `allowed_origins`. A handshake without
/// `Origin` is not a browser's and cannot be a cross-site hijack.
pub fn check_origin(
    settings: &Settings,
    parts: &Parts,
    own_origin: Option<&str>,
    trace: &mut Trace,
) -> Result<(), Refusal> {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
    let allowed = if settings.allowed_origins.is_empty() {
        own_origin.is_some_and(|own| own.eq_ignore_ascii_case(&origin))
    } else {
        settings.allowed_origins.contains(&origin)
    };
    if allowed {
        return Ok(());
    }
    trace.step(
        Stage::Authz,
        "cookie-authenticated handshake from another origin",
    );
    Err(Refusal::new(
        Reason::WebsocketOriginDenied,
        format!(
            "This WebSocket handshake is authenticated by a cookie and comes from the origin {origin:?}, which the route does not allow: a page on another site could use the cookie (cross-site WebSocket hijacking)."
        ),
    )
    .hint("List the page's origin in the route's websocket.allowed_origins."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::request_id;
    use crate::pipeline::trace::RequestPath;

    fn trace() -> Trace {
        Trace::start(
            request_id::mint(),
            http::Method::GET,
            RequestPath::default(),
        )
    }

    fn parts(protocols: &[&str], auth: Option<&str>) -> Parts {
        let mut b = http::Request::get("/ws");
        for p in protocols {
            b = b.header("sec-websocket-protocol", *p);
        }
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn entry(token: &str) -> String {
        format!("{BEARER_PREFIX}{}", URL_SAFE_NO_PAD.encode(token))
    }

    #[test]
    fn the_bearer_subprotocol_becomes_authorization_and_is_never_forwarded() {
        let offered = format!("v4.channel.k8s.io, {}", entry("tok.en.value"));
        let mut p = parts(&[&offered], None);
        bearer_subprotocol(&mut p, &mut trace()).unwrap();
        assert_eq!(p.headers["authorization"], "Bearer tok.en.value");
        assert!(p.headers["authorization"].is_sensitive());
        assert_eq!(p.headers["sec-websocket-protocol"], "v4.channel.k8s.io");
        // Alone, the header goes.
        let mut p = parts(&[&entry("t")], None);
        bearer_subprotocol(&mut p, &mut trace()).unwrap();
        assert!(!p.headers.contains_key("sec-websocket-protocol"));
        // The same token in Authorization too is fine; another is a conflict.
        let mut p = parts(&[&entry("t")], Some("Bearer t"));
        bearer_subprotocol(&mut p, &mut trace()).unwrap();
        let mut p = parts(&[&entry("t")], Some("Bearer other"));
        let e = bearer_subprotocol(&mut p, &mut trace()).unwrap_err();
        assert_eq!(e.reason, Reason::CredentialsConflicting);
    }

    #[test]
    fn two_tokens_and_bad_base64_are_refused() {
        for offered in [
            vec![entry("a"), entry("b")],
            vec![format!("{}, {}", entry("a"), entry("a"))],
            vec![format!("{BEARER_PREFIX}dG9r=")],
            vec![format!("{BEARER_PREFIX}dG9r+/")],
            vec![format!("{BEARER_PREFIX}")],
            vec![format!("{BEARER_PREFIX}{}", URL_SAFE_NO_PAD.encode("a b"))],
        ] {
            let refs: Vec<&str> = offered.iter().map(String::as_str).collect();
            let mut p = parts(&refs, None);
            let e = bearer_subprotocol(&mut p, &mut trace()).unwrap_err();
            assert_eq!(e.reason, Reason::WebsocketBadSubprotocol, "{offered:?}");
        }
    }

    #[test]
    fn origins() {
        let own = Some("http://gw.example:8080");
        let same = Settings::default();
        let listed = Settings {
            allowed_origins: vec!["https://app.example.com".into()],
            ..Settings::default()
        };
        let with = |o: &str| {
            http::Request::get("/ws")
                .header("origin", o)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let none = parts(&[], None);
        assert!(check_origin(&same, &none, own, &mut trace()).is_ok());
        assert!(check_origin(&same, &with("http://GW.example:8080"), own, &mut trace()).is_ok());
        assert!(check_origin(&same, &with("https://evil.example"), own, &mut trace()).is_err());
        assert!(check_origin(&listed, &with("https://app.example.com"), own, &mut trace()).is_ok());
        assert!(check_origin(&listed, &with("http://gw.example:8080"), own, &mut trace()).is_err());
    }
}
