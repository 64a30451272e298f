//! `prometheusRemoteWrite` and `prometheusScrape` in the `exporters` list.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::series::ConvertOptions;
use crate::export::config::{
    Endpoint, HeaderValue, RetryConfig, TlsConfig, duration, refuse_secret_headers_in_clear,
};

/// Samples per remote-write request unless the config says otherwise: what
/// Prometheus' own remote-write queue sends by default.
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 2000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the scrape endpoint serves, beside the host's own `/metrics`.
pub const DEFAULT_SCRAPE_PATH: &str = "/exported/metrics";
/// A series not updated for this long is dropped from the scrape endpoint.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// The most series a scrape endpoint holds; new ones beyond are refused.
pub const DEFAULT_MAX_SERIES: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// `http(s)://host:port/api/v1/write` (Prometheus), `/api/v1/push`
    /// (Mimir, Cortex), ...
    pub endpoint: String,
    /// e.g. `X-Scope-OrgID` for Mimir and Cortex; values inline, or
    /// `{env: VAR}` / `{file: PATH}`.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default = "default_max_samples")]
    pub max_samples_per_request: usize,
    #[serde(default)]
    pub naming: NamingConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The path on the host's HTTP server (`server.listen`).
    #[serde(default = "default_scrape_path")]
    pub path: String,
    #[serde(default = "default_stale_after", deserialize_with = "duration")]
    pub stale_after: Duration,
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    #[serde(default)]
    pub naming: NamingConfig,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            path: default_scrape_path(),
            stale_after: DEFAULT_STALE_AFTER,
            max_series: DEFAULT_MAX_SERIES,
            naming: NamingConfig::default(),
        }
    }
}

/// How OpenTelemetry names become Prometheus names.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamingConfig {
    /// Unit suffixes (`_seconds`, `_bytes`, `_ratio`) and `_total` on
    /// counters, as the OpenTelemetry specification says by default.
    #[serde(default = "yes")]
    pub add_suffixes: bool,
    /// `otel_scope_name` and `otel_scope_version` labels on every series.
    #[serde(default = "yes")]
    pub scope_labels: bool,
    /// Resource attributes that become labels on every series (names
    /// sanitized as attributes are), e.g. `[k8s.cluster.name]`.
    #[serde(default)]
    pub promote_resource_attributes: Vec<String>,
    /// The resource's attributes as one `target_info` series, as the
    /// OpenTelemetry compatibility specification maps them.
    #[serde(default = "yes")]
    pub target_info: bool,
}

impl Default for NamingConfig {
    fn default() -> Self {
        NamingConfig {
            add_suffixes: true,
            scope_labels: true,
            promote_resource_attributes: Vec::new(),
            target_info: true,
        }
    }
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_max_samples() -> usize {
    DEFAULT_MAX_SAMPLES_PER_REQUEST
}
fn default_scrape_path() -> String {
    DEFAULT_SCRAPE_PATH.to_string()
}
fn default_stale_after() -> Duration {
    DEFAULT_STALE_AFTER
}
fn default_max_series() -> usize {
    DEFAULT_MAX_SERIES
}
fn yes() -> bool {
    true
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), String> {
        let endpoint = Endpoint::parse(&self.endpoint).map_err(|e| format!("endpoint: {e}"))?;
        if !endpoint.https
            && (self.tls.ca_file.is_some()
                || self.tls.cert_file.is_some()
                || self.tls.key_file.is_some()
                || self.tls.insecure_skip_verify)
        {
            return Err(format!(
                "tls: settings are given but endpoint {:?} is plain http://; use https://",
                self.endpoint
            ));
        }
        refuse_secret_headers_in_clear(&self.endpoint, &self.headers)?;
        if self.timeout.is_zero() {
            return Err("timeout: must be positive".into());
        }
        if self.max_samples_per_request == 0 {
            return Err("maxSamplesPerRequest: must be at least 1".into());
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err("tls: certFile and keyFile go together".into());
        }
        Ok(())
    }

    pub fn convert_options(&self) -> ConvertOptions {
        ConvertOptions {
            add_suffixes: self.naming.add_suffixes,
            scope_labels: self.naming.scope_labels,
            // Remote write has no target: `job` says who wrote the series.
            job_label: true,
            promote_resource_attributes: self.naming.promote_resource_attributes.clone(),
            target_info: self.naming.target_info,
        }
    }
}

impl ScrapeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') || self.path.len() < 2 {
            return Err(format!(
                "path: {:?} must start with `/` and name a path",
                self.path
            ));
        }
        if !self
            .path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
            || self.path.contains("//")
        {
            return Err(format!(
                "path: {:?} may hold only letters, digits, `/`, `_`, `-` and `.`",
                self.path
            ));
        }
        if matches!(self.path.as_str(), "/metrics" | "/healthz" | "/readyz") {
            return Err(format!(
                "path: {} is the host's own; pick another, e.g. {DEFAULT_SCRAPE_PATH}",
                self.path
            ));
        }
        if self.stale_after.is_zero() {
            return Err("staleAfter: must be positive".into());
        }
        if self.max_series == 0 {
            return Err("maxSeries: must be at least 1".into());
        }
        Ok(())
    }

    pub fn convert_options(&self) -> ConvertOptions {
        ConvertOptions {
            add_suffixes: self.naming.add_suffixes,
            scope_labels: self.naming.scope_labels,
            // The scraping Prometheus sets `job` and `instance` itself.
            job_label: false,
            promote_resource_attributes: self.naming.promote_resource_attributes.clone(),
            target_info: self.naming.target_info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: RemoteWriteConfig =
            serde_yaml::from_str("endpoint: http://p:9090/api/v1/write").unwrap();
        assert_eq!(c.max_samples_per_request, 2000);
        assert!(c.naming.add_suffixes && c.naming.scope_labels);
        c.validate().unwrap();
        let c: RemoteWriteConfig = serde_yaml::from_str(
            "endpoint: http://mimir.monitoring:9009/api/v1/push\nheaders: {X-Scope-OrgID: {env: TENANT}}",
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("headers.X-Scope-OrgID: a header read from `env` (a secret): not sent over plain http://"),
            "{e}"
        );
        let c: RemoteWriteConfig = serde_yaml::from_str("endpoint: p:9090").unwrap();
        assert!(c.validate().unwrap_err().starts_with("endpoint:"));
        assert!(
            serde_yaml::from_str::<RemoteWriteConfig>("endpoint: http://p\nmaxSamples: 3").is_err()
        );
        let s: ScrapeConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(s.path, "/exported/metrics");
        s.validate().unwrap();
        let s: ScrapeConfig = serde_yaml::from_str("path: /metrics").unwrap();
        assert!(s.validate().unwrap_err().contains("the host's own"));
        let s: ScrapeConfig = serde_yaml::from_str("path: /a/{x}").unwrap();
        assert!(s.validate().unwrap_err().contains("only letters"));
        let s: ScrapeConfig = serde_yaml::from_str("staleAfter: 0s").unwrap();
        assert!(s.validate().is_err());
    }
}
