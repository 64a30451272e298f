//! OTLP encoding of a transform's [`Output`](crate::wit::Output).
//!
//! The guest hands back a dictionary-encoded output; this module adds the
//! host's [`Resource`] and instrumentation scope and writes an
//! `ExportMetricsServiceRequest`, either as protobuf ([`otlp_proto`], the hot
//! path, encoded directly without building message structs) or as OTLP/JSON
//! ([`otlp_json`]). [`split`] cuts an output into requests of bounded size.
//!
//! Delivery: [`config`] is the `exporters` list users write; [`deliver`]
//! turns each entry into a [`Sink`] that sends an output's requests in order
//! over [`otlp_http`], [`otlp_grpc`], to [`stdout`] or to Prometheus
//! ([`prometheus`]: remote write, or a scrape endpoint), retrying as
//! [`retry`] says (the OpenTelemetry Collector's backoff and error classes).
//!
//! Both encoders read the output through the accessors below, so they agree on
//! how a malformed output is treated: the host validates outputs before
//! encoding, but an index the guest got wrong must never panic the host, so a
//! bad index resolves to "nothing" (no attribute, no value) instead.

pub mod config;
pub mod deliver;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;
pub mod otlp_proto;
pub mod prometheus;
pub mod resource;
pub mod retry;
pub mod split;
pub mod stdout;

pub use deliver::{Delivered, ExportError, Sink};
pub use resource::Resource;
pub use split::{MetricSlice, split_points, whole};

use crate::wit::{Attribute, AttributeValue, NumberPoints, NumberValues, Output};

/// An attribute value with its string looked up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// The attributes of set `set`, in order. Attributes whose key or string
/// value is out of range are left out, and so is a whole set whose bounds are.
pub(crate) fn attribute_set(
    output: &Output,
    set: u32,
) -> impl Iterator<Item = (&str, AttrValue<'_>)> {
    let set = set as usize;
    let ends = &output.attribute_set_ends;
    let end = ends.get(set).map_or(0, |&e| e as usize);
    let start = match set.checked_sub(1) {
        None => 0,
        Some(prev) => ends.get(prev).map_or(usize::MAX, |&s| s as usize),
    };
    output
        .attributes
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .filter_map(move |a| resolve_attribute(output, a))
}

fn resolve_attribute<'a>(output: &'a Output, attr: &Attribute) -> Option<(&'a str, AttrValue<'a>)> {
    let key = output.strings.get(attr.key as usize)?;
    let value = match attr.value {
        AttributeValue::Str(s) => AttrValue::Str(output.strings.get(s as usize)?),
        AttributeValue::Int(i) => AttrValue::Int(i),
        AttributeValue::Double(d) => AttrValue::Double(d),
        AttributeValue::Boolean(b) => AttrValue::Bool(b),
    };
    Some((key, value))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Double(f64),
}

/// Point `i` of a gauge or sum, read across its columns. `start` and `time`
/// are 0 when absent, which is also how OTLP spells "not set".
#[derive(Clone, Copy, Debug)]
pub(crate) struct NumberPoint {
    pub set: Option<u32>,
    pub start: u64,
    pub time: u64,
    pub value: Option<Number>,
}

