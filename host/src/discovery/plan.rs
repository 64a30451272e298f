//! From manifests to export plans: each MetricsExporter, checked, with the
//! SummaryRules its selector matches in its namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::criteria::{self, CriteriaError};
use super::folder::Catalog;
use super::rule_index::RuleIndex;
use crate::api::conditions::reason;
use crate::api::selector::CompiledSelector;
use crate::api::{MetaExt, MetricsExporter, SummaryRule};
use crate::config::HostConfig;
use crate::config::tenancy::TenancyError;
use crate::config::transform_file::{TransformSpec, transform_spec};
use crate::export::resource::check_attributes;
use crate::source::local_table;

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
    /// `spec.resourceAttributes` (checked; added per exporter where the
    /// platform has not set the key).
    pub resource_attributes: BTreeMap<String, String>,
}

/// A MetricsExporter that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: MetricsExporter {key}: {message}", file.display())]
pub struct PlanError {
    pub key: String,
    pub file: PathBuf,
    /// The `Ready=False` reason (`api::conditions::reason`).
    pub reason: &'static str,
    pub message: String,
}

/// Why one exporter cannot run: a condition reason and a message.
type Refusal = (&'static str, String);

fn invalid(message: String) -> Refusal {
    (reason::INVALID_SPEC, message)
}

/// What planning made of a catalog.
#[derive(Debug, Default, PartialEq)]
pub struct Planned {
    pub plans: Vec<ExportPlan>,
    pub errors: Vec<PlanError>,
    /// Exporters whose criteria keep them off this host, with why.
    pub elsewhere: Vec<(String, String)>,
}

/// Plans every exporter of the catalog. Each selector is compiled once and
/// looks its rules up in an index of the catalog's rules.
pub fn plan(catalog: &Catalog, config: &HostConfig) -> Planned {
    let index = RuleIndex::new(&catalog.rules);
    plan_with(catalog, config, &|namespace, _, selector| {
        index.matching(namespace, selector)
    })
}

/// The rules of a namespace a selector matches, in key order. Given the
/// selector as written too, so that a test can match it the plain way.
type Matching<'c> =
    dyn Fn(&str, &LabelSelector, &CompiledSelector) -> Vec<(&'c String, &'c SummaryRule)> + 'c;

fn plan_with<'c>(catalog: &'c Catalog, config: &HostConfig, matching: &Matching<'c>) -> Planned {
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
            Err(e) => {
                planned.errors.push(PlanError {
                    key: key.clone(),
                    file: file.clone(),
                    reason: if matches!(e, CriteriaError::TooComplex(_)) {
                        reason::CRITERIA_TOO_COMPLEX
                    } else {
                        reason::INVALID_SPEC
                    },
                    message: e.to_string(),
                });
                continue;
            }
        }
        match plan_one(config, me, file, matching) {
            Ok(p) => planned.plans.push(p),
            Err((reason, message)) => planned.errors.push(PlanError {
                key: key.clone(),
                file: file.clone(),
                reason,
                message,
            }),
        }
    }
    planned
}

