//! The `transform` block of a MetricsExporter, as this guest reads it.

use kusto_metrics_guest::{ColumnRequirement, ConfigError, KustoType, Requirements};
use serde::Deserialize;
use serde_json::Value;

use crate::expand::sanitize;

/// Labels one row's property bag may give when its entry sets no `maxKeys`.
pub const DEFAULT_MAX_KEYS: usize = 32;
/// The largest `maxKeys` an entry may set.
pub const MAX_KEYS_LIMIT: usize = 256;
/// Distinct expanded label names one batch may have when the configuration
/// sets no `maxExpandedLabels`. A guest instance sees one batch, so this is
/// as far as the guest can count.
pub const DEFAULT_MAX_EXPANDED_LABELS: usize = 128;
/// The largest `maxExpandedLabels` the configuration may set.
pub const MAX_EXPANDED_LABELS_LIMIT: usize = 2048;
/// The keys of an expanding `labelColumns` entry.
const EXPAND_KEYS: [&str; 4] = ["column", "expand", "prefix", "maxKeys"];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Column holding the metric name (string).
    #[serde(default)]
    pub metric_name_column: Option<String>,
    /// Prepended to every metric name, joined with `_`.
    #[serde(default)]
    pub metric_name_prefix: Option<String>,
    /// The one value column (int, long, real or decimal).
    #[serde(default)]
    pub value_column: Option<String>,
    /// Several value columns; each gives one metric per row, named after the
    /// column (`<prefix>_<name>_<column>`, parts that are not set left out).
    #[serde(default)]
    pub value_columns: Vec<String>,
    /// Column holding the point time (datetime).
    pub timestamp_column: String,
    /// Column holding the start of the point's interval (datetime), optional.
    #[serde(default)]
    pub start_timestamp_column: Option<String>,
    /// Columns that become attributes, in this order, as written: each a
    /// column name or an expanding entry (see [`LabelEntry`]).
    #[serde(default, rename = "labelColumns")]
    label_columns_raw: Vec<Value>,
    /// `labelColumns`, read by [`Config::parse`].
    #[serde(skip)]
    pub label_columns: Vec<LabelEntry>,
    /// Distinct label names the expanding entries may give in one batch.
    #[serde(default)]
    pub max_expanded_labels: Option<usize>,
    /// Attributes every point gets, after the label columns' (say, the
    /// owning team); a key may not also be a label column.
    #[serde(default)]
    pub constant_labels: std::collections::BTreeMap<String, String>,
    /// The metric name when `metricNameColumn` is not set or is empty on a row.
    #[serde(default)]
    pub default_metric_name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub kind: Kind,
    /// For `kind: sum` only.
    #[serde(default)]
    pub monotonic: Option<bool>,
    /// For `kind: sum` only; default `cumulative`.
    #[serde(default)]
    pub temporality: Option<TemporalityConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Gauge,
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemporalityConfig {
    Delta,
    Cumulative,
}

/// One `labelColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelEntry {
    /// The column's value is the label, named after the column.
    Plain(String),
    /// A `dynamic` column holding a JSON object: each key is a label.
    Expand(Expansion),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    pub column: String,
    /// Sanitized; may be empty.
    pub prefix: String,
    pub max_keys: usize,
}

impl LabelEntry {
    pub fn column(&self) -> &str {
        match self {
            LabelEntry::Plain(c) => c,
            LabelEntry::Expand(e) => &e.column,
        }
    }

