//! The higher-level way to write a guest: a configuration type, a check of
//! it, and a function from a batch to points. [`export_transform!`] turns
//! it into the contract's two functions.
//!
//! [`export_transform!`]: crate::export_transform

use serde::de::DeserializeOwned;

use crate::config::{parse_config, parsed_once};
use crate::{Batch, ConfigError, Out, Output, Requirements, TransformError};

/// A transform with a typed configuration.
pub trait Transform {
    /// The MetricsExporter's `transform` block, without `module` (serde;
    /// `#[serde(rename_all = "camelCase", deny_unknown_fields)]` gives the
    /// keys users expect and refuses typos).
    type Config: DeserializeOwned + 'static;

    /// Checks a parsed configuration beyond what its type says (refuse with
    /// [`ConfigError::field`], naming the key) and says which columns it
    /// reads. Runs once per instance, before the first batch.
    fn validate(config: &Self::Config) -> Result<Requirements, ConfigError>;

    /// Turns one batch into points written to `out`; skip bad rows with
    /// [`Out::skip`] rather than failing the batch.
    fn transform(config: &Self::Config, batch: &Batch, out: &mut Out)
    -> Result<(), TransformError>;
}

/// The configuration parsed and checked, once per instance and text.
fn checked<T: Transform>(
    json: &str,
) -> Result<std::rc::Rc<(T::Config, Requirements)>, ConfigError> {
    parsed_once(json, |text| {
        let config: T::Config = parse_config(text)?;
        let requirements = T::validate(&config)?;
        Ok((config, requirements))
    })
}

/// The contract's `validate` for `T` (used by [`crate::export_transform!`]).
#[doc(hidden)]
pub fn validate<T: Transform>(json: String) -> Result<Requirements, ConfigError> {
    Ok(checked::<T>(&json)?.1.clone())
}

/// The contract's `transform` for `T` (used by [`crate::export_transform!`]).
#[doc(hidden)]
pub fn transform<T: Transform>(json: String, batch: Batch) -> Result<Output, TransformError> {
    let checked = checked::<T>(&json)?;
    let mut out = Out::new();
    T::transform(&checked.0, &batch, &mut out)?;
    out.finish()
}

/// Exports a [`Transform`] as the guest's implementation of the contract.
///
/// ```text
/// struct Ratio;
/// impl kusto_metrics_guest::Transform for Ratio { ... }
/// kusto_metrics_guest::export_transform!(Ratio);
/// ```
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        #[doc(hidden)]
        struct __KustoMetricsTransform;

        impl $crate::Guest for __KustoMetricsTransform {
            fn validate(
                config: ::std::string::String,
            ) -> ::core::result::Result<$crate::Requirements, $crate::ConfigError> {
                $crate::typed::validate::<$ty>(config)
            }

            fn transform(
                config: ::std::string::String,
                batch: $crate::Batch,
            ) -> ::core::result::Result<$crate::Output, $crate::TransformError> {
                $crate::typed::transform::<$ty>(config, batch)
            }
        }

        $crate::export!(__KustoMetricsTransform with_types_in $crate);
    };
}

