//! From manifests to export plans: each MetricsExporter, checked, with the
//! SummaryRules its selector matches in its namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::criteria::{self, CriteriaError};
use super::folder::Catalog;
use crate::api::{MetaExt, MetricsExporter, selector};
use crate::config::HostConfig;
use crate::config::transform_file::{TransformSpec, transform_spec};

/// The output table of one matched SummaryRule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTarget {
    /// `namespace/name`.
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub database: String,
    /// Empty for a MetricsExporter's own `body`.
    pub table: String,
    /// A MetricsExporter's own query, run per aligned window, instead of
    /// reading `table` by ingestion time.
    pub body: Option<String>,
}

/// One MetricsExporter ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    /// `namespace/name`.
    pub key: String,
    pub name: String,
    pub namespace: String,
    /// The manifest file it came from.
    pub source: PathBuf,
    pub interval: Duration,
    pub transform: TransformSpec,
    /// Exporter names from the host config, in the manifest's order.
    pub sinks: Vec<String>,
    pub rules: Vec<RuleTarget>,
    /// `metadata.generation` of the MetricsExporter (Kubernetes).
    pub generation: Option<i64>,
    /// Matched rules whose SummaryRule adx-mon reports as not healthy.
    pub rules_not_ready: Vec<String>,
}

/// A MetricsExporter that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: MetricsExporter {key}: {message}", file.display())]
pub struct PlanError {
    pub key: String,
    pub file: PathBuf,
    pub message: String,
}

/// What planning made of a catalog.
#[derive(Debug, Default)]
pub struct Planned {
    pub plans: Vec<ExportPlan>,
    pub errors: Vec<PlanError>,
    /// Exporters whose criteria keep them off this host, with why.
    pub elsewhere: Vec<(String, String)>,
}

pub fn plan(catalog: &Catalog, config: &HostConfig) -> Planned {
    let mut planned = Planned::default();
    for (key, (me, file)) in &catalog.exporters {
        let spec = &me.spec;
        match criteria::check(
            &spec.criteria,
            spec.criteria_expression.as_deref(),
            &config.cluster_labels,
        ) {
            Ok(()) => {}
            Err(CriteriaError::NotHere(why)) => {
                planned.elsewhere.push((key.clone(), why));
                continue;
            }
            Err(e @ CriteriaError::Invalid(_)) => {
                planned.errors.push(PlanError {
                    key: key.clone(),
                    file: file.clone(),
                    message: e.to_string(),
                });
                continue;
            }
        }
        match plan_one(catalog, config, me, file) {
            Ok(p) => planned.plans.push(p),
            Err(message) => planned.errors.push(PlanError {
                key: key.clone(),
                file: file.clone(),
                message,
            }),
        }
    }
    planned
}

fn plan_one(
    catalog: &Catalog,
    config: &HostConfig,
    me: &MetricsExporter,
    file: &Path,
) -> Result<ExportPlan, String> {
    let spec = &me.spec;
    let interval = humantime::parse_duration(&spec.interval).map_err(|e| {
        format!(
            "spec.interval: `{}` is not a duration (e.g. 30s, 5m): {e}",
            spec.interval
        )
    })?;
    if interval.is_zero() {
        return Err("spec.interval: must be more than zero".to_string());
    }
    if spec.exporters.is_empty() {
        return Err("spec.exporters: name at least one exporter".to_string());
    }
    for (i, name) in spec.exporters.iter().enumerate() {
        if config.exporter(name).is_none() {
            let defined: Vec<&str> = config.exporters.iter().map(|e| e.name.as_str()).collect();
            return Err(format!(
                "spec.exporters[{i}]: `{name}` is not defined in {} (defined: {})",
                config.path.display(),
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            ));
        }
    }
    let direct = match (&spec.database, &spec.body) {
        (None, None) => None,
        (Some(db), Some(body)) => {
            if spec.summary_rule_selector.is_some() {
                return Err(
                    "spec: give either summaryRuleSelector or database and body, not both"
                        .to_string(),
                );
            }
            if db.trim().is_empty() || body.trim().is_empty() {
                return Err("spec.database and spec.body: must not be empty".to_string());
            }
            if config.kusto().is_none() {
                return Err(format!(
                    "spec.body: a query runs against Azure Data Explorer, but {} reads local tables (source.local)",
                    config.path.display()
                ));
            }
            Some((db.clone(), body.clone()))
        }
        (Some(_), None) => return Err("spec.database: given without spec.body".to_string()),
        (None, Some(_)) => return Err("spec.body: given without spec.database".to_string()),
    };
    let selector = spec.summary_rule_selector.clone().unwrap_or_default();
    selector::validate(&selector).map_err(|e| format!("spec.summaryRuleSelector.{e}"))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let transform =
        transform_spec(spec.transform.clone(), base).map_err(|e| format!("spec.transform: {e}"))?;
    if config.kubernetes.is_none()
        && let Some(crate::config::transform_file::ModuleRef::ConfigMap { name, .. }) =
            &transform.module
    {
        return Err(format!(
            "spec.transform.module.configMap: `{name}`: a ConfigMap module needs Kubernetes mode; in local mode use file or oci"
        ));
    }
    if config.kubernetes.is_some()
        && let Some(crate::config::transform_file::ModuleRef::File(path)) = &transform.module
    {
        return Err(format!(
            "spec.transform.module.file: `{}`: a file module works only in local mode (manifests from a folder); in a cluster use configMap or oci",
            path.display()
        ));
    }
    let namespace = me.metadata.ns();
    let mut rules_not_ready = Vec::new();
    let rules = match direct {
        Some((database, body)) => vec![RuleTarget {
            key: format!("{}#body", me.metadata.key()),
            name: me.metadata.name_or_empty().to_string(),
            namespace: namespace.to_string(),
            database,
            table: String::new(),
            body: Some(body),
        }],
        None => catalog
            .rules
            .iter()
            .filter(|(_, r)| {
                r.metadata.ns() == namespace && selector::matches(&selector, r.metadata.label_map())
            })
            .inspect(|(key, r)| {
                if r.ready() == Some(false) {
                    rules_not_ready.push((*key).clone());
                }
            })
            .map(|(key, r)| RuleTarget {
                key: key.clone(),
                name: r.metadata.name_or_empty().to_string(),
                namespace: namespace.to_string(),
                database: r.spec.database.clone(),
                table: r.spec.table.clone(),
                body: None,
            })
            .collect(),
    };
    Ok(ExportPlan {
        key: me.metadata.key(),
        name: me.metadata.name_or_empty().to_string(),
        namespace: namespace.to_string(),
        source: file.to_path_buf(),
        interval,
        transform,
        sinks: spec.exporters.clone(),
        rules,
        generation: me.metadata.generation,
        rules_not_ready,
    })
}
