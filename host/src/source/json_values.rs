//! Kusto values as they appear in JSON (Kusto v1/v2 responses, JSON Lines).

use serde_json::Value;

use super::batch::{ColumnBuilder, ColumnTooLarge};
use super::values;
use crate::wit::KustoType;

/// Why a JSON value does not fit a column.
pub enum JsonValueError {
    Mismatch(&'static str),
    TooLarge(ColumnTooLarge),
}

impl From<ColumnTooLarge> for JsonValueError {
    fn from(e: ColumnTooLarge) -> Self {
        JsonValueError::TooLarge(e)
    }
}

/// Pushes one JSON value into a column of its declared type.
///
/// Numbers are read exactly (a `long` beyond 2^53 keeps every digit);
/// `real` accepts `"NaN"`, `"Infinity"` and `"-Infinity"` spelled as
/// strings; `dynamic` keeps a string as it is (v1 sends dynamic values as
/// JSON text) and writes anything else as compact JSON text.
pub fn push_json(column: &mut ColumnBuilder, value: &Value) -> Result<(), JsonValueError> {
    use JsonValueError::Mismatch;
    let ty = column.kusto_type();
    match (ty, value) {
        (_, Value::Null) => column.push_null(),
        (KustoType::Bool, Value::Bool(b)) => column.push_bool(*b),
        (KustoType::Bool, Value::Number(n)) => match n.as_i64() {
            Some(0) => column.push_bool(false),
            Some(1) => column.push_bool(true),
            _ => return Err(Mismatch("not a bool")),
        },
        (KustoType::Int | KustoType::Long, Value::Number(n)) => {
            let v = n.as_i64().ok_or(Mismatch("not an integer in range"))?;
            if ty == KustoType::Int && i32::try_from(v).is_err() {
                return Err(Mismatch("not a 32-bit integer"));
            }
            column.push_long(v);
        }
        (KustoType::Real, Value::Number(n)) => {
            column.push_real(n.as_f64().ok_or(Mismatch("not a number"))?)
        }
        (KustoType::Decimal, Value::Number(n)) => column.push_text(&n.to_string())?,
        (KustoType::Dynamic, Value::String(s)) => column.push_text(s)?,
        (KustoType::Dynamic, other) => column.push_text(&other.to_string())?,
        (KustoType::String | KustoType::Guid, Value::String(s)) => column.push_text(s)?,
        (_, Value::String(s)) => column.push_parsed(s)?.map_err(Mismatch)?,
        (KustoType::String, other) => column.push_text(&other.to_string())?,
        _ => return Err(Mismatch("a JSON value of another kind")),
    }
    Ok(())
}

/// The type JSON Lines infers for a column from all its non-null values:
/// booleans → bool; integers → long; numbers with a fraction or exponent
/// (or integers mixed with them, or "NaN"/"Infinity" strings) → real;
/// strings that all read as ISO 8601 datetimes → datetime; other strings →
/// string; objects, arrays or mixed kinds → dynamic; only nulls → string.
#[derive(Default)]
pub struct TypeInference {
    bools: bool,
    ints: bool,
    floats: bool,
    non_finite: bool,
    datetimes: bool,
    strings: bool,
    nested: bool,
}

impl TypeInference {
    pub fn observe(&mut self, v: &Value) {
        match v {
            Value::Null => {}
            Value::Bool(_) => self.bools = true,
            Value::Number(n) if n.is_i64() => self.ints = true,
            Value::Number(_) => self.floats = true,
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                self.non_finite = true
            }
            Value::String(s) if values::parse_datetime(s).is_ok() => self.datetimes = true,
            Value::String(_) => self.strings = true,
            Value::Array(_) | Value::Object(_) => self.nested = true,
        }
    }

    pub fn kusto_type(&self) -> KustoType {
        let numeric = self.ints || self.floats || self.non_finite;
        let kinds = [
            self.bools,
            numeric,
            self.datetimes || self.strings,
            self.nested,
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds > 1 || self.nested {
            return KustoType::Dynamic;
        }
        if self.bools {
            KustoType::Bool
        } else if self.floats || self.non_finite {
            KustoType::Real
        } else if self.ints {
            KustoType::Long
        } else if self.datetimes && !self.strings {
            KustoType::Datetime
        } else {
            KustoType::String
        }
    }
}
