//! Each MetricsExporter's guest: fetched from where its `module` says
//! (builtin, file, ConfigMap, OCI), verified, loaded once per content
//! digest, and kept as the exporter's last good module.
//!
//! Fail closed, keep last good: a module that cannot be fetched, verified
//! or loaded never runs. An exporter that had a good module keeps running
//! it and retries the new one with backoff; one that never had one does not
//! run. It never falls back to the builtin on its own. A changed reference
//! (or ConfigMap content) is used from the next run, without a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::transform_file::ModuleRef;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{ModuleFetchLabels, ReasonLabels};
use crate::transform::modules::oci::Registries;
use crate::transform::modules::{Fetched, ModuleError, ModuleReason, configmap, sha256_digest};
use crate::transform::{Guest, Runtime, TransformError, builtin};

/// First wait before a failed module is tried again; doubles up to the max.
pub const MODULE_RETRY_INITIAL: Duration = Duration::from_secs(10);
pub const MODULE_RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// What runs, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub source: String,
    pub manifest_digest: Option<String>,
    /// `sha256:` of the component.
    pub layer_digest: String,
    pub size: u64,
    /// When it was fetched (RFC 3339).
    pub pulled_at: String,
    pub warning: Option<String>,
}

/// The guest to run, and a problem with the module asked for (the guest is
/// then the last good one).
pub struct Resolved {
    pub guest: Guest,
    pub info: ModuleInfo,
    pub problem: Option<ModuleError>,
}

#[derive(Default)]
struct ExporterModule {
    last_good: Option<(Guest, ModuleInfo)>,
    /// The module asked for when the current backoff began.
    failing: Option<String>,
    problem: Option<ModuleError>,
    retry_at: Option<Instant>,
    delay: Duration,
}

pub struct GuestCache {
    runtime: Runtime,
    by_digest: Mutex<HashMap<String, Guest>>,
    registries: Arc<Registries>,
    kube: Option<kube::Client>,
    exporters: Mutex<HashMap<String, ExporterModule>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind(module: Option<&ModuleRef>) -> &'static str {
    match module {
        None | Some(ModuleRef::Builtin(_)) => "builtin",
        Some(ModuleRef::File(_)) => "file",
        Some(ModuleRef::ConfigMap { .. }) => "configMap",
        Some(ModuleRef::Oci(_)) => "oci",
    }
}

