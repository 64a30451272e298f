//! A job reading ADX: window after window from the stored progress until the
//! settled edge, each window queried, transformed and delivered before the
//! progress moves to its end. A window whose result is too large is halved
//! (down to `minWindow`) and the rest read by the next windows.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::job::{Job, JobError, JobReport};
use crate::source::kusto::client::response_error;
use crate::source::kusto::kql::{self, WindowColumn};
use crate::source::kusto::table::{
    IngestionTime, TableColumn, check_columns, ingestion_time, table_columns,
};
use crate::source::kusto::window::{
    self, TICK, Window, next_aligned_window, next_ingestion_window, now_ticks, ticks,
};
use crate::source::kusto::{KustoClient, KustoConfig, KustoError, Query};
use crate::source::kusto_v2::parse_v2_skipping_bad_rows;
use crate::source::local_table::BadRow;
use crate::source::values::parse_datetime;
use crate::state::Progress;
use crate::telemetry::metrics::RuleLabels;
use crate::wit::{Batch, ColumnValues};

/// The ADX side of the host: one client, and what was learnt about each
/// rule's table.
pub struct KustoRuntime {
    pub client: KustoClient,
    pub config: KustoConfig,
    /// By job key: how the rule's table is read, once its checks passed.
    prepared: Mutex<HashMap<String, WindowColumn>>,
}

impl KustoRuntime {
    pub fn new(client: KustoClient, config: KustoConfig) -> KustoRuntime {
        KustoRuntime {
            client,
            config,
            prepared: Mutex::new(HashMap::new()),
        }
    }
}

fn kusto_error(job: &Job<'_>, source: KustoError) -> JobError {
    JobError::Kusto {
        metrics_exporter: job.plan.key.clone(),
        rule: job.rule.key.clone(),
        source: Box::new(source),
    }
}

pub async fn run(job: &Job<'_>, report: &mut JobReport) -> Result<(), JobError> {
    let Some(kusto) = job.shared.kusto.as_ref() else {
        return Err(JobError::Internal("no ADX client".into()));
    };
    let config = &kusto.config;
    let window_column = match &job.rule.body {
        Some(_) => None,
        None => match prepare(job, kusto).await? {
            Some(w) => Some(w),
            // An empty table with no policy: nothing to read, and nothing
            // yet tells how to read it.
            None => return Ok(()),
        },
    };
    let interval = ticks(job.plan.interval);
    let min_window = ticks(config.min_window);
    let max_window = ticks(config.max_window);
    let mut settle = ticks(config.settle_delay);
    if let Some(WindowColumn::Timestamp(_)) = &window_column {
        settle += ticks(config.fallback_lookback);
    }
    let mut span = max_window;
    // The edge is fixed for the run: otherwise, with a small settle delay,
    // there would always be a newer sliver of time to read and a run would
    // never end.
    let now = now_ticks();
    loop {
        let from = job.shared.state.get(&job.key);
        let progress = match from.as_ref().and_then(|p| p.window_end.as_deref()) {
            None => None,
            Some(t) => Some(parse_datetime(t).map_err(|reason| {
                JobError::Internal(format!("stored windowEnd `{t}` for {}: {reason}", job.key))
            })?),
        };
        // A window partly delivered before is read again exactly: with its
        // rows in a fixed order the guest gives the same requests, and only
        // those not yet accepted are sent.
        let resume = from
            .as_ref()
            .and_then(|p| p.partial.as_ref())
            .and_then(|c| {
                Some(Window {
                    start: i64::try_from(c.start_offset?).ok()?,
                    end: i64::try_from(c.end_offset).ok()?,
                })
            })
            .filter(|w| w.start < w.end);
        let next = match (resume, &window_column) {
            (Some(w), _) => Some(w),
            (None, None) => next_aligned_window(progress, now, settle, interval),
            (None, Some(_)) => next_ingestion_window(progress, now, settle, interval, max_window),
        };
        let Some(next) = next else {
            return Ok(());
        };
        // A body's window is one whole interval: cutting it would split the
        // aggregates the query computes for it.
        let body_mode = window_column.is_none();
        let mut window = if body_mode || resume.is_some() {
            next
        } else {
            next.limit(span)
        };
        let (batch, bad_rows) = loop {
            match read(job, kusto, window_column.as_ref(), window).await {
                Ok(read) => break read,
                Err(e) if e.is_too_large() && !body_mode => {
                    let Some(half) = window.halve(min_window) else {
                        return Err(kusto_error(job, e));
                    };
                    tracing::warn!(
                        metrics_exporter = %job.plan.key, rule = %job.rule.key,
                        window_seconds = window::seconds(half.span()),
                        "result too large; reading half the window"
                    );
                    window = half;
                    span = half.span();
                }
                Err(e) if e.is_too_large() => {
                    return Err(JobError::Columns {
                        origin: format!(
                            "MetricsExporter {} (body on {})",
                            job.plan.key, job.rule.database
                        ),
                        message: format!(
                            "the query's result for one interval ({}) is over a query limit, and an interval is not cut in parts (that would split its aggregates): aggregate more in spec.body or raise guests.maxRowsPerBatch; {e}",
                            humantime::format_duration(job.plan.interval)
                        ),
                    });
                }
                Err(e) => return Err(kusto_error(job, e)),
            }
        };
        if window_column.is_none() {
            let columns: Vec<TableColumn> = batch
                .columns
                .iter()
                .map(|c| TableColumn {
                    name: c.name.clone(),
                    ty: Some(c.kusto_type),
                    spelled: c.kusto_type.name().to_string(),
                })
                .collect();
            check_columns(job.requirements, &columns).map_err(|message| JobError::Columns {
                origin: format!(
                    "MetricsExporter {} (body on {})",
                    job.plan.key, job.rule.database
                ),
                message,
            })?;
        }
        let origin = format!(
            "{} window ending {}",
            job.rule.key,
            kql::format_ticks(window.end)
        );
        job.count_bad_rows(&origin, &bad_rows, report);
        let rows_key = batch_digest(&batch);
        job.transform_and_deliver(
            from.as_ref(),
            batch,
            (Some(window.start.max(0) as u64), window.end.max(0) as u64),
            &rows_key,
            report,
        )
        .await?;
        let done = Progress {
            window_end: Some(kql::format_ticks(window.end)),
            ..Progress::default()
        };
        job.shared.state.commit(&job.key, done).await?;
        span = span.saturating_mul(2).min(max_window);
    }
}

