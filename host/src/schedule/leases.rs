//! Which replica runs which MetricsExporter: one `coordination.k8s.io`
//! Lease per exporter, held by at most one replica, renewed every
//! `renewInterval`; and one membership Lease per replica, so each knows how
//! many share the work and takes at most its fair share (exporters are
//! spread by rendezvous hashing, so replicas prefer different ones).
//!
//! Safety does not depend on clocks agreeing: a replica counts its claim
//! valid only until `sent + leaseDuration - renewInterval - SAFETY`, where
//! `sent` is when it sent the last renewal the API server accepted; another
//! replica takes a Lease over only after seeing it unchanged for
//! `leaseDuration - renewInterval`, timed from when it first saw that
//! version (which is after `sent`). So the old holder has stopped before the
//! new one starts: no two replicas export the same window. A dead replica's
//! exporters are taken over within about `leaseDuration`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Labels telling the two kinds of Lease apart.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const EXPORTER_LEASE: &str = "kusto-metrics-exporter";
pub const MEMBER_LEASE: &str = "kusto-metrics-member";
/// The exporter a Lease is for (`namespace/name`).
pub const EXPORTER_ANNOTATION: &str = "kusto-metrics.adx-mon.azure.com/metrics-exporter";
/// Longest Lease name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Renewals in flight at once: enough that ~100 exporters renew within a
/// tick on a slow API server, few enough not to flood it.
pub const MAX_CONCURRENT_RENEWALS: usize = 16;
/// A membership Lease unchanged for this many lease durations belongs to a
/// replica that is gone; it is deleted.
pub const DEAD_MEMBER_LEASE_DURATIONS: u32 = 3;

pub struct Leases {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    renew: Duration,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    candidates: BTreeSet<String>,
    held: BTreeMap<String, Held>,
    /// By Lease name: what was last seen of Leases others hold.
    observed: HashMap<String, Observed>,
    live_members: usize,
}

#[derive(Clone)]
struct Held {
    lease: String,
    resource_version: String,
    valid_until: Instant,
    /// Being handed over since then: still renewed while its run finishes
    /// its chunk in flight, released once it has ([`Fence::drained`]).
    draining: Option<Instant>,
    /// The Lease's `leaseTransitions` when this replica took it: the
    /// fencing token its status writes carry.
    token: i64,
}

/// How one renewal went.
enum Renewal {
    /// Accepted: the Lease's new resourceVersion.
    Renewed(String),
    /// The claim ran out before the renewal was sent.
    Expired,
    /// Another replica holds it now.
    Taken,
    Failed(kube::Error),
}

#[derive(Clone)]
struct Observed {
    resource_version: String,
    seen_at: Instant,
}

