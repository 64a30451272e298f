//! When things run. [`job`] is one pass of one (MetricsExporter, rule,
//! exporter), for local tables and ADX alike: read chunks → transform →
//! deliver → commit progress, as a pipeline whose first stages are
//! [`stages`]; [`fan_out`] reads a rule once for all of a MetricsExporter's
//! exporters that stand at the same place.
//! [`runner`] runs every job of a MetricsExporter on its interval, picks up
//! manifest changes while running, and does single passes for `--once`.
//! In Kubernetes, [`cluster`] runs the exporters whose [`leases`] this
//! replica holds, and reports each run in the exporter's status.

pub mod cluster;
pub mod fan_out;
pub mod guests;
pub mod job;
pub mod label_keys;
pub mod leases;
pub mod runner;
pub mod stages;
pub mod stop;

pub use runner::{Runner, run};
