//! What the host checks about a table before reading it: its columns
//! against what the transform needs, and whether ADX keeps ingestion times.

use serde_json::Value;

use super::client::{KustoClient, Query, response_error};
use super::error::KustoError;
use super::kql;
use crate::source::InputError;
use crate::source::batch::sample_context;
use crate::source::kusto_v2::parse_v2_bytes;
use crate::wit::{ColumnValues, KustoType, Requirements};

/// A column as the table declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    /// `None` for a type this host does not know.
    pub ty: Option<KustoType>,
    pub spelled: String,
}

/// Every required column missing or of a type the transform does not
/// accept, in one message; `Ok` when the table has what is needed.
pub fn check_columns(requirements: &Requirements, columns: &[TableColumn]) -> Result<(), String> {
    let mut problems = Vec::new();
    for need in &requirements.columns {
        match columns.iter().find(|c| c.name == need.name) {
            None => problems.push(format!("column `{}` is missing", need.name)),
            Some(c) => {
                let fits = need.types.is_empty() || c.ty.is_some_and(|t| need.types.contains(&t));
                if !fits {
                    let wanted: Vec<&str> = need.types.iter().map(|t| t.name()).collect();
                    problems.push(format!(
                        "column `{}` is {}, the transform accepts {}",
                        need.name,
                        c.spelled,
                        wanted.join(" or ")
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let have: Vec<String> = columns
        .iter()
        .map(|c| format!("{}:{}", c.name, c.spelled))
        .collect();
    Err(format!(
        "{} (the table has {})",
        problems.join("; "),
        if have.is_empty() {
            "no columns".to_string()
        } else {
            have.join(", ")
        }
    ))
}

/// The table's columns (`getschema`).
pub async fn table_columns(
    client: &KustoClient,
    database: &str,
    table: &str,
) -> Result<Vec<TableColumn>, KustoError> {
    let csl = kql::schema_query(table).map_err(|e| name_error(database, e))?;
    let answer = client
        .query(&Query {
            database: database.to_string(),
            csl,
            parameters: Vec::new(),
            max_records: None,
            activity: "Schema",
        })
        .await?;
    let origin = format!("schema of {database}.{table}");
    let batch = parse_v2_bytes(&origin, &answer.body, sample_context(table))
        .map_err(|e| response_error(database, &answer.request_id, e))?;
    let text = |name: &str| {
        batch
            .columns
            .iter()
            .find(|c| c.name == name && c.text_at(0).is_some())
    };
    let (Some(names), Some(types)) = (text("ColumnName"), text("ColumnType")) else {
        return Err(response_error(
            database,
            &answer.request_id,
            InputError::format(
                &origin,
                "the answer has no ColumnName and ColumnType columns",
            ),
        ));
    };
    Ok((0..batch.row_count as usize)
        .map(|row| {
            let spelled = types.text_at(row).unwrap_or_default().to_string();
            TableColumn {
                name: names.text_at(row).unwrap_or_default().to_string(),
                ty: KustoType::parse(&spelled),
                spelled,
            }
        })
        .collect())
}

/// Whether `ingestion_time()` has values in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestionTime {
    Kept,
    NotKept,
    /// No policy set and no rows yet: decided when rows arrive.
    Unknown,
}

/// The table's ingestion-time policy; when none is set explicitly, its rows
/// tell (new tables keep ingestion times unless the policy says otherwise,
/// and rows ingested before a policy change have none).
pub async fn ingestion_time(
    client: &KustoClient,
    database: &str,
    table: &str,
) -> Result<IngestionTime, KustoError> {
    let csl = kql::ingestion_policy_command(table).map_err(|e| name_error(database, e))?;
    let answer = client.management(database, &csl).await?;
    let origin = format!("ingestion-time policy of {database}.{table}");
    let (columns, rows) = first_table_v1(&origin, &answer.body)
        .map_err(|e| response_error(database, &answer.request_id, e))?;
    let Some(at) = columns.iter().position(|c| c == "Policy") else {
        return Err(response_error(
            database,
            &answer.request_id,
            InputError::format(&origin, "the answer has no Policy column"),
        ));
    };
    let policy = rows.first().and_then(|r| r.get(at));
    let enabled = match policy {
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|p| p.get("IsEnabled").and_then(Value::as_bool)),
        Some(Value::Object(p)) => p.get("IsEnabled").and_then(Value::as_bool),
        _ => None,
    };
    match enabled {
        Some(true) => return Ok(IngestionTime::Kept),
        Some(false) => return Ok(IngestionTime::NotKept),
        None => {}
    }
    if probe(client, database, table, true).await? {
        return Ok(IngestionTime::Kept);
    }
    Ok(if probe(client, database, table, false).await? {
        IngestionTime::NotKept
    } else {
        IngestionTime::Unknown
    })
}

async fn probe(
    client: &KustoClient,
    database: &str,
    table: &str,
    with_ingestion_time: bool,
) -> Result<bool, KustoError> {
    let csl = kql::probe_query(table, with_ingestion_time).map_err(|e| name_error(database, e))?;
    let answer = client
        .query(&Query {
            database: database.to_string(),
            csl,
            parameters: Vec::new(),
            max_records: None,
            activity: "Probe",
        })
        .await?;
    let origin = format!("rows of {database}.{table}");
    let batch = parse_v2_bytes(&origin, &answer.body, sample_context(table))
        .map_err(|e| response_error(database, &answer.request_id, e))?;
    Ok(batch.columns.first().is_some_and(|c| match &c.values {
        ColumnValues::Longs(v) => v.first().is_some_and(|n| *n > 0),
        _ => false,
    }))
}

fn name_error(database: &str, e: kql::NameError) -> KustoError {
    KustoError::new(
        database,
        "-",
        super::error::KustoErrorKind::BadName(e.to_string()),
    )
}

/// Column names and rows of the first table of a v1 answer.
#[allow(clippy::type_complexity)]
fn first_table_v1(origin: &str, body: &[u8]) -> Result<(Vec<String>, Vec<Vec<Value>>), InputError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| InputError::format(origin, format!("not a Kusto v1 response: {e}")))?;
    let table = v
        .get("Tables")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .ok_or_else(|| InputError::format(origin, "the response has no Tables"))?;
    let columns = table
        .get("Columns")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("ColumnName").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let rows = table
        .get("Rows")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|row| row.as_array().cloned()).collect())
        .unwrap_or_default();
    Ok((columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::ColumnRequirement;

    fn col(name: &str, ty: &str) -> TableColumn {
        TableColumn {
            name: name.into(),
            ty: KustoType::parse(ty),
            spelled: ty.into(),
        }
    }

    #[test]
    fn missing_and_mistyped_columns_are_named_together() {
        let needs = Requirements {
            columns: vec![
                ColumnRequirement {
                    name: "Value".into(),
                    types: vec![KustoType::Real, KustoType::Long],
                },
                ColumnRequirement {
                    name: "Node".into(),
                    types: vec![],
                },
                ColumnRequirement {
                    name: "Ts".into(),
                    types: vec![KustoType::Datetime],
                },
            ],
            event_time_column: None,
        };
        let ok = [
            col("Ts", "datetime"),
            col("Node", "string"),
            col("Value", "real"),
        ];
        check_columns(&needs, &ok).unwrap();
        let e = check_columns(&needs, &[col("Ts", "string"), col("Value", "long")]).unwrap_err();
        assert_eq!(
            e,
            "column `Node` is missing; column `Ts` is string, the transform accepts datetime (the table has Ts:string, Value:long)"
        );
    }

    #[test]
    fn small_answers_are_read() {
        let v1 = br#"{"Tables":[{"TableName":"Table_0","Columns":[{"ColumnName":"Policy","DataType":"String"}],"Rows":[["{\"IsEnabled\":true}"]]}]}"#;
        let (c, r) = first_table_v1("t", v1).unwrap();
        assert_eq!((c, r.len()), (vec!["Policy".to_string()], 1));
    }
}