    fn parse(i: usize, raw: &Value) -> Result<LabelEntry, ConfigError> {
        let at = format!("labelColumns[{i}]");
        let fields = match raw {
            Value::String(c) if c.is_empty() => {
                return Err(ConfigError::field(&at, format!("{at} is empty")));
            }
            Value::String(c) => return Ok(LabelEntry::Plain(c.clone())),
            Value::Object(fields) => fields,
            other => {
                return Err(ConfigError::field(
                    &at,
                    format!(
                        "{at} is {other}: give a column name, or {{column, expand: true, prefix, maxKeys}} to expand a dynamic column"
                    ),
                ));
            }
        };
        if let Some(key) = fields.keys().find(|k| !EXPAND_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::field(
                &format!("{at}.{key}"),
                format!(
                    "{at} has an unknown key `{key}` (an expanding entry has {})",
                    EXPAND_KEYS.join(", ")
                ),
            ));
        }
        let column = match fields.get("column") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            _ => {
                return Err(ConfigError::field(
                    &format!("{at}.column"),
                    format!("{at} needs `column`: the name of a dynamic column"),
                ));
            }
        };
        if fields.get("expand") != Some(&Value::Bool(true)) {
            return Err(ConfigError::field(
                &format!("{at}.expand"),
                format!(
                    "{at} needs `expand: true`: an entry written as an object expands a dynamic column into one label per key; for a plain label give the column name `{column}` as a string"
                ),
            ));
        }
        let prefix = match fields.get("prefix") {
            None => String::new(),
            Some(Value::String(p)) => {
                let clean = sanitize(p);
                if clean.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(ConfigError::field(
                        &format!("{at}.prefix"),
                        format!(
                            "{at}: prefix `{p}` starts with a digit; a label name must start with a letter or `_`"
                        ),
                    ));
                }
                clean
            }
            Some(other) => {
                return Err(ConfigError::field(
                    &format!("{at}.prefix"),
                    format!("{at}: prefix must be a string, not {other}"),
                ));
            }
        };
        let max_keys = match fields.get("maxKeys") {
            None => DEFAULT_MAX_KEYS,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if (1..=MAX_KEYS_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ConfigError::field(
                        &format!("{at}.maxKeys"),
                        format!(
                            "{at}: maxKeys is {v}; it must be a whole number from 1 to {MAX_KEYS_LIMIT}"
                        ),
                    ));
                }
            },
        };
        Ok(LabelEntry::Expand(Expansion {
            column,
            prefix,
            max_keys,
        }))
    }
}

pub const VALUE_TYPES: [KustoType; 4] = [
    KustoType::Int,
    KustoType::Long,
    KustoType::Real,
    KustoType::Decimal,
];

