//! An ADX table or a MetricsExporter's own body as a source of chunks:
//! window after window from the job's cursor to the settled edge (fixed
//! when the run starts), each window's rows streamed in chunks of at most
//! `maxRowsPerBatch` ([`super::stream`]: never truncated, never held
//! whole). A table window whose query hits an ADX limit before its first
//! chunk is halved (down to `minWindow`); a body window is one whole
//! interval, never cut, since that would split the aggregates its query
//! computes.
//!
//! Chunks of one window carry the window and their index; the progress
//! after a chunk that is not the window's last records how many chunks of
//! the window were delivered and a digest chained over them, so a run that
//! stopped in the middle of a window reads it again and skips exactly
//! those, provided the same rows come back in the same order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::clock::AdxClock;
use super::kql::{self, WindowColumn};
use super::stream::{RowChunk, WindowStream, chunk_digest};
use super::table::{IngestionTime, TableColumn, check_columns, ingestion_time, table_columns};
use super::window::{self, TICK, Window, next_aligned_window, next_ingestion_window, ticks};
use super::{KustoClient, KustoConfig, KustoError, KustoErrorKind, Query};
use crate::source::chunk::{Chunk, ChunkPosition, SourceError};
use crate::state::{Cursor, PartialChunk, Progress};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RuleLabels;
use crate::wit::{Batch, BatchContext, Requirements};

/// The ADX side of the host: one client, and what was learnt about each
/// rule's table.
pub struct KustoRuntime {
    pub client: KustoClient,
    pub config: KustoConfig,
    pub clock: AdxClock,
    /// The cluster labels a MetricsExporter's body can use.
    pub labels: kql::LabelParameters,
    /// By job: how the rule's table is read, once its checks passed.
    prepared: Mutex<HashMap<String, WindowColumn>>,
}

impl KustoRuntime {
    pub fn new(
        client: KustoClient,
        config: KustoConfig,
        labels: kql::LabelParameters,
    ) -> KustoRuntime {
        KustoRuntime {
            client,
            config,
            clock: AdxClock::default(),
            labels,
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
    /// Read no window past this end (ticks): a job catching up to its
    /// siblings stops where they stand, so they can share reads again.
    pub until: Option<i64>,
}

pub struct KustoSource {
    runtime: Arc<KustoRuntime>,
    metrics: Arc<Metrics>,
    target: Target,
    /// ADX's now at this run's start (the settled edge is fixed then, or
    /// with a small settle delay there would always be a newer sliver to
    /// read); read before the first window.
    now: Option<i64>,
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
    stream: WindowStream,
    /// The chunk after the one handed out last, read ahead: a chunk is the
    /// window's last (and moves the cursor) when nothing follows it.
    ahead: Option<RowChunk>,
    /// Chunks handed out so far (with those skipped when resuming), and
    /// the digest chained over them.
    index: u32,
    chain: String,
    /// Whether this read handed out anything yet: a window with nothing
    /// left to hand out still gives one empty chunk, which moves the cursor.
    handed_out: bool,
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
            now: None,
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
        if self.now.is_none() {
            let now = self
                .runtime
                .clock
                .now(&self.runtime.client, &self.target.database, &self.metrics)
                .await
                .map_err(|e| self.error(e))?;
            self.now = Some(now);
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
            if let Some(chunk) = self.take_chunk().await? {
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
    /// chunk that moves the cursor) when a window has nothing to hand out.
    async fn take_chunk(&mut self) -> Result<Option<Chunk>, SourceError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(None);
        };
        let window = current.window;
        let position = ChunkPosition {
            end_offset: window.end.max(0) as u64,
            start_offset: Some(window.start.max(0) as u64),
            chunks: current.index,
            chunks_digest: current.chain.clone(),
        };
        let (batch, bad_rows, digest) = match current.ahead.take() {
            Some(c) => (c.batch, c.bad_rows, c.digest),
            None if !current.handed_out => {
                let batch = empty(&self.target.context);
                let digest = chunk_digest(&batch);
                (batch, Vec::new(), digest)
            }
            None => {
                self.current = None;
                return Ok(None);
            }
        };
        current.handed_out = true;
        let ahead = match current.stream.next_chunk().await {
            Ok(next) => next,
            Err(e) => {
                self.current = None;
                return Err(self.error(e));
            }
        };
        let Some(current) = self.current.as_mut() else {
            return Ok(None);
        };
        current.ahead = ahead;
        current.index += 1;
        current.chain = chain(&current.chain, &digest);
        let next = if current.ahead.is_none() {
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
        Ok(Some(Chunk {
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
        }))
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
        let now = self.now?;
        let interval = ticks(self.target.interval);
        let mut settle = ticks(config.settle_delay);
        let next = match self.by.as_ref().and_then(Option::as_ref) {
            None => next_aligned_window(self.cursor, now, settle, interval),
            Some(by) => {
                if let WindowColumn::Timestamp(_) = by {
                    settle += ticks(config.fallback_lookback);
                }
                next_ingestion_window(self.cursor, now, settle, interval, ticks(config.max_window))
                    .map(|w| w.limit(self.span))
            }
        }?;
        match self.target.until {
            Some(until) if next.start >= until => None,
            // Aligned windows end on the interval, and so does a sibling's
            // cursor: the cut keeps them aligned.
            Some(until) => Some(Window {
                start: next.start,
                end: next.end.min(until),
            }),
            None => Some(next),
        }
    }

    async fn read_window(&mut self, mut window: Window) -> Result<(), SourceError> {
        let body_mode = self.target.body.is_some();
        let resuming = self.resume.take();
        let min_window = ticks(self.runtime.config.min_window);
        // A limit ADX hits before the first chunk (memory, a workload
        // group's cap) halves a table window; once rows have been handed
        // on, a failure fails the window and the job resumes it later.
        let (mut stream, first) = loop {
            match self.open(window).await {
                Ok(opened) => break opened,
                Err(e) if e.is_too_large() && !body_mode && resuming.is_none() => {
                    let Some(half) = window.halve(min_window) else {
                        return Err(self.error(e));
                    };
                    tracing::warn!(
                        metrics_exporter = %self.target.metrics_exporter, rule = %self.target.rule,
                        window_seconds = window::seconds(half.span()),
                        "a query limit was hit; reading half the window"
                    );
                    window = half;
                    self.span = half.span();
                }
                Err(e) if e.is_too_large() => {
                    return Err(SourceError::Columns {
                        origin: self.body_origin(),
                        message: format!(
                            "the query for one interval ({}) hit a query limit, and an interval is not cut in parts (that would split its aggregates): aggregate more in spec.body; {e}",
                            humantime::format_duration(self.target.interval)
                        ),
                    });
                }
                Err(e) => return Err(self.error(e)),
            }
        };
        if body_mode && let Some(first) = &first {
            let columns: Vec<TableColumn> = first
                .batch
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
                    origin: self.body_origin(),
                    message,
                }
            })?;
        }
        let mut read = WindowRead {
            window,
            stream,
            ahead: first,
            index: 0,
            chain: String::new(),
            handed_out: false,
        };
        if let Some(p) = resuming.filter(|p| p.chunks > 0) {
            // Skip what was delivered, when the same rows came back (ADX
            // sends them in a stable order); else read the window again
            // and send it whole.
            let mut chain_so_far = String::new();
            let mut skipped = 0;
            while skipped < p.chunks {
                let Some(chunk) = read.ahead.take() else {
                    break;
                };
                chain_so_far = chain(&chain_so_far, &chunk.digest);
                skipped += 1;
                read.ahead = read.stream.next_chunk().await.map_err(|e| self.error(e))?;
            }
            if skipped == p.chunks && chain_so_far == p.chunks_digest {
                read.index = p.chunks;
                read.chain = chain_so_far;
            } else {
                tracing::warn!(
                    metrics_exporter = %self.target.metrics_exporter, rule = %self.target.rule,
                    window_end = %kql::format_ticks(window.end),
                    "a partly delivered window came back with other rows; sending it whole (the receiver may see the first part twice)"
                );
                let (again, first) = self.open(window).await.map_err(|e| self.error(e))?;
                stream = again;
                read = WindowRead {
                    window,
                    stream,
                    ahead: first,
                    index: 0,
                    chain: String::new(),
                    handed_out: false,
                };
            }
        }
        self.current = Some(read);
        Ok(())
    }

