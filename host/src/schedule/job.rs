//! One pass of one job: the new rows of one rule's table, through one
//! MetricsExporter's guest, to one exporter. Progress is committed only after
//! the exporter accepted the data; any failure leaves it where it was, so
//! the rows go out on a later pass.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::host_config::SourceConfig;
use crate::discovery::{ExportPlan, RuleTarget};
use crate::error::{Classify, RetryClass};
use crate::export::{ExportError, Sink};
use crate::schedule::runner::Shared;
use crate::source::InputError;
use crate::source::kusto::KustoError;
use crate::source::local_table::{BadRow, read_chunk, table_path};
use crate::state::{PartialChunk, Progress, StateError};
use crate::telemetry::metrics::{
    ExporterLabels, FailureLabels, PointLabels, RuleLabels, SkipLabels,
};
use crate::transform::{Guest, TransformError};
use crate::wit::{Batch, BatchContext, MetricData, Output, Requirements};
use sha2::{Digest, Sha256};

/// The skip reason for rows that could not be read at all.
pub const INVALID_ROW: &str = "invalid-row";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("reading {table}: {source}")]
    Source {
        table: String,
        #[source]
        source: InputError,
    },
    /// Every ADX error names the exporter, the rule, the database and the
    /// request id.
    #[error("MetricsExporter {metrics_exporter}, rule {rule}: {source}")]
    Kusto {
        metrics_exporter: String,
        rule: String,
        #[source]
        source: Box<KustoError>,
    },
    /// The table or the query result lacks what the transform needs.
    #[error("{origin}: {message}")]
    Columns { origin: String, message: String },
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("saving progress: {0}")]
    State(#[from] StateError),
    #[error("internal: {0}")]
    Internal(String),
}

impl JobError {
    /// The status condition reason this failure is reported under.
    pub fn condition_reason(&self) -> &'static str {
        use crate::api::conditions::reason;
        match self {
            JobError::Columns { .. } => reason::MISSING_COLUMNS,
            JobError::Source { .. } | JobError::Kusto { .. } => reason::SOURCE_FAILED,
            JobError::Transform(_) => reason::TRANSFORM_FAILED,
            JobError::Export(_) | JobError::State(_) | JobError::Internal(_) => {
                reason::EXPORT_FAILED
            }
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            JobError::Source { .. } => "source",
            JobError::Kusto { source, .. } => source.reason(),
            JobError::Columns { .. } => "columns",
            JobError::Transform(e) => e.reason(),
            JobError::Export(e) => e.reason(),
            JobError::State(_) => "state",
            JobError::Internal(_) => "internal",
        }
    }
}

impl Classify for JobError {
    fn retry_class(&self) -> RetryClass {
        match self {
            JobError::Source { source, .. } => source.retry_class(),
            JobError::Kusto { source, .. } => source.retry_class(),
            // The table may be fixed (a column added) without a restart.
            JobError::Columns { .. } => RetryClass::Retryable,
            JobError::Transform(e) => e.retry_class(),
            JobError::Export(e) => e.retry_class(),
            JobError::State(e) => e.retry_class(),
            JobError::Internal(_) => RetryClass::Retryable,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub rows_read: u64,
    pub points_sent: u64,
    pub skipped: Vec<(String, u64)>,
    /// Time (Unix ns) of the newest point delivered.
    pub newest_point: Option<u64>,
    /// Points a receiver took delivery of but refused for good (OTLP
    /// partial success, samples Prometheus will not take).
    pub points_rejected: u64,
}

impl JobReport {
    /// A linear search is enough: the guest's reasons are folded to a few
    /// per guest before they get here (`transform::output_check`).
    fn skip(&mut self, reason: &str, n: u64) {
        match self.skipped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, c)) => *c += n,
            None => self.skipped.push((reason.to_string(), n)),
        }
    }
}

/// What one job works with: one rule's rows, one MetricsExporter's guest,
/// one exporter.
pub struct Job<'a> {
    pub shared: &'a Arc<Shared>,
    pub plan: &'a ExportPlan,
    pub rule: &'a RuleTarget,
    pub sink_name: &'a str,
    pub sink: &'a Sink,
    pub guest: &'a Guest,
    /// What the guest's configuration needs from the table.
    pub requirements: &'a Requirements,
    /// The progress key.
    pub key: String,
}

