//! Running MetricsExporters: once (`--once`) or each on its own interval,
//! following changes to the manifests while running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::fan_out::run_rule;
use super::guests::GuestCache;
use super::job::{Job, JobReport};
use super::label_keys::LabelKeys;
use super::leases::Fence;
use super::stop::{Stop, StopHandle, StopLevel, stop_pair};
use crate::config::HostConfig;
use crate::discovery::{Catalog, ExportPlan, ManifestFolder, plan};
use crate::export::{Resource, Sink};
use crate::source::kusto::kql::LabelParameters;
use crate::source::kusto::windows::KustoRuntime;
use crate::source::kusto::{KustoClient, auth};
use crate::state::file::FileStore;
use crate::state::status::{RunSummary, StatusStore};
use crate::state::{PendingCommits, ProgressStore, job_key};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::RunLabels;
use crate::telemetry::server::Health;
use crate::transform::modules::oci::Registries;
use crate::transform::modules::store::BlobStore;
use crate::transform::{Guest, Runtime, TransformError};
use crate::wit::Requirements;

/// How long a stopping host waits for runs in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// After the grace, how long runs told to stop after their request in
/// flight get to do it.
pub const STOP_NOW_BOUND: Duration = Duration::from_secs(5);
/// How often unused pulled modules are looked for.
pub const MODULE_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What every job needs, shared.
pub struct Shared {
    pub config: Arc<HostConfig>,
    pub sinks: HashMap<String, Arc<Sink>>,
    pub guests: GuestCache,
    pub state: ProgressStore,
    pub metrics: Arc<Metrics>,
    /// By exporter: the host's resource with the exporter's attributes.
    pub resources: HashMap<String, Resource>,
    /// Set when the source is ADX.
    pub kusto: Option<Arc<KustoRuntime>>,
    /// Turns for jobs: at most `maxConcurrentJobs` run at once, the others
    /// wait in the order they asked (tokio's semaphore is fair).
    pub jobs: Arc<tokio::sync::Semaphore>,
    /// Progress delivered but not committed yet, by job.
    pub pending_commits: PendingCommits,
    /// The label names each MetricsExporter has sent.
    pub label_keys: LabelKeys,
    /// What each (guest, configuration) needs from a table: `validate` runs
    /// once per pair, not once per run.
    requirements: std::sync::Mutex<HashMap<(String, String), Arc<Requirements>>>,
}

/// Pairs of guest and configuration whose requirements are remembered; the
/// memory is cleared when more are seen (configurations changed often).
const MAX_REMEMBERED_REQUIREMENTS: usize = 100_000;

#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

