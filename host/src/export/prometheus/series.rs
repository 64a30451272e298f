//! A transform's output as Prometheus series: families (name, type, help,
//! unit) holding series (labels) holding samples (value, millisecond
//! timestamp), following the OpenTelemetry specification's "OTLP metric
//! points to Prometheus": gauges stay gauges, cumulative monotonic sums
//! become counters, other cumulative sums gauges, cumulative histograms
//! `_bucket` (with `le`), `_sum` and `_count` series. Prometheus has no
//! delta type: given a destination's running totals ([`convert_with`]),
//! delta sums and histograms become the same series of running totals
//! ([`super::cumulative`]); without them they are dropped, counted by
//! reason. A monotonic delta sum becomes a counter; a non-monotonic one a
//! gauge of its running total, since its total can go down, which a
//! counter would take as a reset (an up-down count is a level, a gauge).
//!
//! Series and samples keep the order of the output (first appearance), so
//! the same output always gives the same requests.

use std::collections::HashMap;

use super::cumulative::View;
use super::naming::{FamilyType, family_name, sanitize_label_name, unit_word};
use super::resource_labels::{TARGET_INFO, promoted, target_info};
use crate::export::{AttrValue, Number, Resource, attribute_set, number_point};
use crate::wit::{MetricData, NumberPoints, Output, Temporality};

/// Skip reasons of points Prometheus cannot take.
pub const DELTA_SUM: &str = "delta-sum";
pub const DELTA_HISTOGRAM: &str = "delta-histogram";
/// A delta histogram point whose bucket bounds differ from those of an
/// earlier point of the same series in the same output: the two cannot be
/// added up.
pub const DELTA_HISTOGRAM_BOUNDS: &str = "delta-histogram-bounds-changed";
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
    /// Resource attributes put on every series as labels.
    pub promote_resource_attributes: Vec<String>,
    /// The resource as a `target_info` series
    /// ([`super::resource_labels`]).
    pub target_info: bool,
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
    /// Made from delta points: the start of its running total
    /// (milliseconds since the epoch).
    pub start_ms: Option<i64>,
}

/// What a series made from delta points needs to accumulate.
struct DeltaMeta {
    /// The earliest point's time and the start of its interval.
    first: (i64, i64),
    /// A histogram's bucket bounds.
    bounds: Option<String>,
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
    /// By series index: those made from delta points.
    deltas: HashMap<usize, DeltaMeta>,
}

/// A delta point's interval start (ms) and, for a histogram, its bounds.
type DeltaOf<'a> = Option<(i64, Option<&'a str>)>;

impl SeriesIndex {
    fn push(
        &mut self,
        family: &mut Family,
        name: &str,
        labels: Vec<(String, String)>,
        sample: Sample,
        delta: DeltaOf<'_>,
    ) {
        let key = (name.to_string(), labels);
        let i = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                family.series.push(Series {
                    name: key.0.clone(),
                    labels: key.1.clone(),
                    samples: Vec::new(),
                    start_ms: None,
                });
                let i = family.series.len() - 1;
                self.by_key.insert(key, i);
                i
            }
        };
        family.series[i].samples.push(sample);
        if let Some((start_ms, bounds)) = delta {
            let first = (sample.timestamp_ms, start_ms);
            self.deltas
                .entry(i)
                .and_modify(|m| m.first = m.first.min(first))
                .or_insert_with(|| DeltaMeta {
                    first,
                    bounds: bounds.map(str::to_string),
                });
        }
    }
}

/// The output's series, delta points left out (counted).
pub fn convert(
    resource: &Resource,
    output: &Output,
    options: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    convert_with(resource, output, options, None)
}

