//! Prometheus metrics, in a registry owned by the app (no globals: many gateways per process).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::trace::{RemovalCause, Trace};

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
    /// Tells this registry's handles apart in the per-thread cache (many gateways per process).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    /// `header_removals`' counter for each cause, in `RemovalCause::ALL` order: taken from the
    /// family once, so counting a removal does not hash its labels under the family's lock.
    removals: [Counter; RemovalCause::ALL.len()],
    reloads: Family<ReloadLabels, Counter>,
    mux_open: Gauge,
    mux_streams: Family<StreamLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    /// `opened`, `closed` or `refused`.
    event: &'static str,
    /// The refusal's reason (empty otherwise).
    reason: &'static str,
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
        let mux_open = Gauge::default();
        registry.register(
            "mux_streams_open",
            "Multiplexer streams open now",
            mux_open.clone(),
        );
        let mux_streams = Family::<StreamLabels, Counter>::default();
        registry.register(
            "mux_streams",
            "Multiplexer streams opened, closed and refused (by reason)",
            mux_streams.clone(),
        );
        let removals = RemovalCause::ALL.map(|cause| {
            removals
                .get_or_create(&RemovalLabels {
                    cause: cause.as_str(),
                })
                .clone()
        });
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            removals,
            reloads,
            mux_open,
            mux_streams,
        }
    }

    /// A multiplexer stream opened (`refused: None`) or refused.
    pub fn mux_stream(&self, opened: bool, refused: Option<crate::reason::Reason>) {
        let (event, reason) = match (opened, refused) {
            (true, _) => {
                self.mux_open.inc();
                ("opened", "")
            }
            (false, r) => ("refused", r.map_or("", |r| r.code())),
        };
        self.mux_streams
            .get_or_create(&StreamLabels { event, reason })
            .inc();
    }

    pub fn mux_stream_closed(&self) {
        self.mux_open.dec();
        self.mux_streams
            .get_or_create(&StreamLabels {
                event: "closed",
                reason: "",
            })
            .inc();
    }

    pub fn observe(&self, trace: &Trace) {
        let reason = trace.reason_code();
        let seconds = trace.elapsed_us() as f64 / 1e6;
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let handles = cache.get(self, &trace.route, trace.status, reason);
            handles.requests.inc();
            handles.duration.observe(seconds);
        });
        for removal in &trace.removals {
            self.removals[removal.cause as usize].inc();
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

/// The metric handles a request is counted in. Looking them up in their families hashes the
/// labels under a lock; consecutive requests nearly always repeat the last few label sets, so
/// each worker thread keeps those handles at hand.
struct Handles {
    metrics_id: u64,
    route: Option<Arc<str>>,
    status: u16,
    reason: &'static str,
    requests: Counter,
    duration: Histogram,
}

impl Handles {
    fn matches(
        &self,
        metrics_id: u64,
        route: &Option<Arc<str>>,
        status: u16,
        reason: &str,
    ) -> bool {
        let same_route = match (&self.route, route) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.metrics_id == metrics_id
            && same_route
            && self.status == status
            && self.reason == reason
    }
}

const CACHED_HANDLES: usize = 4;

#[derive(Default)]
struct HandleCache {
    entries: Vec<Handles>,
    /// The entry the next miss replaces once the cache is full (round robin).
    next: usize,
}

impl HandleCache {
    fn get(
        &mut self,
        metrics: &Metrics,
        route: &Option<Arc<str>>,
        status: u16,
        reason: &'static str,
    ) -> &Handles {
        let hit = self
            .entries
            .iter()
            .position(|h| h.matches(metrics.id, route, status, reason));
        let index = match hit {
            Some(i) => i,
            None => {
                let name = Name(route.clone());
                let handles = Handles {
                    metrics_id: metrics.id,
                    route: route.clone(),
                    status,
                    reason,
                    requests: metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            route: name.clone(),
                            status,
                            reason,
                        })
                        .clone(),
                    duration: metrics
                        .duration
                        .get_or_create(&RouteLabels { route: name })
                        .clone(),
                };
                if self.entries.len() < CACHED_HANDLES {
                    self.entries.push(handles);
                    self.entries.len() - 1
                } else {
                    let i = self.next;
                    self.next = (i + 1) % CACHED_HANDLES;
                    self.entries[i] = handles;
                    i
                }
            }
        };
        &self.entries[index]
    }
}

thread_local! {
    static HANDLES: RefCell<HandleCache> = RefCell::default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::request_id;

    fn trace(route: &Arc<str>, status: u16) -> Trace {
        let mut t = Trace::start(request_id::mint(), http::Method::GET, Default::default());
        t.route = Some(route.clone());
        t.status = status;
        t
    }

    fn count(text: &str, route: &str, status: u16) -> Option<String> {
        let prefix = format!("keyway_requests_total{{route=\"{route}\",status=\"{status}\",");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    }

    #[test]
    fn cached_handles_count_in_their_own_registry_and_label_set() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let routes: Vec<Arc<str>> = (0..6).map(|i| Arc::from(format!("r{i}"))).collect();
        // More label sets than the per-thread cache holds, interleaved, on two registries.
        for _ in 0..3 {
            for route in &routes {
                a.observe(&trace(route, 200));
                a.observe(&trace(route, 404));
            }
            b.observe(&trace(&routes[0], 200));
        }
        // A reloaded route with the same name is the same series.
        a.observe(&trace(&Arc::from("r0"), 200));
        let (a, b) = (a.render(), b.render());
        assert_eq!(count(&a, "r0", 200).as_deref(), Some("4"));
        assert_eq!(count(&a, "r5", 404).as_deref(), Some("3"));
        assert_eq!(count(&b, "r0", 200).as_deref(), Some("3"));
        assert_eq!(count(&b, "r1", 200), None);
        assert!(a.contains("keyway_request_duration_seconds_count{route=\"r3\"} 6"));
    }
}
