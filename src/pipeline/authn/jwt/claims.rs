//! Claim checks after the signature verified: time claims (re-run on every cache hit), issuer,
//! audience, and what the identity is made of. Every failure names the claim, the expected and
//! the found value.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::token::{show, type_name};
use crate::reason::Reason;

/// The time claims of a verified token, kept by the cache so each use re-checks them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Times {
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
}

/// The time rules of one authenticator.
#[derive(Clone, Copy, Debug)]
pub struct TimeRules {
    pub leeway: f64,
    pub require_exp: bool,
    pub max_lifetime: Option<f64>,
}

/// A failed check: reason, detail, and optionally a hint.
#[derive(Debug, Clone)]
pub struct ClaimError {
    pub reason: Reason,
    pub detail: String,
    pub hint: Option<String>,
}

impl ClaimError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        ClaimError {
            reason,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads `exp`, `nbf`, `iat` as NumericDates (numbers of seconds; RFC 7519 §2).
pub fn times(claims: &Map<String, Value>) -> Result<Times, ClaimError> {
    let read = |name: &str| -> Result<Option<f64>, ClaimError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(invalid_date(name, "a number out of range")),
            },
            Some(other) => Err(invalid_date(name, type_name(other))),
        }
    };
    Ok(Times {
        exp: read("exp")?,
        nbf: read("nbf")?,
        iat: read("iat")?,
    })
}

fn invalid_date(name: &str, found: &str) -> ClaimError {
    ClaimError::new(
        Reason::JwtClaimInvalid,
        format!("The token's \"{name}\" claim is {found}; it must be a NumericDate (a number of seconds since 1970, e.g. 1767225600)."),
    )
    .hint(format!("Have the issuer write \"{name}\" as a JSON number, not a string."))
}

/// Checks the time claims against `now`. Called on the first verification and on every cache
/// hit, so a cached token stops working the moment it expires.
pub fn check_times(t: &Times, rules: &TimeRules, now: f64) -> Result<(), ClaimError> {
    let leeway = rules.leeway;
    match t.exp {
        None if rules.require_exp => {
            return Err(ClaimError::new(
                Reason::JwtClaimMissing,
                "The token has no \"exp\" claim; this authenticator requires an expiry.",
            )
            .hint(
                "Issue tokens with an exp claim, or set require_exp: false on the authenticator.",
            ));
        }
        Some(exp) if now >= exp + leeway => {
            return Err(ClaimError::new(
                Reason::JwtExpired,
                format!(
                    "The token expired {} ago, at {} (leeway {}).",
                    human(now - exp),
                    rfc3339(exp),
                    human(leeway)
                ),
            )
            .hint("Get a new token."));
        }
        _ => {}
    }
    if let Some(nbf) = t.nbf
        && now + leeway < nbf
    {
        return Err(ClaimError::new(
            Reason::JwtNotYetValid,
            format!(
                "The token is not valid before {} (nbf), {} from now (leeway {}).",
                rfc3339(nbf),
                human(nbf - now),
                human(leeway)
            ),
        )
        .hint("Check the clocks of the issuer and of keyway, or wait."));
    }
    if let Some(iat) = t.iat
        && now + leeway < iat
    {
        return Err(ClaimError::new(
            Reason::JwtNotYetValid,
            format!(
                "The token was issued in the future: iat is {}, {} from now (leeway {}).",
                rfc3339(iat),
                human(iat - now),
                human(leeway)
            ),
        )
        .hint("Check the clocks of the issuer and of keyway."));
    }
    if let Some(max) = rules.max_lifetime {
        let Some(exp) = t.exp else {
            return Err(ClaimError::new(
                Reason::JwtClaimMissing,
                "The token has no \"exp\" claim, so its lifetime is unbounded; this authenticator sets max_lifetime.",
            ));
        };
        // From issue time when known; otherwise what is left of the token's life.
        let (start, what) = match t.iat {
            Some(iat) => (iat, "exp - iat"),
            None => (now, "exp - now"),
        };
        let lifetime = exp - start;
        if lifetime > max + leeway {
            return Err(ClaimError::new(
                Reason::JwtLifetimeTooLong,
                format!(
                    "The token's lifetime ({what}) is {}; max_lifetime is {}.",
                    human(lifetime),
                    human(max)
                ),
            )
            .hint("Issue shorter-lived tokens, or raise max_lifetime."));
        }
    }
    Ok(())
}

