//! The resources kusto-metrics reads: `MetricsExporter` and adx-mon's
//! `SummaryRule` (group `adx-mon.azure.com`, version `v1`), as Rust types
//! from which the CRDs in `crds/` are generated; the same types read
//! manifests from a folder in local mode.
//!
//! - [`metrics_exporter`]: spec, transform schema, module references, status.
//! - [`summary_rule`]: adx-mon's schema, read only.
//! - [`selector`]: label-selector checks and matching.
//! - [`conditions`]: the status conditions and their reasons.
//! - [`crds`]: the CRD YAML.

pub mod conditions;
pub mod crds;
pub mod metrics_exporter;
pub mod selector;
pub mod summary_rule;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

pub use metrics_exporter::{
    MetricsExporter, MetricsExporterSpec, MetricsExporterStatus, ModuleReference, RuleProgress,
};
pub use selector::SelectorError;
pub use summary_rule::{SummaryRule, SummaryRuleSpec};

pub const GROUP: &str = "adx-mon.azure.com";
pub const API_VERSION: &str = "adx-mon.azure.com/v1";
pub const DEFAULT_NAMESPACE: &str = "default";

/// What every stage asks of an object's metadata.
pub trait MetaExt {
    /// The namespace, `default` when none is given (local manifests).
    fn ns(&self) -> &str;
    fn name_or_empty(&self) -> &str;
    /// `namespace/name`.
    fn key(&self) -> String {
        format!("{}/{}", self.ns(), self.name_or_empty())
    }
    fn label_map(&self) -> &BTreeMap<String, String>;
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl MetaExt for ObjectMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    fn name_or_empty(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    fn label_map(&self) -> &BTreeMap<String, String> {
        self.labels.as_ref().unwrap_or(&NO_LABELS)
    }
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
        if value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("{kind}: metadata.name is required"));
        }
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