fn plan_one<'c>(
    config: &HostConfig,
    me: &MetricsExporter,
    file: &Path,
    matching: &Matching<'c>,
) -> Result<ExportPlan, Refusal> {
    let spec = &me.spec;
    let interval = humantime::parse_duration(&spec.interval).map_err(|e| {
        invalid(format!(
            "spec.interval: `{}` is not a duration (e.g. 30s, 5m): {e}",
            spec.interval
        ))
    })?;
    if interval < config.min_interval {
        return Err((
            reason::INTERVAL_TOO_SHORT,
            format!(
                "spec.interval: `{}` is shorter than this host's minInterval ({}, in {})",
                spec.interval,
                humantime::format_duration(config.min_interval),
                config.path.display()
            ),
        ));
    }
    if spec.exporters.is_empty() {
        return Err(invalid(
            "spec.exporters: name at least one exporter".to_string(),
        ));
    }
    for (i, name) in spec.exporters.iter().enumerate() {
        if config.exporter(name).is_none() {
            let defined: Vec<&str> = config.exporters.iter().map(|e| e.name.as_str()).collect();
            return Err(invalid(format!(
                "spec.exporters[{i}]: `{name}` is not defined in {} (defined: {})",
                config.path.display(),
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            )));
        }
    }
    let resource_attributes = tenant_attributes(config, me)?;
    let direct = match (&spec.database, &spec.body) {
        (None, None) => None,
        (Some(db), Some(body)) => {
            if spec.summary_rule_selector.is_some() {
                return Err(invalid(
                    "spec: give either summaryRuleSelector or database and body, not both"
                        .to_string(),
                ));
            }
            if db.trim().is_empty() || body.trim().is_empty() {
                return Err(invalid(
                    "spec.database and spec.body: must not be empty".to_string(),
                ));
            }
            if config.kusto().is_none() {
                return Err(invalid(format!(
                    "spec.body: a query runs against Azure Data Explorer, but {} reads local tables (source.local)",
                    config.path.display()
                )));
            }
            Some((db.clone(), body.clone()))
        }
        (Some(_), None) => {
            return Err(invalid(
                "spec.database: given without spec.body".to_string(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "spec.body: given without spec.database".to_string(),
            ));
        }
    };
    let everything = LabelSelector::default();
    let written = spec.summary_rule_selector.as_ref().unwrap_or(&everything);
    let selector = CompiledSelector::new(written)
        .map_err(|e| invalid(format!("spec.summaryRuleSelector.{e}")))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let transform = transform_spec(spec.transform.clone(), base)
        .map_err(|e| invalid(format!("spec.transform: {e}")))?;
    if config.kubernetes.is_none()
        && let Some(crate::config::transform_file::ModuleRef::ConfigMap { name, .. }) =
            &transform.module
    {
        return Err(invalid(format!(
            "spec.transform.module.configMap: `{name}`: a ConfigMap module needs Kubernetes mode; in local mode use file or oci"
        )));
    }
    if config.kubernetes.is_some()
        && let Some(crate::config::transform_file::ModuleRef::File(path)) = &transform.module
    {
        return Err(invalid(format!(
            "spec.transform.module.file: `{}`: a file module works only in local mode (manifests from a folder); in a cluster use configMap or oci",
            path.display()
        )));
    }
    let namespace = me.metadata.ns();
    if let (Some(tenancy), Some((database, body))) = (&config.tenancy, &direct) {
        tenancy
            .check_body(namespace, database, body)
            .map_err(tenancy_refusal)?;
    }
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
        None => matching(namespace, written, &selector)
            .into_iter()
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
    for rule in rules.iter().filter(|r| r.body.is_none()) {
        if let Some(tenancy) = &config.tenancy {
            tenancy
                .check_database(namespace, &rule.database)
                .map_err(|e| {
                    let (reason, message) = tenancy_refusal(e);
                    (reason, format!("SummaryRule {}: {message}", rule.key))
                })?;
        }
        if let crate::config::host_config::SourceConfig::Local { .. } = &config.source {
            for (what, name) in [("database", &rule.database), ("table", &rule.table)] {
                local_table::check_name(name).map_err(|why| {
                    invalid(format!(
                        "SummaryRule {}: spec.{what} `{name}` cannot name a local table folder or file: {why}",
                        rule.key
                    ))
                })?;
            }
        }
    }
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
        resource_attributes,
    })
}

