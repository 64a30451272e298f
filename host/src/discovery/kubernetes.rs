//! MetricsExporters and SummaryRules from the Kubernetes API: a reflector
//! (list, then watch, relisting on `410 Gone`) per kind and namespace, kept
//! in memory. Every change bumps a counter, so the scheduler re-plans within
//! moments of a label edit, a new rule or a deleted exporter.
//!
//! SummaryRules belong to adx-mon, whose CRD may be looser than our type or
//! newer: they are watched untyped and converted one by one, so one rule
//! that does not fit is skipped (warned about once per version, counted in
//! `kusto_metrics_summaryrules_skipped`) instead of failing the list of all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::folder::Catalog;
use crate::api::{MetaExt, MetricsExporter, SummaryRule};
use crate::telemetry::Metrics;

/// How long the first list may take before the host gives up at start.
pub const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Where plan messages say an object came from.
pub fn origin(key: &str) -> PathBuf {
    PathBuf::from(format!("kubernetes:{key}"))
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the {kind} CRD is not installed in the cluster (kubectl apply -f crds/): {source}")]
    NoCrd {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("listing {kind}s: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the first list of {kind}s took longer than {}",
        humantime::format_duration(INITIAL_SYNC_TIMEOUT)
    )]
    SyncTimeout { kind: &'static str },
}

pub struct KubeDiscovery {
    exporters: Vec<Store<MetricsExporter>>,
    /// Untyped: converted per object in [`KubeDiscovery::catalog`].
    rules: Vec<Store<DynamicObject>>,
    changes: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<Metrics>,
    rules_seen: Mutex<RulesSeen>,
}

/// What converting the SummaryRules came to, by key, at the
/// resourceVersion converted: a rule is converted again only when it
/// changed.
#[derive(Default)]
struct RulesSeen {
    converted: HashMap<String, (String, Arc<SummaryRule>)>,
    /// Skipped rules, with the resourceVersion warned about.
    skipped: HashMap<String, String>,
}

impl Drop for KubeDiscovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

fn dynamic_apis(
    client: &Client,
    namespaces: &[String],
    resource: &ApiResource,
) -> Vec<Api<DynamicObject>> {
    if namespaces.is_empty() {
        vec![Api::all_with(client.clone(), resource)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, resource))
            .collect()
    }
}

impl KubeDiscovery {
    /// Starts the reflectors and waits for their first list. Fails with a
    /// hint when a CRD is missing.
    pub async fn start(
        client: Client,
        namespaces: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<KubeDiscovery, WatchError> {
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        let mut exporters = Vec::new();
        for api in apis::<MetricsExporter>(&client, namespaces) {
            check_installed(&api, "MetricsExporter").await?;
            exporters.push(reflect(
                api,
                Writer::default(),
                "MetricsExporter",
                tx.clone(),
                &mut tasks,
            ));
        }
        let mut rules = Vec::new();
        let rule_resource = ApiResource::erase::<SummaryRule>(&());
        for api in dynamic_apis(&client, namespaces, &rule_resource) {
            check_installed(&api, "SummaryRule").await?;
            rules.push(reflect(
                api,
                Writer::new(rule_resource.clone()),
                "SummaryRule",
                tx.clone(),
                &mut tasks,
            ));
        }
        for s in &exporters {
            ready(s, "MetricsExporter").await?;
        }
        for s in &rules {
            ready(s, "SummaryRule").await?;
        }
        Ok(KubeDiscovery {
            exporters,
            rules,
            changes: rx,
            tasks,
            metrics,
            rules_seen: Mutex::new(RulesSeen::default()),
        })
    }

    /// Resolves at the next change of either kind.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            // The watch tasks ended: nothing will change any more.
            std::future::pending::<()>().await;
        }
    }

    /// What the API server holds now. Exporters are shared with the
    /// reflectors' stores; rules are converted when their resourceVersion
    /// is new.
    pub fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        for store in &self.exporters {
            for me in store.state() {
                let key = me.metadata.key();
                let origin = origin(&key);
                catalog.exporters.insert(key, (me, origin));
            }
        }
        let mut seen = self.rules_seen.lock().unwrap_or_else(|p| p.into_inner());
        let RulesSeen { converted, skipped } = &mut *seen;
        let mut now_converted = HashMap::with_capacity(converted.len());
        let mut unreadable = HashMap::new();
        for store in &self.rules {
            for object in store.state() {
                let key = object.metadata.key();
                let version = object.resource_version().unwrap_or_default();
                let cached = converted
                    .remove(&key)
                    .filter(|(v, _)| !version.is_empty() && *v == version);
                let rule = match cached {
                    Some((_, rule)) => rule,
                    None => match to_rule(&object) {
                        Ok(rule) => Arc::new(rule),
                        Err(e) => {
                            if skipped.get(&key) != Some(&version) {
                                tracing::warn!(summary_rule = %key, resource_version = %version, error = %e, "SummaryRule skipped: it does not fit the SummaryRule type; the other rules are used");
                            }
                            unreadable.insert(key, version);
                            continue;
                        }
                    },
                };
                catalog.rules.insert(key.clone(), rule.clone());
                now_converted.insert(key, (version, rule));
            }
        }
        self.metrics
            .summary_rules_skipped
            .set(i64::try_from(unreadable.len()).unwrap_or(i64::MAX));
        *converted = now_converted;
        *skipped = unreadable;
        catalog
    }

    /// The MetricsExporter `namespace/name`, as last seen.
    pub fn exporter(&self, key: &str) -> Option<Arc<MetricsExporter>> {
        let (ns, name) = key.split_once('/')?;
        let r = reflector::ObjectRef::new(name).within(ns);
        self.exporters.iter().find_map(|s| s.get(&r))
    }
}

/// One untyped SummaryRule as our type; the error names the field at
/// fault (`spec.database: invalid type: ...`).
fn to_rule(object: &DynamicObject) -> Result<SummaryRule, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })
}

async fn check_installed<K>(api: &Api<K>, kind: &'static str) -> Result<(), WatchError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(WatchError::NoCrd {
            kind,
            source: kube::Error::Api(e),
        }),
        Err(source) => Err(WatchError::List { kind, source }),
    }
}

fn reflect<K>(
    api: Api<K>,
    writer: Writer<K>,
    kind: &'static str,
    changes: Arc<watch::Sender<u64>>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let reader = writer.as_reader();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    changes.send_modify(|n| *n += 1);
                }
                // The watcher relists on its own (410 Gone, dropped
                // connections); the backoff spaces the attempts.
                Err(e) => tracing::warn!(kind = %kind, error = %e, "watch failed; retrying"),
            }
        }
    }));
    reader
}

async fn ready<K>(store: &Store<K>, kind: &'static str) -> Result<(), WatchError>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(INITIAL_SYNC_TIMEOUT, store.wait_until_ready()).await {
        Ok(_) => Ok(()),
        Err(_) => Err(WatchError::SyncTimeout { kind }),
    }
}
