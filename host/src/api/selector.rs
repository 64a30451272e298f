//! Kubernetes label selectors: `matchLabels` and `matchExpressions` together
//! (AND), with the operators `In`, `NotIn`, `Exists`, `DoesNotExist`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "matchExpressions[{index}]: unknown operator `{operator}` (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator { index: usize, operator: String },
    #[error("matchExpressions[{index}] ({key} {operator}): {message}")]
    BadValues {
        index: usize,
        key: String,
        operator: String,
        message: &'static str,
    },
}

impl LabelSelector {
    /// Checks the selector the way the API server does: In/NotIn need
    /// values, Exists/DoesNotExist take none.
    pub fn validate(&self) -> Result<(), SelectorError> {
        for (index, r) in self.match_expressions.iter().enumerate() {
            let bad = |message| SelectorError::BadValues {
                index,
                key: r.key.clone(),
                operator: r.operator.clone(),
                message,
            };
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Err(bad("needs at least one value"));
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    return Err(bad("takes no values"));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(SelectorError::UnknownOperator {
                        index,
                        operator: other.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy every term. `NotIn` and `DoesNotExist` match
    /// an object that lacks the key; an empty selector matches everything.
    /// An invalid selector matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let labels_ok = self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        labels_ok
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn each_operator_and_absent_keys() {
        let rule = labels(&[("team", "platform"), ("env", "prod")]);
        let bare = labels(&[]);
        let sel = |e| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![e],
        };
        assert!(sel(expr("env", "In", &["prod", "staging"])).matches(&rule));
        assert!(!sel(expr("env", "In", &["dev"])).matches(&rule));
        assert!(
            !sel(expr("env", "In", &["prod"])).matches(&bare),
            "In needs the key"
        );
        assert!(sel(expr("env", "NotIn", &["dev"])).matches(&rule));
        assert!(!sel(expr("env", "NotIn", &["prod"])).matches(&rule));
        assert!(
            sel(expr("env", "NotIn", &["prod"])).matches(&bare),
            "NotIn matches a missing key"
        );
        assert!(sel(expr("team", "Exists", &[])).matches(&rule));
        assert!(!sel(expr("team", "Exists", &[])).matches(&bare));
        assert!(!sel(expr("team", "DoesNotExist", &[])).matches(&rule));
        assert!(sel(expr("team", "DoesNotExist", &[])).matches(&bare));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("team", "platform")]),
            match_expressions: vec![expr("env", "NotIn", &["dev"])],
        };
        assert!(sel.matches(&labels(&[("team", "platform"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("team", "platform"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("team", "sre"), ("env", "prod")])));
        assert!(
            LabelSelector::default().matches(&labels(&[])),
            "empty matches all"
        );
    }

    #[test]
    fn validation_follows_the_api_server() {
        let sel = |e| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![e],
        };
        assert!(sel(expr("a", "In", &[])).validate().is_err());
        assert!(sel(expr("a", "Exists", &["x"])).validate().is_err());
        assert!(matches!(
            sel(expr("a", "Equals", &["x"])).validate(),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(!sel(expr("a", "Equals", &["x"])).matches(&labels(&[("a", "x")])));
    }
}
