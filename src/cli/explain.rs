//! `keyway explain`: one request through routing and authentication, every step printed, exit
//! 0 when allowed and 1 when refused (2 when it cannot decide offline, or on a bad argument).

use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Source;
use crate::explain::{self, Asked};

/// What `keyway explain` was given on the command line.
pub struct Args<'a> {
    pub config: &'a Path,
    pub demo: bool,
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [String],
    pub cookies: &'a [String],
    pub peer: Option<IpAddr>,
    pub json: bool,
}

pub fn explain(args: &Args<'_>) -> ExitCode {
    let asked = match asked(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keyway explain: {e}");
            return ExitCode::from(2);
        }
    };
    let source = source(args.config, args.demo);
    let loaded = match super::load_or_report(&source, ExitCode::from(2)) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let report = match block_on(explain::explain(
        &loaded.runtime,
        &asked,
        explain::Where::Offline,
    )) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) | Err(e) => {
            eprintln!("keyway explain: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", explain::text::render(&report, colour));
    }
    match report.decision {
        "allow" => ExitCode::SUCCESS,
        "undecided" => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn asked(args: &Args<'_>) -> Result<Asked, String> {
    let headers = args
        .headers
        .iter()
        .map(|h| explain::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cookies = Vec::new();
    for c in args.cookies {
        cookies.extend(explain::parse_cookies(c)?);
    }
    Ok(Asked {
        method: args.method.to_owned(),
        url: args.url.to_owned(),
        headers,
        cookies,
        peer: args.peer,
    })
}

/// The config file, or the embedded demo config (`--demo`).
pub fn source(path: &Path, demo: bool) -> Source {
    if demo {
        Source::Embedded {
            text: super::demo::DEMO_CONFIG,
            base_dir: std::env::current_dir().unwrap_or_default(),
        }
    } else {
        Source::File(path.to_path_buf())
    }
}

/// Runs a future on a one-thread runtime (explain may fetch a JWKS).
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