impl Config {
    pub fn parse(json: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_json::from_str(json).map_err(|e| ConfigError {
            field: unknown_field(&e.to_string()),
            message: format!("invalid transform configuration: {e}"),
        })?;
        config.label_columns = config
            .label_columns_raw
            .iter()
            .enumerate()
            .map(|(i, raw)| LabelEntry::parse(i, raw))
            .collect::<Result<_, _>>()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let empty = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
        match (empty(&self.value_column), self.value_columns.is_empty()) {
            (true, true) => {
                return Err(ConfigError::field(
                    "valueColumn",
                    "set `valueColumn` (or `valueColumns`): the column that holds the metric value",
                ));
            }
            (false, false) => {
                return Err(ConfigError::field(
                    "valueColumns",
                    "set either `valueColumn` or `valueColumns`, not both",
                ));
            }
            _ => {}
        }
        if self.timestamp_column.is_empty() {
            return Err(ConfigError::field(
                "timestampColumn",
                "`timestampColumn` must name a datetime column",
            ));
        }
        if self.value_columns.is_empty()
            && empty(&self.metric_name_column)
            && empty(&self.default_metric_name)
        {
            return Err(ConfigError::field(
                "metricNameColumn",
                "set `metricNameColumn` or `defaultMetricName`: every metric needs a name",
            ));
        }
        if self.kind == Kind::Gauge && (self.monotonic.is_some() || self.temporality.is_some()) {
            return Err(ConfigError::field(
                if self.monotonic.is_some() {
                    "monotonic"
                } else {
                    "temporality"
                },
                "`monotonic` and `temporality` apply to `kind: sum` only",
            ));
        }
        let mut seen = Vec::new();
        for (i, c) in self.value_columns.iter().enumerate() {
            if c.is_empty() {
                return Err(ConfigError::field(
                    "valueColumns",
                    format!("entry {i} is empty"),
                ));
            }
            if seen.contains(&c) {
                return Err(ConfigError::field(
                    "valueColumns",
                    format!("`{c}` is listed twice"),
                ));
            }
            seen.push(c);
        }
        let mut prefixes: Vec<&str> = Vec::new();
        for (i, entry) in self.label_columns.iter().enumerate() {
            let column = entry.column();
            if let Some(j) = self.label_columns[..i]
                .iter()
                .position(|e| e.column() == column)
            {
                return Err(ConfigError::field(
                    &format!("labelColumns[{i}]"),
                    format!(
                        "labelColumns[{i}]: `{column}` is listed twice (also labelColumns[{j}])"
                    ),
                ));
            }
            if let LabelEntry::Expand(e) = entry {
                // Two bags under one prefix would give the same label for
                // every key they share.
                if prefixes.contains(&e.prefix.as_str()) {
                    return Err(ConfigError::field(
                        &format!("labelColumns[{i}].prefix"),
                        format!(
                            "labelColumns[{i}]: another expanding entry already uses the prefix `{}`; give each its own",
                            e.prefix
                        ),
                    ));
                }
                prefixes.push(&e.prefix);
            }
        }
        match self.max_expanded_labels {
            Some(_) if prefixes.is_empty() => {
                return Err(ConfigError::field(
                    "maxExpandedLabels",
                    "`maxExpandedLabels` applies only when a labelColumns entry has `expand: true`",
                ));
            }
            Some(n) if !(1..=MAX_EXPANDED_LABELS_LIMIT).contains(&n) => {
                return Err(ConfigError::field(
                    "maxExpandedLabels",
                    format!(
                        "maxExpandedLabels is {n}; it must be from 1 to {MAX_EXPANDED_LABELS_LIMIT}"
                    ),
                ));
            }
            _ => {}
        }
        for key in self.constant_labels.keys() {
            if key.is_empty() {
                return Err(ConfigError::field(
                    "constantLabels",
                    "a key is empty".to_string(),
                ));
            }
            if self
                .label_columns
                .iter()
                .any(|e| matches!(e, LabelEntry::Plain(c) if c == key))
            {
                return Err(ConfigError::field(
                    "constantLabels",
                    format!("`{key}` is also in labelColumns: a point would have it twice"),
                ));
            }
        }
        Ok(())
    }

    /// The value columns, whichever way they were given.
    pub fn values(&self) -> Vec<&str> {
        match &self.value_column {
            Some(c) if !c.is_empty() => vec![c.as_str()],
            _ => self.value_columns.iter().map(String::as_str).collect(),
        }
    }

    /// The columns this configuration reads and the types it accepts.
    pub fn requirements(&self) -> Requirements {
        let mut columns = Vec::new();
        let mut add = |name: &str, types: &[KustoType]| {
            if !columns.iter().any(|c: &ColumnRequirement| c.name == name) {
                columns.push(ColumnRequirement {
                    name: name.to_string(),
                    types: types.to_vec(),
                });
            }
        };
        for v in self.values() {
            add(v, &VALUE_TYPES);
        }
        add(&self.timestamp_column, &[KustoType::Datetime]);
        if let Some(c) = &self.start_timestamp_column {
            add(c, &[KustoType::Datetime]);
        }
        if let Some(c) = self.metric_name_column.as_deref().filter(|c| !c.is_empty()) {
            add(c, &[KustoType::String]);
        }
        for entry in &self.label_columns {
            match entry {
                LabelEntry::Plain(c) => add(c, &[]),
                LabelEntry::Expand(e) => add(&e.column, &[KustoType::Dynamic]),
            }
        }
        Requirements {
            columns,
            event_time_column: Some(self.timestamp_column.clone()),
        }
    }
}

impl Config {
    /// The cap on distinct expanded label names per batch.
    pub fn expanded_label_cap(&self) -> usize {
        self.max_expanded_labels
            .unwrap_or(DEFAULT_MAX_EXPANDED_LABELS)
    }
}

