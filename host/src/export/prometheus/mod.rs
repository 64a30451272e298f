//! Prometheus as a destination, for stores that take remote write
//! (Prometheus, Mimir, Thanos, Cortex, VictoriaMetrics) and for Prometheus
//! servers that scrape.
//!
//! - [`config`]: `prometheusRemoteWrite` and `prometheusScrape` exporters.
//! - [`naming`]: OpenTelemetry names to Prometheus names and labels.
//! - [`series`]: an output as families of series of samples.
//! - [`cumulative`]: delta points as running totals, per destination.
//! - [`remote_write`]: remote write 1.0 requests and their delivery.
//! - [`scrape`]: the latest point per series, served at `/exported/metrics`.

/// Who an output comes from when the caller does not say: one owner for
/// scrape families and for running totals alike.
pub const UNNAMED_OWNER: &str = "(unnamed)";

pub mod config;
pub mod cumulative;
pub mod naming;
pub mod remote_write;
pub mod resource_labels;
pub mod scrape;
pub mod series;

pub use config::{RemoteWriteConfig, ScrapeConfig};
pub use remote_write::RemoteWrite;
pub use scrape::ScrapeStore;
