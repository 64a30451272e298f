//! One pass of one job: the new rows of one rule's table, through one
//! MetricsExporter's guest, to one exporter. Progress is committed only after
//! the exporter accepted the data; any failure leaves it where it was, so
//! the rows go out on a later pass.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::discovery::{ExportPlan, RuleTarget};
use crate::error::{Classify, RetryClass};
use crate::export::{ExportError, Sink};
use crate::schedule::runner::Shared;
use crate::source::InputError;
use crate::source::local_table::{read_chunk, table_path};
use crate::state::{PartialChunk, StateError, job_key};
use crate::telemetry::metrics::{
    ExporterLabels, FailureLabels, PointLabels, RuleLabels, SkipLabels,
};
use crate::transform::{Guest, TransformError};
use crate::wit::{BatchContext, MetricData, Output};
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
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::Source { .. } => "source",
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
}

impl JobReport {
    fn skip(&mut self, reason: &str, n: u64) {
        match self.skipped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, c)) => *c += n,
            None => self.skipped.push((reason.to_string(), n)),
        }
    }
}

/// Runs one job until its table is caught up (in chunks of the configured
/// row limit) or a step fails; `report` says what was done either way.
pub async fn run_job(
    shared: &Arc<Shared>,
    plan: &ExportPlan,
    rule: &RuleTarget,
    sink_name: &str,
    sink: &Sink,
    guest: &Guest,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let key = job_key(&plan.key, &rule.key, sink_name);
    let table = format!("{}.{}", rule.database, rule.table);
    let (path, format) =
        table_path(&shared.config.tables, &rule.database, &rule.table).map_err(|source| {
            JobError::Source {
                table: table.clone(),
                source,
            }
        })?;
    let rule_labels = RuleLabels {
        metrics_exporter: plan.key.clone(),
        rule: rule.key.clone(),
    };
    loop {
        let from = shared.state.get(&key);
        let context = BatchContext {
            database: rule.database.clone(),
            table: rule.table.clone(),
            rule_name: rule.name.clone(),
            rule_namespace: rule.namespace.clone(),
            exporter_name: plan.name.clone(),
            window_start: None,
            window_end: None,
        };
        let max_rows = shared.config.max_rows_per_batch;
        let (path2, from2) = (path.clone(), from.clone());
        let chunk = tokio::task::spawn_blocking(move || {
            read_chunk(&path2, format, from2.as_ref(), max_rows, context)
        })
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?
        .map_err(|source| JobError::Source {
            table: table.clone(),
            source,
        })?;
        for bad in &chunk.bad_rows {
            tracing::warn!(metrics_exporter = %plan.key, rule = %rule.key, table = %path.display(), row = bad.row, error = %bad.message, "row skipped");
        }
        if !chunk.bad_rows.is_empty() {
            count_skips(
                shared,
                plan,
                rule,
                INVALID_ROW,
                chunk.bad_rows.len() as u64,
                report,
            );
        }
        let rows = u64::from(chunk.batch.row_count);
        report.rows_read += rows;
        shared
            .metrics
            .rows_read
            .get_or_create(&rule_labels)
            .inc_by(rows);
        if rows > 0 {
            let (g, config, batch) = (
                guest.clone(),
                plan.transform.config_json.clone(),
                chunk.batch,
            );
            let output = tokio::task::spawn_blocking(move || g.transform(&config, &batch))
                .await
                .map_err(|e| JobError::Internal(e.to_string()))??;
            for s in &output.skipped {
                count_skips(shared, plan, rule, &s.reason, s.count, report);
            }
            if output.point_count() > 0 {
                let output_key = output_key(guest, &plan.transform.config_json);
                let skip = from
                    .as_ref()
                    .and_then(|p| p.partial.as_ref())
                    .filter(|p| p.end_offset == chunk.next.offset && p.output_key == output_key)
                    .map_or(0, |p| p.requests);
                if let Err(e) =
                    deliver(shared, plan, rule, sink_name, sink, &output, skip, report).await
                {
                    if let JobError::Export(export) = &e
                        && export.delivered.requests > 0
                    {
                        // Remember what was accepted, so the next pass sends
                        // only the rest of this chunk.
                        let mut keep = from.clone().unwrap_or_default();
                        keep.partial = Some(PartialChunk {
                            end_offset: chunk.next.offset,
                            requests: skip + export.delivered.requests,
                            output_key,
                        });
                        shared.state.commit(&key, keep)?;
                    }
                    return Err(e);
                }
            }
        }
        if from.as_ref() != Some(&chunk.next) {
            shared.state.commit(&key, chunk.next)?;
        }
        shared
            .metrics
            .pending_bytes
            .get_or_create(&rule_labels)
            .set(chunk.pending_bytes as i64);
        if !chunk.more {
            return Ok(());
        }
    }
}

/// What identifies a chunk's output besides its rows: the guest is
/// deterministic, so the same rows, guest and configuration give the same
/// requests.
fn output_key(guest: &Guest, config: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(guest.provenance().digest.as_bytes());
    hasher.update(config.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    shared: &Arc<Shared>,
    plan: &ExportPlan,
    rule: &RuleTarget,
    sink_name: &str,
    sink: &Sink,
    output: &Output,
    skip: usize,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let started = Instant::now();
    let result = sink.send_from(&shared.resource, output, skip).await;
    shared
        .metrics
        .export_latency
        .get_or_create(&ExporterLabels {
            exporter: sink_name.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    let delivered = match result {
        Ok(d) => d,
        Err(e) => {
            count_points(
                shared,
                plan,
                rule,
                sink_name,
                e.delivered.points,
                e.delivered.rejected_points,
                report,
            );
            shared
                .metrics
                .export_failures
                .get_or_create(&FailureLabels {
                    exporter: sink_name.to_string(),
                    reason: e.reason().to_string(),
                })
                .inc();
            return Err(e.into());
        }
    };
    count_points(
        shared,
        plan,
        rule,
        sink_name,
        delivered.points,
        delivered.rejected_points,
        report,
    );
    if let Some(newest) = newest_point(output) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let lag = now.as_secs_f64() - Duration::from_nanos(newest).as_secs_f64();
        shared
            .metrics
            .lag_seconds
            .get_or_create(&RuleLabels {
                metrics_exporter: plan.key.clone(),
                rule: rule.key.clone(),
            })
            .set(lag);
    }
    Ok(())
}

fn count_skips(
    shared: &Shared,
    plan: &ExportPlan,
    rule: &RuleTarget,
    reason: &str,
    n: u64,
    report: &mut JobReport,
) {
    report.skip(reason, n);
    shared
        .metrics
        .rows_skipped
        .get_or_create(&SkipLabels {
            metrics_exporter: plan.key.clone(),
            rule: rule.key.clone(),
            reason: reason.to_string(),
        })
        .inc_by(n);
}

fn count_points(
    shared: &Shared,
    plan: &ExportPlan,
    rule: &RuleTarget,
    sink_name: &str,
    points: usize,
    rejected: u64,
    report: &mut JobReport,
) {
    let sent = (points as u64).saturating_sub(rejected);
    report.points_sent += sent;
    shared
        .metrics
        .points_sent
        .get_or_create(&PointLabels {
            metrics_exporter: plan.key.clone(),
            rule: rule.key.clone(),
            exporter: sink_name.to_string(),
        })
        .inc_by(sent);
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
