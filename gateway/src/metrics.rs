//! What `/metrics` exposes, in the Prometheus text format. Names follow
//! Prometheus conventions (`_total`, `_seconds`); labels stay low-cardinality
//! (no repository or webhook ids).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn micro_histogram() -> Histogram {
    // 5 µs to ~160 ms.
    Histogram::new(exponential_buckets(0.000_005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    /// Events appended to the log, by source (`local`, `remote`, `proxy`).
    pub events: Family<Labels, Counter>,
    /// Notifications acknowledged without an event, by reason.
    pub ingest_ignored: Family<Labels, Counter>,
    /// Deliveries finished or retried, by outcome (`succeeded`, `retry`,
    /// `dead`, `failed`, `plugin_error`, `filtered`).
    pub deliveries: Family<Labels, Counter>,
    pub attempt_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pub pending: Gauge,
    pub plugin_call_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Plugin failures by plugin and kind (`error`, `timeout`, `trap`,
    /// `memory`, ...).
    pub plugin_failures: Family<Labels, Counter>,
    /// Events a webhook's filter declined, by plugin and rule (`events`,
    /// `tags`, `exclude_tags`, `tag_regex`, `plugin`, `unexplained`): not by
    /// webhook, whose ids are unbounded; per webhook, see `filtered`.
    pub events_filtered: Family<Labels, Counter>,
    pub poll_cycles: Family<Labels, Counter>,
    pub poll_errors: Counter,
    pub poll_requests: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callisto");
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events_ingested",
            "Events appended to the log, by source",
            events.clone(),
        );
        let ingest_ignored = Family::<Labels, Counter>::default();
        registry.register(
            "ingest_ignored",
            "Registry notifications acknowledged without an event (blob pushes, pulls, duplicates)",
            ingest_ignored.clone(),
        );
        let deliveries = Family::<Labels, Counter>::default();
        registry.register("deliveries", "Delivery outcomes", deliveries.clone());
        let attempt_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "attempt_duration_seconds",
            "Duration of webhook HTTP attempts, by result",
            attempt_seconds.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "deliveries_pending",
            "Deliveries waiting for an attempt",
            pending.clone(),
        );
        let plugin_call_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(micro_histogram);
        registry.register(
            "plugin_call_duration_seconds",
            "Duration of plugin filter+format calls, by plugin",
            plugin_call_seconds.clone(),
        );
        let plugin_failures = Family::<Labels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin errors and faults, by plugin and kind",
            plugin_failures.clone(),
        );
        let events_filtered = Family::<Labels, Counter>::default();
        registry.register(
            "events_filtered",
            "Events a webhook's filter declined, by plugin and by the rule that declined them",
            events_filtered.clone(),
        );
        let poll_cycles = Family::<Labels, Counter>::default();
        registry.register(
            "poll_cycles",
            "Polls of remote repositories, by result",
            poll_cycles.clone(),
        );
        let poll_errors = Counter::default();
        registry.register(
            "poll_errors",
            "Polls of remote repositories that failed",
            poll_errors.clone(),
        );
        let poll_requests = Counter::default();
        registry.register(
            "poll_requests",
            "HTTP requests made to remote registries",
            poll_requests.clone(),
        );
        Self {
            registry,
            events,
            ingest_ignored,
            deliveries,
            attempt_seconds,
            pending,
            plugin_call_seconds,
            plugin_failures,
            events_filtered,
            poll_cycles,
            poll_errors,
            poll_requests,
        }
    }

    pub fn count(family: &Family<Labels, Counter>, key: &'static str, value: &str) {
        family.get_or_create(&vec![(key, value.to_owned())]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
