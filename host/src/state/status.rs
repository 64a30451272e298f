//! Progress and health in the MetricsExporter's status (Kubernetes): the
//! replica running an exporter writes, with server-side apply, where each
//! (rule, exporter) stands, the conditions, counts and the last error. A
//! replica that takes an exporter over reads its progress from there, so
//! no state file is needed and `kubectl get metricsexporters` shows health.
//!
//! Every write is fenced: it carries the holder and its fencing token (the
//! exporter Lease's `leaseTransitions` when this replica took it), is sent
//! only while the Lease is held with that token, and sets
//! `metadata.resourceVersion`, so the API server refuses it when anything
//! wrote the object since this replica last read or wrote it. Taking an
//! exporter over writes the new holder and token first (with the version
//! just read): from then on a late write of the previous holder conflicts,
//! and on reading the object again it finds a newer token and gives up. So
//! a replica that lost its Lease never moves progress backwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::json;

use super::{Progress, StateError, split_job_key, wire};
use crate::api::conditions::{
    self, DEGRADED, EXPORTING, MODULE_READY, READY, RULES_DISCOVERED, reason,
};
use crate::api::metrics_exporter::ModuleStatus;
use crate::api::metrics_exporter::PartialProgress;
use crate::api::{API_VERSION, MetaExt, MetricsExporter, MetricsExporterStatus, RuleProgress};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "kusto-metrics";
/// The longest error kept in status (the API server caps messages; a wall
/// of text helps nobody).
pub const MAX_ERROR_CHARS: usize = 512;

/// Tries of one status write when the object changed since this replica
/// last saw it but it still holds the exporter (its own concurrent write,
/// a spec edit): each reads the object again first.
const WRITE_ATTEMPTS: usize = 4;

/// The fencing token this replica holds for an exporter now (`None`: it
/// holds no valid claim), from its Leases.
pub type FenceSource = Arc<dyn Fn(&str) -> Option<i64> + Send + Sync>;

