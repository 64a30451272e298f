//! `kusto-metrics run` in Kubernetes: the catalog comes from the API server
//! (reflectors), each MetricsExporter runs on the one replica holding its
//! Lease, and that replica writes its status (progress, conditions, events).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use super::leases::Leases;
use super::runner::{Owner, Runner, Task, apply_changes, spawn, stop_all};
use crate::config::HostConfig;
use crate::config::kubernetes::RELEASE_TIMEOUT;
use crate::discovery::kubernetes::KubeDiscovery;
use crate::discovery::{ExportPlan, plan};
use crate::state::status::StatusStore;
use crate::telemetry::server::Health;

/// Why `run --once` is refused with a `kubernetes` section: a single pass
/// takes Leases but has no loop to renew them, so a run longer than a claim
/// would overlap the replica that takes the exporter over.
pub const ONCE_REFUSED: &str = "`run --once` does not run in Kubernetes mode (the config has a `kubernetes` section): a single pass cannot keep its exporter Leases renewed, so a run longer than a claim could overlap a replica that takes the exporter over. Run without --once (as the Deployment does), or for a one-off export drop the `kubernetes` section and give `manifests` or local MetricsExporters instead";

pub async fn run(
    config: Arc<HostConfig>,
    runner: Runner,
    health: Health,
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<bool> {
    let k = config
        .kubernetes
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no kubernetes section"))?;
    if once {
        anyhow::bail!(ONCE_REFUSED);
    }
    let statuses = runner
        .statuses()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("Kubernetes mode needs a status store"))?;
    let client = statuses.client().clone();
    let mut discovery =
        KubeDiscovery::start(client.clone(), &k.namespaces, runner.metrics().clone()).await?;
    let identity = statuses.identity().to_string();
    let leases = Leases::new(
        client,
        &k.lease_namespace(),
        &identity,
        k.lease_duration,
        k.renew_interval,
    );
    fence_statuses(&statuses, &leases);
    tracing::info!(identity = %identity, lease_namespace = %k.lease_namespace(), namespaces = ?k.namespaces, "watching the Kubernetes API");
    let mut state = ClusterState::default();
    let (stop_leases, leases_stopped) = watch::channel(false);
    let lease_task = tokio::spawn(leases.clone().run(leases_stopped));
    let mut lease_changes = leases.subscribe();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    health.set_ready(true);
    tokio::pin!(shutdown);
    let mut swept = std::time::Instant::now();
    loop {
        if swept.elapsed() >= super::runner::MODULE_SWEEP_INTERVAL {
            runner.sweep_modules();
            swept = std::time::Instant::now();
        }
        let plans = state.sync(&discovery, &config, &leases, &statuses).await;
        apply_changes(&mut tasks, plans, &HashSet::new(), |plan, previous| {
            let owner = Owner::Lease {
                fence: leases.fence(&plan.key),
                statuses: statuses.clone(),
            };
            spawn(&runner, plan, previous, owner)
        });
        // An exporter handed over that has no run here (its status is not
        // loaded, its manifest is invalid) has nothing to finish.
        for key in leases.draining_keys() {
            if !tasks.contains_key(&key) {
                leases.fence(&key).drained();
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = discovery.changed() => {}
            _ = lease_changes.changed() => {}
            _ = tokio::time::sleep(config.reload_interval) => {}
        }
    }
    tracing::info!("stopping: letting runs in progress finish, then giving the leases up");
    stop_all(tasks.into_values().collect(), k.shutdown_grace).await;
    let _ = stop_leases.send(true);
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, lease_task).await;
    Ok(true)
}

/// Status writes carry the fencing token of the Lease held now, and are
/// refused when none is.
fn fence_statuses(statuses: &StatusStore, leases: &Arc<Leases>) {
    let leases = Arc::downgrade(leases);
    statuses.set_fences(Arc::new(move |key: &str| leases.upgrade()?.token(key)));
}

/// What the loop remembers between passes.
#[derive(Default)]
struct ClusterState {
    /// Exporters this replica has loaded the status of.
    loaded: BTreeSet<String>,
    /// Invalid exporters already reported, with (generation, message).
    invalid: HashMap<String, (Option<i64>, String)>,
}

impl ClusterState {
    /// Plans the catalog, tells the leases which exporters this host may
    /// run, takes over the status of exporters newly held, reports invalid
    /// ones, and returns the plans this replica runs now.
    async fn sync(
        &mut self,
        discovery: &KubeDiscovery,
        config: &HostConfig,
        leases: &Arc<Leases>,
        statuses: &Arc<StatusStore>,
    ) -> Vec<ExportPlan> {
        let planned = plan(&discovery.catalog(), config);
        let mut candidates: BTreeSet<String> =
            planned.plans.iter().map(|p| p.key.clone()).collect();
        candidates.extend(planned.errors.iter().map(|e| e.key.clone()));
        leases.set_candidates(candidates);
        let owned = leases.owned();
        for gone in self.loaded.difference(&owned).cloned().collect::<Vec<_>>() {
            statuses.forget(&gone);
            self.loaded.remove(&gone);
            self.invalid.remove(&gone);
        }
        for key in &owned {
            // Loaded with the token held now; a Lease given up and taken
            // again has a new one, and the status is read again.
            if self.loaded.contains(key) && statuses.holds(key) {
                continue;
            }
            match statuses.load_current(key).await {
                Ok(true) => {
                    self.loaded.insert(key.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(metrics_exporter = %key, error = %e, "cannot read the exporter's status; not running it yet")
                }
            }
        }
        let mut current_invalid = HashSet::new();
        for e in &planned.errors {
            if !self.loaded.contains(&e.key) {
                continue;
            }
            current_invalid.insert(e.key.clone());
            let generation = discovery
                .exporter(&e.key)
                .and_then(|m| m.metadata.generation);
            let seen = (generation, e.message.clone());
            if self.invalid.get(&e.key) == Some(&seen) {
                continue;
            }
            tracing::error!(metrics_exporter = %e.key, reason = e.reason, error = %e.message, "MetricsExporter cannot run");
            statuses
                .report_invalid(&e.key, generation, e.reason, &e.message)
                .await;
            self.invalid.insert(e.key.clone(), seen);
        }
        self.invalid.retain(|k, _| current_invalid.contains(k));
        planned
            .plans
            .into_iter()
            .filter(|p| self.loaded.contains(&p.key))
            .collect()
    }
}
