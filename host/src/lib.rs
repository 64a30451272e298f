//! kusto-metrics: rows that adx-mon SummaryRules write to Azure Data Explorer,
//! turned into OTLP metrics by a sandboxed WebAssembly transform and pushed to
//! the metrics systems teams already run.
//!
//! # Layout
//! A row's way through the host, one module per stage:
//! - [`discovery`]: which MetricsExporters run, and which SummaryRules each selects.
//! - [`schedule`]: each exporter on its interval; one job = read → transform → deliver → commit.
//! - [`source`]: reads rows (local files, Kusto responses) into a column-by-column [`wit::Batch`].
//! - [`transform`]: runs a guest component on a batch: engine, sandbox, limits, compile cache.
//! - [`export`]: encodes the guest's [`wit::Output`] as OTLP (protobuf, JSON) with resource and scope.
//!
//! Beside them: [`api`] (MetricsExporter, SummaryRule, label selectors),
//! [`config`] (the host config file), [`net`] (the outbound HTTP policy:
//! clients, redirects, secrets over plain http, capped bodies), [`state`]
//! (progress that survives restarts), [`telemetry`] (logs, self-metrics,
//! health endpoints),
//! [`wit`] (the contract's types, generated from `wit/`), [`error`]
//! (retry classes shared by every stage), [`test_transform`] (the
//! `kusto-metrics test-transform` command, `--expect` in
//! [`test_transform::expect`]), [`guest_new`] (`kusto-metrics guest new`:
//! a guest project from a template).

pub mod api;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod error;
pub mod export;
pub mod guest_new;
pub mod net;
pub mod schedule;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod test_transform;
pub mod transform;
pub mod wit;
