//! What can go wrong when loading or running a guest. Every error names the
//! guest and, for a call, the batch.

use std::time::Duration;

use crate::error::{Classify, RetryClass};

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("guest `{guest}`: not a valid WebAssembly component: {reason}")]
    Compile { guest: String, reason: String },

    #[error(
        "guest `{guest}` is not a kusto-metrics transform: {reason} (this host implements {})",
        crate::wit::CONTRACT
    )]
    IncompatibleContract { guest: String, reason: String },

    #[error(
        "guest `{guest}` imports `{import}`, which the sandbox does not grant; a guest gets logging \
         and WASI's cli and io interfaces (no files, network, clock, environment or randomness)"
    )]
    ForbiddenImport { guest: String, import: String },

    #[error("guest `{guest}` rejected its configuration{}: {message}", field_suffix(.field))]
    Config {
        guest: String,
        field: Option<String>,
        message: String,
    },

    #[error("guest `{guest}` rejected batch {batch}{}: {message}", location(.column, .row))]
    Rejected {
        guest: String,
        batch: String,
        column: Option<String>,
        row: Option<u32>,
        message: String,
    },

    #[error("guest `{guest}` ran past its deadline of {deadline:?} on batch {batch}")]
    Timeout {
        guest: String,
        batch: String,
        deadline: Duration,
    },

    #[error("guest `{guest}` hit its memory limit of {limit} bytes on batch {batch}")]
    OutOfMemory {
        guest: String,
        batch: String,
        limit: usize,
    },

    #[error("guest `{guest}` needs more than the sandbox allows: {reason}")]
    TooManyResources { guest: String, reason: String },

    #[error("guest `{guest}` hit the sandbox's limit on {limit} on batch {batch}")]
    SandboxLimit {
        guest: String,
        batch: String,
        /// e.g. `core instances (64)`.
        limit: String,
    },

    #[error("guest `{guest}` trapped on batch {batch}: {trap}")]
    Trap {
        guest: String,
        batch: String,
        trap: String,
    },

    #[error("guest `{guest}` produced too much output for batch {batch}: {what}")]
    OutputTooLarge {
        guest: String,
        batch: String,
        what: String,
    },

    #[error("guest `{guest}` produced malformed output for batch {batch}: {what}")]
    MalformedOutput {
        guest: String,
        batch: String,
        what: String,
    },

    #[error("guest `{guest}`: could not instantiate: {reason}")]
    Instantiate { guest: String, reason: String },
}

fn field_suffix(field: &Option<String>) -> String {
    field
        .as_deref()
        .map(|f| format!(" at `{f}`"))
        .unwrap_or_default()
}

fn location(column: &Option<String>, row: &Option<u32>) -> String {
    match (column, row) {
        // 0-based, as the WIT numbers rows (and every skip message does).
        (Some(c), Some(r)) => format!(" (column `{c}`, row {r}, 0-based)"),
        (Some(c), None) => format!(" (column `{c}`)"),
        (None, Some(r)) => format!(" (row {r}, 0-based)"),
        (None, None) => String::new(),
    }
}

/// A wasmtime error and its causes on one line.
pub(crate) fn describe(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.join(": ")
}

/// wasmtime's error type does not convert to anyhow without a crate feature
/// that would rebuild wasmtime; its text is all we need.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!(describe(&e))
}

impl TransformError {
    /// A short stable label for metrics (`timeout`, `trap`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            TransformError::Compile { .. } => "compile",
            TransformError::IncompatibleContract { .. } => "incompatible_contract",
            TransformError::ForbiddenImport { .. } => "forbidden_import",
            TransformError::Config { .. } => "config",
            TransformError::Rejected { .. } => "rejected",
            TransformError::Timeout { .. } => "timeout",
            TransformError::OutOfMemory { .. } => "out_of_memory",
            TransformError::SandboxLimit { .. } => "sandbox_limit",
            TransformError::TooManyResources { .. } => "too_many_resources",
            TransformError::Trap { .. } => "trap",
            TransformError::OutputTooLarge { .. } => "output_too_large",
            TransformError::MalformedOutput { .. } => "malformed_output",
            TransformError::Instantiate { .. } => "instantiate",
        }
    }
}

impl Classify for TransformError {
    /// A guest is deterministic: the same batch fails the same way. A timeout
    /// may come from a loaded machine, so it is worth another try.
    fn retry_class(&self) -> RetryClass {
        match self {
            TransformError::Timeout { .. } => RetryClass::Retryable,
            _ => RetryClass::Permanent,
        }
    }
}
