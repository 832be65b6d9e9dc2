//! Authorisation: the route's `allow` after successful authentication (403 `authz.denied`).

use serde_json::Value;

use super::authn::Identity;
use super::refusal::Refusal;
use super::trace::{Stage, Trace};
use crate::reason::Reason;

/// Admits an identity that is one of `consumers`, or in one of `groups`, or carries every claim
/// in `claims` with the given value. An empty rule admits nobody.
#[derive(Clone, Debug, Default)]
pub struct Allow {
    pub consumers: Vec<String>,
    pub groups: Vec<String>,
    pub claims: Vec<(String, String)>,
    /// Lower case, without `@`: `example.com` admits `a@example.com`, not `a@sub.example.com`.
    pub email_domains: Vec<String>,
}

impl Allow {
    fn admits(&self, id: &Identity) -> bool {
        let by_consumer = id
            .consumer_name()
            .is_some_and(|c| self.consumers.iter().any(|a| a == c));
        let by_group = id.groups.iter().any(|g| self.groups.contains(g));
        let by_claims = !self.claims.is_empty()
            && self.claims.iter().all(|(name, want)| {
                id.claims
                    .as_ref()
                    .and_then(|c| c.get(name))
                    .is_some_and(|v| claim_equals(v, want))
            });
        let by_email = !self.email_domains.is_empty()
            && id
                .email()
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, domain)| {
                    self.email_domains
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(domain))
                });
        by_consumer || by_group || by_claims || by_email
    }

    /// The rule in words ("groups [admin] or consumers [ops]"), for refusals and explain.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.consumers.is_empty() {
            parts.push(format!("consumers [{}]", self.consumers.join(", ")));
        }
        if !self.groups.is_empty() {
            parts.push(format!("groups [{}]", self.groups.join(", ")));
        }
        if !self.claims.is_empty() {
            let c: Vec<String> = self
                .claims
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("claims [{}]", c.join(", ")));
        }
        if !self.email_domains.is_empty() {
            parts.push(format!("email domains [{}]", self.email_domains.join(", ")));
        }
        parts.join(" or ")
    }
}

fn claim_equals(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Array(items) => items.iter().any(|v| claim_equals(v, want)),
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// The authorisation stage.
pub fn authorize(
    allow: Option<&Allow>,
    identity: Option<&Identity>,
    trace: &mut Trace,
) -> Result<(), Refusal> {
    let (Some(allow), Some(id)) = (allow, identity) else {
        return Ok(());
    };
    if allow.admits(id) {
        trace.step(Stage::Authz, "allowed");
        return Ok(());
    }
    trace.step(Stage::Authz, "denied");
    let who = match id.consumer_name() {
        Some(c) => format!("consumer {c}"),
        None => format!("subject {}", id.subject),
    };
    let mut groups = if id.groups.is_empty() {
        "no groups".to_owned()
    } else {
        format!("groups [{}]", id.groups.join(", "))
    };
    if !allow.email_domains.is_empty() {
        groups.push_str(&match id.email() {
            Some(email) => format!(" and email {email}"),
            None => " and no email claim".to_owned(),
        });
    }
    Err(Refusal::new(
        Reason::AuthzDenied,
        format!(
            "Authenticated as {who} with {groups}, but this route allows only {}.",
            allow.describe()
        ),
    )
    .hint("Use a credential of an allowed consumer or group, or widen the route's allow.")
    .by(&id.authenticator))
}
