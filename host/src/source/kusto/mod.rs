//! Azure Data Explorer as the source: our Kusto REST client (the official
//! `azure_kusto_data` is not on crates.io) and how the host reads a table
//! window by window.
//!
//! - [`config`]: `source.kusto` in the host configuration.
//! - [`auth`]: azure_identity credentials ([`transport`] gives them our HTTP client).
//! - [`client`]: queries and management commands over REST, with retries.
//! - [`clock`]: ADX's clock, which windows end by.
//! - [`kql`]: the query text; names quoted, values as declared parameters.
//! - [`kql_scope`]: what a MetricsExporter's own KQL may reach (tenancy).
//! - [`stream`]: a window's result read as it arrives, in chunks of at
//!   most `maxRowsPerBatch` rows, each with a digest for resuming.
//! - [`window`]: which rows the next query reads.
//! - [`windows`]: a table or a body read window by window, as chunks.
//! - [`table`]: column and ingestion-time checks before the first read.
//!
//! Responses are parsed by [`super::kusto_v2`].

pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod kql;
pub mod kql_scope;
pub mod stream;
pub mod table;
mod transport;
pub mod window;
pub mod windows;

pub use client::{KustoClient, Query};
pub use config::KustoConfig;
pub use error::{KustoError, KustoErrorKind};
pub use stream::{RowChunk, WindowStream};
