//! Write a kusto-metrics transform guest in Rust.
//!
//! The types are generated from `wit/transform.wit` (a copy of the
//! repository's `wit/v0.2/transform.wit` that travels with this crate, so it
//! works as a git dependency), the contract between the host and every
//! guest.
//!
//! Most guests implement [`Transform`]: a configuration type parsed once
//! per instance, a check that says which columns it reads, and a function
//! that reads typed columns ([`Batch::long`], [`Batch::datetime`],
//! [`Batch::label`], ...) and writes points
//! (`out.gauge("name").unit("1").point(&attrs, time, value)`):
//!
//! ```text
//! struct Ratio;
//! impl kusto_metrics_guest::Transform for Ratio {
//!     type Config = Config;   // serde::Deserialize
//!     fn validate(config: &Config) -> Result<Requirements, ConfigError> { ... }
//!     fn transform(config: &Config, batch: &Batch, out: &mut Out) -> Result<(), TransformError> { ... }
//! }
//! kusto_metrics_guest::export_transform!(Ratio);
//! ```
//!
//! Underneath, the contract's own functions ([`Guest`], exported with
//! [`export!`]) and the low-level pieces stay available for a guest that
//! needs every cycle: column reads ([`ColumnExt`], [`Text`]), interning by
//! hand ([`OutputBuilder`], [`AttributeSetBuilder`]), [`SkipCounter`].
//! Build with `cargo build --target wasm32-wasip2 --release`.

#[cfg(target_arch = "wasm32")]
mod bump;
mod columns;
mod config;
mod errors;
mod metrics;
mod output;
mod readers;
mod requirements;
mod skips;
pub mod typed;

wit_bindgen::generate!({
    // A copy of ../../wit/v0.2 (the host's tests keep the two identical).
    path: "wit",
    additional_derives: [PartialEq],
    world: "transformer",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "kusto_metrics_guest",
});

pub use adx_mon::metrics_transform::types::*;
#[cfg(target_arch = "wasm32")]
pub use bump::BumpAllocator;
pub use columns::{ColumnExt, TICKS_PER_SECOND, Text, ticks_to_unix_nanos};
pub use config::parse_config;
pub use exports::adx_mon::metrics_transform::transform::Guest;
pub use metrics::{Attributes, HistogramWriter, Number, NumberWriter, Out};
pub use output::{AttributeSetBuilder, OutputBuilder};
pub use readers::{
    BoolColumn, DatetimeColumn, LabelColumn, LongColumn, NumberColumn, StringColumn,
    TimespanColumn, type_name,
};
pub use skips::SkipCounter;
pub use typed::Transform;

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
