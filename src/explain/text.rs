//! The explain report for people: one aligned line per fact, coloured on a terminal and plain
//! when piped (or with `NO_COLOR`).

use std::fmt::Write as _;

use super::report::{Report, notes_of};
use crate::pipeline::trace::Stage;

const LABEL: usize = 11;

struct Out {
    text: String,
    colour: bool,
}

impl Out {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// `label` in the first column, `value` after it.
    fn line(&mut self, label: &str, value: &str) {
        let label = format!("{label:<LABEL$}");
        let label = self.paint("1", &label);
        let _ = writeln!(self.text, "{label} {value}");
    }

    /// A continuation line under the previous one's value.
    fn more(&mut self, value: &str) {
        let _ = writeln!(self.text, "{:<LABEL$} {value}", "");
    }
}

pub fn render(report: &Report, colour: bool) -> String {
    let mut o = Out {
        text: String::new(),
        colour,
    };
    let r = &report.request;
    let peer = format!(
        "peer {}{}{}",
        r.peer,
        if r.trusted_peer {
            " (in trusted_proxies)"
        } else {
            " (not in trusted_proxies)"
        },
        if r.tls { ", over TLS" } else { "" }
    );
    o.line("request", &format!("{} {}", r.method, r.url));
    o.more(&peer);
    if !r.headers.is_empty() {
        o.more(&format!("headers: {}", r.headers.join(", ")));
    }
    if !r.cookies.is_empty() {
        o.more(&format!("cookies: {}", r.cookies.join(", ")));
    }
    for step in notes_of(report, Stage::Limits).chain(notes_of(report, Stage::Canonical)) {
        o.line("canonical", &step.note);
    }
    let header_notes: Vec<String> = notes_of(report, Stage::Headers)
        .map(|s| s.note.clone())
        .chain(
            report
                .removals
                .iter()
                .filter(|r| r.cause != "consumed_credential" && r.cause != "keyway_cookie")
                .map(|r| format!("removed {} ({})", r.name, r.cause)),
        )
        .collect();
    match header_notes.split_first() {
        None => o.line("headers", "nothing removed or refused"),
        Some((first, rest)) => {
            o.line("headers", first);
            rest.iter().for_each(|n| o.more(n));
        }
    }
    match (&report.route, &report.route_match) {
        (Some(route), Some(m)) => {
            let name = o.paint("36", route);
            o.line("route", &format!("{name} ({m})"));
        }
        _ => o.line("route", "none matched"),
    }
    // Routes that lost on their path are listed by name; those whose path matched lost on
    // something subtler (host, method, a header) and get a line each.
    let (by_path, other): (Vec<_>, Vec<_>) = report
        .candidates
        .iter()
        .partition(|c| c.why.starts_with("path "));
    for c in other {
        o.more(&format!("lost: {} ({}): {}", c.route, c.matcher, c.why));
    }
    if !by_path.is_empty() {
        let names: Vec<&str> = by_path.iter().map(|c| c.route.as_str()).collect();
        o.more(&format!(
            "more specific, path does not match: {}",
            names.join(", ")
        ));
    }
    for a in &report.authenticators {
        o.line("authn", &format!("{} ({})", o.paint("36", &a.name), a.kind));
        o.more(&format!("looked in  {}", a.looked_in.join("; ")));
        o.more(&format!(
            "found      {}",
            a.found.as_deref().unwrap_or("nothing")
        ));
        if !a.claims.is_empty() {
            o.more(&format!("claims     {} (names only)", a.claims.join(", ")));
        }
        if let Some(j) = &a.jwks {
            o.more(&format!("jwks       {} ({})", j.url, j.state));
        }
        o.more(&format!("decided    {}", a.decided));
    }
    for step in notes_of(report, Stage::Authn)
        .filter(|s| s.note.starts_with("public route") || s.note.starts_with("CORS"))
    {
        o.line("authn", &step.note);
    }
    if let Some(id) = &report.identity {
        let mut who = format!("subject {}", id.subject);
        if let Some(c) = &id.consumer {
            let _ = write!(who, ", consumer {c}");
        }
        if !id.groups.is_empty() {
            let _ = write!(who, ", groups {}", id.groups.join(","));
        }
        let _ = write!(who, " (by {}", id.authenticator);
        if let Some(s) = &id.source {
            let _ = write!(who, " from {s}");
        }
        who.push(')');
        o.line("identity", &who);
    }
    let authz: Vec<String> = notes_of(report, Stage::Authz)
        .map(|s| s.note.clone())
        .collect();
    if let Some(allow) = &report.allow {
        let verdict = authz.first().map_or("not reached", String::as_str);
        o.line("authz", &format!("allow {allow}: {verdict}"));
    } else if report.decision == "allow" {
        o.line(
            "authz",
            "no allow rule: every authenticated identity passes",
        );
    }
    for step in notes_of(report, Stage::Browser) {
        o.line("browser", &step.note);
    }
    for step in notes_of(report, Stage::Inject) {
        o.line("inject", &step.note);
    }
    let decision = match report.decision {
        "allow" => o.paint("32;1", "ALLOW"),
        "undecided" => o.paint("33;1", "UNDECIDED"),
        "redirect" => o.paint("33;1", "REDIRECT"),
        _ => o.paint("31;1", "REFUSE"),
    };
    match report.decision {
        "allow" => {
            let up = report.upstream.as_ref();
            o.line(
                "decision",
                &format!(
                    "{decision} 200: forwarded to upstream {}",
                    up.map_or("", |u| u.name.as_str())
                ),
            );
            if let Some(up) = up {
                o.line("upstream", &format!("{} {}", r.method, up.url));
                for (n, v) in &up.headers {
                    o.more(&format!("{n}: {v}"));
                }
            }
        }
        "undecided" => {
            o.line("decision", &decision);
            o.more(report.undecided.as_deref().unwrap_or(""));
        }
        _ => {
            let mut line = format!("{decision} {}", report.status);
            if let Some(f) = &report.refusal {
                let _ = write!(line, " {}", o.paint("33", f.reason));
            }
            o.line("decision", &line);
            if let Some(l) = &report.redirect {
                o.more(&format!("Location: {l}"));
            }
            if let Some(f) = &report.refusal {
                o.more(&format!("detail: {}", f.detail));
                if let Some(h) = &f.hint {
                    o.more(&format!("hint: {h}"));
                }
                for (n, v) in f.headers.iter().filter(|(n, _)| n == "www-authenticate") {
                    o.more(&format!("{n}: {v}"));
                }
            }
        }
    }
    let timing: Vec<String> = report
        .steps
        .iter()
        .map(|s| format!("{}µs {}", s.at_us, s.stage))
        .collect();
    if !timing.is_empty() {
        o.line("timing", &timing.join(", "));
    }
    o.text
}
