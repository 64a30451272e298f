//! An ADX table or a MetricsExporter's own body as a source of chunks:
//! window after window from the job's cursor to the settled edge (fixed
//! when the run starts), each window's rows in chunks of at most
//! `maxRowsPerBatch`. A table window whose result is too large is halved
//! (down to `minWindow`); a body window is one whole interval, never cut,
//! since that would split the aggregates its query computes.
//!
//! Chunks of one window carry the window and their index; the progress
//! after a chunk that is not the window's last records how many chunks of
//! the window were delivered and a digest chained over them, so a run that
//! stopped in the middle of a window reads it again and skips exactly
//! those, provided the same rows come back in the same order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::client::response_error;
use super::kql::{self, WindowColumn};
use super::table::{IngestionTime, TableColumn, check_columns, ingestion_time, table_columns};
use super::window::{
    self, TICK, Window, next_aligned_window, next_ingestion_window, now_ticks, ticks,
};
use super::{KustoClient, KustoConfig, KustoError, KustoErrorKind, Query};
use crate::source::batch::{slice, sort_rows};
use crate::source::chunk::{Chunk, ChunkPosition, SourceError};
use crate::source::kusto_v2::parse_v2_skipping_bad_rows;
use crate::source::local_table::BadRow;
use crate::state::{Cursor, PartialChunk, Progress};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RuleLabels;
use crate::wit::{Batch, BatchContext, ColumnValues, Requirements};

/// The ADX side of the host: one client, and what was learnt about each
/// rule's table.
pub struct KustoRuntime {
    pub client: KustoClient,
    pub config: KustoConfig,
    /// By job: how the rule's table is read, once its checks passed.
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

/// What a Kusto source reads, for whom.
pub struct Target {
    /// `namespace/name` of the MetricsExporter and of the rule.
    pub metrics_exporter: String,
    pub rule: String,
    pub database: String,
    /// The rule's table; empty for a MetricsExporter's own body.
    pub table: String,
    pub body: Option<String>,
    pub interval: std::time::Duration,
    pub requirements: Arc<Requirements>,
    /// The transform's configuration: a changed one is checked again.
    pub config_json: String,
    pub max_rows: usize,
    pub context: BatchContext,
}

pub struct KustoSource {
    runtime: Arc<KustoRuntime>,
    metrics: Arc<Metrics>,
    target: Target,
    /// The settled edge of this run: fixed at its start, or with a small
    /// settle delay there would always be a newer sliver to read.
    now: i64,
    /// How the table is read (`None` for a body), once prepared.
    by: Option<Option<WindowColumn>>,
    /// The span table windows are read in, halved on a limit and doubled
    /// back after a window that fits.
    span: i64,
    /// The cursor of the last window delivered whole.
    cursor: Option<i64>,
    /// The window being handed out.
    current: Option<WindowRead>,
    /// The partly delivered window of `from`, until it has been read again.
    resume: Option<PartialChunk>,
    finished: bool,
}

struct WindowRead {
    window: Window,
    chunks: VecDeque<(Batch, Vec<BadRow>)>,
    /// Chunks handed out so far, and the digest chained over them.
    index: u32,
    chain: String,
}

impl KustoSource {
    pub fn new(
        runtime: Arc<KustoRuntime>,
        metrics: Arc<Metrics>,
        target: Target,
        from: Progress,
    ) -> KustoSource {
        let span = ticks(runtime.config.max_window);
        let resume = from.partial.clone().filter(|p| p.start_offset.is_some());
        KustoSource {
            cursor: from.window_end(),
            runtime,
            metrics,
            target,
            now: now_ticks(),
            by: None,
            span,
            current: None,
            resume,
            finished: false,
        }
    }

    fn error(&self, source: KustoError) -> SourceError {
        SourceError::Kusto {
            metrics_exporter: self.target.metrics_exporter.clone(),
            rule: self.target.rule.clone(),
            source: Box::new(source),
        }
    }

