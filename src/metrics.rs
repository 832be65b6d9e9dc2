//! Prometheus metrics, in a registry owned by the app (no globals: many gateways per process).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::authn::Authenticator;
use crate::pipeline::runtime::Runtime;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

pub struct Metrics {
    /// Given to the access log's writer, which counts the lines it drops.
    pub access_log_dropped: Counter,
    /// Tells this registry's handles apart in the per-thread cache (many gateways per process).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    /// `header_removals`' counter for each cause, in `RemovalCause::ALL` order: taken from the
    /// family once, so counting a removal does not hash its labels under the family's lock.
    removals: [Counter; RemovalCause::ALL.len()],
    reloads: Family<ReloadLabels, Counter>,
    upstream_latency: Family<UpstreamLabels, Latency>,
    connections: Gauge,
    websocket_streams: Gauge,
    websocket_opened: Family<KindLabels, Counter>,
    websocket_closed: Family<ReasonLabels, Counter>,
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

/// Open while a client connection is: the connections gauge counts them.
pub struct ConnectionOpen(Gauge);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::build(None)
    }

    /// With the counters authenticators keep themselves (JWKS fetches, verified-token cache),
    /// read from the running config at each scrape.
    pub fn with_runtime(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        Self::build(Some(runtime))
    }

    fn build(runtime: Option<Arc<ArcSwap<Runtime>>>) -> Self {
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
        let upstream_latency = Family::<UpstreamLabels, Latency>::default();
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response head, by upstream",
            upstream_latency.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open",
            connections.clone(),
        );
        let websocket_streams = Gauge::default();
        registry.register(
            "websocket_streams",
            "WebSocket streams open (direct upgrades and multiplexed streams)",
            websocket_streams.clone(),
        );
        let websocket_opened = Family::<KindLabels, Counter>::default();
        registry.register(
            "websocket_streams_opened",
            "WebSocket streams opened, by kind (direct, mux)",
            websocket_opened.clone(),
        );
        let websocket_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "websocket_streams_closed",
            "WebSocket streams closed, by reason code (empty for a normal close)",
            websocket_closed.clone(),
        );
        if let Some(runtime) = runtime {
            registry.register_collector(Box::new(AuthnCollector(runtime)));
        }
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the destination did not keep up or failed",
            access_log_dropped.clone(),
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
            access_log_dropped,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            duration,
            removals,
            reloads,
            upstream_latency,
            connections,
            websocket_streams,
            websocket_opened,
            websocket_closed,
            mux_open,
            mux_streams,
        }
    }

    /// A client connection opened; the gauge goes down when the guard drops.
    pub fn connection_opened(&self) -> ConnectionOpen {
        self.connections.inc();
        ConnectionOpen(self.connections.clone())
    }

    /// A WebSocket stream opened (`kind`: `direct` or `mux`).
    pub fn websocket_stream_opened(&self, kind: &'static str) {
        self.websocket_streams.inc();
        self.websocket_opened
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// A WebSocket stream closed, with its reason code (empty for a normal close).
    pub fn websocket_stream_closed(&self, reason: &'static str) {
        self.websocket_streams.dec();
        self.websocket_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A multiplexer stream opened (`refused: None`) or refused.
    pub fn mux_stream(&self, opened: bool, refused: Option<crate::reason::Reason>) {
        let (event, reason) = match (opened, refused) {
            (true, _) => {
                self.mux_open.inc();
                // A mux stream is a WebSocket stream too.
                self.websocket_stream_opened("mux");
                ("opened", "")
            }
            (false, r) => ("refused", r.map_or("", |r| r.code())),
        };
        self.mux_streams
            .get_or_create(&StreamLabels { event, reason })
            .inc();
    }

    /// A multiplexer stream closed; `reason` is `mux.stream_overflow` when keyway closed it for
    /// not reading, else empty.
    pub fn mux_stream_closed(&self, reason: &'static str) {
        self.mux_open.dec();
        self.websocket_stream_closed(reason);
        self.mux_streams
            .get_or_create(&StreamLabels {
                event: "closed",
                reason: "",
            })
            .inc();
    }

    /// Counts a recorded request that took `elapsed_us` so far (its response head is out).
    pub fn observe(&self, trace: &Trace, elapsed_us: u64) {
        let reason = trace.reason_code();
        let seconds = elapsed_us as f64 / 1e6;
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let handles = cache.get(self, trace, reason);
            handles.requests.inc();
            handles.duration.observe(seconds);
            if let Some(us) = trace.upstream_us(elapsed_us) {
                match &handles.upstream {
                    Some(h) => h.observe(us),
                    // The cached handles were made for a request of the same route, status
                    // and reason that no upstream answered (a connect failure's 502, say).
                    None => self
                        .upstream_latency
                        .get_or_create(&UpstreamLabels {
                            upstream: Name(trace.upstream.clone()),
                        })
                        .observe(us),
                }
            }
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

    /// The OpenMetrics exposition (what Prometheus asks for with its `Accept` header).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    /// The classic Prometheus text format (0.0.4), for clients that do not ask for OpenMetrics:
    /// curl, `promtool check metrics`, older scrapers.
    pub fn render_classic(&self) -> String {
        classic_text(&self.render())
    }
}

/// OpenMetrics → Prometheus text 0.0.4. The two differ in the family names of counters (a
/// counter family `x` has samples `x_total`, and 0.0.4 names its HELP and TYPE after the
/// samples), in `# UNIT` and `# EOF`, and in the types 0.0.4 lacks.
fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        let comment = line
            .strip_prefix("# HELP ")
            .map(|rest| ("HELP", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("TYPE", rest)));
        if let Some((keyword, rest)) = comment {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let text = match (keyword, text) {
                ("TYPE", "info" | "stateset") => "gauge",
                ("TYPE", "unknown") => "untyped",
                ("TYPE", "gaugehistogram") => "histogram",
                _ => text,
            };
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            let _ = writeln!(out, "# {keyword} {name}{suffix} {text}");
        } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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
    /// The route's upstream latency histogram (a route has one upstream).
    upstream: Option<Latency>,
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
    fn get(&mut self, metrics: &Metrics, trace: &Trace, reason: &'static str) -> &Handles {
        let (route, status) = (&trace.route, trace.status);
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
                    upstream: trace.upstream.as_ref().map(|u| {
                        metrics
                            .upstream_latency
                            .get_or_create(&UpstreamLabels {
                                upstream: Name(Some(u.clone())),
                            })
                            .clone()
                    }),
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

/// Upper bounds of the upstream latency buckets in microseconds: 100 µs, then ×4 (as
/// `exponential_buckets(0.0001, 4.0, 10)` in seconds).
const LATENCY_BOUNDS_US: [u64; 10] = [
    100, 400, 1_600, 6_400, 25_600, 102_400, 409_600, 1_638_400, 6_553_600, 26_214_400,
];

/// A histogram of microseconds in atomics: observing is two relaxed adds, without the lock
/// prometheus-client's histogram takes (this one is on every proxied request's path).
#[derive(Clone, Debug, Default)]
pub struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
pub struct LatencyCounts {
    /// One per bound, then +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    pub fn observe(&self, us: u64) {
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(bucket) = self.0.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl prometheus_client::metrics::TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self
            .0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let bounds = LATENCY_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            counts.iter().sum(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The counters authenticators keep (JWKS fetches, the verified-token cache), read from the
/// running config at each scrape. A reload starts them again from zero, as Prometheus counters
/// may.
#[derive(Debug)]
struct AuthnCollector(Arc<ArcSwap<Runtime>>);

impl Collector for AuthnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rt = self.0.load();
        let jwts: Vec<_> = rt
            .authenticators
            .iter()
            .filter_map(|a| match &**a {
                Authenticator::Jwt(j) => Some(j),
                _ => None,
            })
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "jwks_fetches",
                "JWKS fetches by authenticator and result (ok, failed)",
                None,
                MetricType::Counter,
            )?;
            for jwt in &jwts {
                let Some(jwks) = jwt.jwks() else { continue };
                let (ok, failed) = jwks.fetch_counts();
                for (result, n) in [("ok", ok), ("failed", failed)] {
                    let labels = [("authenticator", &**jwt.name()), ("result", result)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "jwt_cache_lookups",
            "Verified-token cache lookups by authenticator and result (hit, miss)",
            None,
            MetricType::Counter,
        )?;
        for jwt in &jwts {
            let (hits, misses) = jwt.cache_counts();
            for (result, n) in [("hit", hits), ("miss", misses)] {
                let labels = [("authenticator", &**jwt.name()), ("result", result)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

thread_local! {
    static HANDLES: RefCell<HandleCache> = RefCell::default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_by_their_samples() {
        let open = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n\
                    # HELP a_open Open.\n# TYPE a_open gauge\n# UNIT a_open seconds\na_open 1\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total 3\n\
             # HELP a_open Open.\n# TYPE a_open gauge\na_open 1\n"
        );
    }
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
                a.observe(&trace(route, 200), 10);
                a.observe(&trace(route, 404), 10);
            }
            b.observe(&trace(&routes[0], 200), 10);
        }
        // A reloaded route with the same name is the same series.
        a.observe(&trace(&Arc::from("r0"), 200), 10);
        let (a, b) = (a.render(), b.render());
        assert_eq!(count(&a, "r0", 200).as_deref(), Some("4"));
        assert_eq!(count(&a, "r5", 404).as_deref(), Some("3"));
        assert_eq!(count(&b, "r0", 200).as_deref(), Some("3"));
        assert_eq!(count(&b, "r1", 200), None);
        assert!(a.contains("keyway_request_duration_seconds_count{route=\"r3\"} 6"));
    }

    #[test]
    fn websocket_and_connection_hooks_move_their_gauges() {
        let m = Metrics::new();
        let open = m.connection_opened();
        m.websocket_stream_opened("mux");
        m.websocket_stream_opened("direct");
        m.websocket_stream_closed("jwt.expired");
        let text = m.render();
        assert!(text.contains("keyway_client_connections 1"), "{text}");
        assert!(text.contains("keyway_websocket_streams 1"), "{text}");
        assert!(
            text.contains("keyway_websocket_streams_opened_total{kind=\"mux\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keyway_websocket_streams_closed_total{reason=\"jwt.expired\"} 1"),
            "{text}"
        );
        drop(open);
        assert!(m.render().contains("keyway_client_connections 0"));
    }

    #[test]
    fn upstream_latency_is_a_histogram_in_seconds() {
        let m = Metrics::new();
        let h = m.upstream_latency.get_or_create(&UpstreamLabels {
            upstream: Name(Some(Arc::from("app"))),
        });
        for us in [50, 100, 500, 30_000_000] {
            h.observe(us);
        }
        drop(h);
        let text = m.render();
        let line = |suffix: &str| {
            text.lines()
                .find(|l| l.starts_with("keyway_upstream_response_seconds") && l.contains(suffix))
                .unwrap_or_else(|| panic!("{suffix} in {text}"))
                .to_owned()
        };
        assert!(line("_count{").ends_with(" 4"), "{text}");
        assert!(line("_sum{").ends_with(" 30.00065"), "{text}");
        assert!(line("le=\"0.0001\"").ends_with(" 2"), "{text}");
        assert!(line("le=\"0.0016\"").ends_with(" 3"), "{text}");
        assert!(line("le=\"+Inf\"").ends_with(" 4"), "{text}");
        assert!(text.contains("# TYPE keyway_upstream_response_seconds histogram"));
    }
}
