//! Forward-auth (SPEC §7): `/_keyway/auth` answers nginx `auth_request`, ingress-nginx
//! `auth-url`, Traefik `ForwardAuth`, Caddy `forward_auth` and Envoy `ext_authz` (HTTP). The
//! original request is rebuilt from the headers those proxies send, believed only from
//! `trusted_proxies` (spoofing them is a known bypass elsewhere), and decided by the same stages
//! as a proxied request. The answer is 200 with the identity, or 401/403: never a redirect,
//! which nginx would turn into a 500.

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};

use crate::oidc::Conn;
use crate::pipeline::answer::{Answer, AnswerKind};
use crate::pipeline::inject;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::runtime::Runtime;
use crate::pipeline::trace::{RequestPath, Stage, Trace};
use crate::pipeline::unauthenticated::Mode;
use crate::reason::Reason;

pub static X_AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
pub static X_AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
pub static X_AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
/// The original request's cookies without keyway's own (and without a consumed credential):
/// what the calling proxy should send upstream as `Cookie`, since keyway does not forward.
pub static X_KEYWAY_COOKIE: HeaderName = HeaderName::from_static("x-keyway-cookie");

/// Headers that describe the original request to the auth service; they are not part of it.
const DESCRIBING: [&str; 10] = [
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-sent-from",
    "x-auth-request-redirect",
];

/// The original request as the calling proxy describes it.
struct Original {
    method: Method,
    /// `https` or `http`.
    tls: bool,
    host: Option<HeaderValue>,
    path_and_query: String,
    /// Which headers described it, for the trace.
    from: &'static str,
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// nginx and ingress-nginx send `X-Original-URL` (or `X-Original-URI` beside `Host`) and
/// `X-Original-Method`; Traefik and Caddy send `X-Forwarded-Method/-Proto/-Host/-Uri`.
fn original(parts: &Parts, conn: Conn) -> Result<Original, String> {
    let h = &parts.headers;
    let method_text = text(h, "x-original-method").or_else(|| text(h, "x-forwarded-method"));
    let method = match method_text {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| format!("the original method {m:?} is not an HTTP method"))?,
        None => Method::GET,
    };
    let proto = text(h, "x-forwarded-proto");
    let tls_from_proto = proto.map_or(conn.tls, |p| p.eq_ignore_ascii_case("https"));
    let host_header = |name: &str| h.get(name).cloned();
    if let Some(url) = text(h, "x-original-url") {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("X-Original-URL {url:?} is not a URL"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("X-Original-URL {url:?} is not an absolute URL"))?;
        return Ok(Original {
            method,
            tls: uri.scheme_str() == Some("https"),
            host: HeaderValue::from_str(authority.as_str()).ok(),
            path_and_query: uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            from: "X-Original-URL",
        });
    }
    if let Some(uri) = text(h, "x-forwarded-uri") {
        return Ok(Original {
            method,
            tls: tls_from_proto,
            host: host_header("x-forwarded-host").or_else(|| host_header("host")),
            path_and_query: uri.to_owned(),
            from: "X-Forwarded-Uri",
        });
    }
    if let Some(uri) = text(h, "x-original-uri") {
        return Ok(Original {
            method,
            tls: tls_from_proto,
            host: host_header("x-forwarded-host").or_else(|| host_header("host")),
            path_and_query: uri.to_owned(),
            from: "X-Original-URI",
        });
    }
    Err("the request does not describe the original one: send X-Original-URL (ingress-nginx), X-Original-URI with Host (nginx auth_request), or X-Forwarded-Uri with X-Forwarded-Host (Traefik, Caddy)".to_owned())
}

