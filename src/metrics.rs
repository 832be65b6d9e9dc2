//! Prometheus metrics, in a registry owned by the app (no globals: many gateways per process).

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::trace::Trace;

/// A route name label without copying the name on every request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Option<Arc<str>>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or(""))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemovalLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    removals: Family<RemovalLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route, status and refusal reason (empty when allowed)",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 4.0, 10))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers",
            duration.clone(),
        );
        let removals = Family::<RemovalLabels, Counter>::default();
        registry.register(
            "header_removals",
            "Client headers removed before forwarding, by cause",
            removals.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            removals,
            reloads,
        }
    }

    pub fn observe(&self, trace: &Trace) {
        let route = Name(trace.route.clone());
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status: trace.status,
                reason: trace.reason_code(),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { route })
            .observe(trace.elapsed_us() as f64 / 1e6);
        for removal in &trace.removals {
            self.removals
                .get_or_create(&RemovalLabels {
                    cause: removal.cause.as_str(),
                })
                .inc();
        }
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "refused" },
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}