    pub async fn next(&mut self) -> Result<Option<Chunk>, SourceError> {
        if self.finished {
            return Ok(None);
        }
        if self.by.is_none() {
            let by = match &self.target.body {
                Some(_) => None,
                None => match self.prepare().await? {
                    Some(w) => Some(w),
                    // An empty table with no policy: nothing to read, and
                    // nothing yet tells how to read it.
                    None => {
                        self.finished = true;
                        return Ok(None);
                    }
                },
            };
            self.by = Some(by);
        }
        loop {
            if let Some(chunk) = self.take_chunk() {
                return Ok(Some(chunk));
            }
            let Some(window) = self.next_window() else {
                self.finished = true;
                return Ok(None);
            };
            self.read_window(window).await?;
        }
    }

    /// The next chunk of the window being read; its end marker (an empty
    /// chunk that moves the cursor) when a window has no rows.
    fn take_chunk(&mut self) -> Option<Chunk> {
        let current = self.current.as_mut()?;
        let window = current.window;
        let position = ChunkPosition {
            end_offset: window.end.max(0) as u64,
            start_offset: Some(window.start.max(0) as u64),
            chunks: current.index,
            chunks_digest: current.chain.clone(),
        };
        let (batch, bad_rows) = match current.chunks.pop_front() {
            Some(c) => c,
            None if current.index == 0 => (empty(&self.target.context), Vec::new()),
            None => {
                self.current = None;
                return None;
            }
        };
        let digest = batch_digest(&batch);
        current.index += 1;
        current.chain = chain(&current.chain, &digest);
        let last = current.chunks.is_empty();
        let next = if last {
            self.cursor = Some(window.end);
            self.current = None;
            self.span = self
                .span
                .saturating_mul(2)
                .min(ticks(self.runtime.config.max_window));
            Progress::at(Cursor::Window { end: window.end })
        } else {
            Progress {
                cursor: self
                    .cursor
                    .map_or(Cursor::Start, |end| Cursor::Window { end }),
                partial: Some(PartialChunk {
                    end_offset: position.end_offset,
                    start_offset: position.start_offset,
                    chunks: current.index,
                    chunks_digest: current.chain.clone(),
                    requests: 0,
                    output_key: String::new(),
                }),
                updated: String::new(),
            }
        };
        Some(Chunk {
            batch,
            bad_rows,
            origin: format!(
                "{} window ending {}",
                self.target.rule,
                kql::format_ticks(window.end)
            ),
            at: position,
            rows_key: digest,
            next,
            pending_bytes: None,
        })
    }

    fn next_window(&mut self) -> Option<Window> {
        // A window partly delivered before is read again exactly.
        if let Some(p) = &self.resume {
            let window = Window {
                start: i64::try_from(p.start_offset?).ok()?,
                end: i64::try_from(p.end_offset).ok()?,
            };
            if window.start < window.end {
                return Some(window);
            }
            self.resume = None;
        }
        let config = &self.runtime.config;
        let interval = ticks(self.target.interval);
        let mut settle = ticks(config.settle_delay);
        match self.by.as_ref().and_then(Option::as_ref) {
            None => next_aligned_window(self.cursor, self.now, settle, interval),
            Some(by) => {
                if let WindowColumn::Timestamp(_) = by {
                    settle += ticks(config.fallback_lookback);
                }
                next_ingestion_window(
                    self.cursor,
                    self.now,
                    settle,
                    interval,
                    ticks(config.max_window),
                )
                .map(|w| w.limit(self.span))
            }
        }
    }

