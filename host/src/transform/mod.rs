//! Runs transform guests: WebAssembly components behind `wit/transform.wit`.
//!
//! - [`engine`]: one engine and linker per process, the epoch ticker.
//! - [`sandbox`]: what a guest may import, and the per-call state.
//! - [`limits`]: memory, deadline and output caps.
//! - [`cache`]: compiled components on disk, by content digest.
//! - [`guest`]: a loaded guest; a fresh store per batch; output checks.
//! - [`builtin`]: the default guest, embedded in the binary.

pub mod builtin;
pub mod cache;
pub mod engine;
pub mod error;
pub mod guest;
pub mod limits;
pub mod modules;
pub mod sandbox;

pub use engine::Runtime;
pub use error::TransformError;
pub use guest::{Guest, Provenance};
pub use limits::Limits;
