//! JSON Lines: one object per row; column types are inferred (see
//! [`super::json_values::TypeInference`]). A key missing from a row is a
//! null; columns appear in the order their keys are first seen.

use serde_json::{Map, Value};

use super::batch::{BatchBuilder, ColumnBuilder};
use super::error::{InputError, show_value};
use super::json_values::{JsonValueError, TypeInference, push_json};
use crate::wit::{Batch, BatchContext};

pub fn read(origin: &str, bytes: &[u8], context: BatchContext) -> Result<Batch, InputError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| InputError::format(origin, format!("not UTF-8: {e}")))?;
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => rows.push(map),
            Ok(_) => {
                return Err(InputError::format(
                    origin,
                    format!("line {}: not a JSON object", i + 1),
                ));
            }
            Err(e) => return Err(InputError::format(origin, format!("line {}: {e}", i + 1))),
        }
    }
    let mut names: Vec<&str> = Vec::new();
    let mut inference: Vec<TypeInference> = Vec::new();
    for row in &rows {
        for (key, value) in row {
            let index = match names.iter().position(|n| n == key) {
                Some(i) => i,
                None => {
                    names.push(key);
                    inference.push(TypeInference::default());
                    names.len() - 1
                }
            };
            inference[index].observe(value);
        }
    }
    let columns = names
        .iter()
        .zip(&inference)
        .map(|(name, inf)| ColumnBuilder::new(*name, inf.kusto_type()))
        .collect();
    let mut builder = BatchBuilder::new(columns);
    for (i, row) in rows.iter().enumerate() {
        for column in &mut builder.columns {
            let value = row.get(column.name()).unwrap_or(&Value::Null);
            push_json(column, value).map_err(|e| match e {
                JsonValueError::Mismatch(reason) => InputError::Value {
                    origin: origin.to_string(),
                    row: i + 1,
                    column: column.name().to_string(),
                    ty: column.kusto_type(),
                    value: show_value(&value.to_string()),
                    reason: reason.to_string(),
                },
                JsonValueError::TooLarge(source) => InputError::TooLarge {
                    origin: origin.to_string(),
                    source,
                },
            })?;
        }
    }
    Ok(builder.finish(context))
}
