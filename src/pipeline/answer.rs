//! What keyway answers itself, the third outcome beside forwarding: a refusal (problem+json), a
//! redirect keyway decided (sign-in, the callback's return, sign-out), the forward-auth grant,
//! or a bare acknowledgement. `render` is the one place any of them becomes a response.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::body::Body;
use super::refusal::{Refusal, problem_body, www_authenticate};
use super::trace::Trace;
use crate::config::DetailLevel;

#[derive(Debug)]
pub struct Answer {
    pub kind: AnswerKind,
    /// `Set-Cookie` values: a session set, refreshed or cleared, a sign-in state.
    pub cookies: Vec<HeaderValue>,
}

#[derive(Debug)]
pub enum AnswerKind {
    Refuse(Refusal),
    /// 302 to `Location` (relative, or the provider's own URL).
    Redirect(HeaderValue),
    /// Forward-auth: the original request may pass; the headers say who it is.
    Grant(HeaderMap),
    /// A status with a one-line text body, for endpoints whose callers read only the status
    /// (back-channel logout).
    Status(StatusCode, &'static str),
    /// A refused WebSocket handshake answered as a close frame (`websocket.refuse_with: close`).
    CloseWebSocket(Refusal, Box<crate::websocket::close::Handshake>),
}

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        Answer {
            kind: AnswerKind::Refuse(refusal),
            cookies: Vec::new(),
        }
    }
}

impl Answer {
    pub fn redirect(location: HeaderValue) -> Self {
        Answer {
            kind: AnswerKind::Redirect(location),
            cookies: Vec::new(),
        }
    }

    pub fn grant(headers: HeaderMap) -> Self {
        Answer {
            kind: AnswerKind::Grant(headers),
            cookies: Vec::new(),
        }
    }

    pub fn status(status: StatusCode, text: &'static str) -> Self {
        Answer {
            kind: AnswerKind::Status(status, text),
            cookies: Vec::new(),
        }
    }

    pub fn with_cookies(mut self, cookies: impl IntoIterator<Item = HeaderValue>) -> Self {
        self.cookies.extend(cookies);
        self
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        match &self.kind {
            AnswerKind::Refuse(r) | AnswerKind::CloseWebSocket(r, _) => Some(r),
            _ => None,
        }
    }
}

/// The response for `answer`. A refusal moves into the trace (the access log, metrics and the
/// decision log read its reason from there).
pub fn render(answer: Answer, trace: &mut Trace, detail: DetailLevel) -> Response<Body> {
    let Answer { kind, cookies } = answer;
    let mut response = match kind {
        AnswerKind::Refuse(refusal) => {
            let response = refuse(&refusal, trace, detail);
            trace.refusal = Some(refusal);
            response
        }
        AnswerKind::Redirect(location) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(header::LOCATION, location);
            no_store(response.headers_mut());
            response
        }
        AnswerKind::Grant(headers) => {
            let mut response = Response::new(Body::empty());
            *response.headers_mut() = headers;
            no_store(response.headers_mut());
            response
        }
        AnswerKind::CloseWebSocket(refusal, handshake) => {
            let mut response = crate::websocket::close::render(&refusal, *handshake);
            response.headers_mut().insert(
                "x-keyway-reason",
                HeaderValue::from_static(refusal.reason.code()),
            );
            trace.refusal = Some(refusal);
            response
        }
        AnswerKind::Status(status, text) => {
            let mut response = Response::new(Body::full(text));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            no_store(response.headers_mut());
            response
        }
    };
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `answer` as HTTP/1.1 bytes, for a connection whose head hyper's parser refused (hyper then
/// writes its own bare answer, which keyway replaces): the response `render` gives, with the
/// request id, and the connection closed after it.
pub fn render_http1(answer: Answer, trace: &mut Trace, detail: DetailLevel) -> Vec<u8> {
    let response = render(answer, trace, detail);
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let body = match body {
        Body::Full(Some(bytes)) => bytes,
        _ => Default::default(),
    };
    parts.headers.insert(
        super::request_id::X_REQUEST_ID.clone(),
        trace.request_id.header_value().clone(),
    );
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, body.len().into());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// Answers that depend on who asked (a sign-in, a session cookie) must not be cached.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The status answer of a refusal: problem+json plus the headers that explain it.
fn refuse(refusal: &Refusal, trace: &Trace, detail: DetailLevel) -> Response<Body> {
    let mut response = Response::new(Body::full(problem_body(refusal, trace, detail)));
    *response.status_mut() = refusal.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(
        "x-keyway-reason",
        HeaderValue::from_static(refusal.reason.code()),
    );
    if let Some(challenge) = www_authenticate(refusal, detail) {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if refusal.status() == StatusCode::BAD_REQUEST {
        // The request was malformed: do not trust the rest of this connection.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