/// The output's series; delta points, when `deltas` is given, as running
/// totals computed against it (committed or not by the caller).
pub fn convert_with(
    resource: &Resource,
    output: &Output,
    options: &ConvertOptions,
    mut deltas: Option<&mut View<'_>>,
) -> Result<Converted, ConvertError> {
    let accumulate = deltas.is_some();
    let mut extra = Vec::new();
    if options.job_label
        && let Some((_, name)) = resource
            .attributes
            .iter()
            .find(|(k, _)| k == "service.name")
    {
        extra.push(("job".to_string(), name.clone()));
    }
    for (label, value) in promoted(resource, &options.promote_resource_attributes)? {
        if extra.iter().any(|(k, _)| *k == label) {
            return Err(ConvertError::ReservedLabel {
                metric: "(resource)".to_string(),
                attribute: label.clone(),
                label,
            });
        }
        extra.push((label, value));
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
        let (family_type, number_points, delta): (FamilyType, Option<&NumberPoints>, bool) =
            match &metric.data {
                MetricData::Gauge(p) => (FamilyType::Gauge, Some(p), false),
                MetricData::Sum(s) => {
                    let delta = s.temporality == Temporality::Delta;
                    if delta && !accumulate {
                        drop(DELTA_SUM, s.points.times.len(), &mut converted);
                        continue;
                    }
                    let family_type = if s.monotonic {
                        FamilyType::Counter
                    } else {
                        FamilyType::Gauge
                    };
                    (family_type, Some(&s.points), delta)
                }
                MetricData::Histogram(h) => {
                    let delta = h.temporality == Temporality::Delta;
                    if delta && !accumulate {
                        drop(DELTA_HISTOGRAM, h.points.len(), &mut converted);
                        continue;
                    }
                    (FamilyType::Histogram, None, delta)
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
        let mut bounds_changed = 0usize;
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
                    let timestamp_ms = millis(p.time);
                    // A delta without a start covers up to its own time.
                    let start_ms = if p.start == 0 {
                        timestamp_ms
                    } else {
                        millis(p.start)
                    };
                    index.push(
                        family,
                        &name,
                        l,
                        Sample {
                            value,
                            timestamp_ms,
                        },
                        delta.then_some((start_ms, None)),
                    );
                }
            }
            None => {
                let MetricData::Histogram(h) = &metric.data else {
                    unreachable!("only histograms have no number points")
                };
                // Per label set: the bounds of its first delta point here.
                let mut first_bounds: HashMap<u32, String> = HashMap::new();
                for p in &h.points {
                    let base = labels.of(p.attribute_set, &metric.name, &[LE])?;
                    let ts = millis(p.time);
                    let bounds_text = p
                        .explicit_bounds
                        .iter()
                        .map(|b| format_float(*b))
                        .collect::<Vec<_>>()
                        .join(",");
                    if delta {
                        let first = first_bounds
                            .entry(p.attribute_set)
                            .or_insert_with(|| bounds_text.clone());
                        if *first != bounds_text {
                            bounds_changed += 1;
                            continue;
                        }
                    }
                    let start_ms = if p.start_time == 0 {
                        ts
                    } else {
                        millis(p.start_time)
                    };
                    let d = delta.then_some((start_ms, Some(bounds_text.as_str())));
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
                            d,
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
                        d,
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
                            d,
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
                        d,
                    );
                }
            }
        }
        drop(DELTA_HISTOGRAM_BOUNDS, bounds_changed, &mut converted);
    }
    let mut emptied = Vec::new();
    for (fi, (family, index)) in converted.families.iter_mut().zip(indexes).enumerate() {
        for series in &mut family.series {
            order_samples(&mut series.samples);
        }
        let Some(view) = deltas.as_deref_mut() else {
            continue;
        };
        if index.deltas.is_empty() {
            continue;
        }
        for (i, series) in family.series.iter_mut().enumerate() {
            let Some(meta) = index.deltas.get(&i) else {
                continue;
            };
            let key = (series.name.clone(), series.labels.clone());
            view.accumulate(
                key.clone(),
                &mut series.samples,
                meta.first.1,
                meta.bounds.as_deref(),
            );
            series.start_ms = view.start_of(&key);
        }
        // Series whose every point was left out (late, over the bound).
        family.series.retain(|s| !s.samples.is_empty());
        if family.series.is_empty() {
            emptied.push(fi);
        }
    }
    for fi in emptied.into_iter().rev() {
        converted.families.remove(fi);
    }
    let newest = converted
        .families
        .iter()
        .flat_map(|f| &f.series)
        .filter_map(|s| s.samples.last())
        .map(|s| s.timestamp_ms)
        .max();
    if options.target_info
        && let Some(at) = newest
        && let Some(info) = target_info(resource, options.job_label, at)?
    {
        if converted.families.iter().any(|f| f.name == TARGET_INFO) {
            return Err(ConvertError::ReservedLabel {
                metric: TARGET_INFO.to_string(),
                attribute: TARGET_INFO.to_string(),
                label: "__name__".to_string(),
            });
        }
        converted.families.push(info);
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
    use crate::export::prometheus::cumulative::{self, Accumulator};
    use crate::wit::{Attribute, AttributeValue, Metric, NumberValues, SumData};

    fn opts() -> ConvertOptions {
        ConvertOptions {
            add_suffixes: true,
            scope_labels: false,
            job_label: false,
            promote_resource_attributes: Vec::new(),
            target_info: false,
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
            promote_resource_attributes: Vec::new(),
            target_info: false,
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

    /// One delta sum `d` over set 0, points `(time ns, start ns, value)`.
    fn delta_sum(monotonic: bool, points: &[(u64, u64, i64)]) -> Output {
        let mut out = one_gauge_with(&[("host", "a")]);
        out.metrics[0].data = MetricData::Sum(SumData {
            points: NumberPoints {
                attribute_sets: vec![0; points.len()],
                start_times: points.iter().map(|p| p.1).collect(),
                times: points.iter().map(|p| p.0).collect(),
                values: NumberValues::Ints(points.iter().map(|p| p.2).collect()),
            },
            monotonic,
            temporality: Temporality::Delta,
        });
        out
    }

    fn values(c: &Converted) -> Vec<(i64, f64)> {
        c.families[0].series[0]
            .samples
            .iter()
            .map(|s| (s.timestamp_ms, s.value))
            .collect()
    }

    #[test]
    fn delta_sums_become_running_totals_in_time_order() {
        let acc = Accumulator::new("prom");
        let host = Resource::default_host();
        // Out of order in the output; two in the same millisecond (the
        // last given wins, as for every series).
        let out = delta_sum(
            true,
            &[
                (3_000_000, 2_000_000, 4),
                (1_000_000, 500_000, 3),
                (3_000_001, 2_000_000, 5),
            ],
        );
        let mut view = acc.stage("ns/a");
        let c = convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        let staged = view.finish();
        assert_eq!(c.families[0].name, "m_total");
        assert_eq!(c.families[0].family_type, FamilyType::Counter);
        assert_eq!(values(&c), vec![(1, 3.0), (3, 8.0)]);
        assert_eq!(
            c.families[0].series[0].start_ms,
            Some(0),
            "the first delta's start"
        );
        assert!(c.dropped.is_empty());
        acc.commit(staged);
        let mut view = acc.stage("ns/a");
        let c = convert_with(
            &host,
            &delta_sum(true, &[(9_000_000, 3_000_000, 4)]),
            &opts(),
            Some(&mut view),
        )
        .unwrap();
        assert_eq!(values(&c), vec![(9, 12.0)]);
        assert_eq!(c.families[0].series[0].start_ms, Some(0));
        drop(view);
        // Without running totals they are left out, counted.
        let c = convert(&host, &out, &opts()).unwrap();
        assert!(c.families.is_empty());
        assert_eq!(c.dropped, vec![(DELTA_SUM, 3)]);
    }

    #[test]
    fn a_non_monotonic_delta_sum_is_a_gauge_of_its_running_total() {
        let acc = Accumulator::new("prom");
        let out = delta_sum(false, &[(1_000_000, 0, 5), (2_000_000, 0, -7)]);
        let mut view = acc.stage("ns/a");
        let c = convert_with(&Resource::default_host(), &out, &opts(), Some(&mut view)).unwrap();
        assert_eq!(c.families[0].name, "m");
        assert_eq!(c.families[0].family_type, FamilyType::Gauge);
        assert_eq!(values(&c), vec![(1, 5.0), (2, -2.0)]);
        assert_eq!(
            c.families[0].series[0].start_ms,
            Some(1),
            "no start: the point's time"
        );
    }

    #[test]
    fn a_series_whose_points_are_all_late_goes_away() {
        let acc = Accumulator::new("prom");
        let host = Resource::default_host();
        let out = delta_sum(true, &[(1_000_000, 0, 5)]);
        let mut view = acc.stage("ns/a");
        convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        acc.commit(view.finish());
        let mut view = acc.stage("ns/a");
        let c = convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        assert!(c.families.is_empty(), "{c:?}");
        assert_eq!(view.finish().dropped(cumulative::LATE), 1);
    }

    #[test]
    fn delta_histograms_accumulate_buckets_sum_and_count() {
        let acc = Accumulator::new("prom");
        let host = Resource::default_host();
        let mut out = fixture::output();
        out.metrics.retain(|m| m.name == "latency");
        let MetricData::Histogram(h) = &mut out.metrics[0].data else {
            panic!()
        };
        h.temporality = Temporality::Delta;
        h.points.truncate(1);
        let web1 = |c: &Converted| -> Vec<(String, String, f64)> {
            c.families[0]
                .series
                .iter()
                .map(|s| {
                    let le = s
                        .labels
                        .iter()
                        .find(|(k, _)| k == LE)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    (s.name.clone(), le, s.samples[0].value)
                })
                .collect()
        };
        let mut view = acc.stage("ns/a");
        let c = convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        acc.commit(view.finish());
        assert_eq!(
            web1(&c)[2],
            ("latency_seconds_bucket".into(), "+Inf".into(), 6.0)
        );
        // The next interval: the same counts again, a minute later.
        let MetricData::Histogram(h) = &mut out.metrics[0].data else {
            panic!()
        };
        h.points[0].time += fixture::MINUTE;
        h.points[0].start_time += fixture::MINUTE;
        let mut view = acc.stage("ns/a");
        let c = convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        acc.commit(view.finish());
        assert_eq!(
            web1(&c),
            vec![
                ("latency_seconds_bucket".to_string(), "0.1".to_string(), 2.0),
                ("latency_seconds_bucket".to_string(), "1".to_string(), 6.0),
                (
                    "latency_seconds_bucket".to_string(),
                    "+Inf".to_string(),
                    12.0
                ),
                ("latency_seconds_sum".to_string(), String::new(), 5.5),
                ("latency_seconds_count".to_string(), String::new(), 12.0),
            ]
        );
        // Other bounds: the series start again.
        let MetricData::Histogram(h) = &mut out.metrics[0].data else {
            panic!()
        };
        h.points[0].time += fixture::MINUTE;
        h.points[0].explicit_bounds = vec![0.5, 1.0];
        let mut view = acc.stage("ns/a");
        let c = convert_with(&host, &out, &opts(), Some(&mut view)).unwrap();
        let staged = view.finish();
        assert_eq!(
            web1(&c)[2],
            ("latency_seconds_bucket".into(), "+Inf".into(), 6.0)
        );
        assert_eq!(
            staged.resets(cumulative::BOUNDS_CHANGED),
            4,
            "+Inf, 1, sum, count"
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