/// Before the first read of a rule's table: its columns against the
/// transform's needs, and whether it keeps ingestion times.
async fn prepare(job: &Job<'_>, kusto: &KustoRuntime) -> Result<Option<WindowColumn>, JobError> {
    // A changed transform (other columns, another timestamp column) or a
    // rule pointing at another table is checked again.
    let cache_key = format!(
        "{}|{}|{}.{}|{}",
        job.plan.key,
        job.rule.key,
        job.rule.database,
        job.rule.table,
        hex::encode(&Sha256::digest(job.plan.transform.config_json.as_bytes())[..8])
    );
    if let Some(w) = lock(&kusto.prepared).get(&cache_key) {
        return Ok(Some(w.clone()));
    }
    let (database, table) = (&job.rule.database, &job.rule.table);
    let columns = table_columns(&kusto.client, database, table)
        .await
        .map_err(|e| kusto_error(job, e))?;
    check_columns(job.requirements, &columns).map_err(|message| JobError::Columns {
        origin: format!("rule {}: table {database}.{table}", job.rule.key),
        message,
    })?;
    let kept = ingestion_time(&kusto.client, database, table)
        .await
        .map_err(|e| kusto_error(job, e))?;
    let by = if kept == IngestionTime::Unknown {
        return Ok(None);
    } else if kept == IngestionTime::Kept {
        WindowColumn::IngestionTime
    } else {
        let column = timestamp_column(job, &columns).ok_or_else(|| JobError::Columns {
            origin: format!("rule {}: table {database}.{table}", job.rule.key),
            message: "the table has no ingestion-time policy and no datetime column to read it by (set transform.timestampColumn)".to_string(),
        })?;
        tracing::warn!(
            metrics_exporter = %job.plan.key, rule = %job.rule.key, table = %format!("{database}.{table}"), column = %column,
            lookback = %humantime::format_duration(kusto.config.fallback_lookback),
            "the table has no ingestion-time policy: reading it by its timestamp column; rows landing later than the lookback are not exported"
        );
        job.shared
            .metrics
            .timestamp_fallback
            .get_or_create(&RuleLabels {
                metrics_exporter: job.plan.key.clone(),
                rule: job.rule.key.clone(),
            })
            .set(1);
        WindowColumn::Timestamp(column)
    };
    lock(&kusto.prepared).insert(cache_key, by.clone());
    Ok(Some(by))
}

