//! Example guest: per-bucket count columns become one OTLP histogram, which
//! the column mapping cannot express.
//!
//! A SummaryRule such as
//! ```kql
//! Requests
//! | summarize le_100 = countif(DurationMs <= 100),
//!             le_500 = countif(DurationMs > 100 and DurationMs <= 500),
//!             inf    = countif(DurationMs > 500),
//!             total_ms = sum(DurationMs)
//!   by bin(Timestamp, 1m), Service
//! ```
//! and the transform
//! ```yaml
//! transform:
//!   module: {file: histogram_buckets.wasm}
//!   metricName: request_duration_ms
//!   timestampColumn: Timestamp
//!   buckets:                  # count column -> upper bound, ascending; the
//!     - {column: le_100, upperBound: 100}   # last without a bound is +Inf
//!     - {column: le_500, upperBound: 500}
//!     - {column: inf}
//!   sumColumn: total_ms       # optional
//!   labelColumns: [Service]
//! ```
//! give one histogram point per row, with `count` the sum of the buckets.

use kusto_metrics_guest::{
    AttributeSetBuilder, AttributeValue, Batch, Column, ColumnExt, ColumnRequirement, ConfigError,
    HistogramData, HistogramPoint, KustoType, Metric, MetricData, Output, OutputBuilder,
    Requirements, SkipCounter, Temporality, TransformError, ticks_to_unix_nanos,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    metric_name: String,
    timestamp_column: String,
    buckets: Vec<Bucket>,
    #[serde(default)]
    sum_column: Option<String>,
    #[serde(default)]
    label_columns: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    unit: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Bucket {
    column: String,
    #[serde(default)]
    upper_bound: Option<f64>,
}

impl Config {
    fn parse(json: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_str(json).map_err(|e| ConfigError {
            field: None,
            message: format!("invalid histogram configuration: {e}"),
        })?;
        let bounds: Vec<Option<f64>> = config.buckets.iter().map(|b| b.upper_bound).collect();
        let Some((last, rest)) = bounds.split_last() else {
            return Err(ConfigError::field(
                "buckets",
                "list at least one bucket column",
            ));
        };
        if last.is_some() {
            return Err(ConfigError::field(
                "buckets",
                "the last bucket must have no upperBound (+Inf)",
            ));
        }
        let mut previous = f64::NEG_INFINITY;
        for (i, bound) in rest.iter().enumerate() {
            match bound {
                Some(b) if b.is_finite() && *b > previous => previous = *b,
                _ => {
                    return Err(ConfigError::field(
                        "buckets",
                        format!("bucket {i} needs a finite upperBound above the previous one"),
                    ));
                }
            }
        }
        Ok(config)
    }
}

struct Histogram;

kusto_metrics_guest::export!(Histogram);

fn int_column<'a>(batch: &'a Batch, name: &str) -> Result<(&'a Column, &'a [i64]), TransformError> {
    let column = batch.column(name)?;
    column.longs().map(|v| (column, v)).ok_or_else(|| {
        TransformError::column(name, format!("bucket column `{name}` must be int or long"))
    })
}

impl kusto_metrics_guest::Guest for Histogram {
    fn validate(config: String) -> Result<Requirements, ConfigError> {
        let config = Config::parse(&config)?;
        let mut columns = vec![ColumnRequirement {
            name: config.timestamp_column.clone(),
            types: vec![KustoType::Datetime],
        }];
        for b in &config.buckets {
            columns.push(ColumnRequirement {
                name: b.column.clone(),
                types: vec![KustoType::Int, KustoType::Long],
            });
        }
        if let Some(sum) = &config.sum_column {
            columns.push(ColumnRequirement {
                name: sum.clone(),
                types: vec![KustoType::Int, KustoType::Long, KustoType::Real],
            });
        }
        for l in &config.label_columns {
            columns.push(ColumnRequirement {
                name: l.clone(),
                types: Vec::new(),
            });
        }
        Ok(Requirements {
            columns,
            event_time_column: Some(config.timestamp_column),
        })
    }

    fn transform(config: String, batch: Batch) -> Result<Output, TransformError> {
        let config = Config::parse(&config).map_err(|e| TransformError {
            column: None,
            row: None,
            message: e.message,
        })?;
        let ts_column = batch.column(&config.timestamp_column)?;
        let times = ts_column
            .ticks()
            .filter(|_| ts_column.kusto_type == KustoType::Datetime)
            .ok_or_else(|| {
                TransformError::column(
                    &config.timestamp_column,
                    "the timestamp column must be datetime",
                )
            })?;
        let buckets = config
            .buckets
            .iter()
            .map(|b| int_column(&batch, &b.column))
            .collect::<Result<Vec<_>, _>>()?;
        let bounds: Vec<f64> = config
            .buckets
            .iter()
            .filter_map(|b| b.upper_bound)
            .collect();
        let sum = config
            .sum_column
            .as_deref()
            .map(|c| batch.column(c))
            .transpose()?;
        let labels = config
            .label_columns
            .iter()
            .map(|l| batch.column(l))
            .collect::<Result<Vec<_>, _>>()?;

        let mut out = OutputBuilder::new();
        let keys: Vec<u32> = config.label_columns.iter().map(|l| out.intern(l)).collect();
        let mut skips = SkipCounter::default();
        let mut set = AttributeSetBuilder::default();
        let mut text = String::new();
        let mut points = Vec::new();
        'rows: for row in 0..batch.row_count as usize {
            let Some(time) = ts_column
                .is_valid(row)
                .then(|| times.get(row).copied().and_then(ticks_to_unix_nanos))
                .flatten()
            else {
                skips.skip("null-timestamp", row);
                continue;
            };
            let mut counts = Vec::with_capacity(buckets.len());
            for (column, values) in &buckets {
                match values
                    .get(row)
                    .copied()
                    .filter(|c| column.is_valid(row) && *c >= 0)
                {
                    Some(c) => counts.push(c as u64),
                    None => {
                        skips.skip("invalid-bucket-count", row);
                        continue 'rows;
                    }
                }
            }
            set.clear();
            for (key, column) in keys.iter().zip(&labels) {
                if column.render(row, &mut text) {
                    let value = out.intern(&text);
                    set.push(*key, AttributeValue::Str(value));
                }
            }
            points.push(HistogramPoint {
                attribute_set: out.attribute_set(&set),
                start_time: 0,
                time,
                count: counts.iter().sum(),
                sum: sum.and_then(|c| sum_value(c, row)),
                min: None,
                max: None,
                bucket_counts: counts,
                explicit_bounds: bounds.clone(),
            });
        }
        out.push_metric(Metric {
            name: config.metric_name,
            description: config.description,
            unit: config.unit,
            data: MetricData::Histogram(HistogramData {
                points,
                temporality: Temporality::Delta,
            }),
        });
        Ok(out.finish(skips))
    }
}

fn sum_value(column: &Column, row: usize) -> Option<f64> {
    if !column.is_valid(row) {
        return None;
    }
    column
        .longs()
        .map(|v| v.get(row).map(|x| *x as f64))
        .or_else(|| column.reals().map(|v| v.get(row).copied()))
        .flatten()
}
