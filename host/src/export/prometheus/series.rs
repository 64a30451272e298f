//! A transform's output as Prometheus series: families (name, type, help,
//! unit) holding series (labels) holding samples (value, millisecond
//! timestamp), following the OpenTelemetry specification's "OTLP metric
//! points to Prometheus": gauges stay gauges, cumulative monotonic sums
//! become counters, other cumulative sums gauges, cumulative histograms
//! `_bucket` (with `le`), `_sum` and `_count` series. Delta sums and
//! histograms cannot be expressed and are dropped, counted by reason.
//!
//! Series and samples keep the order of the output (first appearance), so
//! the same output always gives the same requests.

use std::collections::HashMap;

use super::naming::{FamilyType, family_name, sanitize_label_name, unit_word};
use crate::export::{AttrValue, Number, Resource, attribute_set, number_point};
use crate::wit::{MetricData, NumberPoints, Output, Temporality};

/// Skip reasons of points Prometheus cannot take.
pub const DELTA_SUM: &str = "delta-sum";
pub const DELTA_HISTOGRAM: &str = "delta-histogram";
/// Label added to histogram bucket series.
pub const LE: &str = "le";

#[derive(Clone, Debug, PartialEq)]
pub struct ConvertOptions {
    /// Unit suffixes and `_total` on counters.
    pub add_suffixes: bool,
    /// `otel_scope_name` and `otel_scope_version` on every series.
    pub scope_labels: bool,
    /// `job` from the resource's `service.name` (remote write; a scraping
    /// Prometheus sets its own `job`).
    pub job_label: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The sample name (`__name__`): the family name, plus `_bucket`,
    /// `_sum` or `_count` for histograms.
    pub name: String,
    /// Sorted by name, without `__name__`.
    pub labels: Vec<(String, String)>,
    /// In time order; one per timestamp (the last one given wins).
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub family_type: FamilyType,
    pub help: String,
    /// The Prometheus unit word (`seconds`), empty when none.
    pub unit: String,
    pub series: Vec<Series>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Converted {
    pub families: Vec<Family>,
    /// Points left out, by reason.
    pub dropped: Vec<(&'static str, u64)>,
}

impl Converted {
    pub fn sample_count(&self) -> usize {
        self.families
            .iter()
            .flat_map(|f| &f.series)
            .map(|s| s.samples.len())
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "metric `{metric}`: attributes `{first}` and `{second}` both become label `{label}`; rename one (a label is never silently overwritten)"
    )]
    LabelCollision {
        metric: String,
        first: String,
        second: String,
        label: String,
    },
    #[error(
        "metric `{metric}`: attribute `{attribute}` becomes label `{label}`, which the exporter sets itself"
    )]
    ReservedLabel {
        metric: String,
        attribute: String,
        label: String,
    },
    #[error(
        "metrics `{first}` and `{second}` both become Prometheus family `{family}`, as a {first_type} and a {second_type}"
    )]
    TypeConflict {
        first: String,
        second: String,
        family: String,
        first_type: &'static str,
        second_type: &'static str,
    },
}

/// Label values as the OpenTelemetry attribute specification writes
/// non-string values.
fn label_value(v: AttrValue<'_>) -> String {
    match v {
        AttrValue::Str(s) => s.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Double(d) => format_float(d),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// Shortest round-trip text; `+Inf`, `-Inf` and `NaN` as Prometheus spells
/// them.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn millis(time_unix_nano: u64) -> i64 {
    (time_unix_nano / 1_000_000) as i64
}

/// Builds the label sets: each distinct attribute set once.
struct Labels<'a> {
    output: &'a Output,
    /// Added to every series, sorted.
    extra: Vec<(String, String)>,
    cache: HashMap<u32, Vec<(String, String)>>,
}

impl<'a> Labels<'a> {
    fn of(
        &mut self,
        set: u32,
        metric: &str,
        reserved: &[&str],
    ) -> Result<Vec<(String, String)>, ConvertError> {
        if let Some(l) = self.cache.get(&set) {
            // Cached for another kind of metric: its reserved labels count.
            if let Some((label, _)) = l.iter().find(|(k, _)| reserved.contains(&k.as_str())) {
                return Err(ConvertError::ReservedLabel {
                    metric: metric.to_string(),
                    attribute: label.clone(),
                    label: label.clone(),
                });
            }
            return Ok(l.clone());
        }
        let mut labels: Vec<(String, String, String)> = Vec::new();
        for (key, value) in attribute_set(self.output, set) {
            let label = sanitize_label_name(key);
            if let Some((_, first, _)) = labels.iter().find(|(l, _, _)| *l == label) {
                return Err(ConvertError::LabelCollision {
                    metric: metric.to_string(),
                    first: first.clone(),
                    second: key.to_string(),
                    label,
                });
            }
            if reserved.contains(&label.as_str()) || self.extra.iter().any(|(k, _)| *k == label) {
                return Err(ConvertError::ReservedLabel {
                    metric: metric.to_string(),
                    attribute: key.to_string(),
                    label,
                });
            }
            let value = label_value(value);
            // An empty label value is the same as no label to Prometheus.
            if !value.is_empty() {
                labels.push((label, key.to_string(), value));
            }
        }
        let mut out: Vec<(String, String)> = labels.into_iter().map(|(l, _, v)| (l, v)).collect();
        out.extend(self.extra.iter().cloned());
        out.sort();
        self.cache.insert(set, out.clone());
        Ok(out)
    }
}