/// `iss` must equal the configured issuer.
pub fn check_issuer(claims: &Map<String, Value>, issuer: &str) -> Result<(), ClaimError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => Ok(()),
        Some(Value::String(iss)) => Err(ClaimError::new(
            Reason::JwtIssuerMismatch,
            format!(
                "The token's issuer is {}; expected {}.",
                show(iss),
                show(issuer)
            ),
        )),
        Some(other) => Err(ClaimError::new(
            Reason::JwtIssuerMismatch,
            format!(
                "The token's \"iss\" is {}; expected the string {}.",
                type_name(other),
                show(issuer)
            ),
        )),
        None => Err(ClaimError::new(
            Reason::JwtIssuerMismatch,
            format!("The token has no \"iss\" claim; expected {}.", show(issuer)),
        )),
    }
}

/// `aud` (a string or an array of strings) must name one of the configured audiences.
pub fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), ClaimError> {
    let expected = audiences
        .iter()
        .map(|a| show(a))
        .collect::<Vec<_>>()
        .join(", ");
    let found: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(other) => {
            return Err(ClaimError::new(
                Reason::JwtAudienceMismatch,
                format!(
                    "The token's \"aud\" is {}; expected a string or array naming one of [{expected}].",
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(ClaimError::new(
                Reason::JwtAudienceMismatch,
                format!("The token has no \"aud\" claim; expected one of [{expected}]."),
            ));
        }
    };
    if found.iter().any(|a| audiences.iter().any(|want| want == a)) {
        return Ok(());
    }
    let shown = found
        .iter()
        .take(5)
        .map(|a| show(a))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ClaimError::new(
        Reason::JwtAudienceMismatch,
        format!("The token's audience is [{shown}]; expected one of [{expected}]."),
    ))
}

/// A claim as a short identifier: strings as they are, integers in decimal.
pub fn as_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The claim at `path`: the claim of that exact name if there is one (namespaced claims such as
/// `https://example.com/groups` contain dots), else the dotted path through nested objects
/// (Keycloak's `realm_access.roles`).
pub fn at_path<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Groups from a claim: an array of strings, or one string separated by spaces or commas.
pub fn groups(v: &Value, claim: &str) -> Result<Vec<String>, ClaimError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    ClaimError::new(
                        Reason::JwtClaimInvalid,
                        format!(
                            "The token's \"{claim}\" claim (groups_claim) holds {}; groups must be strings.",
                            type_name(i)
                        ),
                    )
                })
            })
            .collect(),
        Value::String(s) => Ok(s
            .split([' ', ','])
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect()),
        other => Err(ClaimError::new(
            Reason::JwtClaimInvalid,
            format!(
                "The token's \"{claim}\" claim (groups_claim) is {}; expected an array of strings or a space- or comma-separated string.",
                type_name(other)
            ),
        )),
    }
}

