//! Runs transform guests: WebAssembly components behind
//! `wit/v0.2/transform.wit`.
//!
//! - [`engine`]: one engine and linker per process, the epoch ticker.
//! - [`sandbox`]: what a guest may import, the per-call state, the store's
//!   memory, instance and table limits.
//! - [`limits`]: every limit of a guest call, and what one call can cost.
//! - [`cache`]: compiled components on disk, by content digest.
//! - [`guest`]: a loaded guest; a fresh store per batch; failures typed.
//! - [`output_check`]: what a guest returned, checked before it is spent.
//! - [`counters`]: guest text cut or dropped, for `/metrics`.
//! - [`slots`]: how many guest calls run at once (the instance pool's size).
//! - [`builtin`]: the default guest, embedded in the binary.

pub mod builtin;
pub mod cache;
pub mod counters;
pub mod engine;
pub mod error;
pub mod guest;
pub mod limits;
pub mod modules;
pub mod output_check;
pub mod sandbox;
pub mod slots;

pub use engine::Runtime;
pub use error::TransformError;
pub use guest::{Guest, Provenance};
pub use limits::Limits;
