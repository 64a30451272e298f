//! A guest's configuration as a Rust type: the MetricsExporter's `transform`
//! block (without `module`) arrives as JSON text, is parsed once per
//! instance, and an error names the key at fault.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use serde::de::DeserializeOwned;

use crate::ConfigError;

/// Parses `json` into `C`. An error names the key at fault in `field`
/// (`buckets[1].upperBound`; for a missing key, the key), and its message
/// leaves out the JSON text's line and column, which a user who wrote YAML
/// never saw.
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed: Result<C, _> = serde_path_to_error::deserialize(&mut de);
    let config = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = without_position(&inner);
        let mut field = (path != ".").then_some(path);
        // serde names a missing key only in its message.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            field = Some(match field {
                Some(parent) => format!("{parent}.{missing}"),
                None => missing.to_string(),
            });
        }
        ConfigError { field, message }
    })?;
    de.end()
        .map_err(|e| ConfigError::new(without_position(&e)))?;
    Ok(config)
}

fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

thread_local! {
    /// The configuration this instance parsed last, by its text. The host
    /// gives every call a fresh instance, so this saves parsing twice
    /// within one; it would also serve an instance that was kept.
    static PARSED: RefCell<Option<(String, Rc<dyn Any>)>> = const { RefCell::new(None) };
}

/// `json` parsed and checked by `check`, or what an earlier call on this
/// instance made of the same text.
pub(crate) fn parsed_once<T: 'static>(
    json: &str,
    check: impl FnOnce(&str) -> Result<T, ConfigError>,
) -> Result<Rc<T>, ConfigError> {
    let cached = PARSED.with_borrow(|p| match p {
        Some((text, value)) if text == json => value.clone().downcast::<T>().ok(),
        _ => None,
    });
    if let Some(value) = cached {
        return Ok(value);
    }
    let value = Rc::new(check(json)?);
    PARSED.set(Some((json.to_string(), value.clone())));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        metric_name: String,
        #[serde(default)]
        buckets: Vec<Bucket>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Bucket {
        column: String,
        upper_bound: Option<f64>,
    }

    fn error(json: &str) -> ConfigError {
        parse_config::<Config>(json).unwrap_err()
    }

    #[test]
    fn errors_name_the_key() {
        let e = error(
            r#"{"metricName": "m", "buckets": [{"column": "a"}, {"column": "b", "upperBound": "x"}]}"#,
        );
        assert_eq!(e.field.as_deref(), Some("buckets[1].upperBound"));
        assert_eq!(e.message, "invalid type: string \"x\", expected f64");

        let e = error(r#"{"metricName": "m", "lableColumns": []}"#);
        assert_eq!(e.field.as_deref(), Some("lableColumns"));
        assert!(
            e.message.starts_with("unknown field `lableColumns`"),
            "{}",
            e.message
        );

        let e = error(r#"{"buckets": []}"#);
        assert_eq!(e.field.as_deref(), Some("metricName"));
        assert_eq!(e.message, "missing field `metricName`");

        let e = error(r#"{"metricName": "m", "buckets": [{"upperBound": 1}]}"#);
        assert_eq!(e.field.as_deref(), Some("buckets[0].column"));

        let e = error(r#"{"metricName": "m"} x"#);
        assert_eq!((e.field, e.message.as_str()), (None, "trailing characters"));
    }

    #[test]
    fn a_configuration_is_parsed_once_per_text() {
        let mut calls = 0;
        for _ in 0..3 {
            let v = parsed_once("{\"a\": 1}", |t| {
                calls += 1;
                Ok(t.len())
            })
            .unwrap();
            assert_eq!(*v, 8);
        }
        assert_eq!(calls, 1);
        let v = parsed_once("{}", |t| Ok(t.len())).unwrap();
        assert_eq!(*v, 2, "another text is parsed again");
        assert!(parsed_once("{}", |_| Err::<usize, _>(ConfigError::new("no"))).is_ok());
    }
}