/// A Lease name for `prefix` + `text`: lowercase DNS characters, cut and
/// suffixed with a hash when too long.
pub fn lease_name(prefix: &str, text: &str) -> String {
    let clean: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("{prefix}{clean}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..6]);
    format!("{}-{hash}", &name[..MAX_NAME - 13])
}

/// Rendezvous score: each replica ranks exporters differently.
fn score(identity: &str, key: &str) -> [u8; 8] {
    let d = Sha256::digest(format!("{identity}\n{key}").as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Leases {
    pub fn new(
        client: Client,
        namespace: &str,
        identity: &str,
        duration: Duration,
        renew: Duration,
    ) -> Arc<Leases> {
        let (changes, _) = watch::channel(0);
        Arc::new(Leases {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            duration,
            renew,
            inner: Mutex::new(Inner::default()),
            changes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The exporters this host may run (their criteria admit it).
    pub fn set_candidates(&self, keys: BTreeSet<String>) {
        self.lock().candidates = keys;
    }

    /// Exporters held now, and still valid.
    pub fn owned(&self) -> BTreeSet<String> {
        let now = Instant::now();
        self.lock()
            .held
            .iter()
            .filter(|(_, h)| h.valid_until > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn fence(self: &Arc<Self>, key: &str) -> Fence {
        Fence {
            leases: self.clone(),
            key: key.to_string(),
        }
    }

    /// The fencing token of a claim held now and still valid: what this
    /// replica's status writes for `key` must carry.
    pub fn token(&self, key: &str) -> Option<i64> {
        let now = Instant::now();
        self.lock()
            .held
            .get(key)
            .filter(|h| h.valid_until > now)
            .map(|h| h.token)
    }

    fn valid_until(&self, key: &str) -> Option<Instant> {
        self.lock().held.get(key).map(|h| h.valid_until)
    }

    fn is_draining(&self, key: &str) -> bool {
        self.lock()
            .held
            .get(key)
            .is_some_and(|h| h.draining.is_some())
    }

    /// Exporters being handed over.
    pub fn draining_keys(&self) -> Vec<String> {
        self.lock()
            .held
            .iter()
            .filter(|(_, h)| h.draining.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How long a run handed over may take to finish its chunk in flight
    /// before it is told to stop after the request in flight; one lease
    /// duration after that the Lease is dropped without being released
    /// (the next holder waits for it to expire).
    pub fn drain_bound(&self) -> Duration {
        self.claim() / 2
    }

    /// Starts handing `key` over, or finishes it when its run is done or
    /// the bound has passed.
    async fn give_up(&self, key: &str) {
        let since = {
            let mut inner = self.lock();
            let Some(h) = inner.held.get_mut(key) else {
                return;
            };
            match h.draining {
                Some(since) => since,
                None => {
                    h.draining = Some(Instant::now());
                    drop(inner);
                    tracing::info!(metrics_exporter = %key, "handing the exporter over: its run finishes the chunk in flight first");
                    self.notify();
                    return;
                }
            }
        };
        // Past the bound the run stops after its request in flight, which
        // may take a while yet (a slow receiver): the Lease stays renewed,
        // so what it commits is still accepted, for one lease duration more.
        let cap = self.drain_bound() + self.duration;
        if since.elapsed() >= cap {
            tracing::warn!(metrics_exporter = %key, bound = ?cap, "the run did not stop in time; dropping the lease without releasing it (the next holder waits for it to expire)");
            self.lock().held.remove(key);
            self.notify();
        }
    }

    /// How long a claim lasts from when its renewal was sent.
    fn claim(&self) -> Duration {
        let safety = self.duration / 10;
        self.duration
            .saturating_sub(self.renew)
            .saturating_sub(safety)
    }

    /// How long a Lease must stay unchanged before it is taken over.
    fn expiry(&self) -> Duration {
        self.duration.saturating_sub(self.renew)
    }

    /// Renews, releases and acquires until stopped; released all at stop.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.renew);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
            self.tick().await;
        }
        self.release_all().await;
    }

    /// One round: membership, renewals, fair share, releases, acquisitions.
    pub async fn tick(&self) {
        self.renew_member().await;
        let before = self.owned();
        self.renew_held().await;
        let (candidates, members) = {
            let i = self.lock();
            (i.candidates.clone(), i.live_members.max(1))
        };
        let share = candidates.len().div_ceil(members);
        // Held but no longer wanted here, or over the share: released
        // (weakest preference first) so another replica can take them.
        let mut held: Vec<String> = self.lock().held.keys().cloned().collect();
        held.sort_by_key(|k| std::cmp::Reverse(score(&self.identity, k)));
        let mut keep = 0;
        for key in held {
            if candidates.contains(&key) && keep < share && !self.is_draining(&key) {
                keep += 1;
            } else if !candidates.contains(&key) && !self.is_draining(&key) {
                // Removed or no longer this replica's to plan: nothing runs
                // it any more.
                self.release(&key).await;
            } else {
                self.give_up(&key).await;
            }
        }
        let mut free: Vec<&String> = candidates
            .iter()
            .filter(|k| !self.lock().held.contains_key(*k))
            .collect();
        free.sort_by_key(|k| std::cmp::Reverse(score(&self.identity, k)));
        for key in free {
            if self.lock().held.len() >= share {
                break;
            }
            self.try_acquire(key).await;
        }
        if self.owned() != before {
            self.notify();
        }
    }

    async fn renew_member(&self) {
        let name = lease_name("kusto-metrics-member-", &self.identity);
        let lease = self.lease_object(&name, MEMBER_LEASE, None);
        let result = match self.api.get_opt(&name).await {
            Ok(None) => self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ()),
            Ok(Some(mut existing)) => {
                existing.spec = lease.spec.clone();
                self.api
                    .replace(&name, &PostParams::default(), &existing)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(lease = %name, error = %e, "cannot renew this replica's membership lease");
        }
        self.observe_all().await;
    }

    /// Lists every Lease of ours (membership and exporter) and times each
    /// one another replica holds from when its current version was first
    /// seen, every tick: so a dead replica's exporters can be taken over
    /// about `leaseDuration - renewInterval` after its last renewal, not
    /// only after this replica's share has grown. Counts the live members,
    /// and deletes membership Leases of replicas dead for
    /// [`DEAD_MEMBER_LEASE_DURATIONS`] lease durations.
    async fn observe_all(&self) {
        let params = ListParams::default().labels(&format!(
            "{COMPONENT_LABEL} in ({MEMBER_LEASE},{EXPORTER_LEASE})"
        ));
        let list = match self.api.list(&params).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the leases");
                return;
            }
        };
        let now = Instant::now();
        let dead_after = self.duration * DEAD_MEMBER_LEASE_DURATIONS;
        let mut dead = Vec::new();
        {
            let mut inner = self.lock();
            let mut live = 0;
            let mut listed = HashSet::new();
            for l in list.items {
                let name = l.metadata.name.clone().unwrap_or_default();
                let rv = l.metadata.resource_version.clone().unwrap_or_default();
                let component = l
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|m| m.get(COMPONENT_LABEL))
                    .map(String::as_str);
                let held_by = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .filter(|h| !h.is_empty());
                let Some(held_by) = held_by else { continue };
                let member = component == Some(MEMBER_LEASE);
                if !member && held_by == self.identity {
                    continue;
                }
                listed.insert(name.clone());
                let seen = inner.observed.entry(name.clone()).or_insert(Observed {
                    resource_version: rv.clone(),
                    seen_at: now,
                });
                if seen.resource_version != rv {
                    seen.resource_version = rv.clone();
                    seen.seen_at = now;
                }
                let unchanged = now.duration_since(seen.seen_at);
                if member {
                    // The same bound as a takeover: a replica counts as gone
                    // when its exporters may be taken over.
                    if held_by == self.identity || unchanged < self.expiry() {
                        live += 1;
                    } else if unchanged >= dead_after {
                        dead.push((name, rv, held_by.to_string()));
                    }
                }
            }
            inner.live_members = live;
            inner.observed.retain(|name, _| listed.contains(name));
        }
        for (name, rv, replica) in dead {
            self.delete_dead_member(&name, &rv, &replica).await;
        }
    }

    /// Deletes a dead replica's membership Lease, only if it is still the
    /// version seen unchanged (a replica that came back keeps its own).
    async fn delete_dead_member(&self, name: &str, resource_version: &str, replica: &str) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(lease = %name, replica = %replica, "deleted the membership lease of a replica gone for several lease durations");
                self.lock().observed.remove(name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(lease = %name, error = %e, "membership lease changed or gone before its deletion");
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "cannot delete a dead replica's membership lease")
            }
        }
    }

    fn lease_object(&self, name: &str, component: &str, exporter: Option<&str>) -> Lease {
        let now = now_micro();
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([(COMPONENT_LABEL.to_string(), component.to_string())].into()),
                annotations: exporter
                    .map(|e| [(EXPORTER_ANNOTATION.to_string(), e.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Renews every claim held, [`MAX_CONCURRENT_RENEWALS`] at a time: a
    /// slow API server must not make the last claims of a long list lapse
    /// while the first are renewed.
    async fn renew_held(&self) {
        let held: Vec<(String, Held)> = self
            .lock()
            .held
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        let results: Vec<_> = futures::stream::iter(held)
            .map(|(key, h)| async move {
                let sent = Instant::now();
                if h.valid_until <= sent {
                    return (key, sent, Renewal::Expired);
                }
                (key, sent, self.renew_one(&h).await)
            })
            .buffer_unordered(MAX_CONCURRENT_RENEWALS)
            .collect()
            .await;
        let mut inner = self.lock();
        for (key, sent, renewal) in results {
            match renewal {
                Renewal::Renewed(resource_version) => {
                    if let Some(entry) = inner.held.get_mut(&key) {
                        entry.resource_version = resource_version;
                        entry.valid_until = sent + self.claim();
                    }
                }
                Renewal::Expired => {
                    tracing::warn!(metrics_exporter = %key, "lease expired before it could be renewed; letting it go");
                    inner.held.remove(&key);
                }
                Renewal::Taken => {
                    tracing::warn!(metrics_exporter = %key, "lease taken by another replica; stopping");
                    inner.held.remove(&key);
                }
                Renewal::Failed(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    tracing::warn!(metrics_exporter = %key, error = %e, "lease gone or changed by another replica; stopping");
                    inner.held.remove(&key);
                }
                // The API server is unreachable: the claim runs out on its
                // own (valid_until) unless a later renewal gets through.
                Renewal::Failed(e) => {
                    tracing::warn!(metrics_exporter = %key, error = %e, "cannot renew the lease")
                }
            }
        }
    }

    /// One renewal: a GET and a conditional PUT of the Lease.
    async fn renew_one(&self, h: &Held) -> Renewal {
        let result = async {
            let mut lease = self.api.get(&h.lease).await?;
            let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
            if holder.as_deref() != Some(self.identity.as_str())
                || lease.metadata.resource_version.as_deref() != Some(h.resource_version.as_str())
            {
                return Ok(None);
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(now_micro());
                spec.lease_duration_seconds = Some(self.duration.as_secs().max(1) as i32);
            }
            self.api
                .replace(&h.lease, &PostParams::default(), &lease)
                .await
                .map(Some)
        }
        .await;
        match result {
            Ok(Some(l)) => Renewal::Renewed(l.metadata.resource_version.unwrap_or_default()),
            Ok(None) => Renewal::Taken,
            Err(e) => Renewal::Failed(e),
        }
    }

    async fn try_acquire(&self, key: &str) {
        let name = lease_name("kusto-metrics-", &key.replace('/', "."));
        let sent = Instant::now();
        let result: Result<Option<Lease>, kube::Error> = async {
            match self.api.get_opt(&name).await? {
                None => {
                    let lease = self.lease_object(&name, EXPORTER_LEASE, Some(key));
                    match self.api.create(&PostParams::default(), &lease).await {
                        Ok(l) => Ok(Some(l)),
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                        Err(e) => Err(e),
                    }
                }
                Some(mut lease) => {
                    let holder = lease
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .filter(|h| !h.is_empty());
                    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
                    let free = match &holder {
                        None => true,
                        Some(h) if *h == self.identity => true,
                        Some(_) => {
                            let now = Instant::now();
                            let mut inner = self.lock();
                            let seen = inner.observed.entry(name.clone()).or_insert(Observed {
                                resource_version: rv.clone(),
                                seen_at: now,
                            });
                            if seen.resource_version != rv {
                                seen.resource_version = rv.clone();
                                seen.seen_at = now;
                            }
                            now.duration_since(seen.seen_at) >= self.expiry()
                        }
                    };
                    if !free {
                        return Ok(None);
                    }
                    let now = now_micro();
                    let transitions = lease
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0);
                    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                    if holder.as_deref() != Some(self.identity.as_str()) {
                        spec.lease_transitions = Some(transitions + 1);
                        spec.acquire_time = Some(now.clone());
                    }
                    spec.holder_identity = Some(self.identity.clone());
                    spec.renew_time = Some(now);
                    spec.lease_duration_seconds = Some(self.duration.as_secs().max(1) as i32);
                    match self
                        .api
                        .replace(&name, &PostParams::default(), &lease)
                        .await
                    {
                        Ok(l) => Ok(Some(l)),
                        // Someone else moved first.
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            }
        }
        .await;
        match result {
            Ok(Some(l)) => {
                tracing::info!(metrics_exporter = %key, lease = %name, "took the lease; running it here");
                let mut inner = self.lock();
                inner.observed.remove(&name);
                inner.held.insert(
                    key.to_string(),
                    Held {
                        lease: name,
                        token: l
                            .spec
                            .as_ref()
                            .and_then(|s| s.lease_transitions)
                            .unwrap_or(0)
                            .into(),
                        resource_version: l.metadata.resource_version.unwrap_or_default(),
                        valid_until: sent + self.claim(),
                        draining: None,
                    },
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(metrics_exporter = %key, error = %e, "cannot acquire the lease")
            }
        }
    }

    /// Gives a Lease up at once, so another replica need not wait for it
    /// to expire.
    async fn release(&self, key: &str) {
        let Some(h) = self.lock().held.remove(key) else {
            return;
        };
        tracing::info!(metrics_exporter = %key, "releasing the lease");
        let result = async {
            let mut lease = self.api.get(&h.lease).await?;
            if lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                != Some(&self.identity)
            {
                return Ok(());
            }
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
            }
            self.api
                .replace(&h.lease, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(metrics_exporter = %key, error = %e, "cannot release the lease; it expires on its own");
        }
        self.notify();
    }

    pub async fn release_all(&self) {
        let keys: Vec<String> = self.lock().held.keys().cloned().collect();
        for k in keys {
            self.release(&k).await;
        }
        let name = lease_name("kusto-metrics-member-", &self.identity);
        if let Err(e) = self.api.delete(&name, &Default::default()).await {
            tracing::debug!(error = %e, "cannot delete the membership lease");
        }
    }
}

/// One exporter's claim, for its task: [`Fence::lost`] resolves when the
/// replica may no longer run it.
#[derive(Clone)]
pub struct Fence {
    leases: Arc<Leases>,
    key: String,
}

impl Fence {
    /// The exporter is being handed over: its run should finish the chunk
    /// in flight and end.
    pub fn is_draining(&self) -> bool {
        self.leases.is_draining(&self.key)
    }

    pub async fn draining(&self) {
        let mut changes = self.leases.subscribe();
        while !self.is_draining() {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The exporter's run has ended: a Lease being handed over is released
    /// now rather than at the next round.
    pub fn drained(&self) {
        if !self.is_draining() {
            return;
        }
        let (leases, key) = (self.leases.clone(), self.key.clone());
        tokio::spawn(async move { leases.release(&key).await });
    }

    pub fn drain_bound(&self) -> Duration {
        self.leases.drain_bound()
    }

    pub fn is_held(&self) -> bool {
        self.leases
            .valid_until(&self.key)
            .is_some_and(|t| t > Instant::now())
    }

    pub async fn lost(&self) {
        let mut changes = self.leases.subscribe();
        loop {
            let Some(until) = self.leases.valid_until(&self.key) else {
                return;
            };
            let now = Instant::now();
            if until <= now {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(until - now) => {}
                _ = changes.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_dns_names() {
        assert_eq!(
            lease_name("kusto-metrics-", "monitoring.Service_Metrics"),
            "kusto-metrics-monitoring.service-metrics"
        );
        let long = lease_name("kusto-metrics-", &"a".repeat(300));
        assert_eq!(long.len(), MAX_NAME);
        assert_ne!(
            long,
            lease_name("kusto-metrics-", &format!("{}b", "a".repeat(299)))
        );
    }

    #[test]
    fn replicas_rank_exporters_differently() {
        let keys: Vec<String> = (0..20).map(|i| format!("ns/e{i}")).collect();
        let top = |id: &str| keys.iter().max_by_key(|k| score(id, k)).cloned();
        let firsts: BTreeSet<_> = ["a", "b", "c", "d"]
            .iter()
            .filter_map(|id| top(id))
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }
}
