//! `keyway check`: validate, warn, and with `--probe` try every upstream with its credentials (F5).

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;

use crate::config::runtime::{Runtime, Target, Upstream};
use crate::config::{self, Source};

#[derive(Serialize)]
struct Probe {
    upstream: String,
    status: Option<u16>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn check(path: &Path, probe: bool, as_json: bool) -> ExitCode {
    let source = Source::File(path.to_path_buf());
    let loaded = match config::load(&source) {
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
    let probes = if probe {
        run_probes(&loaded.runtime)
    } else {
        Vec::new()
    };
    let failed = probes.iter().any(|p| !p.ok);
    if as_json {
        let mut out = json!({"errors": [], "warnings": loaded.warnings});
        if probe {
            out["probes"] = json!(probes);
        }
        println!("{out}");
    } else {
        for w in &loaded.warnings {
            println!("warning[{}]: {}", w.code, w.message);
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
            loaded.warnings.len(),
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
            if let Target::Http { .. } = upstream.target {
                out.push(probe_one(upstream).await);
            }
        }
        out
    })
}

async fn probe_one(upstream: &Upstream) -> Probe {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(upstream.timeouts.connect));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut req = Request::get(format!("{}{}", upstream.origin(), upstream.probe_path));
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
            };
        }
    };
    match tokio::time::timeout(upstream.timeouts.request, client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status();
            let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            let error = refused.then(|| {
                if upstream.inject.is_empty() {
                    format!("the upstream answered {status} and keyway injects no credentials for it: add inject")
                } else {
                    format!("the upstream refused the injected credentials ({status})")
                }
            });
            Probe {
                upstream: name,
                status: Some(status.as_u16()),
                ok: !refused,
                error,
            }
        }
        Ok(Err(e)) => {
            let cause =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            Probe {
                upstream: name,
                status: None,
                ok: false,
                error: Some(format!("cannot reach {}: {cause}", upstream.origin())),
            }
        }
        Err(_) => Probe {
            upstream: name,
            status: None,
            ok: false,
            error: Some(format!("no answer from {} in time", upstream.origin())),
        },
    }
}