/// Series of one family, found by (sample name, labels).
#[derive(Default)]
struct SeriesIndex {
    by_key: HashMap<(String, Vec<(String, String)>), usize>,
}

impl SeriesIndex {
    fn push(
        &mut self,
        family: &mut Family,
        name: &str,
        labels: Vec<(String, String)>,
        sample: Sample,
    ) {
        let key = (name.to_string(), labels);
        let i = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                family.series.push(Series {
                    name: key.0.clone(),
                    labels: key.1.clone(),
                    samples: Vec::new(),
                });
                let i = family.series.len() - 1;
                self.by_key.insert(key, i);
                i
            }
        };
        family.series[i].samples.push(sample);
    }
}

pub fn convert(
    resource: &Resource,
    output: &Output,
    options: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    let mut extra = Vec::new();
    if options.job_label
        && let Some((_, name)) = resource
            .attributes
            .iter()
            .find(|(k, _)| k == "service.name")
    {
        extra.push(("job".to_string(), name.clone()));
    }
    if options.scope_labels {
        extra.push(("otel_scope_name".to_string(), resource.scope_name.clone()));
        extra.push((
            "otel_scope_version".to_string(),
            resource.scope_version.clone(),
        ));
    }
    extra.sort();
    let mut labels = Labels {
        output,
        extra,
        cache: HashMap::new(),
    };
    let mut converted = Converted::default();
    // Family name to (index, the OTel metric that made it).
    let mut families: HashMap<String, (usize, String)> = HashMap::new();
    let mut indexes: Vec<SeriesIndex> = Vec::new();
    let drop = |reason: &'static str, n: usize, c: &mut Converted| {
        if n == 0 {
            return;
        }
        match c.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n as u64,
            None => c.dropped.push((reason, n as u64)),
        }
    };
    for metric in &output.metrics {
        let (family_type, number_points): (FamilyType, Option<&NumberPoints>) = match &metric.data {
            MetricData::Gauge(p) => (FamilyType::Gauge, Some(p)),
            MetricData::Sum(s) => match (s.temporality, s.monotonic) {
                (Temporality::Cumulative, true) => (FamilyType::Counter, Some(&s.points)),
                (Temporality::Cumulative, false) => (FamilyType::Gauge, Some(&s.points)),
                (Temporality::Delta, _) => {
                    drop(DELTA_SUM, s.points.times.len(), &mut converted);
                    continue;
                }
            },
            MetricData::Histogram(h) => {
                if h.temporality == Temporality::Delta {
                    drop(DELTA_HISTOGRAM, h.points.len(), &mut converted);
                    continue;
                }
                (FamilyType::Histogram, None)
            }
        };
        let name = family_name(
            &metric.name,
            &metric.unit,
            family_type,
            options.add_suffixes,
        );
        let (fi, index) = match families.get(&name) {
            Some((i, first)) => {
                let existing = converted.families[*i].family_type;
                if existing != family_type {
                    return Err(ConvertError::TypeConflict {
                        first: first.clone(),
                        second: metric.name.clone(),
                        family: name,
                        first_type: existing.as_str(),
                        second_type: family_type.as_str(),
                    });
                }
                (*i, *i)
            }
            None => {
                converted.families.push(Family {
                    name: name.clone(),
                    family_type,
                    help: metric.description.clone(),
                    unit: if options.add_suffixes {
                        unit_word(&metric.unit, family_type).unwrap_or_default()
                    } else {
                        String::new()
                    },
                    series: Vec::new(),
                });
                indexes.push(SeriesIndex::default());
                let i = converted.families.len() - 1;
                families.insert(name.clone(), (i, metric.name.clone()));
                (i, i)
            }
        };
        let family = &mut converted.families[fi];
        let index = &mut indexes[index];
        match number_points {
            Some(points) => {
                for i in 0..points.times.len() {
                    let p = number_point(points, i);
                    let Some(value) = p.value else { continue };
                    let set = p.set.unwrap_or(u32::MAX);
                    let l = labels.of(set, &metric.name, &[])?;
                    let value = match value {
                        Number::Int(v) => v as f64,
                        Number::Double(v) => v,
                    };
                    index.push(
                        family,
                        &name,
                        l,
                        Sample {
                            value,
                            timestamp_ms: millis(p.time),
                        },
                    );
                }
            }
            None => {
                let MetricData::Histogram(h) = &metric.data else {
                    unreachable!("only histograms have no number points")
                };
                for p in &h.points {
                    let base = labels.of(p.attribute_set, &metric.name, &[LE])?;
                    let ts = millis(p.time);
                    let bucket = format!("{name}_bucket");
                    let mut cumulative = 0u64;
                    for (i, bound) in p.explicit_bounds.iter().enumerate() {
                        cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                        let mut l = base.clone();
                        l.push((LE.to_string(), format_float(*bound)));
                        l.sort();
                        index.push(
                            family,
                            &bucket,
                            l,
                            Sample {
                                value: cumulative as f64,
                                timestamp_ms: ts,
                            },
                        );
                    }
                    let mut l = base.clone();
                    l.push((LE.to_string(), "+Inf".to_string()));
                    l.sort();
                    index.push(
                        family,
                        &bucket,
                        l,
                        Sample {
                            value: p.count as f64,
                            timestamp_ms: ts,
                        },
                    );
                    if let Some(sum) = p.sum {
                        index.push(
                            family,
                            &format!("{name}_sum"),
                            base.clone(),
                            Sample {
                                value: sum,
                                timestamp_ms: ts,
                            },
                        );
                    }
                    index.push(
                        family,
                        &format!("{name}_count"),
                        base,
                        Sample {
                            value: p.count as f64,
                            timestamp_ms: ts,
                        },
                    );
                }
            }
        }
    }
    for family in &mut converted.families {
        for series in &mut family.series {
            order_samples(&mut series.samples);
        }
    }
    Ok(converted)
}