/// The forward-auth check of one original request.
pub async fn check(rt: &Runtime, parts: &Parts, conn: Conn, trace: &mut Trace) -> Answer {
    if !conn.trusted {
        trace.step(
            Stage::Endpoint,
            "forward-auth from a peer outside trusted_proxies: its description is not believed",
        );
        return Refusal::new(
            Reason::ForwardAuthUntrusted,
            "This peer is not in trusted_proxies, so its X-Original-* and X-Forwarded-* headers, which say what request to check, are not believed.",
        )
        .hint("Add the address of the proxy that calls /_keyway/auth to trusted_proxies.")
        .into();
    }
    let original = match original(parts, conn) {
        Ok(o) => o,
        Err(detail) => {
            trace.step(Stage::Endpoint, "forward-auth without an original request");
            return Refusal::new(Reason::ForwardAuthNoOriginal, detail).into();
        }
    };
    let mut inner = match rebuild(parts, &original) {
        Some(inner) => inner,
        None => {
            return Refusal::new(
                Reason::PathInvalid,
                format!(
                    "The original request-target {:?} ({}) is not an origin-form path.",
                    original.path_and_query, original.from
                ),
            )
            .with_status(StatusCode::FORBIDDEN)
            .into();
        }
    };
    trace.method = inner.method.clone();
    trace.path = RequestPath::of(&inner.uri);
    trace.step(
        Stage::Endpoint,
        format!("forward-auth: the original request from {}", original.from),
    );
    let inner_conn = Conn {
        tls: original.tls,
        trusted: conn.trusted,
    };
    let decided =
        crate::pipeline::decide(rt, &mut inner, false, inner_conn, Mode::ForwardAuth, trace).await;
    let decision = match decided {
        Ok(decision) => decision,
        Err(mut answer) => {
            // nginx passes 401 and 403 on and turns any other status into a 500: a request
            // keyway would refuse as malformed or unrouted is a 403 here.
            if let AnswerKind::Refuse(refusal) = &mut answer.kind {
                let status = refusal.status();
                if status.is_client_error() && status != StatusCode::UNAUTHORIZED {
                    refusal.status = Some(StatusCode::FORBIDDEN);
                }
            }
            return answer;
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(identity) = &decision.identity {
        put(&mut headers, &X_AUTH_REQUEST_USER, &identity.subject);
        if let Some(email) = identity.email() {
            put(&mut headers, &X_AUTH_REQUEST_EMAIL, email);
        }
        if !identity.groups.is_empty() {
            put(
                &mut headers,
                &X_AUTH_REQUEST_GROUPS,
                &identity.groups.join(","),
            );
        }
        inject::identity_headers(&mut headers, identity, trace);
    }
    if inner.headers.contains_key(header::COOKIE) {
        let mut cookies = HeaderMap::new();
        for v in inner.headers.get_all(header::COOKIE) {
            cookies.append(header::COOKIE, v.clone());
        }
        rt.headers.strip_keyway_cookies(&mut cookies, trace);
        let kept: Vec<&str> = cookies
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(X_KEYWAY_COOKIE.clone(), v);
        }
    }
    let wants_inject = parts.uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "inject" && (v == "1" || v == "true"))
    });
    if wants_inject {
        for (name, value) in &decision.route.upstream.inject {
            headers.insert(name.clone(), value.expose().clone());
        }
        trace.step(
            Stage::Inject,
            "forward-auth answer carries the upstream's inject headers (?inject=1)",
        );
    }
    trace.step(Stage::Endpoint, "forward-auth: allowed");
    Answer::grant(headers).with_cookies(decision.cookies)
}

fn put(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

/// The original request's head: its method, target and host, with the subrequest's headers
/// (the client's credentials) less those that only described it.
fn rebuild(parts: &Parts, original: &Original) -> Option<Parts> {
    if !original.path_and_query.starts_with('/') {
        return None;
    }
    let uri: Uri = original.path_and_query.parse().ok()?;
    let (mut inner, ()) = http::Request::builder()
        .method(original.method.clone())
        .uri(uri)
        .version(http::Version::HTTP_11)
        .body(())
        .ok()?
        .into_parts();
    let mut headers = parts.headers.clone();
    for name in DESCRIBING {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    match &original.host {
        Some(host) => {
            headers.insert(header::HOST, host.clone());
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    inner.headers = headers;
    Some(inner)
}
