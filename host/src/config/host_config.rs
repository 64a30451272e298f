//! The host configuration file (`kusto-metrics run --config FILE`). Relative
//! paths are relative to the file. Unknown keys and bad values are errors
//! that name the file and the key.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::kubernetes::KubernetesConfig;
use super::tenancy::TenancyConfig;
use crate::discovery::ClusterLabels;
use crate::discovery::criteria::parse_key_values;
use crate::export::Resource;
use crate::export::config::ExporterConfig;
use crate::export::resource::check_attributes;
use crate::source::kusto::KustoConfig;
use crate::source::kusto::config::AuthMode;
use crate::telemetry::scrape_auth::ScrapeToken;
use crate::transform::limits;
use crate::transform::modules::config::RegistriesConfig;

/// Rows handed to a guest per call, at most. Keeps one call well inside the
/// guest's memory limit; a table with more new rows is read in several chunks.
pub const DEFAULT_MAX_ROWS_PER_BATCH: usize = 100_000;
/// How often the manifests folder is checked for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// The shortest `spec.interval` a MetricsExporter may ask for. Each run
/// queries every matched rule and logs a line per job: `interval: 1ms` on a
/// three-row table made 776 runs and 166 KB of logs a second.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    manifests: Option<PathBuf>,
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    state: Option<PathBuf>,
    #[serde(default)]
    exporters: Vec<ExporterConfig>,
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    guests: RawGuests,
    #[serde(default)]
    reload_interval: Option<String>,
    #[serde(default)]
    kubernetes: Option<KubernetesConfig>,
    #[serde(default)]
    registries: RegistriesConfig,
    /// This host's labels for `criteria` and `criteriaExpression`.
    #[serde(default)]
    cluster_labels: BTreeMap<String, String>,
    #[serde(default)]
    tenancy: Option<TenancyConfig>,
    #[serde(default)]
    min_interval: Option<String>,
    /// Jobs (rule × exporter runs) that run at once; more wait their turn.
    #[serde(default)]
    max_concurrent_jobs: Option<usize>,
    /// Put before every metric name (and before a MetricsExporter's own
    /// prefix), joined with `_`.
    #[serde(default)]
    metric_name_prefix: Option<String>,
    /// Resource attributes of everything sent (an exporter's own win).
    #[serde(default)]
    resource_attributes: BTreeMap<String, String>,
    #[serde(default)]
    resource: RawResource,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawResource {
    /// The cluster labels as resource attributes too (under the host's
    /// `resourceAttributes`), as upstream adx-mon's exporter adds them.
    #[serde(default)]
    include_cluster_labels: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    local: Option<RawLocal>,
    #[serde(default)]
    kusto: Option<KustoConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLocal {
    tables: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    listen: Option<String>,
    /// Where the bearer token that scrape paths require comes from.
    #[serde(default)]
    scrape_token: Option<RawTokenSource>,
}

/// `{env: NAME}` or `{file: PATH}`: a secret is never inline in the file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTokenSource {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGuests {
    #[serde(default)]
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    memory_mib: Option<usize>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    max_rows_per_batch: Option<usize>,
}

/// A checked configuration with absolute paths.
#[derive(Debug)]
pub struct HostConfig {
    pub path: PathBuf,
    /// A folder of manifests; `None` means Kubernetes.
    pub manifests: Option<PathBuf>,
    /// Set when `manifests` is not: where to watch and how replicas share.
    pub kubernetes: Option<KubernetesConfig>,
    /// For `criteria` and `criteriaExpression`.
    pub cluster_labels: ClusterLabels,
    /// How OCI guest modules are pulled (paths already absolute).
    pub registries: RegistriesConfig,
    pub source: SourceConfig,
    pub state_dir: PathBuf,
    pub exporters: Vec<ExporterConfig>,
    /// Where `/metrics`, `/healthz`, `/readyz` are served; `None`: off.
    pub listen: Option<SocketAddr>,
    /// When set, scrape exporters' paths require `Authorization: Bearer`.
    pub scrape_token: Option<ScrapeToken>,
    /// Which namespaces may read which databases; `None`: all may read all.
    pub tenancy: Option<TenancyConfig>,
    /// The shortest `spec.interval` accepted.
    pub min_interval: Duration,
    pub cache_dir: Option<PathBuf>,
    pub guest_limits: limits::Limits,
    pub max_rows_per_batch: usize,
    pub reload_interval: Duration,
    /// Jobs that run at once (a few per core by default).
    pub max_concurrent_jobs: usize,
    /// `metricNamePrefix`: put before every metric name, joined with `_`.
    pub metric_name_prefix: Option<String>,
    /// The host's identity, the cluster labels when
    /// `resource.includeClusterLabels` is set, and `resourceAttributes`:
    /// the resource every exporter starts from.
    pub resource: Resource,
}

