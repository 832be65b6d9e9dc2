//! A refusal is data: the reason, a detail a person can act on, a hint. `answer::render` turns
//! it into a response, with the problem+json body and `WWW-Authenticate` built here.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::trace::Trace;
use crate::config::DetailLevel;
use crate::reason::Reason;

#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// A sentence naming what failed: never a token, key, signature or secret.
    pub detail: String,
    pub hint: Option<String>,
    pub authenticator: Option<Arc<str>>,
    /// A token was presented (so RFC 6750 `error="invalid_token"` applies).
    pub token_presented: bool,
    /// The status when it is not the reason's own (forward-auth answers `route.none` with 403).
    pub status: Option<StatusCode>,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            hint: None,
            authenticator: None,
            token_presented: false,
            status: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn by(mut self, authenticator: &Arc<str>) -> Self {
        self.authenticator = Some(authenticator.clone());
        self
    }

    pub fn token_presented(mut self) -> Self {
        self.token_presented = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.reason.status())
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticator: Option<&'a str>,
    request_id: &'a str,
}

/// The problem+json body (RFC 9457) of a refusal, as bytes.
pub fn problem_body(refusal: &Refusal, trace: &Trace, detail: DetailLevel) -> Vec<u8> {
    let status = refusal.status();
    let full = detail == DetailLevel::Full;
    let problem = Problem {
        kind: format!("urn:keyway:reason:{}", refusal.reason.code()),
        title: status.canonical_reason().unwrap_or("Refused"),
        status: status.as_u16(),
        reason: refusal.reason.code(),
        detail: full.then_some(refusal.detail.as_str()),
        hint: if full { refusal.hint.as_deref() } else { None },
        route: trace.route.as_deref(),
        authenticator: refusal.authenticator.as_deref(),
        request_id: trace.request_id.as_str(),
    };
    serde_json::to_vec(&problem).unwrap_or_default()
}

/// `WWW-Authenticate` for a 401: RFC 6750 with `error="invalid_token"` when a token was presented.
pub fn www_authenticate(refusal: &Refusal, detail: DetailLevel) -> Option<HeaderValue> {
    if refusal.status() != StatusCode::UNAUTHORIZED {
        return None;
    }
    let value = if refusal.token_presented {
        let description = match detail {
            DetailLevel::Full => quoted_string_safe(&refusal.detail),
            DetailLevel::Reason => refusal.reason.code().to_owned(),
        };
        format!(
            "Bearer realm=\"keyway\", error=\"invalid_token\", error_description=\"{description}\""
        )
    } else {
        "Bearer realm=\"keyway\"".to_owned()
    };
    HeaderValue::from_str(&value).ok()
}

/// RFC 6750 restricts error_description to printable ASCII without `"` and `\`.
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect()
}
