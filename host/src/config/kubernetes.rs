//! `kubernetes:` in the host configuration: used when `manifests` is not
//! set, so MetricsExporters and SummaryRules come from the API server.

use std::time::Duration;

use serde::Deserialize;

use crate::export::config::duration;

/// How long a replica's claim on a MetricsExporter lasts without renewal:
/// another replica takes over within about this long after one dies.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often a replica renews its claims (well inside the duration).
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How long a stopping replica lets its runs drain (finish at a chunk
/// boundary and commit) before it gives its Leases up.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The longest `shutdownGrace` accepted: a pod's grace period is meant to
/// be minutes at most.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(600);
/// The bound on giving the Leases up at shutdown, after the drain: the pod's
/// `terminationGracePeriodSeconds` must exceed `shutdownGrace` plus this.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The namespace of Leases when neither the config nor `POD_NAMESPACE` says.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kusto-metrics";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespaces to watch; empty: all (needs cluster-wide read).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Where this host's Leases live; default `POD_NAMESPACE`.
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// This replica's name in Leases and status; default `POD_NAME`, then
    /// the host name.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default = "default_lease_duration", deserialize_with = "duration")]
    pub lease_duration: Duration,
    #[serde(default = "default_renew_interval", deserialize_with = "duration")]
    pub renew_interval: Duration,
    /// How long runs in progress may drain at shutdown (SIGTERM) before the
    /// Leases are given up; see [`KubernetesConfig::shutdown_budget`].
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

fn default_lease_duration() -> Duration {
    DEFAULT_LEASE_DURATION
}
fn default_renew_interval() -> Duration {
    DEFAULT_RENEW_INTERVAL
}
fn default_shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespaces: Vec::new(),
            lease_namespace: None,
            identity: None,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl KubernetesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(2) {
            return Err("leaseDuration: must be at least 2s".into());
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > self.lease_duration {
            return Err(format!(
                "renewInterval: must be more than zero and at most half of leaseDuration ({})",
                humantime::format_duration(self.lease_duration)
            ));
        }
        if self.shutdown_grace.is_zero() || self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return Err(format!(
                "shutdownGrace: must be more than zero and at most {}",
                humantime::format_duration(MAX_SHUTDOWN_GRACE)
            ));
        }
        for ns in &self.namespaces {
            if ns.trim().is_empty() {
                return Err("namespaces: a namespace is empty".into());
            }
        }
        Ok(())
    }

    /// The longest a replica takes to stop after SIGTERM: the drain, then
    /// giving the Leases up. The pod's `terminationGracePeriodSeconds` must
    /// be longer, or the kubelet kills it before its Leases are released
    /// (and another replica waits for them to expire).
    pub fn shutdown_budget(&self) -> Duration {
        self.shutdown_grace + crate::schedule::runner::STOP_NOW_BOUND + RELEASE_TIMEOUT
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_string())
    }

    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("kusto-metrics-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: KubernetesConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.lease_duration, DEFAULT_LEASE_DURATION);
        c.validate().unwrap();
        let c: KubernetesConfig =
            serde_yaml::from_str("leaseDuration: 4s\nrenewInterval: 3s").unwrap();
        assert!(c.validate().unwrap_err().starts_with("renewInterval:"));
        assert!(serde_yaml::from_str::<KubernetesConfig>("leases: 1").is_err());
        assert_eq!(
            c.shutdown_budget(),
            DEFAULT_SHUTDOWN_GRACE + crate::schedule::runner::STOP_NOW_BOUND + RELEASE_TIMEOUT
        );
        let c: KubernetesConfig = serde_yaml::from_str("shutdownGrace: 45s").unwrap();
        assert_eq!(c.shutdown_budget(), Duration::from_secs(60));
        for bad in ["shutdownGrace: 0s", "shutdownGrace: 11m"] {
            let c: KubernetesConfig = serde_yaml::from_str(bad).unwrap();
            assert!(
                c.validate().unwrap_err().starts_with("shutdownGrace:"),
                "{bad}"
            );
        }
    }
}
