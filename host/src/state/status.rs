//! Progress and health in the MetricsExporter's status (Kubernetes): the
//! replica running an exporter writes, with server-side apply, where each
//! (rule, exporter) stands, the conditions, counts and the last error. A
//! replica that takes an exporter over reads its progress from there, so
//! no state file is needed and `kubectl get metricsexporters` shows health.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
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
}

pub struct StatusStore {
    client: Client,
    identity: String,
    entries: Mutex<HashMap<String, Entry>>,
    recorder: Recorder,
    /// When each job last wrote the requests of a chunk accepted so far.
    noted: Mutex<HashMap<String, std::time::Instant>>,
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
        }
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

    /// Takes an exporter over: its progress is what its status says now.
    pub fn load(&self, me: &MetricsExporter) {
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
            },
        );
    }

    /// Takes an exporter over with its status as the API server has it now
    /// (a cache may not show the last replica's final progress yet).
    /// `Ok(false)` when the exporter is gone.
    pub async fn load_current(&self, key: &str) -> Result<bool, kube::Error> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(false);
        };
        let api: Api<MetricsExporter> = Api::namespaced(self.client.clone(), ns);
        match api.get_opt(name).await? {
            Some(me) => {
                self.load(&me);
                Ok(true)
            }
            None => Ok(false),
        }
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

    async fn write(&self, key: &str) -> Result<(), StateError> {
        let (namespace, name, status) = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(key) else {
                return Err(StateError::NotHeld(key.to_string()));
            };
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
            if entry.status.observed_generation.is_none() {
                entry.status.observed_generation = entry.generation;
            }
            (
                entry.namespace.clone(),
                entry.name.clone(),
                entry.status.clone(),
            )
        };
        let api: Api<MetricsExporter> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": API_VERSION,
            "kind": "MetricsExporter",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|source| StateError::Status {
            exporter: key.to_string(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