#[inline]
pub(crate) fn number_point(points: &NumberPoints, i: usize) -> NumberPoint {
    let value = match &points.values {
        NumberValues::Ints(v) => v.get(i).map(|&x| Number::Int(x)),
        NumberValues::Doubles(v) => v.get(i).map(|&x| Number::Double(x)),
    };
    NumberPoint {
        set: points.attribute_sets.get(i).copied(),
        start: points.start_times.get(i).copied().unwrap_or(0),
        time: points.times.get(i).copied().unwrap_or(0),
        value,
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! One output that exercises every case the encoders handle.

    use crate::wit::*;

    /// 2025-06-25T10:00:00Z.
    pub const T: u64 = 1_750_845_600_000_000_000;
    pub const MINUTE: u64 = 60_000_000_000;
    /// Beyond 2^53, so a JSON number would lose it.
    pub const BIG: i64 = 9_007_199_254_740_993;

    fn attr(key: u32, value: AttributeValue) -> Attribute {
        Attribute { key, value }
    }

    fn number_points(
        sets: &[u32],
        starts: &[u64],
        times: &[u64],
        values: NumberValues,
    ) -> NumberPoints {
        NumberPoints {
            attribute_sets: sets.to_vec(),
            start_times: starts.to_vec(),
            times: times.to_vec(),
            values,
        }
    }

    fn metric(name: &str, description: &str, unit: &str, data: MetricData) -> Metric {
        Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data,
        }
    }

    /// Strings: 0 host, 1 web-1, 2 code, 3 ratio, 4 ok, 5 region, 6 eastus, 7 web-2, 8 "".
    /// Sets: 0 {host=web-1, code=200, ratio=0.25, ok=true}, 1 {host=web-2, region=eastus},
    /// 2 {}, 3 {code=-7, region=""}.
    /// Metrics: 0 int gauge, 1 double gauge (no description or unit),
    /// 2 cumulative monotonic int sum, 3 delta double sum, 4 histogram,
    /// 5 gauge without points.
    pub fn output() -> Output {
        let strings = [
            "host", "web-1", "code", "ratio", "ok", "region", "eastus", "web-2", "",
        ];
        use AttributeValue as V;
        Output {
            strings: strings.iter().map(|s| s.to_string()).collect(),
            attributes: vec![
                attr(0, V::Str(1)),
                attr(2, V::Int(200)),
                attr(3, V::Double(0.25)),
                attr(4, V::Boolean(true)),
                attr(0, V::Str(7)),
                attr(5, V::Str(6)),
                attr(2, V::Int(-7)),
                attr(5, V::Str(8)),
            ],
            attribute_set_ends: vec![4, 6, 6, 8],
            metrics: vec![
                metric(
                    "requests_inflight",
                    "Requests being served",
                    "{request}",
                    MetricData::Gauge(number_points(
                        &[0, 1, 0],
                        &[],
                        &[T, T + 1, T + 2],
                        NumberValues::Ints(vec![BIG, -42, 0]),
                    )),
                ),
                metric(
                    "cpu_ratio",
                    "",
                    "",
                    MetricData::Gauge(number_points(
                        &[1, 2, 3],
                        &[],
                        &[T, T, T],
                        NumberValues::Doubles(vec![0.5, -1e300, 0.0]),
                    )),
                ),
                metric(
                    "requests_total",
                    "Requests served",
                    "{request}",
                    MetricData::Sum(SumData {
                        points: number_points(
                            &[0, 3],
                            &[T - MINUTE, T - MINUTE],
                            &[T, T],
                            NumberValues::Ints(vec![10, 20]),
                        ),
                        monotonic: true,
                        temporality: Temporality::Cumulative,
                    }),
                ),
                metric(
                    "bytes_delta",
                    "Bytes moved",
                    "By",
                    MetricData::Sum(SumData {
                        points: number_points(
                            &[1],
                            &[T - MINUTE],
                            &[T],
                            NumberValues::Doubles(vec![1.5]),
                        ),
                        monotonic: false,
                        temporality: Temporality::Delta,
                    }),
                ),
                metric(
                    "latency",
                    "Request latency",
                    "s",
                    MetricData::Histogram(HistogramData {
                        points: vec![
                            HistogramPoint {
                                attribute_set: 0,
                                start_time: T - MINUTE,
                                time: T,
                                count: 6,
                                sum: Some(2.75),
                                min: Some(0.05),
                                max: Some(1.5),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![0.1, 1.0],
                            },
                            HistogramPoint {
                                attribute_set: 2,
                                start_time: 0,
                                time: T,
                                count: 0,
                                sum: None,
                                min: None,
                                max: None,
                                bucket_counts: vec![0, 0, 0],
                                explicit_bounds: vec![0.1, 1.0],
                            },
                            HistogramPoint {
                                attribute_set: 1,
                                start_time: 0,
                                time: T,
                                count: 3,
                                sum: Some(0.0),
                                min: None,
                                max: None,
                                bucket_counts: vec![],
                                explicit_bounds: vec![],
                            },
                        ],
                        temporality: Temporality::Cumulative,
                    }),
                ),
                metric(
                    "nothing_yet",
                    "",
                    "",
                    MetricData::Gauge(number_points(&[], &[], &[], NumberValues::Ints(vec![]))),
                ),
            ],
            skipped: vec![],
        }
    }

    /// `n` int gauge points with times `first_time + i` and values `i`, all in set 0.
    pub fn gauge(name: &str, first_time: u64, n: usize) -> Metric {
        metric(
            name,
            "",
            "",
            MetricData::Gauge(number_points(
                &vec![0; n],
                &[],
                &(0..n as u64).map(|i| first_time + i).collect::<Vec<_>>(),
                NumberValues::Ints((0..n as i64).collect()),
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{AttributeValue as V, NumberValues};

    #[test]
    fn sets_resolve_in_order() {
        let out = fixture::output();
        let set0: Vec<_> = attribute_set(&out, 0).collect();
        assert_eq!(
            set0,
            vec![
                ("host", AttrValue::Str("web-1")),
                ("code", AttrValue::Int(200)),
                ("ratio", AttrValue::Double(0.25)),
                ("ok", AttrValue::Bool(true)),
            ]
        );
        assert_eq!(attribute_set(&out, 2).count(), 0);
        assert_eq!(
            attribute_set(&out, 3).collect::<Vec<_>>(),
            vec![("code", AttrValue::Int(-7)), ("region", AttrValue::Str(""))]
        );
    }

    #[test]
    fn bad_indexes_resolve_to_nothing() {
        let mut out = fixture::output();
        assert_eq!(attribute_set(&out, 4).count(), 0);
        assert_eq!(attribute_set(&out, u32::MAX).count(), 0);
        out.attributes[0].key = 99;
        out.attributes[1].value = V::Str(99);
        assert_eq!(attribute_set(&out, 0).count(), 2);
        // Ends that go backwards or past the attributes.
        out.attribute_set_ends = vec![4, 2, 100];
        assert_eq!(attribute_set(&out, 1).count(), 0);
        assert_eq!(attribute_set(&out, 2).count(), 0);
    }

    #[test]
    fn short_columns_give_absent_fields() {
        let points = NumberPoints {
            attribute_sets: vec![],
            start_times: vec![],
            times: vec![5, 6],
            values: NumberValues::Doubles(vec![1.0]),
        };
        let p = number_point(&points, 1);
        assert_eq!((p.set, p.start, p.time, p.value), (None, 0, 6, None));
        let p = number_point(&points, 0);
        assert_eq!(p.value, Some(Number::Double(1.0)));
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the exporters' tests: a network exporter's config and sink,
    //! an output of N points, and reading requests back with the reference
    //! types.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::config::{
        Compression, ExporterConfig, ExporterKind, OtlpConfig, Protocol, RetryConfig, TlsConfig,
    };
    use super::{Sink, fixture};
    use crate::wit::Output;

    /// Fast retries, so tests of retry behaviour finish quickly.
    pub fn otlp_config(endpoint: &str, protocol: Protocol) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.to_string(),
            protocol,
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            compression_level: crate::export::config::DEFAULT_COMPRESSION_LEVEL,
            timeout: Duration::from_secs(5),
            retry: RetryConfig {
                enabled: true,
                initial_interval: Duration::from_millis(10),
                max_interval: Duration::from_millis(20),
                max_elapsed_time: Duration::from_secs(5),
            },
            tls: TlsConfig::default(),
            max_points_per_request: 10_000,
        }
    }

    pub fn otlp_sink(name: &str, config: OtlpConfig) -> Sink {
        Sink::build(&ExporterConfig {
            name: name.into(),
            kind: ExporterKind::Otlp(config),
            resource_attributes: Default::default(),
        })
        .expect("builds")
    }

    /// One gauge `g` with `points` points.
    pub fn gauge_output(points: usize) -> Output {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("g", fixture::T, points)];
        out
    }

    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;

    /// The integer values of every gauge point of a request, in order
    /// (-1 for a point that is not an integer).
    pub fn gauge_values(request: &ExportMetricsServiceRequest) -> Vec<i64> {
        request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .flat_map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.clone(),
                _ => vec![],
            })
            .map(|p| match p.value {
                Some(Value::AsInt(i)) => i,
                _ => -1,
            })
            .collect()
    }
}
