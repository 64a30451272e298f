//! Who is sending: the OTLP resource and instrumentation scope the host puts
//! around every guest's metrics.
//!
//! The resource is built in layers, each later one winning over the earlier
//! for the same key: the host's identity (`service.name`,
//! `service.version`), the cluster labels when
//! `resource.includeClusterLabels` is set, the host config's
//! `resourceAttributes`, then the exporter's. A MetricsExporter's
//! `spec.resourceAttributes` come last but never replace a key the
//! platform set: a tenant cannot pass for another service or cluster.

use std::collections::BTreeMap;

/// Resource attributes one map (host, exporter or MetricsExporter) may set.
pub const MAX_RESOURCE_ATTRIBUTES: usize = 64;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 256;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 4096;

/// Checks one map of resource attributes; the error names the key at fault
/// (the caller says where the map is).
pub fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), String> {
    if attributes.len() > MAX_RESOURCE_ATTRIBUTES {
        return Err(format!(
            "{} attributes, at most {MAX_RESOURCE_ATTRIBUTES}",
            attributes.len()
        ));
    }
    for (key, value) in attributes {
        if key.is_empty() {
            return Err("an attribute key is empty".to_string());
        }
        if key.len() > MAX_ATTRIBUTE_KEY_LEN {
            return Err(format!(
                "`{}…`: the key is longer than {MAX_ATTRIBUTE_KEY_LEN} bytes",
                key.chars().take(32).collect::<String>()
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(format!(
                "`{}`: the key holds a control character",
                key.escape_debug()
            ));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE_LEN {
            return Err(format!(
                "`{key}`: the value is longer than {MAX_ATTRIBUTE_VALUE_LEN} bytes"
            ));
        }
    }
    Ok(())
}

/// `service.name` of the host.
pub const SERVICE_NAME: &str = "adx-mon-metrics-exporter";
/// `service.version` of the host: the crate version.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The instrumentation scope every metric is reported under.
pub const SCOPE_NAME: &str = "adx-mon.azure.com/metrics-exporter";
pub const SCOPE_VERSION: &str = "v1";

/// The resource (string attributes only) and scope of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub attributes: Vec<(String, String)>,
    pub scope_name: String,
    pub scope_version: String,
}

impl Resource {
    /// The host's own identity, with no further attributes.
    pub fn default_host() -> Resource {
        Resource {
            attributes: vec![
                ("service.name".into(), SERVICE_NAME.into()),
                ("service.version".into(), SERVICE_VERSION.into()),
            ],
            scope_name: SCOPE_NAME.into(),
            scope_version: SCOPE_VERSION.into(),
        }
    }

    /// `attributes` over this resource: a key already here takes the new
    /// value in its place; new keys follow in key order.
    pub fn with(&self, attributes: &BTreeMap<String, String>) -> Resource {
        let mut out = self.clone();
        for (key, value) in attributes {
            match out.attributes.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => v.clone_from(value),
                None => out.attributes.push((key.clone(), value.clone())),
            }
        }
        out
    }

    /// A MetricsExporter's own attributes: added, but a key this resource
    /// already has keeps its value. Returns the keys left out.
    pub fn with_tenant(&self, attributes: &BTreeMap<String, String>) -> (Resource, Vec<String>) {
        let mut out = self.clone();
        let mut kept_out = Vec::new();
        for (key, value) in attributes {
            if out.attributes.iter().any(|(k, _)| k == key) {
                kept_out.push(key.clone());
            } else {
                out.attributes.push((key.clone(), value.clone()));
            }
        }
        (out, kept_out)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Everything that changes the requests this resource goes into, as
    /// text (part of a chunk's output key).
    pub fn key_text(&self) -> String {
        let mut text = format!("{}\u{1f}{}", self.scope_name, self.scope_version);
        for (k, v) in &self.attributes {
            text.push('\u{1e}');
            text.push_str(k);
            text.push('\u{1f}');
            text.push_str(v);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_host_names_the_exporter() {
        let r = Resource::default_host();
        assert_eq!(
            r.attributes,
            vec![
                (
                    "service.name".to_string(),
                    "adx-mon-metrics-exporter".to_string()
                ),
                (
                    "service.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string()
                ),
            ]
        );
        assert_eq!(r.scope_name, "adx-mon.azure.com/metrics-exporter");
        assert_eq!(r.scope_version, "v1");
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn later_layers_win_but_a_tenant_never_replaces_a_platform_key() {
        let host = Resource::default_host().with(&map(&[("region", "eu"), ("env", "prod")]));
        let exporter = host.with(&map(&[("env", "staging"), ("service.name", "edge")]));
        assert_eq!(exporter.get("env"), Some("staging"));
        assert_eq!(exporter.get("service.name"), Some("edge"));
        assert_eq!(exporter.get("region"), Some("eu"));
        let (tenant, left_out) =
            exporter.with_tenant(&map(&[("team", "payments"), ("region", "us")]));
        assert_eq!(tenant.get("team"), Some("payments"));
        assert_eq!(tenant.get("region"), Some("eu"));
        assert_eq!(left_out, vec!["region"]);
        assert_ne!(tenant.key_text(), exporter.key_text());
    }

    #[test]
    fn attribute_maps_are_bounded_and_errors_name_the_key() {
        assert!(check_attributes(&map(&[("team", "a")])).is_ok());
        let e = check_attributes(&map(&[("team", &"x".repeat(MAX_ATTRIBUTE_VALUE_LEN + 1))]))
            .unwrap_err();
        assert!(e.contains("`team`"), "{e}");
        assert!(check_attributes(&map(&[("", "a")])).is_err());
        assert!(check_attributes(&map(&[("a\nb", "a")])).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_RESOURCE_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check_attributes(&many).unwrap_err().contains("at most 64"));
    }
}
