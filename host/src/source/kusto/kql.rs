//! The KQL the host sends. Names are bracket-quoted and refused when they
//! hold anything that could end the quote; values never enter the text:
//! they are declared as query parameters and sent beside it.

use std::time::{Duration, UNIX_EPOCH};

/// Longest entity name ADX accepts.
pub const MAX_NAME_LEN: usize = 1024;

/// Ticks (100 ns) per second.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` cannot be quoted safely in KQL: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// `['name']`, for a table or column name made of letters, digits, `_`,
/// `-`, `.` and spaces (what ADX allows in entity names).
pub fn quote_name(name: &str) -> Result<String, NameError> {
    let fail = |reason| NameError {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(fail("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(fail("it is longer than 1024 bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
    {
        return Err(fail(
            "only letters, digits, `_`, `-`, `.` and spaces are allowed",
        ));
    }
    Ok(format!("['{name}']"))
}

/// A datetime literal with all seven fractional digits, e.g.
/// `datetime(2025-06-25T10:00:00.0000000Z)`: the value of a declared
/// `datetime` parameter.
pub fn datetime_literal(ticks: i64) -> String {
    format!("datetime({})", format_ticks(ticks))
}

/// RFC 3339 with 100 ns precision (`2025-06-25T10:00:00.0000000Z`).
pub fn format_ticks(ticks: i64) -> String {
    let ticks = ticks.max(0);
    let secs = ticks / TICKS_PER_SECOND;
    let frac = ticks % TICKS_PER_SECOND;
    let at = UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs());
    let whole = humantime::format_rfc3339_seconds(at).to_string();
    let date_time = whole.trim_end_matches('Z');
    format!("{date_time}.{frac:07}Z")
}

/// Declared parameters: `declare query_parameters(a:datetime, b:string);`.
fn declare(names: &[(&str, &str)]) -> String {
    let list: Vec<String> = names.iter().map(|(n, ty)| format!("{n}:{ty}")).collect();
    format!("declare query_parameters({});\n", list.join(", "))
}

/// Names of the parameters of [`window_query`].
pub const FROM: &str = "_from";
pub const TO: &str = "_to";
/// Names of the parameters a MetricsExporter's `body` uses (as adx-mon's).
pub const START_TIME: &str = "_startTime";
pub const END_TIME: &str = "_endTime";

/// What bounds a window of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowColumn {
    /// `ingestion_time()`: every row is read once, however late it landed.
    IngestionTime,
    /// A datetime column, for tables without an ingestion-time policy.
    Timestamp(String),
}

/// The column [`stable_order`] sorts by; added, sorted on and dropped
/// again, so the response never holds it.
pub const ORDER_KEY: &str = "__km_order";

/// The end of a window query: its rows in an order that is the same every
/// time the same rows are read, computed by ADX.
///
/// ADX returns rows in no fixed order, and the host resumes a partly
/// delivered window by reading it again and skipping the chunks it already
/// delivered, which needs the same rows in the same chunks. Sorting on the
/// client meant holding the whole result and comparing rows column by
/// column; here ADX sorts by one 64-bit integer per row instead:
/// `hash_xxhash64` of the row's text (`pack_array` of the `columns` the
/// query returns, which are those the transform reads; `pack_all()` when
/// it returns every column). Rows with the same key are the same in every
/// column the guest sees (but for a 64-bit collision), so how ties fall
/// does not matter. `hash_xxhash64` rather than `hash()`: ADX documents
/// that `hash()`'s algorithm may change from one query to the next, and
/// the order must hold across reads.
///
/// Cost, in ADX: per row, a dynamic value, its JSON text and its hash; then
/// a sort of one long per row, for which the result is gathered before it
/// is sent (it is gathered to be sent anyway). The key is projected away,
/// so the answer is no larger.
pub fn stable_order(columns: &[String]) -> Result<String, NameError> {
    let key = quote_name(ORDER_KEY)?;
    let packed = if columns.is_empty() {
        "pack_all()".to_string()
    } else {
        let quoted = columns
            .iter()
            .map(|c| quote_name(c))
            .collect::<Result<Vec<_>, _>>()?;
        format!("pack_array({})", quoted.join(", "))
    };
    Ok(format!(
        "\n| extend {key} = hash_xxhash64(tostring({packed}))\n| order by {key} asc\n| project-away {key}"
    ))
}

/// Rows of `table` in the window `(_from, _to]`, only `columns` (all when
/// empty), in [`stable_order`].
pub fn window_query(
    table: &str,
    by: &WindowColumn,
    columns: &[String],
) -> Result<String, NameError> {
    let bound = match by {
        WindowColumn::IngestionTime => "ingestion_time()".to_string(),
        WindowColumn::Timestamp(c) => quote_name(c)?,
    };
    let mut q = declare(&[(FROM, "datetime"), (TO, "datetime")]);
    q.push_str(&quote_name(table)?);
    q.push_str(&format!("\n| where {bound} > {FROM} and {bound} <= {TO}"));
    if !columns.is_empty() {
        let quoted = columns
            .iter()
            .map(|c| quote_name(c))
            .collect::<Result<Vec<_>, _>>()?;
        q.push_str(&format!("\n| project {}", quoted.join(", ")));
    }
    q.push_str(&stable_order(columns)?);
    Ok(q)
}

/// The host's cluster labels as the `string` parameters a body may use,
/// named as adx-mon names them in SummaryRules (`_<label>`), in label
/// order. Their values travel beside the query, never in its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelParameters {
    /// (`_<label>`, value).
    pub usable: Vec<(String, String)>,
    /// Labels whose key is not a KQL identifier, or whose parameter name
    /// is a window parameter's: not passed.
    pub unusable: Vec<String>,
}

