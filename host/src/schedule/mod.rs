//! When things run. [`job`] is one pass of one (MetricsExporter, rule,
//! exporter): read new rows → transform → deliver → commit progress.
//! [`kusto_job`] is the same pass against ADX, window by window.
//! [`runner`] runs every job of a MetricsExporter on its interval, picks up
//! manifest changes while running, and does single passes for `--once`.
//! In Kubernetes, [`cluster`] runs the exporters whose [`leases`] this
//! replica holds, and reports each run in the exporter's status.

pub mod cluster;
pub mod guests;
pub mod job;
pub mod kusto_job;
pub mod leases;
pub mod runner;

pub use runner::{Runner, run};
