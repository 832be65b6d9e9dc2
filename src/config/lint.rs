//! Pitfall warnings: configs that load but are likely to lose a credential (SPEC §1 F1).

use super::compile::Diagnostics;
use super::file::{FileConfig, UnderscorePolicy};

pub fn check(file: &FileConfig, d: &mut Diagnostics) {
    for (name, spanned) in &file.authenticators {
        let a = &spanned.value;
        let headers = a.header.iter().map(|h| h.0.as_str()).chain(
            a.from
                .iter()
                .flatten()
                .filter_map(|s| s.0.strip_prefix("header:")),
        );
        for header in headers.filter(|h| h.contains('_')) {
            let twin = header.replace('_', "-");
            d.warn(
                "credential_header_underscore",
                format!(
                    "authenticator {name} reads header {header}: proxies in front of keyway may drop names with '_' \
                     (nginx: underscores_in_headers off); keyway also accepts {twin}, which survives them"
                ),
            );
            let allowed = file
                .headers
                .allow
                .iter()
                .any(|a| a.0.eq_ignore_ascii_case(header));
            if matches!(
                file.headers.underscores,
                UnderscorePolicy::Drop | UnderscorePolicy::Reject
            ) && !allowed
            {
                d.warn(
                    "credential_header_removed_by_policy",
                    format!(
                        "headers.underscores is {} and {header} is not in headers.allow: keyway itself will refuse or drop the credential header of authenticator {name}",
                        if file.headers.underscores == UnderscorePolicy::Drop { "drop" } else { "reject" }
                    ),
                );
            }
        }
    }
    if let Some(admin) = &file.admin {
        let loopback = admin
            .listen
            .value
            .0
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let has_token = admin
            .token
            .as_ref()
            .is_some_and(|t| !t.0.expose().is_empty());
        if !loopback && !has_token {
            d.warn(
                "admin_without_token",
                "the admin listener is not on loopback and admin.token is not set: anyone who reaches it can reload the config",
            );
        }
    }
}