impl LabelParameters {
    pub fn new<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> LabelParameters {
        let mut out = LabelParameters::default();
        for (key, value) in labels {
            let name = format!("_{key}");
            let identifier = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key.is_empty() && identifier && name != START_TIME && name != END_TIME {
                out.usable.push((name, value.clone()));
            } else {
                out.unusable.push(key.clone());
            }
        }
        out
    }

    /// Every parameter a body can use, for messages.
    pub fn available(&self) -> String {
        let mut names = vec![START_TIME, END_TIME];
        names.extend(self.usable.iter().map(|(n, _)| n.as_str()));
        names.join(", ")
    }
}

/// A MetricsExporter's own query, with `_startTime`, `_endTime` and the
/// cluster labels declared, its result in [`stable_order`] over all of its
/// columns (the guest gets them all; an order of the body's own is
/// replaced).
pub fn body_query(body: &str, labels: &LabelParameters) -> String {
    let mut names = vec![(START_TIME, "datetime"), (END_TIME, "datetime")];
    names.extend(labels.usable.iter().map(|(n, _)| (n.as_str(), "string")));
    let mut q = declare(&names);
    q.push_str(body.trim().trim_end_matches(';'));
    // The body ends on a line of its own: a trailing `// comment` cannot
    // swallow the order.
    q.push_str(&stable_order(&[]).unwrap_or_default());
    q
}

/// The columns of a table and their types.
pub fn schema_query(table: &str) -> Result<String, NameError> {
    Ok(format!(
        "{}\n| getschema\n| project ColumnName, ColumnType",
        quote_name(table)?
    ))
}

/// One row's count (0 or 1): whether `table` has any row, or any row with
/// an ingestion time.
pub fn probe_query(table: &str, with_ingestion_time: bool) -> Result<String, NameError> {
    let filter = if with_ingestion_time {
        "\n| where isnotnull(ingestion_time())"
    } else {
        ""
    };
    Ok(format!("{}{filter}\n| take 1\n| count", quote_name(table)?))
}

