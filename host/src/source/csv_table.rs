//! CSV whose header names each column with its Kusto type:
//! `ServiceName:string,metric_value:real,timestamp:datetime`.
//! An empty field is a null, except in a string column, where it is "".

use super::batch::{BatchBuilder, ColumnBuilder};
use super::error::{InputError, show_value};
use crate::wit::{Batch, BatchContext, KustoType};

/// Reads the whole file. Rows are numbered from 1 after the header.
pub fn read(origin: &str, bytes: &[u8], context: BatchContext) -> Result<Batch, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| InputError::format(origin, format!("cannot read the CSV header: {e}")))?
        .clone();
    let mut builder = header_builder(origin, &headers)?;
    for (i, record) in reader.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| InputError::format(origin, format!("row {row}: {e}")))?;
        push_record(origin, &mut builder, &record, row)?;
    }
    Ok(builder.finish(context))
}

/// Columns from a `Name:type` header.
pub fn header_builder(
    origin: &str,
    headers: &csv::StringRecord,
) -> Result<BatchBuilder, InputError> {
    let mut columns = Vec::with_capacity(headers.len());
    for field in headers {
        let (name, ty) = field.rsplit_once(':').ok_or_else(|| {
            InputError::format(
                origin,
                format!("header `{field}` has no type; write it as `{field}:string` (or long, real, datetime, ...)"),
            )
        })?;
        let name = name.trim();
        let kusto_type = KustoType::parse(ty).ok_or_else(|| {
            let known: Vec<&str> = KustoType::ALL.iter().map(|t| t.name()).collect();
            InputError::format(
                origin,
                format!(
                    "header `{field}`: unknown type `{ty}` (known: {})",
                    known.join(", ")
                ),
            )
        })?;
        if name.is_empty() || columns.iter().any(|c: &ColumnBuilder| c.name() == name) {
            return Err(InputError::format(
                origin,
                format!("header `{field}`: empty or repeated column name"),
            ));
        }
        columns.push(ColumnBuilder::new(name, kusto_type));
    }
    Ok(BatchBuilder::new(columns))
}

/// Appends one record; on a bad value nothing of the record is kept.
pub fn push_record(
    origin: &str,
    builder: &mut BatchBuilder,
    record: &csv::StringRecord,
    row: usize,
) -> Result<(), InputError> {
    let rows_before = builder.rows();
    for (column, field) in builder.columns.iter_mut().zip(record.iter()) {
        let pushed = column
            .push_parsed(field)
            .map_err(|source| InputError::TooLarge {
                origin: origin.to_string(),
                source,
            })
            .and_then(|r| {
                r.map_err(|reason| InputError::Value {
                    origin: origin.to_string(),
                    row,
                    column: column.name().to_string(),
                    ty: column.kusto_type(),
                    value: show_value(field),
                    reason: reason.to_string(),
                })
            });
        if let Err(e) = pushed {
            builder.truncate(rows_before);
            return Err(e);
        }
    }
    Ok(())
}
