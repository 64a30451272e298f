//! What can go wrong talking to ADX, each with its retry class. Every error
//! names the database and the client request id, which ADX logs too.

use std::time::Duration;

use crate::error::{Classify, RetryClass};
use crate::export::retry::AttemptTimeout;
use crate::source::InputError;

/// A throttled request without `Retry-After` waits at least this long.
pub const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("database {database}, request {request_id}: {kind}")]
pub struct KustoError {
    pub database: String,
    /// The `x-ms-client-request-id` of the failed request.
    pub request_id: String,
    pub kind: KustoErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum KustoErrorKind {
    #[error(
        "no endpoint for this database: add it to source.kusto.endpoints or pass --kusto-endpoint {0}=URL"
    )]
    NoEndpoint(String),
    #[error("cannot get a token ({identity}): {message}")]
    Credential { identity: String, message: String },
    #[error("ADX refused the identity ({identity}) with HTTP {status}: {message}")]
    Unauthorized {
        identity: String,
        status: u16,
        message: String,
    },
    #[error("throttled (HTTP 429); retry after {}", humantime::format_duration(*retry_after))]
    Throttled { retry_after: Duration },
    #[error("ADX is unavailable (HTTP {status}): {message}")]
    Unavailable {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the query was refused (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    /// A query limit was hit: the same window would fail again, a smaller
    /// one may not.
    #[error("the result is too large: {0}")]
    ResultTooLarge(String),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("network: {0}")]
    Network(String),
    /// A table or column name that cannot be quoted safely in KQL.
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Response(InputError),
}

impl KustoError {
    pub fn new(database: &str, request_id: &str, kind: KustoErrorKind) -> Self {
        KustoError {
            database: database.to_string(),
            request_id: request_id.to_string(),
            kind,
        }
    }

    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, KustoErrorKind::ResultTooLarge(_))
    }

    pub fn reason(&self) -> &'static str {
        match self.kind {
            KustoErrorKind::NoEndpoint(_) => "config",
            KustoErrorKind::Credential { .. } | KustoErrorKind::Unauthorized { .. } => "auth",
            KustoErrorKind::Throttled { .. } => "throttled",
            KustoErrorKind::Unavailable { .. } => "unavailable",
            KustoErrorKind::Refused { .. } => "refused",
            KustoErrorKind::ResultTooLarge(_) => "too-large",
            KustoErrorKind::Timeout(_) => "timeout",
            KustoErrorKind::Network(_) => "network",
            KustoErrorKind::BadName(_) => "name",
            KustoErrorKind::Response(_) => "response",
        }
    }
}

/// Messages by which ADX says a query went past a limit that a smaller
/// window can stay under (rows, bytes, memory).
const LIMIT_MARKERS: [&str; 5] = [
    "E_QUERY_RESULT_SET_TOO_LARGE",
    "80DA0003",
    "E_RUNAWAY_QUERY",
    "E_LOW_MEMORY_CONDITION",
    "LimitsExceeded",
];

pub fn is_limit_message(message: &str) -> bool {
    LIMIT_MARKERS.iter().any(|m| message.contains(m))
}

impl From<AttemptTimeout> for KustoError {
    fn from(t: AttemptTimeout) -> Self {
        // The caller fills in the database and request id.
        KustoError::new("", "", KustoErrorKind::Timeout(t.0))
    }
}

impl Classify for KustoError {
    fn retry_class(&self) -> RetryClass {
        match &self.kind {
            KustoErrorKind::Throttled { retry_after } => RetryClass::Throttled(*retry_after),
            KustoErrorKind::Unavailable {
                retry_after: Some(d),
                ..
            } => RetryClass::Throttled(*d),
            KustoErrorKind::Unavailable { .. }
            | KustoErrorKind::Timeout(_)
            | KustoErrorKind::Network(_)
            | KustoErrorKind::Credential { .. } => RetryClass::Retryable,
            KustoErrorKind::NoEndpoint(_)
            | KustoErrorKind::BadName(_)
            | KustoErrorKind::Unauthorized { .. }
            | KustoErrorKind::Refused { .. }
            | KustoErrorKind::ResultTooLarge(_)
            | KustoErrorKind::Response(_) => RetryClass::Permanent,
        }
    }
}
