//! The resources kusto-metrics reads: `MetricsExporter` and adx-mon's
//! `SummaryRule` (group `adx-mon.azure.com`, version `v1`), as they appear
//! in manifests.

mod selector;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorError};

pub const API_VERSION: &str = "adx-mon.azure.com/v1";
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub generation: Option<i64>,
}

impl ObjectMeta {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsExporter {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MetricsExporterSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsExporterSpec {
    /// Which SummaryRules in the exporter's namespace to read. An empty
    /// selector matches every rule in the namespace.
    #[serde(default)]
    pub summary_rule_selector: Option<LabelSelector>,
    /// With `body`, instead of a selector: run this KQL for each window
    /// (upstream adx-mon's MetricsExporter).
    #[serde(default)]
    pub database: Option<String>,
    /// KQL using `_startTime` and `_endTime` (declared `datetime`
    /// parameters; `_endTime` is one tick before the window's end).
    #[serde(default)]
    pub body: Option<String>,
    /// Names of exporters in the host configuration.
    pub exporters: Vec<String>,
    /// How often to export, e.g. `1m`.
    pub interval: String,
    /// The transform block: passed to the guest (without `module`).
    pub transform: Value,
    #[serde(default)]
    pub criteria: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub criteria_expression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: SummaryRuleSpec,
}

/// adx-mon's SummaryRule spec; we only read it, so fields we do not use are
/// accepted and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRuleSpec {
    pub database: String,
    /// The output table the rule appends to.
    pub table: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub ingestion_delay: Option<String>,
}

/// One object from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    MetricsExporter(Box<MetricsExporter>),
    SummaryRule(Box<SummaryRule>),
}

impl Resource {
    /// Reads one document. `Ok(None)` for kinds we do not handle (a folder
    /// may hold other manifests).
    pub fn from_value(value: Value) -> Result<Option<Resource>, String> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(kind.as_str(), "MetricsExporter" | "SummaryRule") {
            return Ok(None);
        }
        if api_version != API_VERSION {
            return Err(format!(
                "{kind} has apiVersion `{api_version}`, expected `{API_VERSION}`"
            ));
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let parsed = match kind.as_str() {
            "MetricsExporter" => {
                serde_json::from_value(value).map(|m| Resource::MetricsExporter(Box::new(m)))
            }
            _ => serde_json::from_value(value).map(|r| Resource::SummaryRule(Box::new(r))),
        };
        parsed
            .map(Some)
            .map_err(|e| format!("{kind} `{name}`: {e}"))
    }
}
