//! Seeing what the host does: structured logs ([`init_logging`]), the host's
//! own Prometheus metrics ([`metrics`]) and the HTTP endpoints that serve them
//! with the health checks ([`server`]; [`scrape_auth`]: the bearer token
//! scrape paths can require).

pub mod metrics;
pub mod scrape_auth;
pub mod server;

pub use metrics::Metrics;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `level` is an `EnvFilter` directive (`info`, `kusto_metrics=debug`, ...);
/// `RUST_LOG`, when set, wins.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