impl<'a> Job<'a> {
    pub fn context(&self) -> BatchContext {
        BatchContext {
            database: self.rule.database.clone(),
            table: self.rule.table.clone(),
            rule_name: if self.rule.body.is_some() {
                String::new()
            } else {
                self.rule.name.clone()
            },
            rule_namespace: self.rule.namespace.clone(),
            exporter_name: self.plan.name.clone(),
            window_start: None,
            window_end: None,
        }
    }

    pub fn rule_labels(&self) -> RuleLabels {
        RuleLabels {
            metrics_exporter: self.plan.key.clone(),
            rule: self.rule.key.clone(),
        }
    }

    /// Runs the guest on one chunk's rows and delivers the output. When a
    /// later request fails after earlier ones were accepted, records how many
    /// were (see [`PartialChunk`]), so the next pass sends only the rest of
    /// the same output. `chunk_end` and `rows_key` identify the chunk: the
    /// end of its rows in the source, and what else tells its rows apart.
    pub async fn transform_and_deliver(
        &self,
        from: Option<&Progress>,
        batch: Batch,
        chunk: (Option<u64>, u64),
        rows_key: &str,
        report: &mut JobReport,
    ) -> Result<(), JobError> {
        let (chunk_start, chunk_end) = chunk;
        let rows = u64::from(batch.row_count);
        report.rows_read += rows;
        self.shared
            .metrics
            .rows_read
            .get_or_create(&self.rule_labels())
            .inc_by(rows);
        if rows == 0 {
            return Ok(());
        }
        let (g, config) = (self.guest.clone(), self.plan.transform.config_json.clone());
        let output = tokio::task::spawn_blocking(move || g.transform(&config, &batch))
            .await
            .map_err(|e| JobError::Internal(e.to_string()))??;
        for s in &output.skipped {
            self.count_skips(output.skip_reason(s), s.count, report);
        }
        if output.point_count() == 0 {
            return Ok(());
        }
        let output_key = output_key(
            self.guest,
            &self.plan.transform.config_json,
            &self.sink.shape_key(),
            rows_key,
        );
        let skip = from
            .and_then(|p| p.partial.as_ref())
            .filter(|p| p.end_offset == chunk_end && p.output_key == output_key)
            .map_or(0, |p| p.requests);
        let Err(e) = self.deliver(&output, skip, report).await else {
            return Ok(());
        };
        if let JobError::Export(export) = &e
            && export.delivered.requests > 0
        {
            let mut keep = from.cloned().unwrap_or_default();
            keep.partial = Some(PartialChunk {
                end_offset: chunk_end,
                start_offset: chunk_start,
                requests: skip + export.delivered.requests,
                output_key,
            });
            self.shared.state.commit(&self.key, keep).await?;
        }
        Err(e)
    }

    pub fn count_bad_rows(&self, origin: &str, bad_rows: &[BadRow], report: &mut JobReport) {
        for bad in bad_rows {
            tracing::warn!(metrics_exporter = %self.plan.key, rule = %self.rule.key, origin, row = bad.row, error = %bad.message, "row skipped");
        }
        if !bad_rows.is_empty() {
            self.count_skips(INVALID_ROW, bad_rows.len() as u64, report);
        }
    }

