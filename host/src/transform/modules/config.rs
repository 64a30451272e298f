//! `registries:` in the host configuration: how OCI modules are pulled.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The largest module pulled unless the config says otherwise.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 10 << 20;
/// The longest one registry step may take (signing in, a manifest, a
/// layer's download) unless the config says otherwise: a 10 MiB module
/// needs about 170 KiB/s to arrive in time.
pub const DEFAULT_REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistriesConfig {
    /// `host[:port]` spoken to over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// PEM roots trusted beside the built-in ones.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Credentials for local mode: a Docker `config.json`.
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
    /// Pulled blobs and manifests, by digest; default: beside the compiled
    /// guests.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// `10MiB`, `512KiB` or a number of bytes.
    #[serde(default)]
    pub max_module_size: Option<String>,
    /// Each registry step (sign-in, manifest, layer): `30s`, `2m`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    crate::export::config::duration(d).map(Some)
}

impl RegistriesConfig {
    pub fn max_module_size(&self) -> Result<u64, String> {
        match &self.max_module_size {
            None => Ok(DEFAULT_MAX_MODULE_SIZE),
            Some(text) => parse_size(text).ok_or_else(|| {
                format!("maxModuleSize: `{text}` is not a size like 10MiB, 512KiB or 1048576")
            }),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_REGISTRY_TIMEOUT)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_module_size()? == 0 {
            return Err("maxModuleSize: must be more than zero".into());
        }
        if self.timeout().is_zero() {
            return Err("timeout: must be more than zero".into());
        }
        for h in &self.insecure {
            if h.contains("://") || h.contains('/') || h.is_empty() {
                return Err(format!("insecure: `{h}` must be host[:port]"));
            }
        }
        Ok(())
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (t, 1)
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_checks() {
        let c = RegistriesConfig::default();
        assert_eq!(c.max_module_size().unwrap(), 10 << 20);
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("3"), Some(3));
        assert_eq!(parse_size("1 MB"), None);
        let c: RegistriesConfig = serde_yaml::from_str("insecure: ['http://x']").unwrap();
        assert!(c.validate().is_err());
        assert!(serde_yaml::from_str::<RegistriesConfig>("insecureHosts: []").is_err());
        assert_eq!(c.timeout(), DEFAULT_REGISTRY_TIMEOUT);
        let c: RegistriesConfig = serde_yaml::from_str("timeout: 5s").unwrap();
        assert_eq!(c.timeout(), Duration::from_secs(5));
        let c: RegistriesConfig = serde_yaml::from_str("timeout: 0s").unwrap();
        assert!(c.validate().unwrap_err().starts_with("timeout:"));
        assert!(serde_yaml::from_str::<RegistriesConfig>("timeout: soon").is_err());
    }
}
