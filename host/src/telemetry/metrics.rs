//! The host's own metrics, served as Prometheus text on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub metrics_exporter: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub metrics_exporter: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointLabels {
    pub metrics_exporter: String,
    pub rule: String,
    pub exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub metrics_exporter: String,
    pub rule: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub exporter: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleFetchLabels {
    /// builtin, file, configMap, oci.
    pub source: String,
    /// fetched, cached.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub runs: Family<RunLabels, Counter>,
    pub rows_read: Family<RuleLabels, Counter>,
    pub points_sent: Family<PointLabels, Counter>,
    /// Points a receiver refused for good.
    pub points_rejected: Family<PointLabels, Counter>,
    pub rows_skipped: Family<SkipLabels, Counter>,
    pub export_failures: Family<FailureLabels, Counter>,
    pub export_latency: Family<ExporterLabels, Histogram>,
    /// Now minus the newest point time delivered, per exporter and rule.
    pub lag_seconds: Family<RuleLabels, Gauge<f64, AtomicU64>>,
    /// Bytes of complete rows not yet read (local tables).
    pub pending_bytes: Family<RuleLabels, Gauge>,
    /// 1 when a rule's ADX table has no ingestion-time policy and is read
    /// by its timestamp column instead.
    pub timestamp_fallback: Family<RuleLabels, Gauge>,
    pub commit_failures: Family<RuleLabels, Counter>,
    pub adx_clock_offset: Family<DatabaseLabels, Gauge<f64, AtomicU64>>,
    /// Guest modules fetched or read from the cache.
    pub module_fetches: Family<ModuleFetchLabels, Counter>,
    /// Guest modules that could not be used, by reason.
    pub module_failures: Family<ReasonLabels, Counter>,
    /// Series a scrape exporter holds.
    pub scrape_series: Family<ExporterLabels, Gauge>,
    /// New series a full scrape exporter refused.
    pub scrape_series_refused: Family<ExporterLabels, Counter>,
    /// Scrape updates refused whole because a family belongs to another
    /// MetricsExporter.
    pub scrape_updates_refused: Family<ExporterLabels, Counter>,
    /// SummaryRules (Kubernetes) skipped now because they do not fit the type.
    pub summary_rules_skipped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kusto_metrics");
        let runs = Family::default();
        let rows_read = Family::default();
        let points_sent = Family::default();
        let points_rejected = Family::default();
        registry.register(
            "points_rejected",
            "Data points a receiver refused for good (OTLP partial success, samples Prometheus will not take)",
            points_rejected.clone(),
        );
        let rows_skipped = Family::default();
        let export_failures = Family::default();
        let export_latency = Family::<ExporterLabels, Histogram>::new_with_constructor(|| {
            // 5 ms to ~80 s.
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        });
        let lag_seconds = Family::default();
        let pending_bytes = Family::default();
        let timestamp_fallback = Family::default();
        let commit_failures = Family::default();
        let adx_clock_offset = Family::default();
        let module_fetches = Family::default();
        let module_failures = Family::default();
        registry.register(
            "module_fetches",
            "Guest modules fetched (result=fetched) or read from the cache without the network (result=cached)",
            module_fetches.clone(),
        );
        registry.register(
            "module_failures",
            "Guest modules that could not be fetched, verified or loaded, by reason",
            module_failures.clone(),
        );
        let scrape_series = Family::default();
        let scrape_series_refused = Family::default();
        registry.register(
            "scrape_series",
            "Series a prometheusScrape exporter holds",
            scrape_series.clone(),
        );
        registry.register(
            "scrape_series_refused",
            "New series a prometheusScrape exporter refused because it held maxSeries",
            scrape_series_refused.clone(),
        );
        let scrape_updates_refused = Family::default();
        registry.register(
            "scrape_updates_refused",
            "Updates a prometheusScrape exporter refused whole because a family in them is served for another MetricsExporter",
            scrape_updates_refused.clone(),
        );
        let summary_rules_skipped = Gauge::default();
        registry.register(
            "summaryrules_skipped",
            "SummaryRules skipped because they do not fit the SummaryRule type (each is named in a warning)",
            summary_rules_skipped.clone(),
        );
        registry.register(
            "runs",
            "Export runs of a MetricsExporter, by result",
            runs.clone(),
        );
        registry.register(
            "rows_read",
            "Rows read from SummaryRule output tables",
            rows_read.clone(),
        );
        registry.register(
            "points_sent",
            "Data points accepted by exporters",
            points_sent.clone(),
        );
        registry.register(
            "rows_skipped",
            "Rows left out, by reason",
            rows_skipped.clone(),
        );
        registry.register(
            "export_failures",
            "Failed deliveries, by exporter and reason",
            export_failures.clone(),
        );
        registry.register(
            "export_duration_seconds",
            "Time to deliver one batch, retries included",
            export_latency.clone(),
        );
        registry.register(
            "lag_seconds",
            "Now minus the newest point time delivered",
            lag_seconds.clone(),
        );
        registry.register(
            "pending_bytes",
            "Bytes of complete rows not yet read from a local table",
            pending_bytes.clone(),
        );
        registry.register(
            "timestamp_fallback",
            "1 when an ADX table has no ingestion-time policy and is read by its timestamp column",
            timestamp_fallback.clone(),
        );
        registry.register(
            "commit_failures",
            "Progress commits that failed (each attempt; retried, then kept in memory until one succeeds)",
            commit_failures.clone(),
        );
        registry.register(
            "adx_clock_offset_seconds",
            "ADX's clock minus the host's, as last measured per database (windows follow ADX's clock)",
            adx_clock_offset.clone(),
        );
        let deltas = &crate::export::prometheus::cumulative::COUNTERS;
        registry.register(
            "prometheus_delta_points_converted",
            "Delta points a Prometheus exporter delivered as running totals",
            deltas.converted.clone(),
        );
        registry.register(
            "prometheus_delta_points_dropped",
            "Delta points a Prometheus exporter left out, by reason (late: at or before the last one applied to its series; series-limit: a new series past the bound)",
            deltas.dropped.clone(),
        );
        registry.register(
            "prometheus_delta_series_resets",
            "Running totals of a Prometheus exporter started again, by reason (idle, bounds-changed)",
            deltas.resets.clone(),
        );
        registry.register(
            "prometheus_delta_series",
            "Series a Prometheus exporter keeps delta running totals for",
            deltas.series.clone(),
        );
        let guests = &crate::transform::counters::COUNTERS;
        registry.register(
            "guest_text_cut",
            "Guest text (log lines, error messages, skip reasons) cut to its limit, by kind",
            guests.text_cut.clone(),
        );
        registry.register(
            "guest_log_lines_dropped",
            "Guest log lines dropped past the per-call limit",
            guests.log_lines_dropped.clone(),
        );
        registry.register(
            "guest_skip_reasons_folded",
            "Skip counts whose reason was counted as `other` past the per-guest limit of distinct reasons",
            guests.skip_reasons_folded.clone(),
        );
        Metrics {
            registry,
            runs,
            rows_read,
            points_sent,
            points_rejected,
            rows_skipped,
            export_failures,
            export_latency,
            lag_seconds,
            pending_bytes,
            timestamp_fallback,
            commit_failures,
            adx_clock_offset,
            module_fetches,
            module_failures,
            scrape_series,
            scrape_series_refused,
            scrape_updates_refused,
            summary_rules_skipped,
        }
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
