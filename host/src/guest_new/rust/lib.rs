//! {{name}}: one gauge point per row, numerator / denominator, labelled by
//! one column. Its settings are the keys of transform.yaml (Config below).

use kusto_metrics_guest::*;
use serde::Deserialize;

use_bump_allocator!();

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    metric_name: String,
    numerator_column: String,
    denominator_column: String,
    timestamp_column: String,
    label_column: String,
}

struct Ratio;

impl Transform for Ratio {
    type Config = Config;

    fn validate(c: &Config) -> Result<Requirements, ConfigError> {
        if c.metric_name.is_empty() {
            return Err(ConfigError::field("metricName", "name the metric"));
        }
        Ok(Requirements::new()
            .column(&c.numerator_column, KustoType::NUMBERS)
            .column(&c.denominator_column, KustoType::NUMBERS)
            .column(&c.label_column, KustoType::ANY)
            .event_time(&c.timestamp_column))
    }

    fn transform(c: &Config, batch: &Batch, out: &mut Out) -> Result<(), TransformError> {
        let numerator = batch.number(&c.numerator_column)?;
        let denominator = batch.number(&c.denominator_column)?;
        let time = batch.datetime(&c.timestamp_column)?;
        let label = batch.label(&c.label_column)?;
        let mut attrs = Attributes::new();
        for row in batch.rows() {
            let (Some(n), Some(d), Some(t)) =
                (numerator.get(row), denominator.get(row), time.get(row))
            else {
                out.skip("null-value", row);
                continue;
            };
            if d == 0.0 {
                out.skip("zero-denominator", row);
                continue;
            }
            attrs.clear().label(&c.label_column, &label, row);
            out.gauge(&c.metric_name).unit("1").point(&attrs, t, n / d);
        }
        Ok(())
    }
}

export_transform!(Ratio);