impl Runner {
    /// `statuses`: in Kubernetes, progress lives in MetricsExporter status;
    /// otherwise in the state folder.
    pub fn new(
        config: Arc<HostConfig>,
        runtime: Runtime,
        metrics: Arc<Metrics>,
        statuses: Option<Arc<StatusStore>>,
    ) -> anyhow::Result<Runner> {
        let mut sinks = HashMap::new();
        let mut resources = HashMap::new();
        for e in &config.exporters {
            resources.insert(e.name.clone(), config.resource.with(&e.resource_attributes));
            let sink = Sink::build(e)
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.path.display()))?;
            if let Some(store) = sink.scrape_store() {
                store.attach_metrics(metrics.clone());
            }
            sinks.insert(e.name.clone(), Arc::new(sink));
        }
        let kube_client = statuses.as_ref().map(|s| s.client().clone());
        let store_dir = config
            .registries
            .cache_dir
            .clone()
            .or_else(|| config.cache_dir.clone().map(|d| d.join("modules")))
            .or_else(|| crate::transform::cache::default_cache_dir().map(|d| d.join("modules")))
            .unwrap_or_else(|| config.state_dir.join("modules"));
        let registries = Arc::new(
            Registries::new(&config.registries, BlobStore::new(store_dir))
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.path.display()))?,
        );
        let state = match &statuses {
            Some(s) => ProgressStore::Status(s.clone()),
            None => ProgressStore::File(Arc::new(FileStore::open(&config.state_dir)?)),
        };
        let kusto = match config.kusto() {
            None => None,
            Some(k) => {
                let identity = auth::identity(k)
                    .map_err(|e| anyhow::anyhow!("{}: source.kusto: {e}", config.path.display()))?;
                tracing::info!(identity = %identity.description, databases = k.endpoints.len(), "reading Azure Data Explorer");
                let client = KustoClient::new(k, identity).map_err(anyhow::Error::msg)?;
                let labels = LabelParameters::new(&config.cluster_labels.0);
                if !labels.unusable.is_empty() {
                    tracing::warn!(labels = ?labels.unusable, "cluster labels whose keys are not KQL identifiers (letters, digits, `_`) or name a window parameter are not passed to bodies");
                }
                Some(Arc::new(KustoRuntime::new(client, k.clone(), labels)))
            }
        };
        let max_jobs = config.max_concurrent_jobs;
        Ok(Runner {
            shared: Arc::new(Shared {
                config,
                sinks,
                guests: GuestCache::new(runtime, registries, kube_client, metrics.clone()),
                state,
                metrics,
                resources,
                kusto,
                jobs: Arc::new(tokio::sync::Semaphore::new(max_jobs)),
                pending_commits: PendingCommits::default(),
                label_keys: LabelKeys::default(),
                requirements: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Removes pulled modules no exporter runs and none used for a while.
    pub fn sweep_modules(&self) {
        let keep = self.shared.guests.in_use();
        let removed = self
            .shared
            .guests
            .registries()
            .store()
            .sweep(&keep, crate::transform::modules::store::DEFAULT_RETENTION);
        if removed > 0 {
            tracing::info!(removed, "removed unused guest modules from the cache");
        }
    }

    /// The host's own metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Where status goes (Kubernetes).
    pub fn statuses(&self) -> Option<&Arc<StatusStore>> {
        match &self.shared.state {
            ProgressStore::Status(s) => Some(s),
            ProgressStore::File(_) => None,
        }
    }

    /// The stores of `prometheusScrape` exporters, for the HTTP server.
    pub fn scrape_endpoints(&self) -> Vec<Arc<crate::export::prometheus::ScrapeStore>> {
        let mut stores: Vec<_> = self
            .shared
            .sinks
            .values()
            .filter_map(|s| s.scrape_store().cloned())
            .collect();
        stores.sort_by(|a, b| a.path().cmp(b.path()));
        stores
    }

    /// One run of one MetricsExporter: every matched rule to every named
    /// exporter, concurrently; one failing job does not hold back the
    /// others. What it came to (no failures: all succeeded).
    pub async fn run_plan(&self, plan: &ExportPlan, stop: &Stop) -> RunSummary {
        let mut summary = RunSummary {
            rules: plan
                .rules
                .iter()
                .filter(|r| r.body.is_none())
                .map(|r| r.key.clone())
                .collect(),
            rules_not_ready: plan.rules_not_ready.clone(),
            direct: plan.rules.iter().any(|r| r.body.is_some()),
            ..RunSummary::default()
        };
        let started = Instant::now();
        let shared = &self.shared;
        let config = plan.transform.config_json.clone();
        // Resolving and validating the guest takes a turn too: thousands of
        // exporters starting at once would otherwise all call their guests
        // at the same time. The turn is given back before the jobs take
        // theirs.
        let turn = shared.jobs.clone().acquire_owned().await.ok();
        let resolved = match shared
            .guests
            .resolve(&plan.key, &plan.namespace, plan.transform.module.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(metrics_exporter = %plan.key, error = %e, reason = e.reason.as_str(), "no usable guest module; nothing exported until one is");
                self.count_run(plan, "failed");
                summary.module_problem = Some((e.reason.as_str(), e.to_string()));
                summary.failures.push((
                    crate::api::conditions::reason::MODULE_NOT_READY,
                    e.to_string(),
                ));
                return summary;
            }
        };
        summary.module = Some(resolved.info.clone());
        summary.module_problem = resolved
            .problem
            .as_ref()
            .map(|e| (e.reason.as_str(), e.to_string()));
        let guest = self
            .requirements(&resolved.guest, &config)
            .await
            .map(|r| (resolved.guest.clone(), r))
            .map_err(|e| e.to_string());
        let (guest, requirements) = match guest {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(metrics_exporter = %plan.key, manifest = %plan.source.display(), error = %e, "transform not usable; nothing exported");
                self.count_run(plan, "failed");
                summary
                    .failures
                    .push((crate::api::conditions::reason::TRANSFORM_FAILED, e));
                return summary;
            }
        };
        drop(turn);
        if plan.rules.is_empty() {
            tracing::warn!(metrics_exporter = %plan.key, "the selector matches no SummaryRule in the namespace");
        }
        // Each exporter with its resource: the MetricsExporter's own
        // attributes added where the platform has not set the key.
        let mut targets = Vec::new();
        for sink_name in &plan.sinks {
            let (Some(sink), Some(resource)) = (
                shared.sinks.get(sink_name).cloned(),
                shared.resources.get(sink_name),
            ) else {
                continue; // checked when planning
            };
            let resource = resource.with_tenant(&plan.resource_attributes).0;
            targets.push((sink_name.clone(), sink, resource));
        }
        let targets = Arc::new(targets);
        let mut jobs = tokio::task::JoinSet::new();
        for rule in &plan.rules {
            // One task per rule: its exporters share reads (`fan_out`).
            let (shared, plan, rule, guest, requirements, stop, targets) = (
                shared.clone(),
                plan.clone(),
                rule.clone(),
                guest.clone(),
                requirements.clone(),
                stop.clone(),
                targets.clone(),
            );
            jobs.spawn(async move {
                // The semaphore is never closed.
                let _turn = shared.jobs.clone().acquire_owned().await.ok();
                let t = Instant::now();
                let rule_jobs: Vec<Job<'_>> = targets
                    .iter()
                    .map(|(sink_name, sink, resource)| Job {
                        shared: &shared,
                        plan: &plan,
                        rule: &rule,
                        sink_name,
                        sink,
                        resource,
                        guest: &guest,
                        requirements: &requirements,
                        key: job_key(&plan.key, &rule.key, sink_name),
                    })
                    .collect();
                let outcomes = run_rule(&rule_jobs, &stop).await;
                let took = t.elapsed();
                outcomes
                    .into_iter()
                    .zip(targets.iter())
                    .map(|((report, result), (sink_name, _, _))| {
                        log_job(&plan, &rule.key, sink_name, &report, &result, took);
                        let failure = result.err().map(|e| (e.condition_reason(), e.to_string()));
                        (report, failure)
                    })
                    .collect::<Vec<_>>()
            });
        }
        while let Some(done) = jobs.join_next().await {
            match done {
                Ok(outcomes) => {
                    for (report, failure) in outcomes {
                        summary.rows_read += report.rows_read;
                        summary.points_sent += report.points_sent;
                        summary.rows_skipped += report.skipped.iter().map(|(_, n)| n).sum::<u64>();
                        summary.newest_point = summary.newest_point.max(report.newest_point);
                        summary.failures.extend(failure);
                    }
                }
                Err(e) => summary.failures.push((
                    crate::api::conditions::reason::EXPORT_FAILED,
                    format!("a job ended abnormally: {e}"),
                )),
            }
        }
        let ok = summary.failures.is_empty();
        self.count_run(plan, if ok { "success" } else { "failed" });
        tracing::debug!(metrics_exporter = %plan.key, duration_ms = started.elapsed().as_millis() as u64, ok, "run finished");
        summary
    }

    /// The guest's requirements for `config`, from `validate` the first time.
    async fn requirements(
        &self,
        guest: &Guest,
        config: &str,
    ) -> Result<Arc<Requirements>, TransformError> {
        let key = (guest.provenance().digest.clone(), config.to_string());
        if let Some(r) = lock(&self.shared.requirements).get(&key) {
            return Ok(r.clone());
        }
        let (g, c) = (guest.clone(), config.to_string());
        let requirements = tokio::task::spawn_blocking(move || g.validate(&c))
            .await
            .map_err(|e| TransformError::Instantiate {
                guest: guest.name().to_string(),
                reason: e.to_string(),
            })??;
        let requirements = Arc::new(requirements);
        let mut remembered = lock(&self.shared.requirements);
        if remembered.len() >= MAX_REMEMBERED_REQUIREMENTS {
            remembered.clear();
        }
        remembered.insert(key, requirements.clone());
        Ok(requirements)
    }

    fn count_run(&self, plan: &ExportPlan, result: &str) {
        self.shared
            .metrics
            .runs
            .get_or_create(&RunLabels {
                metrics_exporter: plan.key.clone(),
                result: result.to_string(),
            })
            .inc();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_job(
    plan: &ExportPlan,
    rule: &str,
    sink: &str,
    report: &JobReport,
    result: &Result<(), super::job::JobError>,
    took: Duration,
) {
    let skipped = report
        .skipped
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    let duration_ms = took.as_millis() as u64;
    match result {
        Ok(()) if report.stopped => tracing::info!(
            metrics_exporter = %plan.key, rule, exporter = sink,
            rows_read = report.rows_read, points_sent = report.points_sent, points_rejected = report.points_rejected, skipped = %skipped, duration_ms,
            "export run stopped as asked; progress recorded, the rest goes out on a later run"
        ),
        // Nothing new: thousands of idle exporters would fill the log.
        Ok(()) if report.rows_read == 0 && report.skipped.is_empty() => tracing::debug!(
            metrics_exporter = %plan.key, rule, exporter = sink, duration_ms,
            "export run: nothing new"
        ),
        Ok(()) => tracing::info!(
            metrics_exporter = %plan.key, rule, exporter = sink,
            rows_read = report.rows_read, points_sent = report.points_sent, points_rejected = report.points_rejected, skipped = %skipped, duration_ms,
            "export run"
        ),
        Err(e) => tracing::error!(
            metrics_exporter = %plan.key, rule, exporter = sink,
            rows_read = report.rows_read, points_sent = report.points_sent, skipped = %skipped, duration_ms,
            reason = e.reason(), error = %e,
            "export run failed; progress kept, the rows go out on a later run"
        ),
    }
}

/// Reads the manifests and plans; at start, any problem is fatal.
fn initial_plans(
    folder: &mut ManifestFolder,
    config: &HostConfig,
) -> anyhow::Result<Vec<ExportPlan>> {
    let (catalog, _) = folder
        .scan()
        .map_err(|e| anyhow::anyhow!("reading manifests from {}: {e}", folder_path(config)))?;
    let (plans, errors, _) = checked_plans(&catalog, config);
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(plans)
}

/// Plans, every problem as a message, and the exporters that failed to plan.
pub(crate) fn checked_plans(
    catalog: &Catalog,
    config: &HostConfig,
) -> (Vec<ExportPlan>, Vec<String>, HashSet<String>) {
    let mut errors: Vec<String> = catalog
        .errors
        .iter()
        .map(|(file, e)| format!("{}: {e}", file.display()))
        .collect();
    let planned = plan(catalog, config);
    for (key, why) in &planned.elsewhere {
        tracing::info!(metrics_exporter = %key, reason = %why, "not run on this host");
    }
    errors.extend(planned.errors.iter().map(ToString::to_string));
    let failed = planned.errors.into_iter().map(|e| e.key).collect();
    (planned.plans, errors, failed)
}

fn folder_path(config: &HostConfig) -> String {
    config
        .manifests
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string())
}

/// `kusto-metrics run`. With `once`, runs every MetricsExporter one time and
/// returns whether all succeeded; otherwise runs until `shutdown`.
pub async fn run(
    config: Arc<HostConfig>,
    runner: Runner,
    health: Health,
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<bool> {
    if config.kubernetes.is_some() {
        return super::cluster::run(config, runner, health, once, shutdown).await;
    }
    let manifests = config
        .manifests
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no manifests folder configured"))?;
    let mut folder = ManifestFolder::new(manifests);
    let plans = initial_plans(&mut folder, &config)?;
    tracing::info!(metrics_exporters = plans.len(), "manifests read");
    if once {
        let mut all = tokio::task::JoinSet::new();
        for plan in plans {
            let runner = runner.clone();
            all.spawn(async move {
                runner
                    .run_plan(&plan, &Stop::never())
                    .await
                    .failures
                    .is_empty()
            });
        }
        let mut ok = true;
        while let Some(done) = all.join_next().await {
            ok &= done.unwrap_or(false);
        }
        return Ok(ok);
    }

    let mut tasks: HashMap<String, Task> = HashMap::new();
    apply(&runner, &mut tasks, plans);
    health.set_ready(true);
    tokio::pin!(shutdown);
    let mut swept = Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(config.reload_interval) => {}
        }
        if swept.elapsed() >= MODULE_SWEEP_INTERVAL {
            runner.sweep_modules();
            swept = Instant::now();
        }
        match folder.scan() {
            Ok((_, false)) => {}
            Ok((catalog, true)) => {
                let (plans, errors, failed) = checked_plans(&catalog, &config);
                for e in &errors {
                    tracing::error!(error = %e, "manifest problem; the last good version keeps running where there is one");
                }
                apply_changes(&mut tasks, plans, &failed, |plan, previous| {
                    spawn(&runner, plan, previous, Owner::Local)
                });
            }
            Err(e) => {
                tracing::error!(folder = %folder_path(&config), error = %e, "cannot read the manifests folder")
            }
        }
    }
    tracing::info!("stopping: letting runs in progress finish their chunk");
    stop_all(tasks.into_values().collect(), SHUTDOWN_GRACE).await;
    Ok(true)
}

/// Drains every task (each finishes and commits its chunk in flight);
/// those still running after `grace` stop after their request in flight,
/// with what was accepted recorded, for at most [`STOP_NOW_BOUND`] more.
pub(crate) async fn stop_all(tasks: Vec<Task>, grace: Duration) {
    let mut handles = Vec::with_capacity(tasks.len());
    let mut stops = Vec::with_capacity(tasks.len());
    for task in tasks {
        task.stop.drain();
        stops.push(task.stop);
        handles.push(task.handle);
    }
    let mut all = futures_join(handles);
    if tokio::time::timeout(grace, &mut all).await.is_ok() {
        return;
    }
    tracing::warn!(grace = ?grace, "runs still going after the shutdown grace; stopping them after their request in flight");
    for stop in &stops {
        stop.now();
    }
    let _ = tokio::time::timeout(STOP_NOW_BOUND, all).await;
}

pub(crate) fn futures_join(
    handles: Vec<JoinHandle<()>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        for h in handles {
            let _ = h.await;
        }
    })
}