/// The text a claim becomes as a header value: strings as they are, arrays joined by commas,
/// numbers and booleans as JSON, objects as compact JSON.
pub fn header_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(header_text).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// "2m 5s", "3h 4m", "45s", "2d 1h": two units are precise enough for a person.
pub fn human(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// RFC 3339 UTC time of unix seconds (fractions dropped).
pub fn rfc3339(secs: f64) -> String {
    if !(-62_135_596_800.0..=253_402_300_799.0).contains(&secs) {
        return format!("unix time {secs:.0}");
    }
    let text = crate::civil_time::date_time(secs.floor() as i64);
    format!("{}Z", String::from_utf8_lossy(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> TimeRules {
        TimeRules {
            leeway: 30.0,
            require_exp: true,
            max_lifetime: None,
        }
    }

    #[test]
    fn claims_are_found_by_name_then_by_dotted_path() {
        let c = json!({
            "realm_access": {"roles": ["admin"]},
            "https://example.com/groups": ["ns"],
            "a": {"b": {"c": "deep"}},
            "flat": "x"
        });
        let c = c.as_object().unwrap();
        assert_eq!(at_path(c, "realm_access.roles"), Some(&json!(["admin"])));
        assert_eq!(
            at_path(c, "https://example.com/groups"),
            Some(&json!(["ns"]))
        );
        assert_eq!(at_path(c, "a.b.c"), Some(&json!("deep")));
        assert_eq!(at_path(c, "flat"), Some(&json!("x")));
        assert_eq!(at_path(c, "flat.x"), None);
        assert_eq!(at_path(c, "a.missing"), None);
        assert_eq!(at_path(c, ""), None);
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_563_870_501.0), "2019-07-23T08:28:21Z");
        assert_eq!(rfc3339(4_102_444_800.0), "2100-01-01T00:00:00Z");
        assert_eq!(human(125.0), "2m 5s");
        assert_eq!(human(120.0), "2m");
        assert_eq!(human(3.0 * 3600.0 + 240.0), "3h 4m");
        assert_eq!(human(90_000.0), "1d 1h");
    }

    #[test]
    fn time_edges() {
        let now = 1_000_000.0;
        let t = |exp: Option<f64>, nbf: Option<f64>, iat: Option<f64>| Times { exp, nbf, iat };
        assert!(check_times(&t(Some(now - 29.0), None, None), &rules(), now).is_ok());
        let e = check_times(&t(Some(now - 150.0), None, None), &rules(), now).unwrap_err();
        assert_eq!(e.reason, Reason::JwtExpired);
        assert!(e.detail.contains("2m 30s ago"), "{}", e.detail);
        let e = check_times(&t(None, None, None), &rules(), now).unwrap_err();
        assert_eq!(e.reason, Reason::JwtClaimMissing);
        let e =
            check_times(&t(Some(now + 60.0), Some(now + 120.0), None), &rules(), now).unwrap_err();
        assert_eq!(e.reason, Reason::JwtNotYetValid);
        let e =
            check_times(&t(Some(now + 60.0), None, Some(now + 600.0)), &rules(), now).unwrap_err();
        assert_eq!(e.reason, Reason::JwtNotYetValid);
        let mut r = rules();
        r.max_lifetime = Some(3600.0);
        let e = check_times(&t(Some(now + 86_400.0), None, Some(now)), &r, now).unwrap_err();
        assert_eq!(e.reason, Reason::JwtLifetimeTooLong);
    }

    #[test]
    fn date_types() {
        let claims = |v: Value| json!({ "exp": v }).as_object().cloned().unwrap();
        assert_eq!(
            times(&claims(json!("1879318541"))).unwrap_err().reason,
            Reason::JwtClaimInvalid
        );
        assert_eq!(times(&claims(json!(1.5))).unwrap().exp, Some(1.5));
        assert!(times(&claims(json!(null))).is_err());
        assert!(times(&claims(json!(true))).is_err());
    }

    #[test]
    fn audiences_and_groups() {
        let c = json!({"aud": ["a", "b"], "g": "x, y z"});
        let c = c.as_object().unwrap();
        assert!(check_audience(c, &["b".into()]).is_ok());
        assert_eq!(
            check_audience(c, &["k".into()]).unwrap_err().reason,
            Reason::JwtAudienceMismatch
        );
        assert_eq!(groups(&c["g"], "g").unwrap(), ["x", "y", "z"]);
    }
}