/// What one run of one MetricsExporter came to, for its status.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub rows_read: u64,
    pub points_sent: u64,
    pub rows_skipped: u64,
    /// Failed jobs: (condition reason, message).
    pub failures: Vec<(&'static str, String)>,
    /// Time (Unix ns) of the newest point delivered.
    pub newest_point: Option<u64>,
    /// Rules matched and those adx-mon reports unhealthy.
    pub rules: Vec<String>,
    pub rules_not_ready: Vec<String>,
    /// The exporter reads its own query (`spec.body`).
    pub direct: bool,
    /// The guest that ran, if any.
    pub module: Option<crate::schedule::guests::ModuleInfo>,
    /// What is wrong with the module asked for: (reason, message). With
    /// `module` set, the last good one ran instead.
    pub module_problem: Option<(&'static str, String)>,
}

struct Entry {
    namespace: String,
    name: String,
    uid: Option<String>,
    generation: Option<i64>,
    status: MetricsExporterStatus,
    progress: BTreeMap<String, Progress>,
    /// The fencing token the exporter was taken with.
    token: i64,
    /// The object's version as this replica last read or wrote it.
    resource_version: Option<String>,
}

/// How a fenced write or claim went wrong.
enum Refusal {
    /// Another replica holds the exporter (a newer token), or this one no
    /// longer holds its Lease: permanent.
    Stale(String),
    /// The API server refused or could not be reached.
    Api(kube::Error),
}

pub struct StatusStore {
    client: Client,
    identity: String,
    entries: Mutex<HashMap<String, Entry>>,
    recorder: Recorder,
    /// When each job last wrote the requests of a chunk accepted so far.
    noted: Mutex<HashMap<String, std::time::Instant>>,
    fences: OnceLock<FenceSource>,
}

/// Requests accepted within a chunk are written to the status at most this
/// often per job (each write is an API-server request); the chunk's own
/// commit is always written.
pub const NOTE_INTERVAL: Duration = Duration::from_secs(1);

fn to_progress(r: &RuleProgress) -> Progress {
    wire::Progress {
        offset: r.offset.max(0) as u64,
        rows: r.rows.max(0) as u64,
        fingerprint: r.fingerprint.clone(),
        window_end: r.window_end.clone(),
        updated: r.updated.clone(),
        partial: r.partial.as_ref().map(|p| wire::Partial {
            end_offset: p.end_offset.max(0) as u64,
            start_offset: p.start_offset.map(|s| s.max(0) as u64),
            chunks: u32::try_from(p.chunks.max(0)).unwrap_or(u32::MAX),
            chunks_digest: p.chunks_digest.clone(),
            requests: p.requests.max(0) as usize,
            output_key: p.output_key.clone(),
        }),
    }
    .into()
}

fn to_rule_progress(rule: &str, exporter: &str, p: &Progress) -> RuleProgress {
    let w = wire::Progress::from(p.clone());
    let long = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    RuleProgress {
        rule: rule.to_string(),
        exporter: exporter.to_string(),
        window_end: w.window_end,
        offset: long(w.offset),
        rows: long(w.rows),
        fingerprint: w.fingerprint,
        partial: w.partial.map(|c| PartialProgress {
            end_offset: long(c.end_offset),
            start_offset: c.start_offset.map(long),
            chunks: i64::from(c.chunks),
            chunks_digest: c.chunks_digest,
            requests: long(c.requests as u64),
            output_key: c.output_key,
        }),
        updated: w.updated,
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters.
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl StatusStore {
    pub fn new(client: Client, identity: &str) -> StatusStore {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: Some(identity.to_string()),
            },
        );
        StatusStore {
            client,
            identity: identity.to_string(),
            entries: Mutex::new(HashMap::new()),
            recorder,
            noted: Mutex::new(HashMap::new()),
            fences: OnceLock::new(),
        }
    }

    /// Where writes learn whether this replica still holds an exporter.
    /// Until it is set, every write is refused.
    pub fn set_fences(&self, fences: FenceSource) {
        if self.fences.set(fences).is_err() {
            tracing::warn!("the status store's fence source is set already; keeping the first");
        }
    }

    fn current_token(&self, key: &str) -> Option<i64> {
        self.fences.get().and_then(|f| f(key))
    }

    /// The exporter is loaded and was taken with the token it holds now.
    pub fn holds(&self, key: &str) -> bool {
        let token = self.current_token(key);
        token.is_some() && self.lock().get(key).map(|e| e.token) == token
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an exporter over in memory with fencing token `token`: its
    /// progress is what its status says now.
    fn load(&self, me: &MetricsExporter, token: i64) {
        let key = me.metadata.key();
        let status = me.status.clone().unwrap_or_default();
        let progress = status
            .rules
            .iter()
            .map(|r| {
                (
                    crate::state::job_key(&key, &r.rule, &r.exporter),
                    to_progress(r),
                )
            })
            .collect();
        self.lock().insert(
            key,
            Entry {
                namespace: me.metadata.ns().to_string(),
                name: me.metadata.name_or_empty().to_string(),
                uid: me.metadata.uid.clone(),
                generation: me.metadata.generation,
                status,
                progress,
                token,
                resource_version: me.metadata.resource_version.clone(),
            },
        );
    }

    /// Takes an exporter over with its status as the API server has it now
    /// (a cache may not show the last replica's final progress yet), and
    /// writes this replica in as holder with its fencing token, conditional
    /// on the version just read: a previous holder's late write either
    /// landed before (and is read again here) or conflicts after.
    /// `Ok(false)` when the exporter is gone; `NotHeld` when this replica
    /// does not hold its Lease, or another holds a newer token.
    pub async fn load_current(&self, key: &str) -> Result<bool, StateError> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(false);
        };
        let api: Api<MetricsExporter> = Api::namespaced(self.client.clone(), ns);
        let status_error = |source| StateError::Status {
            exporter: key.to_string(),
            source: Box::new(source),
        };
        let mut last = None;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(token) = self.current_token(key) else {
                return Err(StateError::NotHeld(key.to_string()));
            };
            let Some(me) = api.get_opt(name).await.map_err(status_error)? else {
                return Ok(false);
            };
            let status = me.status.clone().unwrap_or_default();
            if let Some(theirs) = status.fencing_token.filter(|t| *t > token) {
                tracing::warn!(metrics_exporter = %key, token, status_token = theirs, status_holder = ?status.holder, "the status names a newer holder of this exporter; not taking it over");
                return Err(StateError::NotHeld(key.to_string()));
            }
            self.load(&me, token);
            if let Some(entry) = self.lock().get_mut(key) {
                entry.status.holder = Some(self.identity.clone());
                entry.status.fencing_token = Some(token);
            }
            match self.put(key).await {
                Ok(()) => return Ok(true),
                Err(Refusal::Stale(why)) => {
                    self.forget(key);
                    tracing::warn!(metrics_exporter = %key, why = %why, "not taking the exporter over");
                    return Err(StateError::NotHeld(key.to_string()));
                }
                // Written in between (the last holder's final progress):
                // read it again.
                Err(Refusal::Api(kube::Error::Api(e))) if e.code == 409 => {
                    last = Some(kube::Error::Api(e));
                }
                Err(Refusal::Api(e)) => {
                    self.forget(key);
                    return Err(status_error(e));
                }
            }
        }
        self.forget(key);
        Err(match last {
            Some(e) => status_error(e),
            None => StateError::NotHeld(key.to_string()),
        })
    }

    /// A Warning event on the exporter (`kubectl describe` shows it).
    pub async fn warn(&self, key: &str, reason: &str, message: &str) {
        let reference = {
            let entries = self.lock();
            let Some(e) = entries.get(key) else { return };
            ObjectReference {
                api_version: Some(API_VERSION.to_string()),
                kind: Some("MetricsExporter".to_string()),
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                uid: e.uid.clone(),
                ..ObjectReference::default()
            }
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(truncate(message)),
            action: "Export".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(metrics_exporter = %key, error = %e, "cannot publish an event");
        }
    }

    /// Another replica runs it now (or it is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn is_loaded(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    pub fn get(&self, job_key: &str) -> Option<Progress> {
        let (me, _, _) = split_job_key(job_key)?;
        self.lock().get(me)?.progress.get(job_key).cloned()
    }

    /// The requests of a chunk accepted so far: written when the job has
    /// not written any for [`NOTE_INTERVAL`], else left to the next write.
    pub async fn note(&self, job_key: &str, progress: Progress) -> Result<(), StateError> {
        let due = {
            let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
            match noted.get(job_key) {
                Some(t) if t.elapsed() < NOTE_INTERVAL => false,
                _ => {
                    noted.insert(job_key.to_string(), std::time::Instant::now());
                    true
                }
            }
        };
        if due {
            self.commit(job_key, progress).await
        } else {
            Ok(())
        }
    }

    /// Records progress and writes it to the status before returning;
    /// nothing is written when the job has not moved.
    pub async fn commit(&self, job_key: &str, mut progress: Progress) -> Result<(), StateError> {
        if self.get(job_key).as_ref() == Some(&progress) {
            return Ok(());
        }
        progress.updated = now_rfc3339();
        let Some((me, _, _)) = split_job_key(job_key) else {
            return Err(StateError::Io {
                path: "status".into(),
                source: std::io::Error::other(format!("bad progress key {job_key}")),
            });
        };
        let previous = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(me) else {
                return Err(StateError::NotHeld(me.to_string()));
            };
            entry.progress.insert(job_key.to_string(), progress)
        };
        if let Err(e) = self.write(me).await {
            // Memory must not run ahead of what the API server holds.
            let mut entries = self.lock();
            if let Some(entry) = entries.get_mut(me) {
                match previous {
                    Some(p) => entry.progress.insert(job_key.to_string(), p),
                    None => entry.progress.remove(job_key),
                };
            }
            return Err(e);
        }
        Ok(())
    }

    /// After a run: conditions, counts, the last error.
    pub async fn report_run(&self, key: &str, generation: Option<i64>, run: &RunSummary) {
        {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(key) else {
                return;
            };
            entry.generation = generation;
            let now = now_time();
            let previous = entry.status.conditions.clone();
            let c = |t: &str, s: bool, r: &str, m: &str| {
                conditions::condition(&previous, t, s, r, m, generation, &now)
            };
            let ok = run.failures.is_empty();
            let mut list = vec![match (&run.module, &run.module_problem) {
                (None, Some((_, m))) => c(
                    READY,
                    false,
                    reason::MODULE_NOT_READY,
                    &truncate(&format!("no usable guest module, and none ran before: {m}")),
                ),
                _ => c(
                    READY,
                    true,
                    reason::RUNNING,
                    &format!("run by {}", self.identity),
                ),
            }];
            list.push(match (&run.module_problem, &run.module) {
                (Some((r, m)), Some(info)) => c(
                    MODULE_READY,
                    false,
                    r,
                    &truncate(&format!(
                        "{m}; still running the last good module {}",
                        info.source
                    )),
                ),
                (Some((r, m)), None) => c(MODULE_READY, false, r, &truncate(m)),
                (None, Some(info)) => c(
                    MODULE_READY,
                    true,
                    reason::MODULE_LOADED,
                    &info
                        .warning
                        .clone()
                        .unwrap_or_else(|| format!("running {}", info.source)),
                ),
                (None, None) => c(MODULE_READY, true, reason::MODULE_LOADED, ""),
            });
            list.push(if run.direct {
                c(
                    RULES_DISCOVERED,
                    true,
                    reason::RULES_MATCHED,
                    "reads its own query (spec.body)",
                )
            } else if run.rules.is_empty() {
                c(
                    RULES_DISCOVERED,
                    false,
                    reason::NO_MATCHING_RULES,
                    &format!(
                        "the selector matches no SummaryRule in namespace {}",
                        entry.namespace
                    ),
                )
            } else {
                c(
                    RULES_DISCOVERED,
                    true,
                    reason::RULES_MATCHED,
                    &format!("{} rule(s): {}", run.rules.len(), run.rules.join(", ")),
                )
            });
            list.push(match run.failures.first() {
                None => c(
                    EXPORTING,
                    true,
                    reason::EXPORT_SUCCEEDED,
                    "the last run delivered everything",
                ),
                Some((r, m)) => c(EXPORTING, false, r, &truncate(m)),
            });
            list.push(
                match (run.failures.first(), run.rules_not_ready.is_empty()) {
                    (Some((r, m)), _) => c(DEGRADED, true, r, &truncate(m)),
                    (None, false) => c(
                        DEGRADED,
                        true,
                        reason::RULES_NOT_READY,
                        &format!(
                            "adx-mon reports these SummaryRules unhealthy: {}",
                            run.rules_not_ready.join(", ")
                        ),
                    ),
                    (None, true) => c(DEGRADED, false, reason::AS_EXPECTED, ""),
                },
            );
            let s = &mut entry.status;
            s.conditions = list;
            if let Some(info) = &run.module {
                s.module = Some(ModuleStatus {
                    source: info.source.clone(),
                    manifest_digest: info.manifest_digest.clone(),
                    layer_digest: info.layer_digest.clone(),
                    size: i64::try_from(info.size).unwrap_or(i64::MAX),
                    pulled_at: info.pulled_at.clone(),
                    warning: info.warning.clone(),
                });
            }
            s.observed_generation = generation;
            s.rules_matched = Some(run.rules.len() as i64);
            s.rows_read = s.rows_read.saturating_add(run.rows_read as i64);
            s.points_sent = s.points_sent.saturating_add(run.points_sent as i64);
            s.rows_skipped = s.rows_skipped.saturating_add(run.rows_skipped as i64);
            s.holder = Some(self.identity.clone());
            if ok {
                s.last_success = Some(now_rfc3339());
            } else {
                s.last_error = run.failures.first().map(|(_, m)| truncate(m));
            }
            if let Some(newest) = run.newest_point {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                let lag = now.saturating_sub(Duration::from_nanos(newest));
                s.lag = Some(
                    humantime::format_duration(Duration::from_secs(lag.as_secs())).to_string(),
                );
            }
        }
        if let Err(e) = self.write(key).await {
            tracing::warn!(metrics_exporter = %key, error = %e, "cannot write the status");
        }
        if let Some((reason, message)) = run.failures.first() {
            self.warn(key, reason, message).await;
        }
    }

    /// The exporter cannot run: `Ready=False` with `reason` and why.
    pub async fn report_invalid(
        &self,
        key: &str,
        generation: Option<i64>,
        reason: &str,
        message: &str,
    ) {
        {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(key) else {
                return;
            };
            let now = now_time();
            let previous = entry.status.conditions.clone();
            let ready = conditions::condition(
                &previous,
                READY,
                false,
                reason,
                &truncate(message),
                generation,
                &now,
            );
            let s = &mut entry.status;
            s.conditions.retain(|c| c.type_ != READY);
            s.conditions.insert(0, ready);
            s.observed_generation = generation;
            s.last_error = Some(truncate(message));
            s.holder = Some(self.identity.clone());
        }
        if let Err(e) = self.write(key).await {
            tracing::warn!(metrics_exporter = %key, error = %e, "cannot write the status");
        }
        self.warn(key, reason, message).await;
    }

    /// The status the replica last wrote or loaded for `key`.
    pub fn status(&self, key: &str) -> Option<MetricsExporterStatus> {
        self.lock().get(key).map(|e| e.status.clone())
    }

    /// Writes the status as held in memory, fenced (see the module
    /// comment), trying again on a conflict while this replica still holds
    /// the exporter; a stale holder's write is refused and logged.
    async fn write(&self, key: &str) -> Result<(), StateError> {
        let mut attempt = 1;
        loop {
            match self.put(key).await {
                Ok(()) => return Ok(()),
                Err(Refusal::Stale(why)) => {
                    tracing::warn!(metrics_exporter = %key, why = %why, "refused a status write: this replica no longer holds the exporter");
                    return Err(StateError::NotHeld(key.to_string()));
                }
                Err(Refusal::Api(kube::Error::Api(e)))
                    if e.code == 409 && attempt < WRITE_ATTEMPTS =>
                {
                    attempt += 1;
                    tracing::debug!(metrics_exporter = %key, attempt, "the exporter changed since this replica wrote it; reading it again");
                    if let Err(refusal) = self.refresh(key).await {
                        match refusal {
                            Refusal::Stale(why) => {
                                tracing::warn!(metrics_exporter = %key, why = %why, "refused a status write: another replica holds the exporter");
                                return Err(StateError::NotHeld(key.to_string()));
                            }
                            Refusal::Api(source) => {
                                return Err(StateError::Status {
                                    exporter: key.to_string(),
                                    source: Box::new(source),
                                });
                            }
                        }
                    }
                }
                Err(Refusal::Api(source)) => {
                    return Err(StateError::Status {
                        exporter: key.to_string(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// Reads the object again after a conflict: its new version, and
    /// whether another replica has written a newer token. Progress the
    /// object holds ahead of memory is kept (progress never moves back).
    async fn refresh(&self, key: &str) -> Result<(), Refusal> {
        let (namespace, name, token) = {
            let entries = self.lock();
            let e = entries
                .get(key)
                .ok_or_else(|| Refusal::Stale("no longer loaded".into()))?;
            (e.namespace.clone(), e.name.clone(), e.token)
        };
        let api: Api<MetricsExporter> = Api::namespaced(self.client.clone(), &namespace);
        let me = api.get(&name).await.map_err(Refusal::Api)?;
        let status = me.status.unwrap_or_default();
        if let Some(why) = stale_against(&status, &self.identity, token) {
            return Err(Refusal::Stale(why));
        }
        let mut entries = self.lock();
        let entry = entries
            .get_mut(key)
            .ok_or_else(|| Refusal::Stale("no longer loaded".into()))?;
        entry.resource_version = me.metadata.resource_version;
        for r in &status.rules {
            let job = crate::state::job_key(key, &r.rule, &r.exporter);
            let theirs = to_progress(r);
            if entry
                .progress
                .get(&job)
                .is_none_or(|mine| ahead(&theirs, mine))
            {
                tracing::warn!(metrics_exporter = %key, job = %job, "the status holds progress ahead of this replica's; keeping it");
                entry.progress.insert(job, theirs);
            }
        }
        Ok(())
    }

    /// One fenced write: only while the Lease is held with the entry's
    /// token, conditional on the version last seen.
    async fn put(&self, key: &str) -> Result<(), Refusal> {
        let current = self.current_token(key);
        let (namespace, name, status, resource_version) = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(key) else {
                return Err(Refusal::Stale("the exporter is not loaded here".into()));
            };
            if current != Some(entry.token) {
                return Err(Refusal::Stale(match current {
                    None => "its lease is not held (or no longer valid)".to_string(),
                    Some(t) => format!(
                        "its lease was taken again (token {t}, loaded with {})",
                        entry.token
                    ),
                }));
            }
            let mut rules: Vec<RuleProgress> = entry
                .progress
                .iter()
                .filter_map(|(k, p)| {
                    let (_, rule, exporter) = split_job_key(k)?;
                    Some(to_rule_progress(rule, exporter, p))
                })
                .collect();
            rules.sort_by(|a, b| (&a.rule, &a.exporter).cmp(&(&b.rule, &b.exporter)));
            entry.status.rules = rules;
            entry.status.holder = Some(self.identity.clone());
            entry.status.fencing_token = Some(entry.token);
            if entry.status.observed_generation.is_none() {
                entry.status.observed_generation = entry.generation;
            }
            (
                entry.namespace.clone(),
                entry.name.clone(),
                entry.status.clone(),
                entry.resource_version.clone(),
            )
        };
        let api: Api<MetricsExporter> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": API_VERSION,
            "kind": "MetricsExporter",
            "metadata": {"name": name, "resourceVersion": resource_version},
            "status": status,
        });
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Refusal::Api)?;
        if let Some(entry) = self.lock().get_mut(key) {
            entry.resource_version = written.metadata.resource_version;
        }
        Ok(())
    }
}

/// Why a status written by another replica makes this one (`identity`,
/// holding `token`) a stale holder, if it does.
fn stale_against(status: &MetricsExporterStatus, identity: &str, token: i64) -> Option<String> {
    let theirs = status.fencing_token?;
    let holder = status.holder.as_deref().unwrap_or("");
    if theirs > token || (theirs == token && holder != identity) {
        Some(format!(
            "the status names {holder} with token {theirs}; this replica holds {token}"
        ))
    } else {
        None
    }
}

/// `a` stands strictly beyond `b` in the same source (a later window, or
/// further in the same table file, or further into the same chunk).
fn ahead(a: &Progress, b: &Progress) -> bool {
    use crate::state::Cursor;
    let within = |p: &Progress| p.partial.as_ref().map(|c| (c.chunks, c.requests));
    match (&a.cursor, &b.cursor) {
        (Cursor::Start, _) => false,
        (_, Cursor::Start) => true,
        (Cursor::Window { end: x }, Cursor::Window { end: y }) => {
            x > y || (x == y && within(a) > within(b))
        }
        (Cursor::File(x), Cursor::File(y)) if x.fingerprint == y.fingerprint => {
            x.offset > y.offset || (x.offset == y.offset && within(a) > within(b))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_token_or_another_holder_with_ours_makes_this_replica_stale() {
        let status = |holder: &str, token: Option<i64>| MetricsExporterStatus {
            holder: Some(holder.into()),
            fencing_token: token,
            ..MetricsExporterStatus::default()
        };
        assert!(stale_against(&status("b", Some(4)), "a", 3).is_some());
        assert!(stale_against(&status("b", Some(3)), "a", 3).is_some());
        assert!(stale_against(&status("a", Some(3)), "a", 3).is_none());
        assert!(stale_against(&status("b", Some(2)), "a", 3).is_none());
        assert!(
            stale_against(&status("b", None), "a", 0).is_none(),
            "a status from before fencing"
        );
    }

    #[test]
    fn progress_is_ahead_only_further_in_the_same_source() {
        use crate::state::{Cursor, FilePosition, PartialChunk};
        let file = |offset, fingerprint: &str, requests: Option<usize>| Progress {
            cursor: Cursor::File(FilePosition {
                offset,
                rows: 0,
                fingerprint: fingerprint.into(),
            }),
            partial: requests.map(|requests| PartialChunk {
                requests,
                ..PartialChunk::default()
            }),
            updated: String::new(),
        };
        let window = |end| Progress::at(Cursor::Window { end });
        assert!(ahead(&file(10, "f", None), &file(5, "f", None)));
        assert!(!ahead(&file(5, "f", None), &file(10, "f", None)));
        assert!(ahead(&file(5, "f", Some(2)), &file(5, "f", Some(1))));
        assert!(ahead(&file(5, "f", Some(1)), &file(5, "f", None)));
        assert!(
            !ahead(&file(10, "g", None), &file(5, "f", None)),
            "a rewritten file is no comparison"
        );
        assert!(ahead(&window(2), &window(1)) && !ahead(&window(1), &window(1)));
        assert!(ahead(&window(1), &Progress::default()));
        assert!(!ahead(&Progress::default(), &window(1)));
    }

    #[test]
    fn progress_round_trips_through_status() {
        use crate::state::{Cursor, FilePosition, PartialChunk};
        let partial = Some(PartialChunk {
            end_offset: 50,
            start_offset: Some(7),
            chunks: 3,
            chunks_digest: "d".into(),
            requests: 2,
            output_key: "k".into(),
        });
        for cursor in [
            Cursor::File(FilePosition {
                offset: 42,
                rows: 3,
                fingerprint: "f".into(),
            }),
            Cursor::Window {
                end: 17_508_456_000_000_000,
            },
            Cursor::Start,
        ] {
            let p = Progress {
                cursor,
                partial: partial.clone(),
                updated: "2025-06-25T10:00:01Z".into(),
            };
            let r = to_rule_progress("ns/r", "sink", &p);
            assert_eq!((r.rule.as_str(), r.exporter.as_str()), ("ns/r", "sink"));
            assert_eq!(to_progress(&r), p);
            assert_eq!(to_progress(&r).updated, p.updated);
        }
        assert_eq!(
            truncate(&"é".repeat(600)).chars().count(),
            MAX_ERROR_CHARS + 1
        );
        assert_eq!(truncate("short"), "short");
    }
}
