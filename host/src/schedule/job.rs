//! One pass of one job: the new rows of one rule's table, through one
//! MetricsExporter's guest, to one exporter, for local tables and ADX alike;
//! jobs of one rule that stand at the same place share the pass (one read,
//! one transform, a delivery and a commit each; see `fan_out.rs`).
//!
//! The pass is a pipeline of three stages joined by channels of one chunk:
//! the source reads and parses chunk N+1 while the guest transforms chunk N
//! and chunk N−1 is encoded, sent and committed ([`super::stages`]). At most
//! a few chunks are in flight per job, so memory does not grow with the
//! backlog. Progress is committed strictly in order and only after the
//! exporter accepted a chunk's output; when a later request of a chunk fails
//! after earlier ones were accepted, that is recorded too, so the next pass
//! sends only the rest.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::label_keys::{MAX_LABEL_KEYS_PER_METRICS_EXPORTER, TOO_MANY_LABEL_KEYS};
use super::stages::{self, Transformed};
use super::stop::Stop;
use crate::config::host_config::SourceConfig;
use crate::discovery::{ExportPlan, RuleTarget};
use crate::error::{Classify, RetryClass};
use crate::export::deliver::{Accepted, ErrorKind};
use crate::export::{Delivered, ExportError, Resource, Sink};
use crate::schedule::runner::Shared;
use crate::source::chunk::{ChunkPosition, LocalSource, Source, SourceError};
use crate::source::kusto::windows::{KustoSource, Target};
use crate::state::{Progress, StateError};
use crate::telemetry::metrics::{
    ExporterLabels, FailureLabels, PointLabels, RuleLabels, SkipLabels,
};
use crate::transform::{Guest, TransformError};
use crate::wit::{BatchContext, MetricData, Output, Requirements};

/// The skip reason for rows that could not be read at all.
pub const INVALID_ROW: &str = "invalid-row";
/// The skip reason for a row on which the guest alone hits a limit.
pub const GUEST_LIMIT: &str = "guest-limit";
/// A commit that fails after its chunk was delivered is tried again for
/// this long (backoff from [`COMMIT_RETRY_FIRST`] to [`COMMIT_RETRY_MAX`])
/// before the job gives up; it is then kept in memory and tried first on
/// the next run, before anything new is delivered.
pub const COMMIT_RETRY_FOR: Duration = Duration::from_secs(30);
pub const COMMIT_RETRY_FIRST: Duration = Duration::from_millis(100);
pub const COMMIT_RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Source(Box<SourceError>),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("saving progress: {0}")]
    State(#[from] StateError),
    #[error("internal: {0}")]
    Internal(String),
    /// Another job's failure on the read they share.
    #[error("{}", .0.message)]
    Described(Described),
}

/// What a [`JobError`] says, for the jobs that shared the read it failed.
#[derive(Debug, Clone)]
pub struct Described {
    pub condition_reason: &'static str,
    pub reason: &'static str,
    pub retry: RetryClass,
    pub message: String,
}

impl From<SourceError> for JobError {
    fn from(e: SourceError) -> Self {
        JobError::Source(Box::new(e))
    }
}

impl JobError {
    /// The status condition reason this failure is reported under.
    pub fn condition_reason(&self) -> &'static str {
        use crate::api::conditions::reason;
        match self {
            JobError::Source(e) if matches!(**e, SourceError::Columns { .. }) => {
                reason::MISSING_COLUMNS
            }
            JobError::Source(_) => reason::SOURCE_FAILED,
            JobError::Transform(_) => reason::TRANSFORM_FAILED,
            JobError::State(_) => reason::COMMIT_FAILED,
            JobError::Export(_) | JobError::Internal(_) => reason::EXPORT_FAILED,
            JobError::Described(d) => d.condition_reason,
        }
    }

    pub fn described(&self) -> Described {
        Described {
            condition_reason: self.condition_reason(),
            reason: self.reason(),
            retry: self.retry_class(),
            message: self.to_string(),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            JobError::Source(e) => e.reason(),
            JobError::Transform(e) => e.reason(),
            JobError::Export(e) => e.reason(),
            JobError::State(_) => "state",
            JobError::Internal(_) => "internal",
            JobError::Described(d) => d.reason,
        }
    }
}

