//! Errors reading rows. Each names the file, row and column at fault.

use crate::error::{Classify, RetryClass};
use crate::wit::KustoType;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{origin}: {message}")]
    Format { origin: String, message: String },

    #[error("{origin}: row {row}, column `{column}` ({ty}): cannot read {value}: {reason}")]
    Value {
        origin: String,
        /// 1-based data row.
        row: usize,
        column: String,
        ty: KustoType,
        value: String,
        reason: String,
    },

    #[error("{origin}: the query failed: {message}")]
    QueryFailed { origin: String, message: String },

    #[error("{origin}: {source}")]
    TooLarge {
        origin: String,
        #[source]
        source: super::batch::ColumnTooLarge,
    },
}

impl InputError {
    pub fn format(origin: &str, message: impl Into<String>) -> Self {
        InputError::Format {
            origin: origin.to_string(),
            message: message.into(),
        }
    }
}

impl Classify for InputError {
    fn retry_class(&self) -> RetryClass {
        match self {
            InputError::Io { .. } => RetryClass::Retryable,
            _ => RetryClass::Permanent,
        }
    }
}

/// A value for an error message: quoted, and cut when long.
pub fn show_value(v: &str) -> String {
    const MAX: usize = 80;
    if v.len() <= MAX {
        return format!("{v:?}");
    }
    let mut cut = MAX;
    while !v.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}...", &v[..cut])
}