/// Letters, digits and `_`, not starting with a digit: a name every
/// destination takes as it is (Prometheus included).
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Jobs per core that run at once by default: a job alternates between the
/// guest (a core) and the network, so a few per core keep the cores busy
/// without a blocking thread and a heap per exporter.
pub const JOBS_PER_CORE: usize = 4;

/// The most `maxConcurrentJobs` may be: a job holds up to two blocking
/// threads at once (an ADX answer's parser and a stage), and the runtime
/// has [`MAX_BLOCKING_THREADS`]; more jobs could wait on each other.
pub const MAX_CONCURRENT_JOBS: usize = 48;
/// Blocking threads of the runtime (parsing, guest calls, encoding,
/// fsyncs). Each keeps its own allocator heap, so thousands of exporters
/// starting at once would otherwise grow to tokio's default of 512 threads
/// and gigabytes of RSS.
pub const MAX_BLOCKING_THREADS: usize = 2 * MAX_CONCURRENT_JOBS + 16;

pub fn default_max_concurrent_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * JOBS_PER_CORE).min(MAX_CONCURRENT_JOBS)
}

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `tables/<Database>/<Table>.csv|.jsonl`.
    Local {
        tables: PathBuf,
    },
    Kusto(Box<KustoConfig>),
}

/// Command-line settings that add to or replace the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `DB=URL`.
    pub kusto_endpoints: Vec<String>,
    pub kusto_auth: Option<AuthMode>,
    pub settle_delay: Option<Duration>,
    /// `key=value[,...]`, over the file's `clusterLabels`.
    pub cluster_labels: Vec<String>,
    /// Over the file's `metricNamePrefix`.
    pub metric_name_prefix: Option<String>,
    /// `key=value[,...]`, over the file's `resourceAttributes`.
    pub resource_attributes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn duration(key: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{key}: `{text}` is not a duration (e.g. 30s, 5m): {e}"))?;
    if d.is_zero() {
        return Err(format!("{key}: must be more than zero"));
    }
    Ok(d)
}

/// Command-line settings over the file's `source`. An endpoint on the
/// command line makes the source ADX; with `local` also set that is an error
/// rather than a silent choice.
fn apply(source: &mut RawSource, overrides: &Overrides) -> Result<(), String> {
    let wants_kusto = !overrides.kusto_endpoints.is_empty()
        || overrides.kusto_auth.is_some()
        || overrides.settle_delay.is_some();
    if !wants_kusto {
        return Ok(());
    }
    if source.local.is_some() {
        return Err(
            "source.local is set: --kusto-endpoint, --kusto-auth and --settle-delay apply to an ADX source only"
                .to_string(),
        );
    }
    let kusto = source.kusto.get_or_insert_with(KustoConfig::empty);
    for e in &overrides.kusto_endpoints {
        kusto.add_endpoint(e)?;
    }
    if let Some(auth) = overrides.kusto_auth {
        kusto.auth = auth;
    }
    if let Some(d) = overrides.settle_delay {
        kusto.settle_delay = d;
    }
    Ok(())
}