/// `spec.resourceAttributes`, checked. A key the host or one of the named
/// exporters sets keeps the platform's value where it is set (the runner
/// layers them per exporter); a warning names such keys.
fn tenant_attributes(
    config: &HostConfig,
    me: &MetricsExporter,
) -> Result<BTreeMap<String, String>, Refusal> {
    let asked = &me.spec.resource_attributes;
    if asked.is_empty() {
        return Ok(BTreeMap::new());
    }
    check_attributes(asked).map_err(|m| invalid(format!("spec.resourceAttributes: {m}")))?;
    let overridden: std::collections::BTreeSet<String> = me
        .spec
        .exporters
        .iter()
        .filter_map(|name| config.exporter(name))
        .flat_map(|e| {
            config
                .resource
                .with(&e.resource_attributes)
                .with_tenant(asked)
                .1
        })
        .collect();
    if !overridden.is_empty() {
        tracing::warn!(metrics_exporter = %me.metadata.key(), keys = ?overridden, "spec.resourceAttributes: keys the host or an exporter sets keep the platform's value");
    }
    Ok(asked.clone())
}

fn tenancy_refusal(e: TenancyError) -> Refusal {
    let reason = match e {
        TenancyError::BodyNotAllowed { .. } => reason::BODY_NOT_ALLOWED,
        TenancyError::DatabaseNotAllowed { .. } | TenancyError::BodyOutOfScope { .. } => {
            reason::DATABASE_NOT_ALLOWED
        }
    };
    (reason, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::selector;
    use crate::discovery::ManifestFolder;

    const KUSTO: &str = "source: {kusto: {endpoints: {Db: https://c.kusto.windows.net}}}\n";

    fn planned(config: &str, manifests: &str) -> Planned {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        std::fs::write(dir.path().join("m/all.yaml"), manifests).unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(
            &path,
            format!("manifests: m\nexporters: [{{name: sink, stdout: {{}}}}]\n{config}"),
        )
        .unwrap();
        let config = HostConfig::load(&path).unwrap();
        let (catalog, _) = ManifestFolder::new(dir.path().join("m")).scan().unwrap();
        plan(&catalog, &config)
    }

    fn rule(ns: &str, db: &str) -> String {
        format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: r, namespace: {ns}, labels: {{a: b}}}}\nspec: {{database: {db}, table: T, body: x, interval: 5m}}\n---\n"
        )
    }

    fn exporter(ns: &str, interval: &str, extra: &str) -> String {
        format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: e, namespace: {ns}}}\nspec:\n  exporters: [sink]\n  interval: {interval}\n  transform: {{valueColumn: v, timestampColumn: t}}\n{extra}"
        )
    }

    fn refusal(p: &Planned) -> (&'static str, &str) {
        assert!(p.plans.is_empty(), "{:?}", p.plans);
        (p.errors[0].reason, p.errors[0].message.as_str())
    }

    #[test]
    fn an_interval_below_the_floor_does_not_run() {
        let p = planned(KUSTO, &exporter("ns", "1ms", "  summaryRuleSelector: {}\n"));
        let (reason, message) = refusal(&p);
        assert_eq!(reason, reason::INTERVAL_TOO_SHORT);
        assert!(
            message.starts_with(
                "spec.interval: `1ms` is shorter than this host's minInterval (10s, in "
            ),
            "{message}"
        );
        let p = planned(
            &format!("{KUSTO}minInterval: 1ms\n"),
            &exporter("ns", "1ms", "  summaryRuleSelector: {}\n"),
        );
        assert_eq!(p.plans.len(), 1, "{:?}", p.errors);
    }

    #[test]
    fn the_tenancy_policy_is_checked_for_rules_and_bodies() {
        let policy = format!(
            "{KUSTO}tenancy:\n  namespaces:\n    a: {{databases: [db], allowBody: true}}\n    b: {{databases: [db]}}\n"
        );
        // Without a policy, anything goes.
        let p = planned(
            KUSTO,
            &format!(
                "{}{}",
                rule("a", "Other"),
                exporter("a", "1m", "  summaryRuleSelector: {}\n")
            ),
        );
        assert_eq!(p.plans.len(), 1);

        let p = planned(
            &policy,
            &format!(
                "{}{}",
                rule("a", "Other"),
                exporter("a", "1m", "  summaryRuleSelector: {}\n")
            ),
        );
        let (reason, message) = refusal(&p);
        assert_eq!(reason, reason::DATABASE_NOT_ALLOWED);
        assert_eq!(
            message,
            "SummaryRule a/r: namespace `a` may not read database `Other` (tenancy.namespaces.a allows databases: db; allowBody: true)"
        );
        let p = planned(
            &policy,
            &format!(
                "{}{}",
                rule("a", "DB"),
                exporter("a", "1m", "  summaryRuleSelector: {}\n")
            ),
        );
        assert_eq!(p.plans.len(), 1, "{:?}", p.errors);

        let body = |ns: &str, text: &str| {
            planned(
                &policy,
                &exporter(ns, "1m", &format!("  database: Db\n  body: {text:?}\n")),
            )
        };
        assert_eq!(body("a", "T | take 1").plans.len(), 1);
        let p = body("a", "cluster('x').database('Db').T");
        assert_eq!(refusal(&p).0, reason::DATABASE_NOT_ALLOWED);
        let p = body("b", "T | take 1");
        assert_eq!(refusal(&p).0, reason::BODY_NOT_ALLOWED);
    }

    /// A random catalog: rules and exporters over a few namespaces, label
    /// keys and values, with selectors of every operator (some invalid),
    /// rules adx-mon reports as not ready, and databases a tenancy policy
    /// refuses for some namespaces.
    fn random_catalog(rng: &mut rand::rngs::StdRng, rules: usize, exporters: usize) -> Catalog {
        use rand::RngExt;
        use serde_json::{Map, Value, json};
        const NAMESPACES: [&str; 4] = ["a", "b", "c", "d"];
        const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
        // v3 is on no rule.
        const VALUES: [&str; 4] = ["v0", "v1", "v2", "v3"];
        let mut catalog = Catalog::default();
        for i in 0..rules {
            let mut labels = Map::new();
            for k in KEYS {
                if rng.random_bool(0.5) {
                    labels.insert(k.into(), VALUES[rng.random_range(0..3)].into());
                }
            }
            let mut rule = json!({
                "apiVersion": "adx-mon.azure.com/v1", "kind": "SummaryRule",
                "metadata": {"name": format!("r{i}"), "namespace": NAMESPACES[rng.random_range(0..3)], "labels": labels},
                "spec": {"database": if rng.random_bool(0.9) { "DB" } else { "Other" }, "table": format!("T{i}"), "body": "x", "interval": "5m"},
            });
            if rng.random_bool(0.2) {
                rule["status"] = json!({"conditions": [{
                    "type": crate::api::summary_rule::OWNER_CONDITION,
                    "status": if rng.random_bool(0.5) { "True" } else { "False" },
                    "reason": "r", "message": "m", "lastTransitionTime": "2025-06-25T10:00:00Z",
                }]});
            }
            let Ok(Some(crate::api::Resource::SummaryRule(rule))) =
                crate::api::Resource::from_value(rule)
            else {
                panic!("rule {i} does not parse");
            };
            catalog.rules.insert(rule.metadata.key(), Arc::from(rule));
        }
        let values = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<Value> {
            (0..n)
                .map(|_| VALUES[rng.random_range(0..4)].into())
                .collect()
        };
        for i in 0..exporters {
            let mut spec = json!({
                "exporters": ["sink"], "interval": "1m",
                "transform": {"valueColumn": "v", "timestampColumn": "t"},
            });
            if rng.random_bool(0.9) {
                let mut selector = Map::new();
                if rng.random_bool(0.6) {
                    let labels: Map<String, Value> = (0..rng.random_range(1..3))
                        .map(|_| {
                            (
                                KEYS[rng.random_range(0..4)].to_string(),
                                values(rng, 1)[0].clone(),
                            )
                        })
                        .collect();
                    selector.insert("matchLabels".into(), labels.into());
                }
                if rng.random_bool(0.7) {
                    let expressions: Vec<Value> = (0..rng.random_range(1..4))
                        .map(|_| {
                            let key = KEYS[rng.random_range(0..4)];
                            let (some, few) = (rng.random_range(1..4), rng.random_range(1..3));
                            match rng.random_range(0..20) {
                                0..5 => json!({"key": key, "operator": "In", "values": values(rng, some)}),
                                5..9 => json!({"key": key, "operator": "NotIn", "values": values(rng, few)}),
                                9..14 => json!({"key": key, "operator": "Exists"}),
                                14..18 => json!({"key": key, "operator": "DoesNotExist"}),
                                18 => json!({"key": key, "operator": "In", "values": []}),
                                _ => json!({"key": key, "operator": "Equals", "values": ["v0"]}),
                            }
                        })
                        .collect();
                    selector.insert("matchExpressions".into(), expressions.into());
                }
                spec["summaryRuleSelector"] = selector.into();
            }
            let me = json!({
                "apiVersion": "adx-mon.azure.com/v1", "kind": "MetricsExporter",
                "metadata": {"name": format!("e{i}"), "namespace": NAMESPACES[rng.random_range(0..4)]},
                "spec": spec,
            });
            let Ok(Some(crate::api::Resource::MetricsExporter(me))) =
                crate::api::Resource::from_value(me)
            else {
                panic!("exporter {i} does not parse");
            };
            catalog
                .exporters
                .insert(me.metadata.key(), (Arc::from(me), PathBuf::from("m.yaml")));
        }
        catalog
    }

    #[test]
    fn the_indexed_planner_plans_exactly_what_matching_every_rule_plans() {
        use rand::SeedableRng;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nexporters: [{name: sink, stdout: {}}]\ntenancy:\n  namespaces:\n    a: {databases: [DB, Other]}\n    b: {databases: [DB]}\n    c: {databases: [DB]}\n    d: {databases: [DB]}\n",
        )
        .unwrap();
        let config = HostConfig::load(&path).unwrap();
        // What every seed's plans came to, so the test shows it saw each
        // case: rules matched, none matched, rules not ready, refusals of
        // both kinds.
        let (mut matched, mut empty, mut not_ready, mut bad_selector, mut refused) =
            (0, 0, 0, 0, 0);
        for seed in 0..40 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let catalog = random_catalog(&mut rng, 300, 200);
            let every_rule = |ns: &str, written: &LabelSelector, _: &CompiledSelector| {
                catalog
                    .rules
                    .iter()
                    .filter(|(_, r)| {
                        r.metadata.ns() == ns && selector::matches(written, r.metadata.label_map())
                    })
                    .map(|(key, r)| (key, &**r))
                    .collect()
            };
            let expected = plan_with(&catalog, &config, &every_rule);
            let indexed = plan(&catalog, &config);
            assert_eq!(indexed, expected, "seed {seed}");
            for p in &expected.plans {
                if p.rules.is_empty() {
                    empty += 1;
                } else {
                    matched += 1;
                }
                not_ready += usize::from(!p.rules_not_ready.is_empty());
            }
            for e in &expected.errors {
                if e.message.starts_with("spec.summaryRuleSelector.") {
                    bad_selector += 1;
                } else if e.reason == reason::DATABASE_NOT_ALLOWED {
                    refused += 1;
                }
            }
        }
        for (what, n) in [
            ("plans with rules", matched),
            ("plans without", empty),
            ("plans with rules not ready", not_ready),
            ("invalid selectors", bad_selector),
            ("tenancy refusals", refused),
        ] {
            assert!(
                n >= 20,
                "only {n} {what}: the catalogs do not cover the case"
            );
        }
    }

    #[test]
    fn an_expression_over_a_bound_says_so_in_its_reason() {
        let p = planned(
            KUSTO,
            &exporter(
                "ns",
                "1m",
                "  summaryRuleSelector: {}\n  criteriaExpression: \"[1].all(x, [2].all(y, x < y))\"\n",
            ),
        );
        let (reason, message) = refusal(&p);
        assert_eq!(reason, reason::CRITERIA_TOO_COMPLEX);
        assert!(message.contains("MAX_COMPREHENSION_NESTING"), "{message}");
    }
}
