//! The `transform` block of a MetricsExporter, as this guest reads it.

use kusto_metrics_guest::{ColumnRequirement, ConfigError, KustoType, Requirements};
use serde::Deserialize;

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
    /// Columns that become attributes, in this order.
    #[serde(default)]
    pub label_columns: Vec<String>,
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

pub const VALUE_TYPES: [KustoType; 4] = [
    KustoType::Int,
    KustoType::Long,
    KustoType::Real,
    KustoType::Decimal,
];

impl Config {
    pub fn parse(json: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_str(json).map_err(|e| ConfigError {
            field: unknown_field(&e.to_string()),
            message: format!("invalid transform configuration: {e}"),
        })?;
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
        for (i, c) in self.label_columns.iter().enumerate() {
            if c.is_empty() {
                return Err(ConfigError::field(
                    "labelColumns",
                    format!("entry {i} is empty"),
                ));
            }
            if self.label_columns[..i].contains(c) {
                return Err(ConfigError::field(
                    "labelColumns",
                    format!("`{c}` is listed twice"),
                ));
            }
        }
        for key in self.constant_labels.keys() {
            if key.is_empty() {
                return Err(ConfigError::field(
                    "constantLabels",
                    "a key is empty".to_string(),
                ));
            }
            if self.label_columns.contains(key) {
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
        for l in &self.label_columns {
            add(l, &[]);
        }
        Requirements {
            columns,
            event_time_column: Some(self.timestamp_column.clone()),
        }
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
