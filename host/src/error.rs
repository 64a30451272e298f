//! What every stage's error says about trying again.

use std::time::Duration;

/// Whether an operation that failed is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The same input will fail the same way: report it, do not retry.
    Permanent,
    /// A passing fault (network, overload): retry with backoff.
    Retryable,
    /// The peer asked us to wait at least this long before retrying.
    Throttled(Duration),
}

impl RetryClass {
    pub fn is_retryable(self) -> bool {
        !matches!(self, RetryClass::Permanent)
    }
}

/// Implemented by each stage's error enum.
pub trait Classify {
    fn retry_class(&self) -> RetryClass;
}
