//! adx-mon's `SummaryRule` (adx-mon.azure.com/v1), as adx-mon defines it:
//! clusters that run adx-mon already have this CRD, and kusto-metrics only
//! reads it. The schema is as loose as adx-mon's own, so either CRD serves.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition adx-mon sets on a healthy rule.
pub const OWNER_CONDITION: &str = "summaryrule.adx-mon.azure.com";

#[derive(CustomResource, JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "adx-mon.azure.com",
    version = "v1",
    kind = "SummaryRule",
    namespaced,
    status = "SummaryRuleStatus",
    derive = "PartialEq",
    doc = "A KQL query adx-mon runs on a schedule, appending its results to a table."
)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRuleSpec {
    /// The database the rule runs in.
    pub database: String,
    /// The table the rule appends to.
    pub table: String,
    /// Deprecated: `metadata.name` names the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The KQL body; adx-mon declares `_startTime` and `_endTime`.
    pub body: String,
    /// How often the rule runs (a Go duration).
    pub interval: String,
    /// How long after a window ends the rule waits before running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion_delay: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub criteria: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria_expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Backfill {
    pub request_id: String,
    /// Inclusive.
    pub start_time: String,
    /// Exclusive.
    pub end_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub max_in_flight: Option<i64>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRuleStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// adx-mon's backfill progress; kept as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserved_object")]
    pub backfill: Option<serde_json::Value>,
}

fn preserved_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl SummaryRule {
    /// Whether adx-mon reports the rule healthy; `None` when it has not
    /// said yet.
    pub fn ready(&self) -> Option<bool> {
        let conditions = &self.status.as_ref()?.conditions;
        let owner = conditions.iter().find(|c| c.type_ == OWNER_CONDITION)?;
        Some(owner.status == "True")
    }
}
