//! Write a kusto-metrics transform guest in Rust.
//!
//! The types are generated from `wit/v0.2/transform.wit`, the contract between
//! the host and every guest. This crate adds what each guest would otherwise
//! write again: reading values out of columns ([`ColumnExt`], [`TextArena`]),
//! building dictionary-encoded output ([`OutputBuilder`]), counting skipped
//! rows ([`SkipCounter`]) and logging ([`log`]).
//!
//! A guest implements [`Guest`] and exports it:
//!
//! ```text
//! struct MyTransform;
//! impl kusto_metrics_guest::Guest for MyTransform {
//!     fn validate(config: String) -> Result<Requirements, ConfigError> { ... }
//!     fn transform(config: String, batch: Batch) -> Result<Output, TransformError> { ... }
//! }
//! kusto_metrics_guest::export!(MyTransform);
//! ```
//! and builds with `cargo build --target wasm32-wasip2 --release` (or
//! `cargo component build --release`).

#[cfg(target_arch = "wasm32")]
mod bump;
mod columns;
mod output;
mod skips;

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "transformer",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "kusto_metrics_guest",
});

pub use adx_mon::metrics_transform::types::*;
#[cfg(target_arch = "wasm32")]
pub use bump::BumpAllocator;
pub use columns::{ColumnExt, TICKS_PER_SECOND, Text, ticks_to_unix_nanos};
pub use exports::adx_mon::metrics_transform::transform::Guest;
pub use output::{AttributeSetBuilder, OutputBuilder};
pub use skips::SkipCounter;

/// Logging through the host. Messages end up in the host's structured log,
/// tagged with the guest's name.
pub mod log {
    pub use crate::adx_mon::metrics_transform::log::Level;

    pub fn write(level: Level, message: &str) {
        crate::adx_mon::metrics_transform::log::log(level, message);
    }
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
}

/// The WIT package version this crate implements (the host checks it
/// against its own in a test).
pub const CONTRACT_VERSION: &str = "0.2.0";

impl ConfigError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl TransformError {
    pub fn column(column: &str, message: impl Into<String>) -> Self {
        TransformError {
            column: Some(column.to_string()),
            row: None,
            message: message.into(),
        }
    }
}