/// Time order, one sample per timestamp: the last one given wins, as a
/// later row for the same instant is taken as the correction.
fn order_samples(samples: &mut Vec<Sample>) {
    if samples
        .windows(2)
        .all(|w| w[0].timestamp_ms < w[1].timestamp_ms)
    {
        return;
    }
    let mut indexed: Vec<(usize, Sample)> = samples.drain(..).enumerate().collect();
    indexed.sort_by_key(|(i, s)| (s.timestamp_ms, *i));
    for (_, s) in indexed {
        match samples.last_mut() {
            Some(last) if last.timestamp_ms == s.timestamp_ms => *last = s,
            _ => samples.push(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;
    use crate::wit::{Attribute, AttributeValue, Metric, NumberValues, SumData};

    fn opts() -> ConvertOptions {
        ConvertOptions {
            add_suffixes: true,
            scope_labels: false,
            job_label: false,
        }
    }

    fn find<'a>(c: &'a Converted, name: &str) -> &'a Family {
        c.families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no family {name}: {:?}",
                    c.families.iter().map(|f| &f.name).collect::<Vec<_>>()
                )
            })
    }

    #[test]
    fn the_fixture_converts_by_the_specification() {
        let c = convert(&Resource::default_host(), &fixture::output(), &opts()).unwrap();
        let names: Vec<&str> = c.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "requests_inflight",
                "cpu_ratio",
                "requests_total",
                "latency_seconds",
                "nothing_yet"
            ]
        );
        assert_eq!(c.dropped, vec![(DELTA_SUM, 1)]);

        let g = find(&c, "requests_inflight");
        assert_eq!(g.family_type, FamilyType::Gauge);
        assert_eq!(g.help, "Requests being served");
        // Two distinct label sets; points of the same set in time order.
        assert_eq!(g.series.len(), 2);
        let web1 = &g.series[0];
        assert_eq!(
            web1.labels,
            vec![
                ("code".to_string(), "200".to_string()),
                ("host".to_string(), "web-1".to_string()),
                ("ok".to_string(), "true".to_string()),
                ("ratio".to_string(), "0.25".to_string()),
            ]
        );
        let t = (fixture::T / 1_000_000) as i64;
        // Times T and T+2 ns fall in the same millisecond: the last wins.
        assert_eq!(
            web1.samples,
            vec![Sample {
                value: 0.0,
                timestamp_ms: t
            }]
        );
        // An empty label value is no label.
        let cpu = find(&c, "cpu_ratio");
        assert_eq!(
            cpu.series[2].labels,
            vec![("code".to_string(), "-7".to_string())]
        );

        let h = find(&c, "latency_seconds");
        assert_eq!(h.family_type, FamilyType::Histogram);
        assert_eq!(h.unit, "seconds");
        let first: Vec<(String, String, f64)> = h
            .series
            .iter()
            .filter(|s| s.labels.iter().any(|(k, v)| k == "host" && v == "web-1"))
            .map(|s| {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (s.name.clone(), le, s.samples[0].value)
            })
            .collect();
        assert_eq!(
            first,
            vec![
                ("latency_seconds_bucket".to_string(), "0.1".to_string(), 1.0),
                ("latency_seconds_bucket".to_string(), "1".to_string(), 3.0),
                (
                    "latency_seconds_bucket".to_string(),
                    "+Inf".to_string(),
                    6.0
                ),
                ("latency_seconds_sum".to_string(), String::new(), 2.75),
                ("latency_seconds_count".to_string(), String::new(), 6.0),
            ]
        );
    }

    #[test]
    fn resource_and_scope_labels() {
        let o = ConvertOptions {
            add_suffixes: true,
            scope_labels: true,
            job_label: true,
        };
        let c = convert(&Resource::default_host(), &fixture::output(), &o).unwrap();
        let labels = &find(&c, "requests_total").series[0].labels;
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "code",
                "host",
                "job",
                "ok",
                "otel_scope_name",
                "otel_scope_version",
                "ratio"
            ]
        );
        assert!(labels.contains(&("job".into(), "adx-mon-metrics-exporter".into())));
    }

    fn one_gauge_with(attrs: &[(&str, &str)]) -> Output {
        let mut strings = Vec::new();
        let mut attributes = Vec::new();
        for (k, v) in attrs {
            strings.push(k.to_string());
            strings.push(v.to_string());
            attributes.push(Attribute {
                key: strings.len() as u32 - 2,
                value: AttributeValue::Str(strings.len() as u32 - 1),
            });
        }
        Output {
            strings,
            attribute_set_ends: vec![attributes.len() as u32],
            attributes,
            metrics: vec![Metric {
                name: "m".into(),
                description: String::new(),
                unit: String::new(),
                data: MetricData::Sum(SumData {
                    points: NumberPoints {
                        attribute_sets: vec![0],
                        start_times: vec![],
                        times: vec![5_000_000],
                        values: NumberValues::Ints(vec![7]),
                    },
                    monotonic: true,
                    temporality: Temporality::Cumulative,
                }),
            }],
            skipped: vec![],
        }
    }

    #[test]
    fn colliding_labels_are_an_error_naming_both() {
        let e = convert(
            &Resource::default_host(),
            &one_gauge_with(&[("service.name", "a"), ("service_name", "b")]),
            &opts(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric `m`: attributes `service.name` and `service_name` both become label `service_name`; rename one (a label is never silently overwritten)"
        );
        let o = ConvertOptions {
            job_label: true,
            ..opts()
        };
        let e = convert(
            &Resource::default_host(),
            &one_gauge_with(&[("job", "x")]),
            &o,
        )
        .unwrap_err();
        assert!(matches!(e, ConvertError::ReservedLabel { .. }), "{e}");
        let c = convert(
            &Resource::default_host(),
            &one_gauge_with(&[("http.route", "/a")]),
            &opts(),
        )
        .unwrap();
        assert_eq!(c.families[0].name, "m_total");
        assert_eq!(
            c.families[0].series[0].labels,
            vec![("http_route".to_string(), "/a".to_string())]
        );
        assert_eq!(
            c.families[0].series[0].samples,
            vec![Sample {
                value: 7.0,
                timestamp_ms: 5
            }]
        );
    }

    #[test]
    fn an_le_attribute_is_refused_on_a_histogram_even_after_a_gauge_used_its_set() {
        let mut out = one_gauge_with(&[("le", "x")]);
        let mut histogram = fixture::output();
        histogram.metrics.retain(|m| m.name == "latency");
        let MetricData::Histogram(mut h) = histogram.metrics.remove(0).data else {
            panic!()
        };
        h.points.truncate(1);
        h.points[0].attribute_set = 0;
        out.metrics.push(Metric {
            name: "lat".into(),
            description: String::new(),
            unit: String::new(),
            data: MetricData::Histogram(h),
        });
        let e = convert(&Resource::default_host(), &out, &opts()).unwrap_err();
        assert!(
            matches!(e, ConvertError::ReservedLabel { ref label, .. } if label == "le"),
            "{e}"
        );
    }

    #[test]
    fn samples_are_put_in_time_order_with_one_per_instant() {
        let mut s = vec![
            Sample {
                value: 3.0,
                timestamp_ms: 30,
            },
            Sample {
                value: 1.0,
                timestamp_ms: 10,
            },
            Sample {
                value: 2.0,
                timestamp_ms: 30,
            },
        ];
        order_samples(&mut s);
        assert_eq!(
            s,
            vec![
                Sample {
                    value: 1.0,
                    timestamp_ms: 10
                },
                Sample {
                    value: 2.0,
                    timestamp_ms: 30
                }
            ]
        );
    }
}