impl HostConfig {
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        Self::load_with(path, &Overrides::default())
    }

    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<HostConfig, ConfigError> {
        let shown = path.display().to_string();
        let err = |message: String| ConfigError {
            path: shown.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut raw: RawConfig = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        apply(&mut raw.source, overrides).map_err(err)?;
        let base = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_raw(raw, path, &base, overrides).map_err(err)
    }

    fn from_raw(
        raw: RawConfig,
        path: &Path,
        base: &Path,
        overrides: &Overrides,
    ) -> Result<HostConfig, String> {
        let source = match (raw.source.local, raw.source.kusto) {
            (Some(local), None) => SourceConfig::Local {
                tables: base.join(local.tables),
            },
            (None, Some(kusto)) => {
                kusto.validate().map_err(|e| format!("source.kusto.{e}"))?;
                SourceConfig::Kusto(Box::new(kusto))
            }
            (Some(_), Some(_)) => {
                return Err("source: set either `local` or `kusto`, not both".to_string());
            }
            (None, None) => {
                return Err("source: set `local: {tables: FOLDER}` or `kusto: {endpoints: {DATABASE: URL}}` (or pass --kusto-endpoint DATABASE=URL)".to_string());
            }
        };
        let (manifests, kubernetes) = match raw.manifests {
            Some(m) => {
                if raw.kubernetes.is_some() {
                    return Err("kubernetes: applies only without `manifests` (manifests come from a folder or from the API server, not both)".to_string());
                }
                (Some(base.join(m)), None)
            }
            None => {
                let k = raw.kubernetes.unwrap_or_default();
                k.validate().map_err(|e| format!("kubernetes.{e}"))?;
                (None, Some(k))
            }
        };
        let mut cluster_labels = ClusterLabels(raw.cluster_labels);
        let extra = ClusterLabels::parse(&overrides.cluster_labels)?;
        cluster_labels.0.extend(extra.0);
        let mut resource_attributes = raw.resource_attributes;
        resource_attributes.extend(parse_key_values(
            "--add-resource-attributes",
            &overrides.resource_attributes,
        )?);
        check_attributes(&resource_attributes).map_err(|m| format!("resourceAttributes: {m}"))?;
        let mut resource = Resource::default_host();
        if raw.resource.include_cluster_labels {
            resource = resource.with(&cluster_labels.0);
        }
        let resource = resource.with(&resource_attributes);
        let mut exporters = raw.exporters;
        let mut names = HashSet::new();
        for (i, e) in exporters.iter_mut().enumerate() {
            if e.name.is_empty() {
                return Err(format!("exporters[{i}].name: must not be empty"));
            }
            if !names.insert(e.name.clone()) {
                return Err(format!(
                    "exporters[{i}].name: `{}` is defined twice",
                    e.name
                ));
            }
            e.resolve_paths(base);
            e.validate()
                .map_err(|m| format!("exporters[{i}] ({}): {m}", e.name))?;
        }
        let mut guest_limits = limits::Limits::default();
        if let Some(mib) = raw.guests.memory_mib {
            if mib == 0 {
                return Err("guests.memoryMib: must be more than zero".to_string());
            }
            guest_limits.max_memory = mib << 20;
        }
        if let Some(d) = &raw.guests.deadline {
            guest_limits.deadline = duration("guests.deadline", d)?;
        }
        let (listen, scrape_token) = match raw.server {
            None => (None, None),
            Some(s) => {
                let text = s.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
                let listen = text.parse::<SocketAddr>().map_err(|e| {
                    format!("server.listen: `{text}` is not an address like 127.0.0.1:9464: {e}")
                })?;
                let token = match s.scrape_token {
                    None => None,
                    Some(RawTokenSource {
                        env: Some(var),
                        file: None,
                    }) => Some(ScrapeToken::from_env(&var)),
                    Some(RawTokenSource {
                        env: None,
                        file: Some(file),
                    }) => Some(ScrapeToken::from_file(&base.join(file))),
                    Some(_) => Some(Err("give exactly one of `env` or `file`".to_string())),
                }
                .transpose()
                .map_err(|e| format!("server.scrapeToken: {e}"))?;
                (Some(listen), token)
            }
        };
        let mut scrape_paths = HashSet::new();
        for (i, e) in exporters.iter().enumerate() {
            if let crate::export::config::ExporterKind::PrometheusScrape(s) = &e.kind {
                if listen.is_none() {
                    return Err(format!(
                        "exporters[{i}] ({}): prometheusScrape serves on the host's HTTP server: set server.listen",
                        e.name
                    ));
                }
                if !scrape_paths.insert(s.path.clone()) {
                    return Err(format!(
                        "exporters[{i}] ({}): prometheusScrape.path: `{}` is served by another exporter already",
                        e.name, s.path
                    ));
                }
            }
        }
        if let Some(t) = &raw.tenancy {
            t.validate().map_err(|e| format!("tenancy.{e}"))?;
        }
        let min_interval = match &raw.min_interval {
            Some(d) => duration("minInterval", d)?,
            None => DEFAULT_MIN_INTERVAL,
        };
        let mut registries = raw.registries;
        registries
            .validate()
            .map_err(|e| format!("registries.{e}"))?;
        for p in [
            &mut registries.ca_file,
            &mut registries.docker_config,
            &mut registries.cache_dir,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        Ok(HostConfig {
            resource,
            path: path.to_path_buf(),
            manifests,
            kubernetes,
            cluster_labels,
            registries,
            source,
            state_dir: base.join(raw.state.unwrap_or_else(|| PathBuf::from("state"))),
            exporters,
            listen,
            scrape_token,
            tenancy: raw.tenancy,
            min_interval,
            metric_name_prefix: match overrides
                .metric_name_prefix
                .clone()
                .or(raw.metric_name_prefix)
            {
                None => None,
                Some(p) if is_metric_name(&p) => Some(p),
                Some(p) => {
                    return Err(format!(
                        "metricNamePrefix: `{p}` is not a metric name (letters, digits and `_`, not starting with a digit)"
                    ));
                }
            },
            cache_dir: raw.guests.cache_dir.map(|d| base.join(d)),
            guest_limits,
            max_concurrent_jobs: match raw.max_concurrent_jobs {
                Some(0) => return Err("maxConcurrentJobs: must be more than zero".to_string()),
                Some(n) if n > MAX_CONCURRENT_JOBS => {
                    return Err(format!(
                        "maxConcurrentJobs: at most {MAX_CONCURRENT_JOBS} (more gain nothing on the blocking threads the host keeps)"
                    ));
                }
                Some(n) => n,
                None => default_max_concurrent_jobs(),
            },
            max_rows_per_batch: match raw.guests.max_rows_per_batch {
                Some(0) => return Err("guests.maxRowsPerBatch: must be more than zero".to_string()),
                Some(n) => n,
                None => DEFAULT_MAX_ROWS_PER_BATCH,
            },
            reload_interval: match &raw.reload_interval {
                Some(d) => duration("reloadInterval", d)?,
                None => DEFAULT_RELOAD_INTERVAL,
            },
        })
    }

    pub fn kusto(&self) -> Option<&KustoConfig> {
        match &self.source {
            SourceConfig::Kusto(k) => Some(k),
            SourceConfig::Local { .. } => None,
        }
    }

    pub fn exporter(&self, name: &str) -> Option<&ExporterConfig> {
        self.exporters.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HostConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kusto-metrics.yaml");
        std::fs::write(&path, text).unwrap();
        HostConfig::load(&path)
    }

    #[test]
    fn a_full_config_loads_with_paths_beside_the_file() {
        let c = load(
            "manifests: m\nsource:\n  local:\n    tables: t\nstate: s\nexporters:\n  - name: console\n    stdout: {}\nserver: {listen: 127.0.0.1:0}\nguests: {memoryMib: 32, deadline: 2s}\n",
        )
        .unwrap();
        assert!(c.manifests.as_ref().unwrap().ends_with("m"));
        let SourceConfig::Local { tables } = &c.source else {
            panic!("{:?}", c.source)
        };
        assert!(tables.ends_with("t") && tables.is_absolute());
        assert_eq!(c.guest_limits.max_memory, 32 << 20);
        assert_eq!(c.guest_limits.deadline, Duration::from_secs(2));
        assert!(c.exporter("console").is_some());
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        let e = load("manifests: m\nsource: {local: {tables: t}}\nstat: s\n").unwrap_err();
        assert!(
            e.to_string().contains("kusto-metrics.yaml")
                && e.to_string().contains("unknown field `stat`"),
            "{e}"
        );
        let e = load("manifests: m\nsource: {local: {tables: t}}\nguests: {deadline: soon}\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("guests.deadline: `soon` is not a duration"),
            "{e}"
        );
        let e = load("manifests: m\nsource: {local: {tables: t}}\nexporters: [{name: a, stdout: {}}, {name: a, stdout: {}}]\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("exporters[1].name: `a` is defined twice"),
            "{e}"
        );
    }

    #[test]
    fn tenancy_min_interval_and_scrape_token() {
        let c = load("manifests: m\nsource: {local: {tables: t}}\n").unwrap();
        assert!(c.tenancy.is_none() && c.scrape_token.is_none());
        assert_eq!(c.min_interval, DEFAULT_MIN_INTERVAL);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(dir.path().join("token"), "t0k3n\n").unwrap();
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nminInterval: 1s\nserver: {listen: 127.0.0.1:0, scrapeToken: {file: token}}\ntenancy:\n  namespaces:\n    team-a: {databases: [A], allowBody: true}\n",
        )
        .unwrap();
        let c = HostConfig::load(&path).unwrap();
        assert_eq!(c.min_interval, Duration::from_secs(1));
        assert!(
            c.scrape_token
                .as_ref()
                .unwrap()
                .admits(Some("Bearer t0k3n"))
        );
        assert!(c.tenancy.as_ref().unwrap().allows("team-a", "a"));

        for (text, want) in [
            (
                "server: {scrapeToken: {env: A, file: b}}\n",
                "server.scrapeToken: give exactly one of `env` or `file`",
            ),
            (
                "server: {scrapeToken: {value: x}}\n",
                "unknown field `value`",
            ),
            (
                "server: {scrapeToken: {env: KM_TEST_SURELY_UNSET_TOKEN_VAR}}\n",
                "server.scrapeToken: environment variable \"KM_TEST_SURELY_UNSET_TOKEN_VAR\" is not set",
            ),
            ("minInterval: 0s\n", "minInterval: must be more than zero"),
            (
                "tenancy: {namespaces: {a: {databases: ['']}}}\n",
                "tenancy.namespaces.a.databases[0]: must not be empty",
            ),
        ] {
            let e = load(&format!(
                "manifests: m\nsource: {{local: {{tables: t}}}}\n{text}"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn resource_attributes_layer_cluster_labels_file_and_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nclusterLabels: {region: eu, cluster: c1}\nresource: {includeClusterLabels: true}\nresourceAttributes: {region: file, env: prod}\n",
        )
        .unwrap();
        let over = Overrides {
            resource_attributes: vec!["env=cli,team=a".into()],
            ..Overrides::default()
        };
        let c = HostConfig::load_with(&path, &over).unwrap();
        let r = &c.resource;
        assert_eq!(r.get("service.name"), Some("adx-mon-metrics-exporter"));
        assert_eq!(r.get("cluster"), Some("c1"));
        assert_eq!(
            r.get("region"),
            Some("file"),
            "the file's attributes win over labels"
        );
        assert_eq!(
            r.get("env"),
            Some("cli"),
            "the command line wins over the file"
        );
        assert_eq!(r.get("team"), Some("a"));
        // Without includeClusterLabels the labels stay out.
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nclusterLabels: {region: eu}\n",
        )
        .unwrap();
        let c = HostConfig::load(&path).unwrap();
        assert_eq!(c.resource.get("region"), None);
        let over = Overrides {
            resource_attributes: vec!["novalue".into()],
            ..Overrides::default()
        };
        let e = HostConfig::load_with(&path, &over).unwrap_err();
        assert!(
            e.message
                .contains("--add-resource-attributes `novalue`: write it as key=value"),
            "{e}"
        );
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nresource: {includeClusterLabel: true}\n",
        )
        .unwrap();
        assert!(
            HostConfig::load(&path).is_err(),
            "a misspelt key is refused"
        );
    }

    #[test]
    fn the_command_lines_metric_name_prefix_wins_over_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nmetricNamePrefix: file\n",
        )
        .unwrap();
        let c = HostConfig::load_with(&path, &Overrides::default()).unwrap();
        assert_eq!(c.metric_name_prefix.as_deref(), Some("file"));
        let over = |p: &str| Overrides {
            metric_name_prefix: Some(p.to_string()),
            ..Overrides::default()
        };
        let c = HostConfig::load_with(&path, &over("cli")).unwrap();
        assert_eq!(c.metric_name_prefix.as_deref(), Some("cli"));
        let e = HostConfig::load_with(&path, &over("a-b")).unwrap_err();
        assert!(
            e.message
                .contains("metricNamePrefix: `a-b` is not a metric name"),
            "{e}"
        );
    }

    #[test]
    fn without_manifests_the_host_watches_kubernetes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, "source: {local: {tables: t}}\nclusterLabels: {region: eastus}\nkubernetes: {namespaces: [monitoring], leaseDuration: 10s}\n").unwrap();
        let overrides = Overrides {
            cluster_labels: vec!["env=prod".into()],
            ..Overrides::default()
        };
        let c = HostConfig::load_with(&path, &overrides).unwrap();
        let k = c.kubernetes.as_ref().unwrap();
        assert_eq!(k.namespaces, ["monitoring"]);
        assert_eq!(c.cluster_labels.0.len(), 2);
        std::fs::write(
            &path,
            "manifests: m\nsource: {local: {tables: t}}\nkubernetes: {}\n",
        )
        .unwrap();
        let e = HostConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("kubernetes: applies only without `manifests`"),
            "{e}"
        );
        std::fs::write(
            &path,
            "source: {local: {tables: t}}\nkubernetes: {leaseDuration: 1s}\n",
        )
        .unwrap();
        let e = HostConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("kubernetes.leaseDuration"), "{e}");
    }

    #[test]
    fn an_adx_source_from_the_file_or_the_command_line() {
        let c = load("manifests: m\nsource:\n  kusto:\n    endpoints: {Db: https://c.kusto.windows.net}\n    settleDelay: 5m\n").unwrap();
        let k = c.kusto().unwrap();
        assert_eq!(k.settle_delay, Duration::from_secs(300));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, "manifests: m\n").unwrap();
        let e = HostConfig::load(&path).unwrap_err();
        assert!(e.to_string().contains("--kusto-endpoint"), "{e}");
        let overrides = Overrides {
            kusto_endpoints: vec!["Db=http://127.0.0.1:1".into()],
            kusto_auth: Some(AuthMode::None),
            settle_delay: None,
            cluster_labels: vec![],
            metric_name_prefix: None,
            resource_attributes: vec![],
        };
        let c = HostConfig::load_with(&path, &overrides).unwrap();
        assert_eq!(
            c.kusto().unwrap().endpoint("Db"),
            Some("http://127.0.0.1:1")
        );

        std::fs::write(&path, "manifests: m\nsource: {local: {tables: t}}\n").unwrap();
        let e = HostConfig::load_with(&path, &overrides).unwrap_err();
        assert!(e.to_string().contains("source.local is set"), "{e}");
        let e = load("manifests: m\nsource: {kusto: {endpoints: {Db: http://x}}}\n").unwrap_err();
        assert!(e.to_string().contains("source.kusto.endpoints.Db"), "{e}");
    }
}