    fn body_origin(&self) -> String {
        format!(
            "MetricsExporter {} (body on {})",
            self.target.metrics_exporter, self.target.database
        )
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

    /// One window's query, sent, and its first chunk.
    async fn open(&self, window: Window) -> Result<(WindowStream, Option<RowChunk>), KustoError> {
        let t = &self.target;
        let database = &t.database;
        let quoted = |e: kql::NameError| {
            KustoError::new(database, "-", KustoErrorKind::BadName(e.to_string()))
        };
        let by = self.by.as_ref().and_then(Option::as_ref);
        let labels = &self.runtime.labels;
        let (csl, parameters) = match (by, &t.body) {
            (_, Some(body)) => {
                let mut parameters = vec![
                    (
                        kql::START_TIME.to_string(),
                        kql::datetime_literal(window.start),
                    ),
                    (
                        kql::END_TIME.to_string(),
                        kql::datetime_literal(window.end - TICK),
                    ),
                ];
                parameters.extend(labels.usable.iter().cloned());
                (kql::body_query(body, labels), parameters)
            }
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
        let mut context = t.context.clone();
        context.window_start = Some(window.start.saturating_mul(100));
        context.window_end = Some(window.end.saturating_mul(100));
        let query = Query {
            database: database.clone(),
            csl,
            parameters,
            max_records: None,
            activity: "Window",
        };
        let mut stream = WindowStream::open(&self.runtime.client, &query, context, t.max_rows)
            .await
            .map_err(|e| match t.body {
                Some(_) => with_parameters_named(e, labels),
                None => e,
            })?;
        let first = stream.next_chunk().await?;
        Ok((stream, first))
    }
}

/// A body ADX refused (a name it cannot resolve, most often) is told which
/// parameters it may use: a body written for another host's labels fails
/// here.
fn with_parameters_named(mut e: KustoError, labels: &kql::LabelParameters) -> KustoError {
    if let KustoErrorKind::Refused { message, .. } = &mut e.kind {
        message.push_str(&format!(
            " (the body may use the parameters {})",
            labels.available()
        ));
    }
    e
}

fn empty(context: &BatchContext) -> Batch {
    Batch {
        context: context.clone(),
        row_count: 0,
        columns: Vec::new(),
    }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
