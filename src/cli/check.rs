//! `keyway check`: validate, warn, and with `--probe` try every upstream with its credentials (F5).

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;

use crate::config::file::FileConfig;
use crate::config::{Source, Warning};
use crate::pipeline::compile::lint;
use crate::pipeline::runtime::{Runtime, Target, Upstream};
use crate::pipeline::upstream::pool::Pool;

#[derive(Serialize)]
struct Probe {
    upstream: String,
    status: Option<u16>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The upstream answered 401 or 403: whether keyway injects credentials for it (the
    /// warning `probe_warnings` gives says which of the two cases this is).
    #[serde(skip)]
    refused_with_inject: Option<bool>,
}

pub fn check(path: &Path, probe: bool, token: Option<&Path>, as_json: bool) -> ExitCode {
    let source = Source::File(path.to_path_buf());
    let loaded = match crate::pipeline::compile::load(&source) {
        Ok(l) => l,
        Err(errors) => {
            if as_json {
                println!("{}", json!({"errors": errors, "warnings": []}));
            } else {
                for e in &errors {
                    println!("{}:{e}", path.display());
                }
                println!("{} error(s)", errors.len());
            }
            return ExitCode::FAILURE;
        }
    };
    let mut warnings = loaded.warnings;
    let file = &loaded.file;
    if let Some(token_path) = token {
        let text = match std::fs::read_to_string(token_path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("keyway check: cannot read {}: {e}", token_path.display());
                return ExitCode::FAILURE;
            }
        };
        match lint::token(file, &loaded.runtime, text.trim()) {
            Ok(found) => warnings.extend(found),
            Err(e) => {
                eprintln!("keyway check: {}: {e}", token_path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let probes = if probe {
        run_probes(&loaded.runtime)
    } else {
        Vec::new()
    };
    warnings.extend(probe_warnings(&probes, file));
    let failed = probes.iter().any(|p| !p.ok);
    if as_json {
        let mut out = json!({"errors": [], "warnings": warnings});
        if probe {
            out["probes"] = json!(probes);
        }
        println!("{out}");
    } else {
        for w in &warnings {
            println!("{}:{w}", path.display());
        }
        for p in &probes {
            let status = p.status.map_or("-".to_owned(), |s| s.to_string());
            let verdict = if p.ok { "ok" } else { "FAILED" };
            let why = p.error.as_deref().unwrap_or("");
            println!("probe {}: {status} {verdict} {why}", p.upstream);
        }
        println!(
            "{}: ok ({} warning(s){})",
            path.display(),
            warnings.len(),
            if probe {
                format!(
                    ", {} probe(s) failed",
                    probes.iter().filter(|p| !p.ok).count()
                )
            } else {
                String::new()
            }
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An upstream that refused the probe (F5), as a warning at its place in the file.
fn probe_warnings(probes: &[Probe], file: &FileConfig) -> Vec<Warning> {
    let mut d = crate::pipeline::compile::Diagnostics::default();
    for p in probes {
        let (Some(injects), Some(status)) = (p.refused_with_inject, p.status) else {
            continue;
        };
        let at = file.upstreams.get(&p.upstream).map(|s| &s.referenced);
        let place = format!("upstreams.{}", p.upstream);
        if injects {
            d.warn(
                "upstream_refuses_injected_credentials",
                format!("upstream {} answered the probe with {status} although keyway injects credentials for it: they are wrong or expired", p.upstream),
            )
            .at(at, place)
            .fix("check the values behind inject (environment variables, secret files) against what the upstream expects");
        } else {
            d.warn(
                "upstream_refuses_without_credentials",
                format!("upstream {} answered the probe with {status} and keyway injects no credentials for it: every request will be refused by the upstream (F5)", p.upstream),
            )
            .at(at, place)
            .fix(format!("add inject: {{Authorization: \"Bearer ${{…}}\"}} (or the header the upstream expects) to upstream {}", p.upstream));
        }
    }
    d.warnings
}

fn run_probes(rt: &Runtime) -> Vec<Probe> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let mut out = Vec::new();
        for upstream in &rt.upstreams {
            if let Target::Http {
                authority, pool, ..
            } = &upstream.target
            {
                out.push(probe_one(upstream, authority, pool).await);
            }
        }
        out
    })
}

/// One GET of the probe path on a new connection, opened as the proxy opens its own (TLS and
/// its trust included), with the upstream's injected credentials.
async fn probe_one(upstream: &Upstream, authority: &Authority, pool: &Pool) -> Probe {
    let mut req =
        Request::get(upstream.probe_path.as_str()).header(header::HOST, authority.as_str());
    for (name, value) in &upstream.inject {
        req = req.header(name, value.expose().clone());
    }
    let name = upstream.name.to_string();
    let req = match req.header("user-agent", "keyway-probe").body(Empty::new()) {
        Ok(r) => r,
        Err(e) => {
            return Probe {
                upstream: name,
                status: None,
                ok: false,
                error: Some(format!("bad probe request: {e}")),
                refused_with_inject: None,
            };
        }
    };
    match tokio::time::timeout(upstream.timeouts.request, send_probe(pool, req)).await {
        Ok(Ok(status)) => {
            let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            let injects = !upstream.inject.is_empty();
            let error = refused.then(|| {
                if injects {
                    format!("the upstream refused the injected credentials ({status})")
                } else {
                    format!("the upstream answered {status} and keyway injects no credentials for it: add inject")
                }
            });
            Probe {
                upstream: name,
                status: Some(status.as_u16()),
                ok: !refused,
                error,
                refused_with_inject: refused.then_some(injects),
            }
        }
        Ok(Err(cause)) => Probe {
            upstream: name,
            status: None,
            ok: false,
            error: Some(format!("cannot reach {}: {cause}", upstream.origin())),
            refused_with_inject: None,
        },
        Err(_) => Probe {
            upstream: name,
            status: None,
            ok: false,
            error: Some(format!("no answer from {} in time", upstream.origin())),
            refused_with_inject: None,
        },
    }
}

async fn send_probe(pool: &Pool, req: Request<Empty<Bytes>>) -> Result<StatusCode, String> {
    let stream = pool.connector().open().await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map(|r| r.status())
        .map_err(|e| {
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
        })
}