/// Makes [`crate::BumpAllocator`] the guest's global allocator on wasm32
/// (nothing elsewhere, so native tests keep the system allocator). The host
/// gives each batch a fresh instance, so freeing is wasted work: measured
/// 15-30% of a call.
#[macro_export]
macro_rules! use_bump_allocator {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static __KUSTO_METRICS_ALLOCATOR: $crate::BumpAllocator = $crate::BumpAllocator::new();
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        BatchContext, Column, ColumnValues, KustoType, MetricData, NumberValues, TextArena,
    };
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Config {
        numerator_column: String,
        denominator_column: String,
        label_column: String,
    }

    struct Ratio;

    impl Transform for Ratio {
        type Config = Config;

        fn validate(c: &Config) -> Result<Requirements, ConfigError> {
            if c.numerator_column == c.denominator_column {
                return Err(ConfigError::field(
                    "denominatorColumn",
                    "same as numeratorColumn",
                ));
            }
            Ok(Requirements::new()
                .column(&c.numerator_column, KustoType::INTEGERS)
                .column(&c.denominator_column, KustoType::NUMBERS)
                .column(&c.label_column, KustoType::ANY)
                .event_time("t"))
        }

        fn transform(c: &Config, batch: &Batch, out: &mut Out) -> Result<(), TransformError> {
            let n = batch.long(&c.numerator_column)?;
            let d = batch.number(&c.denominator_column)?;
            let t = batch.datetime("t")?;
            let label = batch.label(&c.label_column)?;
            let mut attrs = crate::Attributes::new();
            for row in batch.rows() {
                let (Some(n), Some(d), Some(t)) = (n.get(row), d.get(row), t.get(row)) else {
                    out.skip("null-value", row);
                    continue;
                };
                attrs.clear().label("service", &label, row);
                out.gauge("ratio").point(&attrs, t, n as f64 / d);
            }
            Ok(())
        }
    }

    fn column(
        name: &str,
        kusto_type: KustoType,
        validity: Vec<u8>,
        values: ColumnValues,
    ) -> Column {
        Column {
            name: name.into(),
            kusto_type,
            validity,
            values,
        }
    }

    fn batch() -> Batch {
        Batch {
            context: BatchContext {
                database: "d".into(),
                table: "t".into(),
                rule_name: String::new(),
                rule_namespace: String::new(),
                exporter_name: String::new(),
                window_start: None,
                window_end: None,
            },
            row_count: 3,
            columns: vec![
                // Row 1's numerator is null.
                column(
                    "n",
                    KustoType::Long,
                    vec![0b101],
                    ColumnValues::Longs(vec![1, 0, 3]),
                ),
                column(
                    "d",
                    KustoType::Real,
                    vec![],
                    ColumnValues::Reals(vec![2.0, 2.0, 4.0]),
                ),
                column(
                    "t",
                    KustoType::Datetime,
                    vec![],
                    ColumnValues::Ticks(vec![10, 20, 30]),
                ),
                column(
                    "s",
                    KustoType::String,
                    vec![],
                    ColumnValues::Text(TextArena {
                        data: "apiapiweb".into(),
                        offsets: vec![0, 3, 6, 9],
                    }),
                ),
            ],
        }
    }

    const CONFIG: &str =
        r#"{"numeratorColumn": "n", "denominatorColumn": "d", "labelColumn": "s"}"#;

    #[test]
    fn a_typed_transform_runs_through_the_contract() {
        let r = validate::<Ratio>(CONFIG.into()).unwrap();
        assert_eq!(r.event_time_column.as_deref(), Some("t"));
        assert_eq!(r.columns.len(), 4);
        let o = transform::<Ratio>(CONFIG.into(), batch()).unwrap();
        let MetricData::Gauge(p) = &o.metrics[0].data else {
            panic!("a gauge")
        };
        assert_eq!(p.times, [1000, 3000]);
        assert_eq!(p.values, NumberValues::Doubles(vec![0.5, 0.75]));
        assert_eq!(p.attribute_sets, [0, 1]);
        assert_eq!((o.skipped[0].count, o.skipped[0].first_row), (1, 1));
    }

    #[test]
    fn configuration_and_column_errors_name_what_is_at_fault() {
        let e = validate::<Ratio>(
            r#"{"numeratorColumn": "n", "denominatorColumn": "n", "labelColumn": "s"}"#.into(),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("denominatorColumn"));
        let e = transform::<Ratio>(r#"{"numeratorColumn": 1}"#.into(), batch()).unwrap_err();
        assert!(
            e.message
                .starts_with("configuration at `numeratorColumn`: invalid type"),
            "{}",
            e.message
        );

        let wrong = CONFIG.replace("\"n\"", "\"d\"").replace(
            "\"denominatorColumn\": \"d\"",
            "\"denominatorColumn\": \"n\"",
        );
        let e = transform::<Ratio>(wrong, batch()).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("d"));
        assert_eq!(
            e.message,
            "column `d` is real, this transform reads int or long"
        );
        let e = transform::<Ratio>(CONFIG.replace("\"s\"", "\"x\""), batch()).unwrap_err();
        assert_eq!(
            e.message,
            "column `x` is not in the table; columns present: n, d, t, s"
        );
    }
}
