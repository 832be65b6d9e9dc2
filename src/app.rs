//! The running gateway's shared state: the current runtime config (hot-swapped), the metrics.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_log::{self, AccessLog};
use crate::admin::decisions::Decisions;
use crate::config::{ConfigError, Source, Warning};
use crate::metrics::Metrics;
use crate::pipeline::runtime::{AccessLogDestination, Runtime};
use crate::pipeline::trace::Trace;
use crate::websocket::tunnels::Tunnels;

pub struct App {
    /// Shared with the metrics, which read the authenticators' own counters at each scrape.
    runtime: Arc<ArcSwap<Runtime>>,
    pub source: Source,
    pub metrics: Metrics,
    /// Its destination follows the config; a config without one leaves it idle.
    pub access_log: AccessLog,
    /// The recent decisions (`GET /decisions`, the decision page).
    pub decisions: Decisions,
    /// Open WebSocket connections (shutdown closes and waits for them).
    pub tunnels: Arc<Tunnels>,
}

impl App {
    pub fn new(runtime: Runtime, source: Source) -> Arc<App> {
        let destination = runtime
            .access_log
            .clone()
            .unwrap_or(AccessLogDestination::Stderr);
        let runtime = Arc::new(ArcSwap::from_pointee(runtime));
        let metrics = Metrics::with_runtime(runtime.clone());
        Arc::new(App {
            access_log: AccessLog::start(
                destination,
                access_log::format(),
                metrics.access_log_dropped.clone(),
            ),
            metrics,
            runtime,
            source,
            decisions: Decisions::default(),
            tunnels: Arc::default(),
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Reads the config again; a config that fails validation is refused and the running one kept.
    /// Listen addresses, TLS and workers take effect only on restart.
    pub fn reload(&self) -> Result<Vec<Warning>, Vec<ConfigError>> {
        match crate::pipeline::compile::load(&self.source) {
            Ok(loaded) => {
                // Reload runs inside the server's runtime (SIGHUP handler, admin endpoint).
                loaded.runtime.authenticators.iter().for_each(|a| a.start());
                // Lines of the old config are written before any of the new one's.
                self.access_log.flush();
                if let Some(destination) = &loaded.runtime.access_log
                    && *destination != self.access_log.destination()
                {
                    self.access_log.reopen(Some(destination.clone()));
                }
                self.runtime.store(Arc::new(loaded.runtime));
                self.metrics.reloaded(true);
                // Open WebSocket connections go on with the credentials they were opened with.
                tracing::info!(
                    source = %self.source.describe(),
                    websockets_kept = self.tunnels.count(),
                    "config reloaded"
                );
                Ok(loaded.warnings)
            }
            Err(errors) => {
                self.metrics.reloaded(false);
                for e in &errors {
                    tracing::error!(source = %self.source.describe(), error = %e, "config reload refused; keeping the running config");
                }
                Err(errors)
            }
        }
    }

    /// The access log line, the metrics and the decision log: views of the request's trace.
    pub fn record(&self, trace: &Trace, rt: &Runtime) {
        // One clock read for the three views.
        let elapsed_us = trace.elapsed_us();
        self.metrics.observe(trace, elapsed_us);
        if rt.access_log.is_some() {
            self.access_log.request(trace, elapsed_us);
        }
        // Only the admin listener reads the decision log.
        if rt.admin.is_some() {
            self.decisions.record(trace, elapsed_us);
        }
    }
}