impl GuestCache {
    pub fn new(
        runtime: Runtime,
        registries: Arc<Registries>,
        kube: Option<kube::Client>,
        metrics: Arc<Metrics>,
    ) -> Self {
        GuestCache {
            runtime,
            by_digest: Mutex::new(HashMap::new()),
            registries,
            kube,
            exporters: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The guest exporter `key` (in `namespace`) runs now.
    pub async fn resolve(
        &self,
        key: &str,
        namespace: &str,
        module: Option<&ModuleRef>,
    ) -> Result<Resolved, ModuleError> {
        let wanted =
            module.map_or_else(|| "builtin column-mapping".to_string(), ModuleRef::describe);
        {
            let mut all = lock(&self.exporters);
            let state = all.entry(key.to_string()).or_default();
            if state.failing.as_deref() != Some(wanted.as_str()) {
                state.failing = None;
                state.retry_at = None;
                state.delay = Duration::ZERO;
            }
            if let (Some(at), Some(problem)) = (state.retry_at, &state.problem)
                && Instant::now() < at
            {
                return match &state.last_good {
                    Some((guest, info)) => Ok(Resolved {
                        guest: guest.clone(),
                        info: info.clone(),
                        problem: Some(problem.clone()),
                    }),
                    None => Err(problem.clone()),
                };
            }
        }
        let result = self.fetch_and_load(namespace, module, &wanted).await;
        let mut all = lock(&self.exporters);
        let state = all.entry(key.to_string()).or_default();
        match result {
            Ok((guest, info)) => {
                state.last_good = Some((guest.clone(), info.clone()));
                state.failing = None;
                state.problem = None;
                state.retry_at = None;
                state.delay = Duration::ZERO;
                Ok(Resolved {
                    guest,
                    info,
                    problem: None,
                })
            }
            Err(e) => {
                self.metrics
                    .module_failures
                    .get_or_create(&ReasonLabels {
                        reason: e.reason.as_str().to_string(),
                    })
                    .inc();
                state.delay = if state.delay.is_zero() {
                    MODULE_RETRY_INITIAL
                } else {
                    (state.delay * 2).min(MODULE_RETRY_MAX)
                };
                state.retry_at = Some(Instant::now() + state.delay);
                state.failing = Some(wanted);
                state.problem = Some(e.clone());
                match &state.last_good {
                    Some((guest, info)) => {
                        tracing::error!(metrics_exporter = %key, error = %e, retry_in = %humantime::format_duration(state.delay), running = %info.source, "guest module not usable; keeping the last good one");
                        Ok(Resolved {
                            guest: guest.clone(),
                            info: info.clone(),
                            problem: Some(e),
                        })
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn fetch_and_load(
        &self,
        namespace: &str,
        module: Option<&ModuleRef>,
        shown: &str,
    ) -> Result<(Guest, ModuleInfo), ModuleError> {
        let (name, fetched) = self.fetch(namespace, module, shown).await?;
        let result = if fetched.from_cache {
            "cached"
        } else {
            "fetched"
        };
        self.metrics
            .module_fetches
            .get_or_create(&ModuleFetchLabels {
                source: kind(module).to_string(),
                result: result.to_string(),
            })
            .inc();
        let info = ModuleInfo {
            source: shown.to_string(),
            manifest_digest: fetched.manifest_digest.clone(),
            layer_digest: fetched.layer_digest.clone(),
            size: fetched.bytes.len() as u64,
            pulled_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            warning: fetched.warning.clone(),
        };
        let guest = self.load(&name, fetched, shown).await?;
        Ok((guest, info))
    }

    /// The module's bytes and a name for logs.
    pub async fn fetch(
        &self,
        namespace: &str,
        module: Option<&ModuleRef>,
        shown: &str,
    ) -> Result<(String, Fetched), ModuleError> {
        let local = |bytes: Vec<u8>| Fetched {
            layer_digest: sha256_digest(&bytes),
            bytes,
            manifest_digest: None,
            from_cache: false,
            warning: None,
        };
        match module {
            None => Ok((
                builtin::COLUMN_MAPPING_NAME.to_string(),
                local(builtin::COLUMN_MAPPING.to_vec()),
            )),
            Some(ModuleRef::Builtin(name)) => match builtin::lookup(name) {
                Some(bytes) => Ok((name.clone(), local(bytes.to_vec()))),
                None => Err(ModuleError::new(
                    shown,
                    ModuleReason::InvalidArtifact,
                    format!("unknown builtin module `{name}` (builtin modules: column-mapping)"),
                )),
            },
            Some(ModuleRef::File(path)) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    ModuleError::new(
                        shown,
                        ModuleReason::PullFailed,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let max = self.registries.max_size();
                if bytes.len() as u64 > max {
                    return Err(ModuleError::new(
                        shown,
                        ModuleReason::TooLarge,
                        format!(
                            "the module is {} bytes, over maxModuleSize ({max} bytes)",
                            bytes.len()
                        ),
                    ));
                }
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                Ok((name, local(bytes)))
            }
            Some(ModuleRef::ConfigMap { name, key, sha256 }) => {
                let Some(client) = &self.kube else {
                    return Err(ModuleError::new(
                        shown,
                        ModuleReason::PullFailed,
                        "a configMap module needs Kubernetes mode (no `manifests` in the config)",
                    ));
                };
                let f = configmap::fetch(
                    client,
                    namespace,
                    name,
                    key,
                    sha256.as_deref(),
                    self.registries.max_size(),
                )
                .await?;
                Ok((key.clone(), f))
            }
            Some(ModuleRef::Oci(r)) => {
                let secret = match (&r.pull_secret, &self.kube) {
                    (Some(s), Some(client)) => {
                        Some(configmap::pull_secret(client, namespace, s, shown).await?)
                    }
                    (Some(s), None) => {
                        return Err(ModuleError::new(
                            shown,
                            ModuleReason::Unauthorized,
                            format!(
                                "pullSecretRef {s} needs Kubernetes mode; in local mode set registries.dockerConfig"
                            ),
                        ));
                    }
                    (None, _) => None,
                };
                let f = self.registries.fetch(namespace, r, secret.as_ref()).await?;
                let name = r
                    .reference
                    .rsplit('/')
                    .next()
                    .unwrap_or(&r.reference)
                    .to_string();
                Ok((name, f))
            }
        }
    }

    /// Loads (compiling once per content digest) on a blocking thread.
    async fn load(&self, name: &str, fetched: Fetched, shown: &str) -> Result<Guest, ModuleError> {
        if let Some(g) = lock(&self.by_digest).get(&fetched.layer_digest) {
            return Ok(g.clone());
        }
        let runtime = self.runtime.clone();
        let name = name.to_string();
        let bytes = fetched.bytes;
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes))
            .await
            .map_err(|e| {
                ModuleError::new(
                    shown,
                    ModuleReason::InvalidArtifact,
                    format!("loading: {e}"),
                )
            })?;
        let guest = loaded.map_err(|e| {
            let reason = match &e {
                TransformError::IncompatibleContract { .. }
                | TransformError::ForbiddenImport { .. } => ModuleReason::IncompatibleContract,
                _ => ModuleReason::InvalidArtifact,
            };
            ModuleError::new(shown, reason, e.to_string())
        })?;
        tracing::info!(guest = %guest.name(), module = %shown, digest = %guest.provenance().digest, compiled_from_cache = guest.provenance().from_cache, "guest loaded");
        lock(&self.by_digest).insert(fetched.layer_digest, guest.clone());
        Ok(guest)
    }

    /// Digests of what the exporters run now (kept by the store's sweep).
    pub fn in_use(&self) -> HashSet<String> {
        let mut keep = HashSet::new();
        for m in lock(&self.exporters).values() {
            if let Some((_, info)) = &m.last_good {
                keep.insert(info.layer_digest.clone());
                keep.extend(info.manifest_digest.clone());
            }
        }
        keep
    }

    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// An exporter is gone: forget its last good module.
    pub fn forget(&self, key: &str) {
        lock(&self.exporters).remove(key);
    }
}