    async fn read_window(&mut self, mut window: Window) -> Result<(), SourceError> {
        let body_mode = self.target.body.is_some();
        let resuming = self.resume.take();
        let min_window = ticks(self.runtime.config.min_window);
        let (batch, bad_rows) = loop {
            match self.read(window).await {
                Ok(read) => break read,
                Err(e) if e.is_too_large() && !body_mode && resuming.is_none() => {
                    let Some(half) = window.halve(min_window) else {
                        return Err(self.error(e));
                    };
                    tracing::warn!(
                        metrics_exporter = %self.target.metrics_exporter, rule = %self.target.rule,
                        window_seconds = window::seconds(half.span()),
                        "result too large; reading half the window"
                    );
                    window = half;
                    self.span = half.span();
                }
                Err(e) if e.is_too_large() => {
                    return Err(SourceError::Columns {
                        origin: format!(
                            "MetricsExporter {} (body on {})",
                            self.target.metrics_exporter, self.target.database
                        ),
                        message: format!(
                            "the query's result for one interval ({}) is over a query limit, and an interval is not cut in parts (that would split its aggregates): aggregate more in spec.body; {e}",
                            humantime::format_duration(self.target.interval)
                        ),
                    });
                }
                Err(e) => return Err(self.error(e)),
            }
        };
        if body_mode {
            let columns: Vec<TableColumn> = batch
                .columns
                .iter()
                .map(|c| TableColumn {
                    name: c.name.clone(),
                    ty: Some(c.kusto_type),
                    spelled: c.kusto_type.name().to_string(),
                })
                .collect();
            check_columns(&self.target.requirements, &columns).map_err(|message| {
                SourceError::Columns {
                    origin: format!(
                        "MetricsExporter {} (body on {})",
                        self.target.metrics_exporter, self.target.database
                    ),
                    message,
                }
            })?;
        }
        let mut chunks = into_chunks(batch, bad_rows, self.target.max_rows);
        let mut read = WindowRead {
            window,
            chunks: VecDeque::new(),
            index: 0,
            chain: String::new(),
        };
        if let Some(p) = resuming.filter(|p| p.chunks > 0) {
            // Skip what was delivered, when the same rows came back.
            let mut chain_so_far = String::new();
            for (batch, _) in chunks.iter().take(p.chunks as usize) {
                chain_so_far = chain(&chain_so_far, &batch_digest(batch));
            }
            if chunks.len() >= p.chunks as usize && chain_so_far == p.chunks_digest {
                chunks.drain(..p.chunks as usize);
                read.index = p.chunks;
                read.chain = chain_so_far;
            } else {
                tracing::warn!(
                    metrics_exporter = %self.target.metrics_exporter, rule = %self.target.rule,
                    window_end = %kql::format_ticks(window.end),
                    "a partly delivered window came back with other rows; sending it whole (the receiver may see the first part twice)"
                );
            }
        }
        if chunks.is_empty() && read.index > 0 {
            // Everything was delivered but the cursor had not moved yet: an
            // empty last chunk moves it.
            chunks.push((empty(&self.target.context), Vec::new()));
        }
        read.chunks = chunks.into();
        self.current = Some(read);
        Ok(())
    }

    /// Before the first read of a rule's table: its columns against the
    /// transform's needs, and whether it keeps ingestion times.
    async fn prepare(&mut self) -> Result<Option<WindowColumn>, SourceError> {
        let t = &self.target;
        // A changed transform (other columns, another timestamp column) or
        // a rule pointing at another table is checked again.
        let cache_key = format!(
            "{}|{}|{}.{}|{}",
            t.metrics_exporter,
            t.rule,
            t.database,
            t.table,
            hex::encode(&Sha256::digest(t.config_json.as_bytes())[..8])
        );
        if let Some(w) = lock(&self.runtime.prepared).get(&cache_key) {
            return Ok(Some(w.clone()));
        }
        let (database, table) = (&t.database, &t.table);
        let client = &self.runtime.client;
        let columns = table_columns(client, database, table)
            .await
            .map_err(|e| self.error(e))?;
        check_columns(&t.requirements, &columns).map_err(|message| SourceError::Columns {
            origin: format!("rule {}: table {database}.{table}", t.rule),
            message,
        })?;
        let kept = ingestion_time(client, database, table)
            .await
            .map_err(|e| self.error(e))?;
        let by = match kept {
            IngestionTime::Unknown => return Ok(None),
            IngestionTime::Kept => WindowColumn::IngestionTime,
            IngestionTime::NotKept => {
                let column = timestamp_column(&t.requirements, &columns).ok_or_else(|| SourceError::Columns {
                    origin: format!("rule {}: table {database}.{table}", t.rule),
                    message: "the table has no ingestion-time policy and no datetime column to read it by (the transform names no event-time column)".to_string(),
                })?;
                tracing::warn!(
                    metrics_exporter = %t.metrics_exporter, rule = %t.rule, table = %format!("{database}.{table}"), column = %column,
                    lookback = %humantime::format_duration(self.runtime.config.fallback_lookback),
                    "the table has no ingestion-time policy: reading it by its timestamp column; rows landing later than the lookback are not exported"
                );
                self.metrics
                    .timestamp_fallback
                    .get_or_create(&RuleLabels {
                        metrics_exporter: t.metrics_exporter.clone(),
                        rule: t.rule.clone(),
                    })
                    .set(1);
                WindowColumn::Timestamp(column)
            }
        };
        lock(&self.runtime.prepared).insert(cache_key, by.clone());
        Ok(Some(by))
    }

