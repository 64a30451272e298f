//! Example guest: per-bucket count columns (`le_100 = countif(DurationMs <=
//! 100)`, ..., `inf`) become one OTLP histogram point per row, which the
//! column mapping cannot express. Configured as in
//! examples/custom-histogram/transform.yaml: `metricName`, `timestampColumn`,
//! `buckets` (count column and upper bound, ascending; the last has no bound,
//! +Inf), optional `sumColumn`, `labelColumns`, `description`, `unit`.

use kusto_metrics_guest::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    metric_name: String,
    timestamp_column: String,
    buckets: Vec<Bucket>,
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
    upper_bound: Option<f64>,
}

struct Histogram;

impl Transform for Histogram {
    type Config = Config;

    fn validate(c: &Config) -> Result<Requirements, ConfigError> {
        let Some((last, rest)) = c.buckets.split_last() else {
            return Err(ConfigError::field(
                "buckets",
                "list at least one bucket column",
            ));
        };
        if last.upper_bound.is_some() {
            let message = "the last bucket must have no upperBound (+Inf)";
            return Err(ConfigError::field("buckets", message));
        }
        for (i, b) in rest.iter().enumerate() {
            let above = i == 0 || rest[i - 1].upper_bound < b.upper_bound;
            if !(above && b.upper_bound.is_some_and(f64::is_finite)) {
                let message = "needs a finite bound above the previous one";
                return Err(ConfigError::field(
                    &format!("buckets[{i}].upperBound"),
                    message,
                ));
            }
        }
        Ok(Requirements::new()
            .event_time(&c.timestamp_column)
            .columns(c.buckets.iter().map(|b| &b.column), KustoType::INTEGERS)
            .columns(&c.sum_column, KustoType::NUMBERS)
            .columns(&c.label_columns, KustoType::ANY))
    }

    fn transform(c: &Config, batch: &Batch, out: &mut Out) -> Result<(), TransformError> {
        let time = batch.datetime(&c.timestamp_column)?;
        let buckets: Vec<_> = c
            .buckets
            .iter()
            .map(|b| batch.long(&b.column))
            .collect::<Result<_, _>>()?;
        let bounds: Vec<f64> = c.buckets.iter().filter_map(|b| b.upper_bound).collect();
        let sum = c
            .sum_column
            .as_deref()
            .map(|s| batch.number(s))
            .transpose()?;
        let labels = batch.labels(&c.label_columns)?;
        let mut attrs = Attributes::new();
        for row in batch.rows() {
            let Some(t) = time.get(row) else {
                out.skip("null-timestamp", row);
                continue;
            };
            let counts: Option<Vec<u64>> = buckets
                .iter()
                .map(|b| b.get(row)?.try_into().ok())
                .collect();
            let Some(counts) = counts else {
                out.skip("invalid-bucket-count", row);
                continue;
            };
            attrs.clear().labels(&labels, row);
            out.histogram(&c.metric_name)
                .description(&c.description)
                .unit(&c.unit)
                .bounds(&bounds)
                .point(&attrs, t, counts, sum.and_then(|s| s.get(row)));
        }
        Ok(())
    }
}

export_transform!(Histogram);