/// The event-time column the guest named in its requirements when it is a
/// datetime column of the table, else the only datetime column the
/// transform needs.
fn timestamp_column(job: &Job<'_>, columns: &[TableColumn]) -> Option<String> {
    let is_datetime = |name: &str| {
        columns
            .iter()
            .any(|c| c.name == name && c.ty == Some(crate::wit::KustoType::Datetime))
    };
    if let Some(c) = job
        .requirements
        .event_time_column
        .as_ref()
        .filter(|c| is_datetime(c))
    {
        return Some(c.clone());
    }
    let needed: Vec<&str> = job
        .requirements
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| is_datetime(n))
        .collect();
    match needed.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

/// One window's rows.
async fn read(
    job: &Job<'_>,
    kusto: &KustoRuntime,
    by: Option<&WindowColumn>,
    window: Window,
) -> Result<(Batch, Vec<BadRow>), KustoError> {
    let database = &job.rule.database;
    let quoted = |e: kql::NameError| {
        KustoError::new(
            database,
            "-",
            crate::source::kusto::KustoErrorKind::BadName(e.to_string()),
        )
    };
    let (csl, parameters) = match (by, &job.rule.body) {
        (_, Some(body)) => (
            kql::body_query(body),
            vec![
                (
                    kql::START_TIME.to_string(),
                    kql::datetime_literal(window.start),
                ),
                (
                    kql::END_TIME.to_string(),
                    kql::datetime_literal(window.end - TICK),
                ),
            ],
        ),
        (Some(by), None) => {
            let columns: Vec<String> = job
                .requirements
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect();
            (
                kql::window_query(&job.rule.table, by, &columns).map_err(quoted)?,
                vec![
                    (kql::FROM.to_string(), kql::datetime_literal(window.start)),
                    (kql::TO.to_string(), kql::datetime_literal(window.end)),
                ],
            )
        }
        (None, None) => unreachable!("a table job is prepared before reading"),
    };
    let answer = kusto
        .client
        .query(&Query {
            database: database.clone(),
            csl,
            parameters,
            max_records: Some(job.shared.config.max_rows_per_batch),
            activity: "Window",
        })
        .await?;
    let mut context = job.context();
    context.window_start = Some(window.start.saturating_mul(100));
    context.window_end = Some(window.end.saturating_mul(100));
    let origin = format!(
        "{database} request {} ({} .. {})",
        answer.request_id,
        kql::format_ticks(window.start),
        kql::format_ticks(window.end)
    );
    let request_id = answer.request_id.clone();
    let body = answer.body;
    let parsed =
        tokio::task::spawn_blocking(move || parse_v2_skipping_bad_rows(&origin, &body, context))
            .await
            .map_err(|e| {
                KustoError::new(
                    database,
                    &request_id,
                    crate::source::kusto::KustoErrorKind::Network(e.to_string()),
                )
            })?;
    let (mut batch, bad_rows) = parsed.map_err(|e| response_error(database, &request_id, e))?;
    crate::source::batch::sort_rows(&mut batch);
    Ok((batch, bad_rows))
}

/// Tells apart two results of the same window (rows already in a fixed
/// order): a partly delivered window is only resumed when the same rows
/// came back.
fn batch_digest(batch: &Batch) -> String {
    let mut h = Sha256::new();
    h.update(batch.row_count.to_le_bytes());
    for c in &batch.columns {
        h.update(c.name.as_bytes());
        h.update(&c.validity);
        match &c.values {
            ColumnValues::Booleans(v) => h.update(v),
            ColumnValues::Longs(v) | ColumnValues::Ticks(v) => {
                v.iter().for_each(|x| h.update(x.to_le_bytes()))
            }
            ColumnValues::Reals(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            ColumnValues::Text(t) => {
                h.update(t.data.as_bytes());
                t.offsets.iter().for_each(|x| h.update(x.to_le_bytes()));
            }
            ColumnValues::Dictionary(d) => {
                h.update(d.values.data.as_bytes());
                d.values
                    .offsets
                    .iter()
                    .for_each(|x| h.update(x.to_le_bytes()));
                d.indices.iter().for_each(|x| h.update(x.to_le_bytes()));
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
