//! Ending sessions: `/_keyway/signout` (the browser's own sign-out, continued at the provider
//! when it offers RP-initiated logout) and OIDC back-channel logout (the provider tells keyway
//! that a user signed out there).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde_json::Value;

use super::redirect::safe_target;
use super::{OidcAuth, Site};
use crate::pipeline::answer::Answer;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::trace::{Stage, Trace};
use crate::reason::Reason;
use crate::secret::Secret;
use crate::session::store::Load;

/// OpenID Connect Back-Channel Logout 1.0 §2.4.
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl OidcAuth {
    /// Ends the request's session here (and in Redis for every instance), then sends the browser
    /// to the provider's `end_session_endpoint` with `id_token_hint` when there is one, which
    /// returns it to `rd`; otherwise straight to `rd` (or `/`).
    pub async fn sign_out(
        &self,
        parts: &Parts,
        site: &Site,
        rd: Option<&str>,
        trace: &mut Trace,
    ) -> Answer {
        let mut cookies = Vec::new();
        let mut id_token: Option<Secret<String>> = None;
        if let Some(read) = self.sessions.read(&parts.headers) {
            let handle = match self.sessions.load(read).await {
                Load::Found(session, handle) => {
                    id_token = session.id_token.clone();
                    // The cookie store cannot delete a copy of the cookie: remember this
                    // session as ended (Redis deletes the session itself).
                    self.sessions.forget(&session);
                    handle
                }
                Load::Invalid(h) | Load::Missing(h) | Load::Revoked(h) => h,
                Load::Unavailable(e) => {
                    // The cookie is cleared anyway; the Redis entry expires by itself.
                    trace.step(
                        Stage::Authn,
                        format!(
                            "{}: session store unavailable during sign-out: {e}",
                            self.name
                        ),
                    );
                    crate::session::store::Handle::default()
                }
            };
            match self.sessions.end(&handle, site.secure).await {
                Ok(c) => cookies = c,
                Err(e) => {
                    trace.step(
                        Stage::Authn,
                        format!("{}: could not delete the session: {e}", self.name),
                    );
                    cookies = self.sessions.clear(&handle, site.secure);
                }
            }
            trace.step(Stage::Authn, format!("{}: signed out", self.name));
        }
        let target = rd
            .and_then(|rd| safe_target(rd, &self.allowed_redirect_hosts))
            .unwrap_or_else(|| "/".to_owned());
        let metadata = self.provider.metadata();
        let end_session = metadata
            .as_ref()
            .and_then(|m| m.end_session_endpoint.as_ref());
        let location = match (end_session, id_token) {
            (Some(endpoint), Some(id_token)) => {
                // The provider needs an absolute URL to return to.
                let back = if target.starts_with('/') {
                    match site.origin().or_else(|| self.public_url.clone()) {
                        Some(origin) => format!("{origin}{target}"),
                        None => target.clone(),
                    }
                } else {
                    target.clone()
                };
                let endpoint = endpoint.to_string();
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("id_token_hint", id_token.expose())
                    .append_pair("post_logout_redirect_uri", &back)
                    .append_pair("client_id", &self.provider.client.id)
                    .finish();
                let separator = if endpoint.contains('?') { '&' } else { '?' };
                trace.step(
                    Stage::Authn,
                    "continued at the provider's end_session_endpoint",
                );
                format!("{endpoint}{separator}{query}")
            }
            _ => target,
        };
        let location = HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/"));
        Answer::redirect(location).with_cookies(cookies)
    }

    /// The provider's back-channel logout: a `logout_token` (a JWT signed with the provider's
    /// keys) naming the session (`sid`) or the user (`sub`) that signed out.
    pub async fn back_channel_logout(&self, body: &Bytes, trace: &mut Trace) -> Answer {
        let token = form_urlencoded::parse(body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return self.bad_logout_token("The request has no logout_token form field.", trace);
        };
        let Some(metadata) = self
            .provider
            .metadata_within(super::signin::DISCOVERY_WAIT)
            .await
        else {
            return self.provider_unavailable(trace);
        };
        let identity = match metadata
            .logout_tokens
            .verify(Secret::new(token.as_str()))
            .await
        {
            Ok(identity) => identity,
            Err(refusal) => {
                return self.bad_logout_token(
                    &format!(
                        "The logout token failed verification ({}): {}",
                        refusal.reason.code(),
                        refusal.detail
                    ),
                    trace,
                );
            }
        };
        let claims = identity.claims.as_deref().cloned().unwrap_or_default();
        let is_logout = claims
            .get("events")
            .and_then(Value::as_object)
            .is_some_and(|events| events.contains_key(LOGOUT_EVENT));
        if !is_logout {
            return self.bad_logout_token("The token is not a logout token: its events claim lacks the back-channel logout event.", trace);
        }
        if claims.contains_key("nonce") {
            return self.bad_logout_token(
                "A logout token must not carry a nonce (it would be an ID token).",
                trace,
            );
        }
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let (sid, sub) = (text("sid"), text("sub"));
        if sid.is_none() && sub.is_none() {
            return self.bad_logout_token(
                "The logout token names neither a session (sid) nor a user (sub).",
                trace,
            );
        }
        match self.sessions.revoke(sid, sub).await {
            Ok(ended) => {
                trace.step(
                    Stage::Authn,
                    format!(
                        "{}: back-channel logout ended {ended} session(s)",
                        self.name
                    ),
                );
                Answer::status(StatusCode::OK, "logged out\n")
            }
            Err(e) => Refusal::new(
                Reason::SessionStoreUnavailable,
                format!("The sessions could not be ended: {e}"),
            )
            .by(&self.name)
            .into(),
        }
    }

    fn bad_logout_token(&self, detail: &str, trace: &mut Trace) -> Answer {
        trace.step(Stage::Authn, format!("{}: logout token refused", self.name));
        Refusal::new(Reason::OidcLogoutTokenInvalid, detail)
            .by(&self.name)
            .into()
    }
}
