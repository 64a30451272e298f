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
}

fn default_lease_duration() -> Duration {
    DEFAULT_LEASE_DURATION
}
fn default_renew_interval() -> Duration {
    DEFAULT_RENEW_INTERVAL
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespaces: Vec::new(),
            lease_namespace: None,
            identity: None,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_interval: DEFAULT_RENEW_INTERVAL,
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
        for ns in &self.namespaces {
            if ns.trim().is_empty() {
                return Err("namespaces: a namespace is empty".into());
            }
        }
        Ok(())
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
    }
}
