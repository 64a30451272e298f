//! The OTLP resource in Prometheus, as OpenTelemetry's Prometheus
//! compatibility specification maps it: one `target_info` series (value 1)
//! whose labels are the resource's attributes, beside the metrics; and, when
//! an exporter lists them (`naming.promoteResourceAttributes`), some
//! attributes as labels on every series.
//!
//! `service.name` is `job` and `service.instance.id` is `instance` (in
//! remote write; a scraping Prometheus sets its own), so they are not
//! repeated on `target_info`. A resource with nothing beyond the host's own
//! identity (`service.name`, `service.version`) gets no `target_info`: it
//! would say nothing the `job` label does not.

use super::naming::{FamilyType, sanitize_label_name};
use super::series::{ConvertError, Family, Sample, Series};
use crate::export::Resource;

/// The family that carries the resource's attributes.
pub const TARGET_INFO: &str = "target_info";

/// Attributes that identify the target (`job`, `instance`) rather than
/// describe it.
const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];
/// What every resource of this host has: alone, no `target_info`.
const HOST_IDENTITY: [&str; 2] = ["service.name", "service.version"];

/// `(key, value)` pairs as `(label, value, key)` (names sanitized, empty
/// values left out), unsorted; two keys that become one label are refused,
/// naming both and `metric`.
fn sanitized<'a>(
    metric: &str,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<(String, String, &'a str)>, ConvertError> {
    let mut labels: Vec<(String, String, &str)> = Vec::new();
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        let label = sanitize_label_name(key);
        if let Some((_, _, first)) = labels.iter().find(|(l, _, _)| *l == label) {
            return Err(ConvertError::LabelCollision {
                metric: metric.to_string(),
                first: first.to_string(),
                second: key.to_string(),
                label,
            });
        }
        labels.push((label, value.to_string(), key));
    }
    Ok(labels)
}

fn without_keys(labels: Vec<(String, String, &str)>) -> Vec<(String, String)> {
    labels.into_iter().map(|(l, v, _)| (l, v)).collect()
}

/// The promoted attributes as labels, sorted; an attribute the resource
/// lacks (or that is empty) gives no label.
pub fn promoted(
    resource: &Resource,
    keys: &[String],
) -> Result<Vec<(String, String)>, ConvertError> {
    let pairs = keys
        .iter()
        .filter_map(|k| resource.get(k).map(|v| (k.as_str(), v)));
    let mut out = without_keys(sanitized("(resource)", pairs)?);
    out.sort();
    Ok(out)
}

/// The `target_info` family for `resource`, its one sample at `at_ms` (the
/// newest sample it goes out with), or `None` when the resource has only
/// the host's identity. `job_label`: remote write, where `job` and
/// `instance` come from the resource.
pub fn target_info(
    resource: &Resource,
    job_label: bool,
    at_ms: i64,
) -> Result<Option<Family>, ConvertError> {
    if resource
        .attributes
        .iter()
        .all(|(k, _)| HOST_IDENTITY.contains(&k.as_str()))
    {
        return Ok(None);
    }
    let describing = resource
        .attributes
        .iter()
        .filter(|(k, _)| !IDENTIFYING.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let labels = sanitized(TARGET_INFO, describing)?;
    if let Some((label, _, key)) = labels
        .iter()
        .find(|(l, _, _)| l == "job" || l == "instance")
    {
        return Err(ConvertError::ReservedLabel {
            metric: TARGET_INFO.to_string(),
            attribute: key.to_string(),
            label: label.clone(),
        });
    }
    let mut out = without_keys(labels);
    if job_label {
        let job = match (
            resource.get("service.namespace"),
            resource.get("service.name"),
        ) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.to_string()),
            _ => None,
        };
        out.extend(job.map(|j| ("job".to_string(), j)));
        if let Some(instance) = resource.get("service.instance.id") {
            out.push(("instance".to_string(), instance.to_string()));
        }
    }
    out.sort();
    Ok(Some(Family {
        name: TARGET_INFO.to_string(),
        family_type: FamilyType::Gauge,
        help: "Target metadata".to_string(),
        unit: String::new(),
        series: vec![Series {
            name: TARGET_INFO.to_string(),
            labels: out,
            samples: vec![Sample {
                value: 1.0,
                timestamp_ms: at_ms,
            }],
            start_ms: None,
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn resource(pairs: &[(&str, &str)]) -> Resource {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Resource::default_host().with(&map)
    }

    #[test]
    fn the_host_identity_alone_gives_no_target_info() {
        assert_eq!(
            target_info(&Resource::default_host(), true, 1).unwrap(),
            None
        );
    }

    #[test]
    fn target_info_carries_the_describing_attributes() {
        let r = resource(&[("k8s.cluster.name", "c1"), ("service.instance.id", "pod-1")]);
        let f = target_info(&r, true, 42).unwrap().unwrap();
        let s = &f.series[0];
        assert_eq!(
            s.samples,
            vec![Sample {
                value: 1.0,
                timestamp_ms: 42
            }]
        );
        assert_eq!(
            s.labels,
            vec![
                ("instance".to_string(), "pod-1".to_string()),
                ("job".to_string(), "adx-mon-metrics-exporter".to_string()),
                ("k8s_cluster_name".to_string(), "c1".to_string()),
                (
                    "service_version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string()
                ),
            ]
        );
        // Scraped: Prometheus sets job and instance itself.
        let f = target_info(&r, false, 42).unwrap().unwrap();
        assert!(
            f.series[0]
                .labels
                .iter()
                .all(|(k, _)| k != "job" && k != "instance")
        );
    }

    #[test]
    fn collisions_are_named_never_overwritten() {
        let r = resource(&[("a.b", "1"), ("a_b", "2")]);
        let e = target_info(&r, true, 1).unwrap_err().to_string();
        assert!(e.contains("`a.b` and `a_b` both become label `a_b`"), "{e}");
        let e = promoted(&r, &["a.b".into(), "a_b".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("label `a_b`"), "{e}");
        assert_eq!(
            promoted(&r, &["a.b".into(), "missing".into()]).unwrap(),
            vec![("a_b".to_string(), "1".to_string())]
        );
    }
}