/// A running MetricsExporter.
pub(crate) struct Task {
    pub(crate) plan: ExportPlan,
    pub(crate) stop: StopHandle,
    pub(crate) handle: JoinHandle<()>,
}

impl Task {
    /// Asks the task to stop at its next chunk boundary; its handle ends
    /// once it has.
    pub(crate) fn stop(self) -> JoinHandle<()> {
        self.stop.drain();
        self.handle
    }
}

fn apply(runner: &Runner, tasks: &mut HashMap<String, Task>, plans: Vec<ExportPlan>) {
    apply_changes(tasks, plans, &HashSet::new(), |plan, previous| {
        spawn(runner, plan, previous, Owner::Local)
    });
}

/// Starts new plans, restarts changed ones (after the old run finished, so
/// two runs of one exporter never overlap), stops removed ones. An exporter
/// whose manifest now fails to plan keeps its running version.
pub(crate) fn apply_changes(
    tasks: &mut HashMap<String, Task>,
    plans: Vec<ExportPlan>,
    failed: &HashSet<String>,
    spawn: impl Fn(ExportPlan, Option<JoinHandle<()>>) -> Task,
) {
    let mut wanted: HashMap<String, ExportPlan> =
        plans.into_iter().map(|p| (p.key.clone(), p)).collect();
    let keys: Vec<String> = tasks.keys().cloned().collect();
    for key in keys {
        let keep_running = failed.contains(&key);
        match wanted.remove(&key) {
            Some(plan) if tasks.get(&key).is_some_and(|t| t.plan == plan) => {}
            Some(plan) => {
                if let Some(old) = tasks.remove(&key) {
                    tracing::info!(metrics_exporter = %key, rules = plan.rules.len(), "MetricsExporter changed; restarting it");
                    let previous = old.stop();
                    tasks.insert(key, spawn(plan, Some(previous)));
                }
            }
            None if keep_running => {}
            None => {
                if let Some(old) = tasks.remove(&key) {
                    tracing::info!(metrics_exporter = %key, "MetricsExporter removed; stopping it");
                    drop(old.stop());
                }
            }
        }
    }
    for (key, plan) in wanted {
        tracing::info!(metrics_exporter = %key, rules = plan.rules.len(), "MetricsExporter added");
        tasks.insert(key, spawn(plan, None));
    }
}

