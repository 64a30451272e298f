//! `source.kusto` in the host configuration: which cluster serves which
//! database, how to sign in, and how the incremental reads behave.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::export::config::{HeaderValue, RetryConfig, duration};

/// How far behind now a window stops by default, for ingestion to land.
pub const DEFAULT_SETTLE_DELAY: Duration = Duration::from_secs(2 * 60);
/// The least `settleDelay`: ADX stamps `ingestion_time()` when it creates
/// an extent and makes the extent visible when it commits, moments later;
/// a window closed at ADX's very now could miss rows still being committed.
pub const MIN_SETTLE_DELAY: Duration = Duration::from_secs(1);
/// Time one query attempt may take (sent to ADX as `servertimeout` too).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// The largest window read at once when catching up.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(60 * 60);
/// A window that is still too large at this size fails instead of halving.
pub const DEFAULT_MIN_WINDOW: Duration = Duration::from_secs(1);
/// Without an ingestion-time policy, rows are read by their timestamp
/// column, and a window closes only this long after its end: rows that land
/// later than that are not exported.
pub const DEFAULT_FALLBACK_LOOKBACK: Duration = Duration::from_secs(10 * 60);

/// How the host signs in to ADX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Workload identity, then managed identity, then the Azure CLI.
    #[default]
    Default,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
    ClientSecret,
    /// No token: for test servers and local emulators only (plain HTTP).
    None,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Default => "default",
            AuthMode::WorkloadIdentity => "workload-identity",
            AuthMode::ManagedIdentity => "managed-identity",
            AuthMode::AzureCli => "azure-cli",
            AuthMode::ClientSecret => "client-secret",
            AuthMode::None => "none",
        }
    }

    pub fn parse(text: &str) -> Result<AuthMode, String> {
        serde_yaml::from_str::<AuthMode>(text).map_err(|_| {
            format!(
                "`{text}` is not an auth mode (default, workload-identity, managed-identity, azure-cli, client-secret, none)"
            )
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustoConfig {
    /// Database name to cluster URL, like adx-mon's `--kusto-endpoint DB=URL`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: AuthMode,
    /// The application (client) ID: of a user-assigned managed identity,
    /// the workload identity, or the service principal. Falls back to
    /// `AZURE_CLIENT_ID`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// For `client-secret` and `workload-identity`; falls back to
    /// `AZURE_TENANT_ID`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// For `client-secret`: `{env: VAR}`, `{file: PATH}` or the value.
    #[serde(default)]
    pub client_secret: Option<HeaderValue>,
    #[serde(default = "default_settle_delay", deserialize_with = "duration")]
    pub settle_delay: Duration,
    #[serde(default = "default_query_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// For throttling (429), unavailability (503) and timeouts.
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default = "default_max_window", deserialize_with = "duration")]
    pub max_window: Duration,
    #[serde(default = "default_min_window", deserialize_with = "duration")]
    pub min_window: Duration,
    #[serde(default = "default_fallback_lookback", deserialize_with = "duration")]
    pub fallback_lookback: Duration,
}

fn default_settle_delay() -> Duration {
    DEFAULT_SETTLE_DELAY
}
fn default_query_timeout() -> Duration {
    DEFAULT_QUERY_TIMEOUT
}
fn default_max_window() -> Duration {
    DEFAULT_MAX_WINDOW
}
fn default_min_window() -> Duration {
    DEFAULT_MIN_WINDOW
}
fn default_fallback_lookback() -> Duration {
    DEFAULT_FALLBACK_LOOKBACK
}

impl KustoConfig {
    /// Defaults for a source given only on the command line.
    pub fn empty() -> KustoConfig {
        serde_yaml::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }

    /// Adds or replaces `DB=URL` endpoints given on the command line.
    pub fn add_endpoint(&mut self, spec: &str) -> Result<(), String> {
        let (db, url) = spec
            .split_once('=')
            .ok_or_else(|| format!("--kusto-endpoint `{spec}`: write it as DATABASE=URL"))?;
        self.endpoints
            .insert(db.trim().to_string(), url.trim().to_string());
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err(
                "endpoints: name at least one database and its cluster, e.g. `TelemetryDB: https://mycluster.westeurope.kusto.windows.net`"
                    .into(),
            );
        }
        for (db, url) in &self.endpoints {
            if db.is_empty() {
                return Err("endpoints: a database name is empty".into());
            }
            super::kql::quote_name(db).map_err(|e| format!("endpoints.{db}: {e}"))?;
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("endpoints.{db}: `{url}` is not a URL: {e}"))?;
            match parsed.scheme() {
                "https" => {}
                "http" if self.auth == AuthMode::None => {}
                "http" => {
                    crate::net::refuse_plain_http(
                        &parsed,
                        &format!("endpoints.{db}"),
                        &format!("a token (auth: {})", self.auth.as_str()),
                    )
                    .map_err(|e| e.to_string())?;
                }
                other => {
                    return Err(format!(
                        "endpoints.{db}: `{url}` has scheme `{other}`; use https://"
                    ));
                }
            }
            if parsed.host_str().is_none() {
                return Err(format!("endpoints.{db}: `{url}` has no host"));
            }
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("maxWindow", self.max_window),
            ("minWindow", self.min_window),
        ] {
            if d.is_zero() {
                return Err(format!("{key}: must be more than zero"));
            }
        }
        if self.settle_delay < MIN_SETTLE_DELAY {
            return Err(format!(
                "settleDelay: at least {}: ADX stamps ingestion_time() when it creates an extent and commits it moments later, so a window closed sooner could miss rows still being committed",
                humantime::format_duration(MIN_SETTLE_DELAY)
            ));
        }
        if self.min_window > self.max_window {
            return Err("minWindow: must not be more than maxWindow".into());
        }
        if self.auth == AuthMode::ClientSecret && self.client_secret.is_none() {
            return Err(
                "clientSecret: `auth: client-secret` needs `clientSecret: {env: VAR}` (or {file: PATH})"
                    .into(),
            );
        }
        Ok(())
    }

    /// The cluster URL serving `database`.
    pub fn endpoint(&self, database: &str) -> Option<&str> {
        self.endpoints.get(database).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> KustoConfig {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let c = parse("endpoints: {TelemetryDB: https://c.westeurope.kusto.windows.net}");
        assert_eq!(c.auth, AuthMode::Default);
        assert_eq!(c.settle_delay, DEFAULT_SETTLE_DELAY);
        c.validate().unwrap();
        let e = parse("endpoints: {Db: https://c.kusto.windows.net}\nsettleDelay: 0s")
            .validate()
            .unwrap_err();
        assert!(e.starts_with("settleDelay: at least 1s"), "{e}");

        let c = parse("endpoints: {Db: http://c.westeurope.kusto.windows.net}");
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("endpoints.Db: a token (auth: default): not sent over plain http://"),
            "{e}"
        );
        parse("endpoints: {Db: http://127.0.0.1:8080}")
            .validate()
            .unwrap();
        parse("endpoints: {Db: http://kusto.internal:8080}\nauth: none")
            .validate()
            .unwrap();

        let e = parse("auth: none").validate().unwrap_err();
        assert!(e.starts_with("endpoints:"), "{e}");
        let e = parse("endpoints: {Db: https://x}\nauth: client-secret")
            .validate()
            .unwrap_err();
        assert!(e.starts_with("clientSecret:"), "{e}");
        let e = parse("endpoints: {\"Db']\": https://x}")
            .validate()
            .unwrap_err();
        assert!(e.contains("cannot be quoted"), "{e}");
        assert!(serde_yaml::from_str::<KustoConfig>("auth: magic").is_err());
        assert!(serde_yaml::from_str::<KustoConfig>("settleDelay: soon").is_err());
    }

    #[test]
    fn command_line_endpoints() {
        let mut c = KustoConfig::empty();
        c.add_endpoint("Db=https://a.kusto.windows.net").unwrap();
        assert_eq!(c.endpoint("Db"), Some("https://a.kusto.windows.net"));
        assert!(c.add_endpoint("nothing").is_err());
        assert_eq!(AuthMode::parse("azure-cli").unwrap(), AuthMode::AzureCli);
        assert!(AuthMode::parse("x").is_err());
    }
}