    async fn deliver(
        &self,
        output: &Output,
        skip: usize,
        report: &mut JobReport,
    ) -> Result<(), JobError> {
        let shared = self.shared;
        let started = Instant::now();
        // A scrape store keeps families per MetricsExporter, so it is told
        // whose output this is.
        let result = match self.sink.scrape_store() {
            Some(store) if skip == 0 => store.update_for(&self.plan.key, &shared.resource, output),
            _ => self.sink.send_from(&shared.resource, output, skip).await,
        };
        shared
            .metrics
            .export_latency
            .get_or_create(&ExporterLabels {
                exporter: self.sink_name.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        let delivered = match result {
            Ok(d) => d,
            Err(e) => {
                self.count_points(e.delivered.points, e.delivered.rejected_points, report);
                shared
                    .metrics
                    .export_failures
                    .get_or_create(&FailureLabels {
                        exporter: self.sink_name.to_string(),
                        reason: e.reason().to_string(),
                    })
                    .inc();
                return Err(e.into());
            }
        };
        self.count_points(delivered.points, delivered.rejected_points, report);
        if let Some(newest) = newest_point(output) {
            report.newest_point = report.newest_point.max(Some(newest));
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            let lag = now.as_secs_f64() - Duration::from_nanos(newest).as_secs_f64();
            shared
                .metrics
                .lag_seconds
                .get_or_create(&self.rule_labels())
                .set(lag);
        }
        Ok(())
    }

    fn count_skips(&self, reason: &str, n: u64, report: &mut JobReport) {
        report.skip(reason, n);
        self.shared
            .metrics
            .rows_skipped
            .get_or_create(&SkipLabels {
                metrics_exporter: self.plan.key.clone(),
                rule: self.rule.key.clone(),
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    fn count_points(&self, points: usize, rejected: u64, report: &mut JobReport) {
        let sent = (points as u64).saturating_sub(rejected);
        report.points_sent += sent;
        report.points_rejected += rejected;
        if rejected > 0 {
            self.shared
                .metrics
                .points_rejected
                .get_or_create(&PointLabels {
                    metrics_exporter: self.plan.key.clone(),
                    rule: self.rule.key.clone(),
                    exporter: self.sink_name.to_string(),
                })
                .inc_by(rejected);
        }
        self.shared
            .metrics
            .points_sent
            .get_or_create(&PointLabels {
                metrics_exporter: self.plan.key.clone(),
                rule: self.rule.key.clone(),
                exporter: self.sink_name.to_string(),
            })
            .inc_by(sent);
    }
}

/// Runs one job until its source is caught up (in chunks of the configured
/// row limit) or a step fails; `report` says what was done either way.
pub async fn run_job(job: &Job<'_>, report: &mut JobReport) -> Result<(), JobError> {
    match &job.shared.config.source {
        SourceConfig::Local { tables } => run_local(job, tables, report).await,
        SourceConfig::Kusto(_) => super::kusto_job::run(job, report).await,
    }
}

/// A local table, from the stored byte offset to its end.
async fn run_local(job: &Job<'_>, tables: &Path, report: &mut JobReport) -> Result<(), JobError> {
    let (shared, rule) = (job.shared, job.rule);
    let table = format!("{}.{}", rule.database, rule.table);
    let source_error = |source| JobError::Source {
        table: table.clone(),
        source,
    };
    let (path, format) = table_path(tables, &rule.database, &rule.table).map_err(source_error)?;
    loop {
        let from = shared.state.get(&job.key);
        let context = job.context();
        let max_rows = shared.config.max_rows_per_batch;
        let (path2, from2) = (path.clone(), from.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            read_chunk(&path2, format, from2.as_ref(), max_rows, context)
        })
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?
        .map_err(source_error)?;
        job.count_bad_rows(&path.display().to_string(), &chunk.bad_rows, report);
        // Offsets alone tell a local chunk apart: the file is append-only.
        job.transform_and_deliver(
            from.as_ref(),
            chunk.batch,
            (None, chunk.next.offset),
            "",
            report,
        )
        .await?;
        if from.as_ref() != Some(&chunk.next) {
            shared.state.commit(&job.key, chunk.next).await?;
        }
        shared
            .metrics
            .pending_bytes
            .get_or_create(&job.rule_labels())
            .set(chunk.pending_bytes as i64);
        if !chunk.more {
            return Ok(());
        }
    }
}

/// What identifies a chunk's output besides its rows: the guest is
/// deterministic, so the same rows, guest and configuration give the same
/// requests.
/// What decides the requests a chunk becomes: the guest, its
/// configuration, how the exporter cuts requests, and the rows.
fn output_key(guest: &Guest, config: &str, shape: &str, rows_key: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [guest.provenance().digest.as_str(), config, shape, rows_key] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The newest point time in an output (Unix nanoseconds).
fn newest_point(output: &Output) -> Option<u64> {
    output
        .metrics
        .iter()
        .filter_map(|m| match &m.data {
            MetricData::Gauge(p) => p.times.iter().max().copied(),
            MetricData::Sum(s) => s.points.times.iter().max().copied(),
            MetricData::Histogram(h) => h.points.iter().map(|p| p.time).max(),
        })
        .max()
}
