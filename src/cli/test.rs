//! `keyway test`: policy cases for a config, for the operator's CI. Each case is a request and
//! the outcome expected of it; each runs through explain (the pipeline's own stages), prints one
//! pass/fail line with the first difference, and any failure makes the exit code 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use crate::config::Source;
use crate::explain::{self, Asked, Report};
use crate::pipeline::runtime::Runtime;

/// The cases `keyway test --demo` runs against the demo config.
pub(super) const DEMO_CASES: &str = include_str!("demo_cases.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: CaseRequest,
    expect: Expect,
}

/// Its header and cookie values may be credentials: `Debug` shows names only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    cookies: BTreeMap<String, String>,
    #[serde(default)]
    peer: Option<std::net::IpAddr>,
    /// A JWT minted from the config for a consumer, sent as `Authorization: Bearer`.
    #[serde(default)]
    token: Option<TokenSpec>,
}

impl std::fmt::Debug for CaseRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseRequest")
            .field("method", &self.method)
            .field("path", &crate::explain::path_only(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("cookies", &self.cookies.keys().collect::<Vec<_>>())
            .field("peer", &self.peer)
            .field("token", &self.token)
            .finish()
    }
}

fn get() -> String {
    "GET".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    consumer: String,
    /// Claims to leave out (`[key]`: a token minted elsewhere, F2).
    #[serde(default)]
    without: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    allow: Option<bool>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    identity: Option<IdentityExpect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityExpect {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    consumer: Option<String>,
    /// Each must be among the identity's groups.
    #[serde(default)]
    groups: Vec<String>,
}

pub fn test(config_path: &Path, demo: bool, cases_path: Option<&PathBuf>) -> ExitCode {
    let source = super::explain::source(config_path, demo);
    let config_text = match &source {
        Source::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
        Source::Embedded { text, .. } => (*text).to_owned(),
    };
    let base_dir = match &source {
        Source::File(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        Source::Embedded { base_dir, .. } => base_dir.clone(),
    };
    let (cases_text, cases_name) = match cases_path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(e) => {
                eprintln!("keyway test: cannot read {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None if demo => (DEMO_CASES.to_owned(), "(embedded demo cases)".to_owned()),
        None => {
            eprintln!("keyway test: name a CASES.yaml file (or use --demo)");
            return ExitCode::from(2);
        }
    };
    let cases: Vec<Case> = match serde_saphyr::from_str(&cases_text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyway test: {cases_name}: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match super::load_or_report(&source, ExitCode::from(2)) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let results = super::explain::block_on(async {
        let mut results = Vec::new();
        for case in &cases {
            let outcome = run_case(&loaded.runtime, &config_text, &base_dir, case).await;
            results.push(outcome);
        }
        results
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyway test: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for (case, result) in cases.iter().zip(&results) {
        match result {
            Ok(()) => println!("pass  {}", case.name),
            Err(difference) => {
                failed += 1;
                println!("FAIL  {}: {difference}", case.name);
            }
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_case(
    rt: &Runtime,
    config_text: &str,
    base_dir: &Path,
    case: &Case,
) -> Result<(), String> {
    let r = &case.request;
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(t) = &r.token {
        let extra: Vec<(String, Value)> = t
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let omit: Vec<&str> = t.without.iter().map(String::as_str).collect();
        let token = super::token::mint_from_text(
            config_text,
            base_dir,
            &t.consumer,
            std::time::Duration::from_secs(300),
            &extra,
            &omit,
        )
        .map_err(|e| format!("cannot mint the case's token: {e}"))?;
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    let asked = Asked {
        method: r.method.clone(),
        url: r.url.clone(),
        headers,
        cookies: r
            .cookies
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        peer: r.peer,
    };
    let report = explain::explain(rt, &asked, explain::Where::Offline).await?;
    first_difference(&case.expect, &report).map_or(Ok(()), Err)
}

/// The first way the report differs from what the case expects, in the order a reader checks.
fn first_difference(expect: &Expect, report: &Report) -> Option<String> {
    let got = || match &report.refusal {
        Some(f) => format!("{} {} ({})", report.decision, report.status, f.reason),
        None => format!("{} {}", report.decision, report.status),
    };
    let wants_refusal = expect.status.is_some() || expect.reason.is_some();
    let wants_allow = expect.allow.unwrap_or(!wants_refusal);
    if wants_allow != report.allowed() {
        let want = if wants_allow { "allow" } else { "refusal" };
        return Some(format!("expected {want}, got {}", got()));
    }
    if let Some(status) = expect.status
        && status != report.status
    {
        return Some(format!("expected status {status}, got {}", got()));
    }
    if let Some(reason) = &expect.reason {
        let found = report.refusal.as_ref().map_or("", |f| f.reason);
        if reason != found {
            return Some(format!("expected reason {reason}, got {}", got()));
        }
    }
    if let Some(route) = &expect.route
        && Some(route) != report.route.as_ref()
    {
        return Some(format!(
            "expected route {route}, got {}",
            report.route.as_deref().unwrap_or("none")
        ));
    }
    if let Some(upstream) = &expect.upstream {
        let found = report.upstream.as_ref().map_or("none", |u| u.name.as_str());
        if upstream != found {
            return Some(format!("expected upstream {upstream}, got {found}"));
        }
    }
    if let Some(want) = &expect.identity {
        let Some(id) = &report.identity else {
            return Some("expected an identity, got none (public route)".to_owned());
        };
        if let Some(s) = &want.subject
            && s != &id.subject
        {
            return Some(format!("expected subject {s}, got {}", id.subject));
        }
        if let Some(c) = &want.consumer
            && Some(c) != id.consumer.as_ref()
        {
            return Some(format!(
                "expected consumer {c}, got {}",
                id.consumer.as_deref().unwrap_or("none")
            ));
        }
        if let Some(g) = want.groups.iter().find(|g| !id.groups.contains(g)) {
            return Some(format!(
                "expected group {g}, got groups [{}]",
                id.groups.join(", ")
            ));
        }
    }
    None
}
