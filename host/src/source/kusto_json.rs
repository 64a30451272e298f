//! Kusto query responses as files: the v2 frame array and the v1 table set.
//! The primary result is found by its kind, never by position.

use serde::Deserialize;
use serde_json::Value;

use super::batch::{BatchBuilder, ColumnBuilder};
use super::error::{InputError, show_value};
use super::json_values::{JsonValueError, push_json};
use crate::wit::{Batch, BatchContext, KustoType};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ColumnDef {
    column_name: String,
    #[serde(default)]
    column_type: Option<String>,
    /// v1 only: the .NET type name.
    #[serde(default)]
    data_type: Option<String>,
}

/// A v2 frame as a whole, for [`read_v2_values`].
#[cfg(test)]
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Frame {
    frame_type: String,
    #[serde(default)]
    table_id: Option<i64>,
    #[serde(default)]
    table_kind: Option<String>,
    #[serde(default)]
    columns: Option<Vec<ColumnDef>>,
    #[serde(default)]
    rows: Option<Vec<Value>>,
    #[serde(default)]
    has_errors: Option<bool>,
    #[serde(default)]
    cancelled: Option<bool>,
    #[serde(default)]
    one_api_errors: Option<Vec<Value>>,
}

/// A v2 response: `[DataSetHeader, DataTable..., DataSetCompletion]`, or
/// the progressive form with TableHeader / TableFragment / TableCompletion.
/// Read straight into columns by [`super::kusto_v2`].
pub fn read_v2(origin: &str, bytes: &[u8], context: BatchContext) -> Result<Batch, InputError> {
    super::kusto_v2::parse_v2_bytes(origin, bytes, context)
}

/// The former reader of v2 responses, through `serde_json::Value` rows:
/// slow and memory-hungry, kept as the reference the streaming reader is
/// compared with in tests.
#[cfg(test)]
pub(super) fn read_v2_values(
    origin: &str,
    bytes: &[u8],
    context: BatchContext,
) -> Result<Batch, InputError> {
    const PRIMARY_RESULT: &str = "PrimaryResult";
    let frames: Vec<Frame> = serde_json::from_slice(bytes)
        .map_err(|e| InputError::format(origin, format!("not a Kusto v2 response: {e}")))?;
    let mut primary: Option<(i64, BatchBuilder)> = None;
    let mut completed = false;
    let mut row = 0usize;
    for frame in frames {
        let is_primary = |f: &Frame| f.table_kind.as_deref() == Some(PRIMARY_RESULT);
        match frame.frame_type.as_str() {
            "DataTable" | "TableHeader" if primary.is_none() && is_primary(&frame) => {
                let builder = builder_for(origin, frame.columns.as_deref().unwrap_or_default())?;
                let mut entry = (frame.table_id.unwrap_or(-1), builder);
                if let Some(rows) = &frame.rows {
                    push_rows(origin, &mut entry.1, rows, &mut row)?;
                }
                primary = Some(entry);
            }
            "TableFragment" => {
                if let (Some((id, builder)), Some(rows)) = (&mut primary, &frame.rows)
                    && frame.table_id == Some(*id)
                {
                    push_rows(origin, builder, rows, &mut row)?;
                }
            }
            "TableCompletion" => fail_on_errors(origin, frame.one_api_errors.as_deref())?,
            "DataSetCompletion" => {
                completed = true;
                if frame.has_errors == Some(true) || frame.cancelled == Some(true) {
                    fail_on_errors(origin, frame.one_api_errors.as_deref())?;
                    return Err(InputError::QueryFailed {
                        origin: origin.to_string(),
                        message: if frame.cancelled == Some(true) {
                            "the query was cancelled".to_string()
                        } else {
                            "the response reports errors (HasErrors)".to_string()
                        },
                    });
                }
            }
            _ => {}
        }
    }
    if !completed {
        return Err(InputError::format(
            origin,
            "the response ends without a DataSetCompletion frame (cut short?)",
        ));
    }
    let (_, builder) = primary.ok_or_else(|| {
        InputError::format(origin, "the response has no table of kind PrimaryResult")
    })?;
    Ok(builder.finish(context))
}

