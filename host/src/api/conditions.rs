//! The conditions a MetricsExporter's status carries, and their reasons,
//! in one place so status, events and tests agree on the spelling.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The exporter is valid and a replica runs it.
pub const READY: &str = "Ready";
/// The selector matched at least one SummaryRule.
pub const RULES_DISCOVERED: &str = "RulesDiscovered";
/// The last run delivered everything.
pub const EXPORTING: &str = "Exporting";
/// Something is wrong that does not stop the exporter (a rule, an exporter).
pub const DEGRADED: &str = "Degraded";
/// The guest module asked for is fetched, verified and loaded.
pub const MODULE_READY: &str = "ModuleReady";

pub mod reason {
    pub const RUNNING: &str = "Running";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The tenancy policy does not let the namespace read a database the
    /// exporter (or a rule it matches, or its `body`) names.
    pub const DATABASE_NOT_ALLOWED: &str = "DatabaseNotAllowed";
    /// The tenancy policy does not let the namespace run its own KQL.
    pub const BODY_NOT_ALLOWED: &str = "BodyNotAllowed";
    /// `spec.interval` is below the host's `minInterval`.
    pub const INTERVAL_TOO_SHORT: &str = "IntervalTooShort";
    /// `spec.criteriaExpression` is over one of the bounds in
    /// `discovery::criteria` (length, nodes, depth, literal size, nesting).
    pub const CRITERIA_TOO_COMPLEX: &str = "CriteriaExpressionTooComplex";
    pub const RULES_MATCHED: &str = "RulesMatched";
    pub const NO_MATCHING_RULES: &str = "NoMatchingRules";
    pub const RULES_NOT_READY: &str = "RulesNotReady";
    pub const EXPORT_SUCCEEDED: &str = "ExportSucceeded";
    pub const EXPORT_FAILED: &str = "ExportFailed";
    pub const MISSING_COLUMNS: &str = "MissingColumns";
    /// Delivered, but the progress could not be saved: nothing new is sent
    /// until it is.
    pub const COMMIT_FAILED: &str = "CommitFailed";
    pub const SOURCE_FAILED: &str = "SourceFailed";
    pub const TRANSFORM_FAILED: &str = "TransformFailed";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const NO_TIMESTAMP_POLICY: &str = "NoIngestionTimePolicy";
    pub const MODULE_LOADED: &str = "ModuleLoaded";
    pub const MODULE_NOT_READY: &str = "ModuleNotReady";
}

/// A condition with `lastTransitionTime` kept from `previous` when the
/// status did not change, as Kubernetes conventions ask.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: since,
    }
}