/// Who runs an exporter: this host alone (local mode), or the replica that
/// holds its Lease, which reports each run in the exporter's status.
pub(crate) enum Owner {
    Local,
    Lease {
        fence: Fence,
        statuses: Arc<StatusStore>,
    },
}

impl Owner {
    fn held(&self) -> bool {
        match self {
            Owner::Local => true,
            Owner::Lease { fence, .. } => fence.is_held(),
        }
    }

    /// Resolves when the exporter is no longer this host's to run.
    async fn lost(&self) {
        match self {
            Owner::Local => std::future::pending().await,
            Owner::Lease { fence, .. } => fence.lost().await,
        }
    }

    /// Resolves when this host is to hand the exporter over.
    async fn draining(&self) {
        match self {
            Owner::Local => std::future::pending().await,
            Owner::Lease { fence, .. } => fence.draining().await,
        }
    }

    fn drain_bound(&self) -> Duration {
        match self {
            Owner::Local => SHUTDOWN_GRACE,
            Owner::Lease { fence, .. } => fence.drain_bound(),
        }
    }

    fn is_draining(&self) -> bool {
        match self {
            Owner::Local => false,
            Owner::Lease { fence, .. } => fence.is_draining(),
        }
    }

    /// The task has ended: a Lease being handed over may go.
    fn done(&self) {
        if let Owner::Lease { fence, .. } = self {
            fence.drained();
        }
    }
}