    /// One window's rows.
    async fn read(&self, window: Window) -> Result<(Batch, Vec<BadRow>), KustoError> {
        let t = &self.target;
        let database = &t.database;
        let quoted = |e: kql::NameError| {
            KustoError::new(database, "-", KustoErrorKind::BadName(e.to_string()))
        };
        let by = self.by.as_ref().and_then(Option::as_ref);
        let (csl, parameters) = match (by, &t.body) {
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
                let columns: Vec<String> = t
                    .requirements
                    .columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                (
                    kql::window_query(&t.table, by, &columns).map_err(quoted)?,
                    vec![
                        (kql::FROM.to_string(), kql::datetime_literal(window.start)),
                        (kql::TO.to_string(), kql::datetime_literal(window.end)),
                    ],
                )
            }
            (None, None) => {
                return Err(KustoError::new(
                    database,
                    "-",
                    KustoErrorKind::Network("a table job read before its checks".into()),
                ));
            }
        };
        let answer = self
            .runtime
            .client
            .query(&Query {
                database: database.clone(),
                csl,
                parameters,
                max_records: Some(t.max_rows),
                activity: "Window",
            })
            .await?;
        let mut context = t.context.clone();
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
        let parsed = tokio::task::spawn_blocking(move || {
            parse_v2_skipping_bad_rows(&origin, &body, context)
        })
        .await
        .map_err(|e| {
            KustoError::new(
                database,
                &request_id,
                KustoErrorKind::Network(e.to_string()),
            )
        })?;
        let (mut batch, bad_rows) = parsed.map_err(|e| response_error(database, &request_id, e))?;
        sort_rows(&mut batch);
        Ok((batch, bad_rows))
    }
}

fn empty(context: &BatchContext) -> Batch {
    Batch {
        context: context.clone(),
        row_count: 0,
        columns: Vec::new(),
    }
}

/// A window's rows as chunks of at most `max_rows`; the bad rows go with
/// the first chunk.
fn into_chunks(batch: Batch, bad_rows: Vec<BadRow>, max_rows: usize) -> Vec<(Batch, Vec<BadRow>)> {
    let rows = batch.row_count as usize;
    let max_rows = max_rows.max(1);
    if rows <= max_rows {
        return vec![(batch, bad_rows)];
    }
    let mut chunks = Vec::with_capacity(rows.div_ceil(max_rows));
    let mut bad = Some(bad_rows);
    for start in (0..rows).step_by(max_rows) {
        chunks.push((
            slice(&batch, start..(start + max_rows).min(rows)),
            bad.take().unwrap_or_default(),
        ));
    }
    chunks
}

/// The digest chained over a window's chunks so far.
fn chain(previous: &str, digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(digest.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The event-time column the guest named when it is a datetime column of
/// the table, else the only datetime column the transform needs.
fn timestamp_column(requirements: &Requirements, columns: &[TableColumn]) -> Option<String> {
    let is_datetime = |name: &str| {
        columns
            .iter()
            .any(|c| c.name == name && c.ty == Some(crate::wit::KustoType::Datetime))
    };
    if let Some(c) = requirements
        .event_time_column
        .as_ref()
        .filter(|c| is_datetime(c))
    {
        return Some(c.clone());
    }
    let needed: Vec<&str> = requirements
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

/// Tells apart two results of the same window (rows in a fixed order): a
/// partly delivered window is only resumed when the same rows came back.
pub fn batch_digest(batch: &Batch) -> String {
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
