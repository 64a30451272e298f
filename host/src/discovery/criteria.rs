//! `criteria` and `criteriaExpression`: which hosts run a MetricsExporter,
//! decided against the host's cluster labels (`--cluster-labels
//! region=eastus`), as upstream adx-mon decides it: `criteria` matches when
//! any of its keys has one of its values (keys and values compared without
//! case); `criteriaExpression` is CEL over the labels as string variables;
//! with both, both must pass. Neither: every host.

use std::collections::BTreeMap;

/// The host's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLabels(pub BTreeMap<String, String>);

impl ClusterLabels {
    /// `key=value[,key=value...]`, as many times as given.
    pub fn parse(specs: &[String]) -> Result<ClusterLabels, String> {
        let mut labels = BTreeMap::new();
        for spec in specs {
            for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--cluster-labels `{pair}`: write it as key=value"))?;
                let k = k.trim();
                if k.is_empty() {
                    return Err(format!("--cluster-labels `{pair}`: the key is empty"));
                }
                labels.insert(k.to_string(), v.trim().to_string());
            }
        }
        Ok(ClusterLabels(labels))
    }
}

/// Why an exporter is not for this host, or `Ok` when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriteriaError {
    /// Not an error of the exporter: another host runs it.
    #[error("{0}")]
    NotHere(String),
    /// The expression cannot be used at all.
    #[error("spec.criteriaExpression: {0}")]
    Invalid(String),
}

pub fn check(
    criteria: &BTreeMap<String, Vec<String>>,
    expression: Option<&str>,
    labels: &ClusterLabels,
) -> Result<(), CriteriaError> {
    if !criteria.is_empty() {
        let hit = criteria.iter().any(|(key, values)| {
            labels
                .0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .is_some_and(|(_, v)| values.iter().any(|want| want.eq_ignore_ascii_case(v)))
        });
        if !hit {
            return Err(CriteriaError::NotHere(format!(
                "criteria {} do not match this host's cluster labels {}",
                show_criteria(criteria),
                show_labels(labels)
            )));
        }
    }
    if let Some(expr) = expression.map(str::trim).filter(|e| !e.is_empty()) {
        let program = cel::Program::compile(expr)
            .map_err(|e| CriteriaError::Invalid(format!("`{expr}` does not parse: {e}")))?;
        let mut context = cel::Context::default();
        for (k, v) in &labels.0 {
            context.add_variable_from_value(k.clone(), cel::Value::String(v.clone().into()));
        }
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                return Err(CriteriaError::NotHere(format!(
                    "criteriaExpression `{expr}` is false for this host's cluster labels {}",
                    show_labels(labels)
                )));
            }
            Ok(other) => {
                return Err(CriteriaError::Invalid(format!(
                    "`{expr}` gives {other:?}, not a bool"
                )));
            }
            // A label the expression names but this host lacks: another
            // host may have it.
            Err(e) => {
                return Err(CriteriaError::NotHere(format!(
                    "criteriaExpression `{expr}` cannot be evaluated with this host's cluster labels {}: {e}",
                    show_labels(labels)
                )));
            }
        }
    }
    Ok(())
}

fn show_criteria(criteria: &BTreeMap<String, Vec<String>>) -> String {
    let parts: Vec<String> = criteria
        .iter()
        .map(|(k, v)| format!("{k} in [{}]", v.join(", ")))
        .collect();
    parts.join(" or ")
}

fn show_labels(labels: &ClusterLabels) -> String {
    if labels.0.is_empty() {
        return "(none)".to_string();
    }
    let parts: Vec<String> = labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(spec: &str) -> ClusterLabels {
        ClusterLabels::parse(&[spec.to_string()]).unwrap()
    }

    fn criteria(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn criteria_match_any_key_without_case() {
        let here = labels("region=EastUS,env=prod");
        assert!(check(&criteria(&[]), None, &here).is_ok());
        assert!(check(&criteria(&[("region", &["eastus", "westus"])]), None, &here).is_ok());
        assert!(
            check(
                &criteria(&[("Region", &["westus"]), ("ENV", &["PROD"])]),
                None,
                &here
            )
            .is_ok()
        );
        let e = check(&criteria(&[("region", &["westus"])]), None, &here).unwrap_err();
        assert!(matches!(e, CriteriaError::NotHere(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "criteria region in [westus] do not match this host's cluster labels env=prod,region=EastUS"
        );
    }

    #[test]
    fn expressions_are_cel_over_the_labels() {
        let here = labels("region=eastus,env=prod");
        assert!(
            check(
                &criteria(&[]),
                Some("region == 'eastus' && env != 'dev'"),
                &here
            )
            .is_ok()
        );
        assert!(matches!(
            check(&criteria(&[]), Some("region == 'westus'"), &here),
            Err(CriteriaError::NotHere(_))
        ));
        // Both given: both must pass.
        assert!(matches!(
            check(
                &criteria(&[("region", &["eastus"])]),
                Some("env == 'dev'"),
                &here
            ),
            Err(CriteriaError::NotHere(_))
        ));
        assert!(matches!(
            check(&criteria(&[]), Some("region =="), &here),
            Err(CriteriaError::Invalid(_))
        ));
        assert!(matches!(
            check(&criteria(&[]), Some("'x'"), &here),
            Err(CriteriaError::Invalid(_))
        ));
        // A label this host does not have.
        assert!(matches!(
            check(&criteria(&[]), Some("zone == 'a'"), &here),
            Err(CriteriaError::NotHere(_))
        ));
    }

    #[test]
    fn labels_parse_from_the_command_line() {
        assert_eq!(labels("a=1, b = 2").0.len(), 2);
        assert!(ClusterLabels::parse(&["a".into()]).is_err());
        assert!(ClusterLabels::parse(&["=1".into()]).is_err());
    }
}