/// Runs one exporter on its interval while this host owns it: the one run
/// loop of both modes.
pub(crate) fn spawn(
    runner: &Runner,
    plan: ExportPlan,
    previous: Option<JoinHandle<()>>,
    owner: Owner,
) -> Task {
    let (stop, stopped) = stop_pair();
    let escalate = stop.clone();
    let runner = runner.clone();
    let p = plan.clone();
    let handle = tokio::spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let mut ticker = tokio::time::interval(p.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.reached(StopLevel::Drain) => {}
                _ = owner.lost() => {}
                _ = owner.draining() => {}
            }
            if stopped.draining() || !owner.held() || owner.is_draining() {
                break;
            }
            // A run is never dropped half-way (what the receiver accepted
            // would not be recorded, and the next holder would send it
            // again): it is told to stop, and stops where its progress is
            // true.
            let run = runner.run_plan(&p, &stopped);
            tokio::pin!(run);
            let summary = tokio::select! {
                summary = &mut run => summary,
                _ = owner.lost() => {
                    tracing::warn!(metrics_exporter = %p.key, "lease lost during a run; stopping it after the request in flight");
                    escalate.now();
                    run.await
                }
                _ = owner.draining() => {
                    tracing::info!(metrics_exporter = %p.key, "handing the exporter over: finishing the chunk in flight");
                    escalate.drain();
                    tokio::select! {
                        summary = &mut run => summary,
                        _ = tokio::time::sleep(owner.drain_bound()) => {
                            tracing::warn!(metrics_exporter = %p.key, bound = ?owner.drain_bound(), "the chunk in flight takes too long to hand over; stopping after the request in flight");
                            escalate.now();
                            run.await
                        }
                    }
                }
            };
            if let Owner::Lease { statuses, .. } = &owner
                && owner.held()
            {
                statuses.report_run(&p.key, p.generation, &summary).await;
            }
        }
        owner.done();
    });
    Task { plan, stop, handle }
}
