//! `keyway run`: serve until SIGTERM/SIGINT; reload on SIGHUP.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::App;
use crate::config::Source;
use crate::server;

pub fn run(path: PathBuf) -> ExitCode {
    let source = Source::File(path);
    match super::load_or_report(&source, ExitCode::FAILURE) {
        Ok(loaded) => serve(loaded, source),
        Err(code) => code,
    }
}

/// Serves a loaded config until a shutdown signal. Shared by `run` and `demo`.
pub fn serve(loaded: crate::pipeline::compile::Loaded, source: Source) -> ExitCode {
    serve_then(loaded, source, |_| {})
}

pub fn serve_then(
    loaded: crate::pipeline::compile::Loaded,
    source: Source,
    on_ready: impl FnOnce(&server::Running),
) -> ExitCode {
    for w in &loaded.warnings {
        tracing::warn!(code = w.code, line = w.line, column = w.column, fix = %w.fix, "{}", w.message);
    }
    let runtime = match super::tokio_runtime(loaded.runtime.workers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = App::new(loaded.runtime, source);
    runtime.block_on(async move {
        let running = match server::start(app.clone()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("keyway: {e}");
                return ExitCode::FAILURE;
            }
        };
        on_ready(&running);
        wait_for_shutdown(&app).await;
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
        // Every line buffered so far, the drained requests' included.
        app.access_log.flush();
        ExitCode::SUCCESS
    })
}

#[cfg(unix)]
async fn wait_for_shutdown(app: &Arc<App>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                // Errors are logged by reload; the running config stays.
                let _ = app.reload();
            }
            // logrotate moved the access log away: write to a new file at its path.
            _ = usr1.recv() => {
                app.access_log.reopen(None);
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_shutdown(_: &Arc<App>) {
    let _ = tokio::signal::ctrl_c().await;
}