/// A v1 response: `{"Tables": [...]}`; with a table of contents (the last
/// table), the first table of kind `QueryResult` is the primary result.
pub fn read_v1(origin: &str, bytes: &[u8], context: BatchContext) -> Result<Batch, InputError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct V1 {
        tables: Vec<V1Table>,
        #[serde(default)]
        exceptions: Option<Vec<Value>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct V1Table {
        columns: Vec<ColumnDef>,
        rows: Vec<Value>,
    }
    let v1: V1 = serde_json::from_slice(bytes)
        .map_err(|e| InputError::format(origin, format!("not a Kusto v1 response: {e}")))?;
    if let Some(exceptions) = v1.exceptions.filter(|e| !e.is_empty()) {
        return Err(InputError::QueryFailed {
            origin: origin.to_string(),
            message: exceptions
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let index = primary_v1_table(
        &v1.tables
            .iter()
            .map(|t| (&t.columns, &t.rows))
            .collect::<Vec<_>>(),
    );
    let table = v1
        .tables
        .get(index)
        .ok_or_else(|| InputError::format(origin, "the response has no tables"))?;
    let mut builder = builder_for(origin, &table.columns)?;
    let mut row = 0;
    push_rows(origin, &mut builder, &table.rows, &mut row)?;
    Ok(builder.finish(context))
}

fn primary_v1_table(tables: &[(&Vec<ColumnDef>, &Vec<Value>)]) -> usize {
    let Some((toc_columns, toc_rows)) = tables.last().filter(|_| tables.len() > 1) else {
        return 0;
    };
    let position = |name: &str| toc_columns.iter().position(|c| c.column_name == name);
    let (Some(ordinal), Some(kind)) = (position("Ordinal"), position("Kind")) else {
        return 0;
    };
    toc_rows
        .iter()
        .filter_map(Value::as_array)
        .find(|r| r.get(kind).and_then(Value::as_str) == Some("QueryResult"))
        .and_then(|r| r.get(ordinal))
        .and_then(Value::as_u64)
        .map_or(0, |o| o as usize)
}

pub(super) fn builder_for(origin: &str, columns: &[ColumnDef]) -> Result<BatchBuilder, InputError> {
    let mut builders = Vec::with_capacity(columns.len());
    for c in columns {
        let spelled = c
            .column_type
            .as_deref()
            .or(c.data_type.as_deref())
            .unwrap_or("");
        let ty = KustoType::parse(spelled).ok_or_else(|| {
            InputError::format(
                origin,
                format!("column `{}` has unknown type `{spelled}`", c.column_name),
            )
        })?;
        builders.push(ColumnBuilder::new(&c.column_name, ty));
    }
    Ok(BatchBuilder::new(builders))
}

fn push_rows(
    origin: &str,
    builder: &mut BatchBuilder,
    rows: &[Value],
    row: &mut usize,
) -> Result<(), InputError> {
    for value in rows {
        *row += 1;
        let Some(cells) = value.as_array() else {
            // v2 puts an in-band error object where a row would be.
            return Err(InputError::QueryFailed {
                origin: origin.to_string(),
                message: format!("error in place of row {row}: {value}"),
            });
        };
        if cells.len() != builder.columns.len() {
            return Err(InputError::format(
                origin,
                format!(
                    "row {row} has {} values for {} columns",
                    cells.len(),
                    builder.columns.len()
                ),
            ));
        }
        for (column, cell) in builder.columns.iter_mut().zip(cells) {
            push_json(column, cell).map_err(|e| match e {
                JsonValueError::Mismatch(reason) => InputError::Value {
                    origin: origin.to_string(),
                    row: *row,
                    column: column.name().to_string(),
                    ty: column.kusto_type(),
                    value: show_value(&cell.to_string()),
                    reason: reason.to_string(),
                },
                JsonValueError::TooLarge(source) => InputError::TooLarge {
                    origin: origin.to_string(),
                    source,
                },
            })?;
        }
    }
    Ok(())
}

pub(super) fn fail_on_errors(origin: &str, errors: Option<&[Value]>) -> Result<(), InputError> {
    match errors {
        Some(errors) if !errors.is_empty() => Err(InputError::QueryFailed {
            origin: origin.to_string(),
            message: errors
                .iter()
                .map(one_api_message)
                .collect::<Vec<_>>()
                .join("; "),
        }),
        _ => Ok(()),
    }
}

/// `{"error": {"code": ..., "message": ...}}` as `code: message`.
fn one_api_message(e: &Value) -> String {
    let inner = e.get("error").unwrap_or(e);
    // `@message` carries the detail (e.g. E_QUERY_RESULT_SET_TOO_LARGE);
    // `message` is often only "Request is invalid and cannot be executed."
    let message = inner
        .get("@message")
        .or_else(|| inner.get("message"))
        .and_then(Value::as_str);
    match (inner.get("code").and_then(Value::as_str), message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_string(),
        _ => e.to_string(),
    }
}