impl Classify for JobError {
    fn retry_class(&self) -> RetryClass {
        match self {
            JobError::Source(e) => e.retry_class(),
            JobError::Transform(e) => e.retry_class(),
            JobError::Export(e) => e.retry_class(),
            JobError::State(e) => e.retry_class(),
            JobError::Internal(_) => RetryClass::Retryable,
            JobError::Described(d) => d.retry,
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
    /// The job was told to stop and did, with its progress recorded.
    pub stopped: bool,
}

impl JobReport {
    /// `other`, a later part of the same job's run, added.
    pub fn add(&mut self, other: JobReport) {
        self.rows_read += other.rows_read;
        self.points_sent += other.points_sent;
        self.points_rejected += other.points_rejected;
        for (reason, n) in &other.skipped {
            self.skip(reason, *n);
        }
        self.newest_point = self.newest_point.max(other.newest_point);
        self.stopped |= other.stopped;
    }

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
    /// The OTLP resource of what this job sends: the host's, the
    /// exporter's and the MetricsExporter's attributes.
    pub resource: &'a Resource,
    pub guest: &'a Guest,
    /// What the guest's configuration needs from the table.
    pub requirements: &'a Arc<Requirements>,
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

    /// The job's source, positioned at `from`.
    fn source(&self, from: Progress, until: Option<i64>) -> Result<Source, JobError> {
        let shared = self.shared;
        let max_rows = shared.config.max_rows_per_batch;
        match &shared.config.source {
            SourceConfig::Local { tables } => Ok(Source::Local(Box::new(LocalSource::new(
                tables.clone(),
                &self.rule.database,
                &self.rule.table,
                from,
                max_rows,
                self.context(),
            )))),
            SourceConfig::Kusto(_) => {
                let Some(kusto) = shared.kusto.clone() else {
                    return Err(JobError::Internal("no ADX client".into()));
                };
                let target = Target {
                    metrics_exporter: self.plan.key.clone(),
                    rule: self.rule.key.clone(),
                    database: self.rule.database.clone(),
                    table: self.rule.table.clone(),
                    body: self.rule.body.clone(),
                    interval: self.plan.interval,
                    requirements: self.requirements.clone(),
                    config_json: self.plan.transform.config_json.clone(),
                    max_rows,
                    context: self.context(),
                    until,
                };
                Ok(Source::Kusto(Box::new(KustoSource::new(
                    kusto,
                    shared.metrics.clone(),
                    target,
                    from,
                ))))
            }
        }
    }

    /// Sends the outputs of one chunk in order, leaving out the first
    /// `skip` requests (accepted by an earlier run).
    async fn deliver(
        &self,
        outputs: &[Output],
        mut skip: usize,
        report: &mut JobReport,
        recorder: &mut RecordAccepted<'_>,
    ) -> Result<Delivered, JobError> {
        let shared = self.shared;
        let mut total = Delivered::default();
        for output in outputs {
            let started = Instant::now();
            recorder.before = total.requests + total.skipped;
            // Scrape families and running totals are kept per
            // MetricsExporter, so the sink is told whose output this is.
            let result = self
                .sink
                .send_for(&self.plan.key, self.resource, output, skip, recorder)
                .await;
            shared
                .metrics
                .export_latency
                .get_or_create(&ExporterLabels {
                    exporter: self.sink_name.to_string(),
                })
                .observe(started.elapsed().as_secs_f64());
            let delivered = match result {
                Ok(d) => d,
                Err(mut e) => {
                    self.count_points(e.delivered.points, e.delivered.rejected_points, report);
                    if !matches!(e.kind, ErrorKind::Stopped) {
                        shared
                            .metrics
                            .export_failures
                            .get_or_create(&FailureLabels {
                                exporter: self.sink_name.to_string(),
                                reason: e.reason().to_string(),
                            })
                            .inc();
                    }
                    // What the chunk had delivered before, for the resume.
                    e.delivered.requests += total.requests + total.skipped;
                    e.delivered.skipped = 0;
                    return Err(e.into());
                }
            };
            skip -= delivered.skipped.min(skip);
            total.requests += delivered.requests;
            total.skipped += delivered.skipped;
            total.points += delivered.points;
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
        }
        Ok(total)
    }

    fn count_skips(&self, reason: &str, n: u64) {
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
        let labels = PointLabels {
            metrics_exporter: self.plan.key.clone(),
            rule: self.rule.key.clone(),
            exporter: self.sink_name.to_string(),
        };
        if rejected > 0 {
            self.shared
                .metrics
                .points_rejected
                .get_or_create(&labels)
                .inc_by(rejected);
        }
        self.shared
            .metrics
            .points_sent
            .get_or_create(&labels)
            .inc_by(sent);
    }

    /// Counts what one transformed chunk skipped (`skips`, from
    /// [`chunk_skips`]) and read: in the report, and in the process's
    /// counters and log when `once` (the first job of a group; the others
    /// read the same rows).
    fn count_chunk(
        &self,
        t: &Transformed,
        skips: &[(&str, u64)],
        report: &mut JobReport,
        once: bool,
    ) {
        let rows = u64::from(t.rows);
        report.rows_read += rows;
        for (reason, n) in skips {
            report.skip(reason, *n);
        }
        if !once {
            return;
        }
        self.shared
            .metrics
            .rows_read
            .get_or_create(&self.rule_labels())
            .inc_by(rows);
        for (reason, n) in skips {
            self.count_skips(reason, *n);
        }
        for bad in &t.bad_rows {
            tracing::warn!(metrics_exporter = %self.plan.key, rule = %self.rule.key, origin = %t.origin, row = bad.row, error = %bad.message, "row skipped");
        }
        for (row, error) in &t.poisoned {
            tracing::warn!(metrics_exporter = %self.plan.key, rule = %self.rule.key, origin = %t.origin, row, error = %error, "row skipped: the guest hits a limit on it alone");
        }
        if let Some(pending) = t.pending_bytes {
            self.shared
                .metrics
                .pending_bytes
                .get_or_create(&self.rule_labels())
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
    }
}

/// Where a job starts: a commit that failed after its delivery lands
/// first, so nothing new is sent for the job before it does.
pub async fn start_progress(job: &Job<'_>, stop: &Stop) -> Result<Progress, JobError> {
    match job.shared.pending_commits.take(&job.key) {
        Some(pending) => {
            commit(job, pending.clone(), stop).await?;
            Ok(pending)
        }
        None => Ok(job.shared.state.get(&job.key).unwrap_or_default()),
    }
}

/// Runs jobs of one rule and one MetricsExporter that stand at the same
/// `from` (one per exporter) on one read: the rule's rows are read and
/// transformed once and each chunk's outputs delivered to every exporter,
/// each committing its own progress. A job whose delivery or commit fails
/// drops out and the others go on. `until` (a window end, for ADX) stops
/// the read there, so a job behind its siblings catches up to them exactly.
/// Each job's report and result are at its index.
pub async fn run_group(
    jobs: &[&Job<'_>],
    reports: &mut [JobReport],
    from: &Progress,
    until: Option<i64>,
    stop: &Stop,
) -> Vec<Result<(), JobError>> {
    let mut results: Vec<Option<Result<(), JobError>>> = jobs.iter().map(|_| None).collect();
    let Some(lead) = jobs.first() else {
        return Vec::new();
    };
    let mut committed: Vec<Progress> = jobs.iter().map(|_| from.clone()).collect();
    let source = match lead.source(from.clone(), until) {
        Ok(s) => s,
        Err(e) => {
            fail_all(&mut results, e);
            return finish(results);
        }
    };
    let mut chunks = stages::start(
        source,
        lead.guest.clone(),
        lead.plan.transform.config_json.clone(),
    );
    let prefix = lead.shared.config.metric_name_prefix.as_deref();
    while let Some(transformed) = chunks.next().await {
        let mut t = match transformed {
            Ok(t) => t,
            Err(e) => {
                fail_all(&mut results, e);
                break;
            }
        };
        if let Some(prefix) = prefix {
            for output in &mut t.outputs {
                for metric in &mut output.metrics {
                    metric.name = format!("{prefix}_{}", metric.name);
                }
            }
        }
        let mut over_budget = 0;
        for output in &mut t.outputs {
            over_budget += lead.shared.label_keys.admit(&lead.plan.key, output);
        }
        if over_budget > 0 {
            // Points left out change the requests, and the budget starts
            // afresh after a restart: a chunk resumed then is not cut in
            // the same requests, so it is sent whole rather than skipped
            // into.
            t.split.push_str(&format!("|label-budget:{over_budget}"));
        }
        if stop.now() {
            for r in reports.iter_mut() {
                r.stopped = true;
            }
            break;
        }
        // Rows are read once for all: the process's counters count them
        // once, each job's report says what its run handled.
        if over_budget > 0 {
            tracing::warn!(metrics_exporter = %lead.plan.key, rule = %lead.rule.key, points = over_budget, max = MAX_LABEL_KEYS_PER_METRICS_EXPORTER, "points left out: their labels would take the MetricsExporter past its distinct label names");
        }
        let skips = chunk_skips(&t, over_budget);
        let mut counted = false;
        for (i, job) in jobs.iter().enumerate() {
            if results[i].is_none() {
                job.count_chunk(&t, &skips, &mut reports[i], !counted);
                counted = true;
            }
        }
        let deliveries = jobs
            .iter()
            .zip(reports.iter_mut())
            .zip(committed.iter_mut())
            .zip(results.iter_mut())
            .filter(|(_, result)| result.is_none())
            .map(|(((job, report), committed), result)| {
                let t = &t;
                async move {
                    match deliver_chunk(job, t, committed, report, stop).await {
                        Ok(true) => {}
                        Ok(false) => {
                            report.stopped = true;
                            *result = Some(Ok(()));
                        }
                        Err(e) => *result = Some(Err(e)),
                    }
                }
            });
        futures::future::join_all(deliveries).await;
        if results.iter().all(Option::is_some) {
            break;
        }
        if stop.draining() {
            for (r, result) in reports.iter_mut().zip(&results) {
                if result.is_none() {
                    r.stopped = true;
                }
            }
            break;
        }
    }
    finish(results)
}

/// What a chunk left out, by reason: the guest's skips, rows that could not
/// be read, poison rows, and points over the label budget.
fn chunk_skips(t: &Transformed, over_budget: u64) -> Vec<(&str, u64)> {
    let mut skips: Vec<(&str, u64)> = t
        .outputs
        .iter()
        .flat_map(|o| o.skipped.iter().map(|s| (o.skip_reason(s), s.count)))
        .collect();
    for (reason, n) in [
        (INVALID_ROW, t.bad_rows.len() as u64),
        (GUEST_LIMIT, t.poisoned.len() as u64),
        (TOO_MANY_LABEL_KEYS, over_budget),
    ] {
        if n > 0 {
            skips.push((reason, n));
        }
    }
    skips
}

/// A read or guest failure fails every job still running on it: the first
/// gets the error, the others its description.
fn fail_all(results: &mut [Option<Result<(), JobError>>], e: JobError) {
    let copy = e.described();
    let mut original = Some(e);
    for r in results.iter_mut().filter(|r| r.is_none()) {
        *r = Some(Err(original
            .take()
            .unwrap_or_else(|| JobError::Described(copy.clone()))));
    }
}

fn finish(results: Vec<Option<Result<(), JobError>>>) -> Vec<Result<(), JobError>> {
    results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
}

/// Delivers one chunk's outputs for one job and commits where it got:
/// `Ok(true)` to go on, `Ok(false)` when told to stop now (what was
/// accepted recorded).
async fn deliver_chunk(
    job: &Job<'_>,
    t: &Transformed,
    committed: &mut Progress,
    report: &mut JobReport,
    stop: &Stop,
) -> Result<bool, JobError> {
    if t.outputs.iter().any(|o| o.point_count() > 0) {
        // The host's prefix and the resource change the requests as the
        // guest's configuration does.
        let prefix = job.shared.config.metric_name_prefix.as_deref();
        let key = output_key(
            job.guest,
            &format!(
                "{}\n{}\n{}",
                prefix.unwrap_or_default(),
                job.resource.key_text(),
                job.plan.transform.config_json
            ),
            &job.sink.shape_key(),
            &t.rows_key,
            &t.split,
        );
        let skip = committed
            .partial
            .as_ref()
            .filter(|p| t.at.is(p) && p.output_key == key)
            .map_or(0, |p| p.requests);
        let mut recorder = RecordAccepted {
            job,
            committed: &*committed,
            at: &t.at,
            output_key: &key,
            before: 0,
            stop,
        };
        if let Err(e) = job.deliver(&t.outputs, skip, report, &mut recorder).await {
            let stopped = matches!(&e, JobError::Export(x) if matches!(x.kind, ErrorKind::Stopped));
            if let JobError::Export(export) = &e
                && export.delivered.requests > skip
            {
                let mut keep = committed.clone();
                keep.partial = Some(t.at.partial(export.delivered.requests, key));
                commit(job, keep, stop).await?;
            }
            if stopped {
                return Ok(false);
            }
            return Err(e);
        }
    }
    commit(job, t.next.clone(), stop).await?;
    *committed = t.next.clone();
    Ok(true)
}

/// Commits durably, retrying a failure that may pass (a full disk, an API
/// server that throttles) for [`COMMIT_RETRY_FOR`]. Given up, the progress
/// is kept in memory for the job's next run, which commits it before it
/// sends anything: what was delivered is never sent again because its
/// commit failed.
async fn commit(job: &Job<'_>, progress: Progress, stop: &Stop) -> Result<(), JobError> {
    let state = &job.shared.state;
    let started = Instant::now();
    let mut delay = COMMIT_RETRY_FIRST;
    loop {
        let error = match state.commit(&job.key, progress.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        job.shared
            .metrics
            .commit_failures
            .get_or_create(&job.rule_labels())
            .inc();
        let retry = error.retry_class() == RetryClass::Retryable
            && started.elapsed() + delay < COMMIT_RETRY_FOR
            && !stop.now();
        if !retry {
            if error.retry_class() == RetryClass::Retryable {
                tracing::error!(metrics_exporter = %job.plan.key, rule = %job.rule.key, exporter = %job.sink_name, error = %error, "cannot commit progress after delivery; kept in memory, committed before anything new is sent");
                job.shared.pending_commits.put(&job.key, progress);
            }
            return Err(error.into());
        }
        tracing::warn!(metrics_exporter = %job.plan.key, rule = %job.rule.key, exporter = %job.sink_name, error = %error, retry_in = ?delay, "cannot commit progress; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(COMMIT_RETRY_MAX);
    }
}

/// Told by the sink after each request the receiver accepted: records the
/// chunk's partial progress (so a crash repeats at most the request in
/// flight), and stops delivery there when the job is to stop now.
struct RecordAccepted<'j> {
    job: &'j Job<'j>,
    committed: &'j Progress,
    at: &'j ChunkPosition,
    output_key: &'j str,
    /// Requests of the chunk's earlier outputs.
    before: usize,
    stop: &'j Stop,
}

impl Accepted for RecordAccepted<'_> {
    fn accepted(
        &mut self,
        requests: usize,
    ) -> futures::future::BoxFuture<'_, Result<(), ErrorKind>> {
        Box::pin(async move {
            let mut progress = self.committed.clone();
            progress.partial = Some(
                self.at
                    .partial(self.before + requests, self.output_key.to_string()),
            );
            if let Err(e) = self.job.shared.state.note(&self.job.key, progress).await {
                // The chunk's own commit still follows; only a crash before
                // it would repeat these requests.
                tracing::warn!(metrics_exporter = %self.job.plan.key, error = %e, "cannot record the requests accepted so far");
            }
            if self.stop.now() {
                return Err(ErrorKind::Stopped);
            }
            Ok(())
        })
    }
}

/// What decides the requests a chunk becomes: the guest, its
/// configuration, how the exporter cuts requests, the rows, and how the
/// chunk was split when the guest hit a limit on it whole.
fn output_key(guest: &Guest, config: &str, shape: &str, rows_key: &str, split: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        guest.provenance().digest.as_str(),
        config,
        shape,
        rows_key,
        split,
    ] {
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
