//! Label selectors: the Kubernetes type (`matchLabels` and
//! `matchExpressions`, ANDed), matched by kube's `Selector`. What kube does
//! not check, this module does, the way the API server would: `In` and
//! `NotIn` need values, `Exists` and `DoesNotExist` take none.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

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
    #[error("{message}")]
    Unconvertible { message: String },
}

impl crate::error::Classify for SelectorError {
    /// A selector is part of a manifest: only a new version of it changes
    /// the answer.
    fn retry_class(&self) -> crate::error::RetryClass {
        crate::error::RetryClass::Permanent
    }
}

pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (index, r) in selector.match_expressions.iter().flatten().enumerate() {
        let values = r.values.as_deref().unwrap_or_default();
        let bad = |message| SelectorError::BadValues {
            index,
            key: r.key.clone(),
            operator: r.operator.clone(),
            message,
        };
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(bad("needs at least one value")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(bad("takes no values")),
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

/// Whether `labels` satisfy every term. `NotIn` and `DoesNotExist` match an
/// object without the key; an empty selector matches everything; an
/// invalid one nothing. Checks and converts the selector on every call: to
/// match many objects, compile it once ([`CompiledSelector`]).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    CompiledSelector::new(selector).is_ok_and(|s| s.matches(labels))
}

/// A term only an object carrying some label can satisfy: what a label
/// index can look candidates up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// `matchLabels` `key: value`.
    Label(String, String),
    /// `key In (values)`.
    AnyOf(String, Vec<String>),
    /// `key Exists`.
    Key(String),
}

/// A selector checked and converted once, to match many objects.
#[derive(Debug, Clone)]
pub struct CompiledSelector {
    selector: Selector,
    required: Vec<Required>,
}

impl CompiledSelector {
    pub fn new(selector: &LabelSelector) -> Result<CompiledSelector, SelectorError> {
        validate(selector)?;
        let mut required: Vec<Required> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Required::Label(k.clone(), v.clone()))
            .collect();
        for r in selector.match_expressions.iter().flatten() {
            match r.operator.as_str() {
                "In" => required.push(Required::AnyOf(
                    r.key.clone(),
                    r.values.clone().unwrap_or_default(),
                )),
                "Exists" => required.push(Required::Key(r.key.clone())),
                _ => {} // NotIn and DoesNotExist match objects without the key
            }
        }
        // `validate` has checked every operator and its values, which is
        // all the conversion can refuse.
        let selector =
            Selector::try_from(selector.clone()).map_err(|e| SelectorError::Unconvertible {
                message: e.to_string(),
            })?;
        Ok(CompiledSelector { selector, required })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// The terms that need a label present; empty when every object may
    /// match (no terms, or only `NotIn` and `DoesNotExist`).
    pub fn required(&self) -> &[Required] {
        &self.required
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("team", "platform")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["gold", "silver"]),
                expr("env", "NotIn", &["development"]),
                expr("export", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(
            &s,
            &labels(&[("team", "platform"), ("tier", "gold"), ("export", "")])
        ));
        // NotIn matches a rule without the key; DoesNotExist likewise.
        assert!(matches(
            &s,
            &labels(&[
                ("team", "platform"),
                ("tier", "silver"),
                ("export", "y"),
                ("env", "prod")
            ])
        ));
        assert!(!matches(
            &s,
            &labels(&[
                ("team", "platform"),
                ("tier", "gold"),
                ("export", "y"),
                ("env", "development")
            ])
        ));
        assert!(!matches(
            &s,
            &labels(&[("team", "other"), ("tier", "gold"), ("export", "y")])
        ));
        assert!(!matches(
            &s,
            &labels(&[("team", "platform"), ("tier", "gold")])
        ));
        assert!(!matches(
            &s,
            &labels(&[
                ("team", "platform"),
                ("tier", "gold"),
                ("export", "y"),
                ("legacy", "1")
            ])
        ));
        assert!(
            matches(&LabelSelector::default(), &labels(&[])),
            "empty matches all"
        );
    }

    #[test]
    fn invalid_selectors_are_named_and_match_nothing() {
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("a", "In", &[])]),
        };
        assert_eq!(
            validate(&s).unwrap_err().to_string(),
            "matchExpressions[0] (a In): needs at least one value"
        );
        assert!(!matches(&s, &labels(&[("a", "x")])));
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("a", "Exists", &[]), expr("b", "Equals", &["x"])]),
        };
        assert!(matches!(
            validate(&s),
            Err(SelectorError::UnknownOperator { index: 1, .. })
        ));
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expr("a", "Exists", &["x"])]),
        };
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("takes no values")
        );
    }
}