/// serde names an unknown key as "unknown field `x`, expected ..."; lift
/// `x` out so the error points at the key.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_labels(labels: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            r#"{{"defaultMetricName":"m","valueColumn":"v","timestampColumn":"t","labelColumns":{labels}}}"#
        ))
    }

    fn refused(labels: &str) -> ConfigError {
        match with_labels(labels) {
            Ok(c) => panic!("{labels} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn both_forms_are_read() {
        let c = with_labels(
            r#"["host", {"column": "Properties", "expand": true, "prefix": "props.", "maxKeys": 5}]"#,
        )
        .unwrap();
        assert_eq!(
            c.label_columns,
            [
                LabelEntry::Plain("host".into()),
                LabelEntry::Expand(Expansion {
                    column: "Properties".into(),
                    prefix: "props_".into(),
                    max_keys: 5,
                }),
            ]
        );
        let needs = c.requirements();
        let bag = needs
            .columns
            .iter()
            .find(|c| c.name == "Properties")
            .unwrap();
        assert_eq!(bag.types, [KustoType::Dynamic]);
        let host = needs.columns.iter().find(|c| c.name == "host").unwrap();
        assert!(host.types.is_empty(), "a plain label takes any type");
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (
                r#"["a", {"column": "P", "expand": true, "prefx": "p_"}]"#,
                "labelColumns[1].prefx",
                "unknown key `prefx`",
            ),
            (
                r#"[{"column": "P"}]"#,
                "labelColumns[0].expand",
                "needs `expand: true`",
            ),
            (
                r#"[{"column": "P", "expand": false}]"#,
                "labelColumns[0].expand",
                "needs `expand: true`",
            ),
            (
                r#"[{"expand": true}]"#,
                "labelColumns[0].column",
                "needs `column`",
            ),
            (
                r#"["a", "b", {"column": "P", "expand": true, "prefix": "1x"}]"#,
                "labelColumns[2].prefix",
                "starts with a digit",
            ),
            (
                r#"[{"column": "P", "expand": true, "maxKeys": 0}]"#,
                "labelColumns[0].maxKeys",
                "from 1 to 256",
            ),
            (
                r#"[{"column": "P", "expand": true, "maxKeys": 257}]"#,
                "labelColumns[0].maxKeys",
                "from 1 to 256",
            ),
            (
                r#"[{"column": "P", "expand": true, "maxKeys": "5"}]"#,
                "labelColumns[0].maxKeys",
                "whole number",
            ),
            (r#"[3]"#, "labelColumns[0]", "give a column name"),
            (r#"["a", ""]"#, "labelColumns[1]", "is empty"),
            (
                r#"["P", {"column": "P", "expand": true}]"#,
                "labelColumns[1]",
                "listed twice (also labelColumns[0])",
            ),
            (
                r#"[{"column": "P", "expand": true, "prefix": "p"}, {"column": "Q", "expand": true, "prefix": "p"}]"#,
                "labelColumns[1].prefix",
                "already uses the prefix `p`",
            ),
        ];
        for (labels, field, message) in cases {
            let e = refused(labels);
            assert_eq!(e.field.as_deref(), Some(field), "{labels}: {e:?}");
            assert!(e.message.contains(message), "{labels}: {e:?}");
            assert!(
                e.message.contains(field.split('.').next().unwrap()),
                "{labels}: {e:?}"
            );
        }
    }

    #[test]
    fn the_batch_cap_is_bounded_and_needs_an_expanding_entry() {
        let config = |labels: &str, cap: usize| {
            Config::parse(&format!(
                r#"{{"defaultMetricName":"m","valueColumn":"v","timestampColumn":"t","labelColumns":{labels},"maxExpandedLabels":{cap}}}"#
            ))
        };
        let bag = r#"[{"column": "P", "expand": true}]"#;
        assert_eq!(config(bag, 10).unwrap().expanded_label_cap(), 10);
        assert_eq!(
            with_labels(bag).unwrap().expanded_label_cap(),
            DEFAULT_MAX_EXPANDED_LABELS
        );
        for (labels, cap) in [
            (bag, 0),
            (bag, MAX_EXPANDED_LABELS_LIMIT + 1),
            (r#"["host"]"#, 10),
        ] {
            let e = config(labels, cap).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("maxExpandedLabels"), "{e:?}");
        }
    }
}