/// The management command that shows whether `ingestion_time()` is kept.
pub fn ingestion_policy_command(table: &str) -> Result<String, NameError> {
    Ok(format!(
        ".show table {} policy ingestiontime",
        quote_name(table)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_or_refused() {
        assert_eq!(quote_name("Cpu_Usage-5m").unwrap(), "['Cpu_Usage-5m']");
        assert_eq!(quote_name("with space").unwrap(), "['with space']");
        for bad in ["", "a']; .drop table T", "a\\b", "x\ny", "a\"b", "t|x"] {
            assert!(quote_name(bad).is_err(), "{bad:?}");
        }
        assert!(quote_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn datetimes_keep_all_ticks() {
        // 2025-06-25T10:00:00Z
        let t = 1_750_845_600 * TICKS_PER_SECOND;
        assert_eq!(format_ticks(t), "2025-06-25T10:00:00.0000000Z");
        assert_eq!(
            datetime_literal(t + 1234567),
            "datetime(2025-06-25T10:00:00.1234567Z)"
        );
        assert_eq!(format_ticks(t - 1), "2025-06-25T09:59:59.9999999Z");
        assert_eq!(
            crate::source::values::parse_datetime(&format_ticks(t - 1)).ok(),
            Some(t - 1)
        );
    }

    #[test]
    fn queries_declare_their_parameters() {
        let q = window_query(
            "CpuByNode",
            &WindowColumn::IngestionTime,
            &["Node".into(), "Value".into()],
        )
        .unwrap();
        assert_eq!(
            q,
            "declare query_parameters(_from:datetime, _to:datetime);\n['CpuByNode']\n| where ingestion_time() > _from and ingestion_time() <= _to\n| project ['Node'], ['Value']\n| extend ['__km_order'] = hash_xxhash64(tostring(pack_array(['Node'], ['Value'])))\n| order by ['__km_order'] asc\n| project-away ['__km_order']"
        );
        let q = window_query("T", &WindowColumn::Timestamp("Ts".into()), &[]).unwrap();
        assert!(
            q.ends_with("| where ['Ts'] > _from and ['Ts'] <= _to\n| extend ['__km_order'] = hash_xxhash64(tostring(pack_all()))\n| order by ['__km_order'] asc\n| project-away ['__km_order']"),
            "{q}"
        );
        assert!(window_query("T", &WindowColumn::IngestionTime, &["a'b".into()]).is_err());
        let order = "\n| extend ['__km_order'] = hash_xxhash64(tostring(pack_all()))\n| order by ['__km_order'] asc\n| project-away ['__km_order']";
        assert_eq!(
            body_query(
                "T | where Ts between (_startTime .. _endTime);\n",
                &LabelParameters::default()
            ),
            format!(
                "declare query_parameters(_startTime:datetime, _endTime:datetime);\nT | where Ts between (_startTime .. _endTime){order}"
            )
        );
        assert_eq!(
            body_query(
                "T | take 5 // the last line is a comment",
                &LabelParameters::default()
            ),
            format!(
                "declare query_parameters(_startTime:datetime, _endTime:datetime);\nT | take 5 // the last line is a comment{order}"
            )
        );
    }

    #[test]
    fn cluster_labels_are_declared_string_parameters_never_text() {
        let labels: std::collections::BTreeMap<String, String> = [
            ("region", "east'us\"; .drop table T"),
            ("env", "prod"),
            ("k8s.cluster", "c1"),
            ("startTime", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = LabelParameters::new(&labels);
        assert_eq!(
            p.usable,
            vec![
                ("_env".to_string(), "prod".to_string()),
                (
                    "_region".to_string(),
                    "east'us\"; .drop table T".to_string()
                )
            ]
        );
        assert_eq!(p.unusable, vec!["k8s.cluster", "startTime"]);
        assert_eq!(p.available(), "_startTime, _endTime, _env, _region");
        let q = body_query("T | where Region == _region", &p);
        assert!(
            q.starts_with("declare query_parameters(_startTime:datetime, _endTime:datetime, _env:string, _region:string);\nT | where Region == _region"),
            "{q}"
        );
        assert!(!q.contains("drop") && !q.contains("prod"), "{q}");
    }
}
