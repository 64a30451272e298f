//! OTLP protobuf, written straight from the dictionary-encoded output.
//!
//! Building prost message structs first caps the pipeline near 0.5M points/s
//! (one allocation per string, eight levels of nesting); writing the wire
//! format directly reaches tens of millions (shared/spec/measurements.md).
//! Two things make it fast: every message length is computed before its
//! bytes are written, so nothing is written twice, and each attribute set is
//! encoded once and then copied into every point that uses it.
//!
//! Fields are written in field-number order and default values are left out,
//! exactly as prost does, so the bytes equal prost's for the same message.

use std::ops::Range;

use super::{AttrValue, MetricSlice, Number, NumberPoint, Resource, attribute_set, number_point};
use crate::wit::{HistogramPoint, Metric, MetricData, NumberPoints, Output, SumData, Temporality};

/// Field keys (field number and wire type), from the opentelemetry-proto
/// messages. Every field number is below 16, so every key is one byte.
mod key {
    const fn len(field: u8) -> u8 {
        field << 3 | 2
    }
    const fn varint(field: u8) -> u8 {
        field << 3
    }
    const fn fixed64(field: u8) -> u8 {
        field << 3 | 1
    }

    // collector.metrics.v1.ExportMetricsServiceRequest
    pub const REQUEST_RESOURCE_METRICS: u8 = len(1);
    // metrics.v1.ResourceMetrics
    pub const RESOURCE_METRICS_RESOURCE: u8 = len(1);
    pub const RESOURCE_METRICS_SCOPE_METRICS: u8 = len(2);
    // resource.v1.Resource
    pub const RESOURCE_ATTRIBUTES: u8 = len(1);
    // metrics.v1.ScopeMetrics
    pub const SCOPE_METRICS_SCOPE: u8 = len(1);
    pub const SCOPE_METRICS_METRICS: u8 = len(2);
    // common.v1.InstrumentationScope
    pub const SCOPE_NAME: u8 = len(1);
    pub const SCOPE_VERSION: u8 = len(2);
    // metrics.v1.Metric
    pub const METRIC_NAME: u8 = len(1);
    pub const METRIC_DESCRIPTION: u8 = len(2);
    pub const METRIC_UNIT: u8 = len(3);
    pub const METRIC_GAUGE: u8 = len(5);
    pub const METRIC_SUM: u8 = len(7);
    pub const METRIC_HISTOGRAM: u8 = len(9);
    // metrics.v1.Gauge, Sum, Histogram
    pub const DATA_POINTS: u8 = len(1);
    pub const AGGREGATION_TEMPORALITY: u8 = varint(2);
    pub const SUM_IS_MONOTONIC: u8 = varint(3);
    // metrics.v1.NumberDataPoint
    pub const NUMBER_START_TIME: u8 = fixed64(2);
    pub const NUMBER_TIME: u8 = fixed64(3);
    pub const NUMBER_AS_DOUBLE: u8 = fixed64(4);
    pub const NUMBER_AS_INT: u8 = fixed64(6);
    pub const NUMBER_ATTRIBUTES: u8 = len(7);
    // metrics.v1.HistogramDataPoint
    pub const HISTOGRAM_START_TIME: u8 = fixed64(2);
    pub const HISTOGRAM_TIME: u8 = fixed64(3);
    pub const HISTOGRAM_COUNT: u8 = fixed64(4);
    pub const HISTOGRAM_SUM: u8 = fixed64(5);
    pub const HISTOGRAM_BUCKET_COUNTS: u8 = len(6);
    pub const HISTOGRAM_EXPLICIT_BOUNDS: u8 = len(7);
    pub const HISTOGRAM_ATTRIBUTES: u8 = len(9);
    pub const HISTOGRAM_MIN: u8 = fixed64(11);
    pub const HISTOGRAM_MAX: u8 = fixed64(12);
    // common.v1.KeyValue
    pub const KEY_VALUE_KEY: u8 = len(1);
    pub const KEY_VALUE_VALUE: u8 = len(2);
    // common.v1.AnyValue
    pub const ANY_STRING: u8 = len(1);
    pub const ANY_BOOL: u8 = varint(2);
    pub const ANY_INT: u8 = varint(3);
    pub const ANY_DOUBLE: u8 = fixed64(4);
}

/// Encoded sizes of `aggregation_temporality` (never 0, so always written)
/// and of a true `is_monotonic`: a key and a one-byte varint each.
const TEMPORALITY_SIZE: usize = 2;
const MONOTONIC_SIZE: usize = 2;

/// metrics.v1.AggregationTemporality
fn temporality(t: Temporality) -> u8 {
    match t {
        Temporality::Delta => 1,
        Temporality::Cumulative => 2,
    }
}

/// Appends one `ExportMetricsServiceRequest` holding `slices` of `output` to
/// `buf`. Encoding several requests of one output is cheaper with one
/// [`Encoder`], which keeps encoded attribute sets between requests.
pub fn encode_request(
    resource: &Resource,
    output: &Output,
    slices: &[MetricSlice],
    buf: &mut Vec<u8>,
) {
    Encoder::new(resource, output).encode(slices, buf);
}

/// Encodes requests of one output, encoding each attribute set only once.
pub struct Encoder<'a> {
    output: &'a Output,
    /// The fields of `Resource` and `InstrumentationScope`.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// Attribute sets as repeated `KeyValue` fields: the field number of
    /// `attributes` differs between number and histogram points.
    number_sets: SetCache,
    histogram_sets: SetCache,
    /// (metric, data) message sizes of the request being encoded.
    sizes: Vec<(usize, usize)>,
}

impl<'a> Encoder<'a> {
    pub fn new(resource: &Resource, output: &'a Output) -> Encoder<'a> {
        let mut resource_bytes = Vec::new();
        for (k, v) in &resource.attributes {
            put_key_value(
                &mut resource_bytes,
                key::RESOURCE_ATTRIBUTES,
                k,
                AttrValue::Str(v),
            );
        }
        let mut scope = Vec::new();
        put_string(&mut scope, key::SCOPE_NAME, &resource.scope_name);
        put_string(&mut scope, key::SCOPE_VERSION, &resource.scope_version);
        Encoder {
            output,
            resource: resource_bytes,
            scope,
            number_sets: SetCache::new(key::NUMBER_ATTRIBUTES),
            histogram_sets: SetCache::new(key::HISTOGRAM_ATTRIBUTES),
            sizes: Vec::new(),
        }
    }

    /// Appends one request holding `slices` to `buf`. Slices of metrics that
    /// do not exist are left out.
    pub fn encode(&mut self, slices: &[MetricSlice], buf: &mut Vec<u8>) {
        let output = self.output;
        let mut sizes = std::mem::take(&mut self.sizes);
        sizes.clear();
        for (metric, range) in slices.iter().filter_map(|s| s.resolve(output)) {
            let data = self.data_size(&metric.data, range);
            sizes.push((metric_size(metric, data), data));
        }
        let metrics: usize = sizes.iter().map(|&(m, _)| field_size(m)).sum();
        let scope_metrics = field_size(self.scope.len()) + metrics;
        let resource_metrics = field_size(self.resource.len()) + field_size(scope_metrics);
        // Requests are cut to the size limit before they get here; the cap
        // keeps a caller that did not from reserving what a guest chose.
        buf.reserve(field_size(resource_metrics).min(super::deliver::MAX_REQUEST_BYTES));

        put_header(buf, key::REQUEST_RESOURCE_METRICS, resource_metrics);
        put_bytes(buf, key::RESOURCE_METRICS_RESOURCE, &self.resource);
        put_header(buf, key::RESOURCE_METRICS_SCOPE_METRICS, scope_metrics);
        put_bytes(buf, key::SCOPE_METRICS_SCOPE, &self.scope);
        let resolved = slices.iter().filter_map(|s| s.resolve(output));
        for ((metric, range), &(size, data)) in resolved.zip(&sizes) {
            put_header(buf, key::SCOPE_METRICS_METRICS, size);
            self.put_metric(buf, metric, range, data);
        }
        self.sizes = sizes;
    }

    fn data_size(&mut self, data: &MetricData, range: Range<usize>) -> usize {
        match data {
            MetricData::Gauge(points) => self.number_points_size(points, range),
            MetricData::Sum(sum) => {
                let monotonic = if sum.monotonic { MONOTONIC_SIZE } else { 0 };
                self.number_points_size(&sum.points, range) + TEMPORALITY_SIZE + monotonic
            }
            MetricData::Histogram(h) => {
                let points = h.points.get(range).unwrap_or_default();
                let sizes = points.iter().map(|p| {
                    let attrs = self
                        .histogram_sets
                        .get(self.output, Some(p.attribute_set))
                        .len();
                    field_size(histogram_point_size(p, attrs))
                });
                sizes.sum::<usize>() + TEMPORALITY_SIZE
            }
        }
    }

    fn number_points_size(&mut self, points: &NumberPoints, range: Range<usize>) -> usize {
        range
            .map(|i| {
                let p = number_point(points, i);
                let attrs = self.number_sets.get(self.output, p.set).len();
                field_size(number_point_size(&p, attrs))
            })
            .sum()
    }

    fn put_metric(&self, buf: &mut Vec<u8>, metric: &Metric, range: Range<usize>, data: usize) {
        put_string(buf, key::METRIC_NAME, &metric.name);
        put_string(buf, key::METRIC_DESCRIPTION, &metric.description);
        put_string(buf, key::METRIC_UNIT, &metric.unit);
        match &metric.data {
            MetricData::Gauge(points) => {
                put_header(buf, key::METRIC_GAUGE, data);
                self.put_number_points(buf, points, range);
            }
            MetricData::Sum(sum) => {
                put_header(buf, key::METRIC_SUM, data);
                self.put_sum(buf, sum, range);
            }
            MetricData::Histogram(h) => {
                put_header(buf, key::METRIC_HISTOGRAM, data);
                for p in h.points.get(range).unwrap_or_default() {
                    self.put_histogram_point(buf, p);
                }
                buf.extend_from_slice(&[key::AGGREGATION_TEMPORALITY, temporality(h.temporality)]);
            }
        }
    }

    fn put_sum(&self, buf: &mut Vec<u8>, sum: &SumData, range: Range<usize>) {
        self.put_number_points(buf, &sum.points, range);
        buf.extend_from_slice(&[key::AGGREGATION_TEMPORALITY, temporality(sum.temporality)]);
        if sum.monotonic {
            buf.extend_from_slice(&[key::SUM_IS_MONOTONIC, 1]);
        }
    }

    fn put_number_points(&self, buf: &mut Vec<u8>, points: &NumberPoints, range: Range<usize>) {
        for i in range {
            let p = number_point(points, i);
            let attrs = self.number_sets.cached(p.set);
            put_header(buf, key::DATA_POINTS, number_point_size(&p, attrs.len()));
            put_fixed64_nonzero(buf, key::NUMBER_START_TIME, p.start);
            put_fixed64_nonzero(buf, key::NUMBER_TIME, p.time);
            match p.value {
                Some(Number::Double(d)) => put_fixed64(buf, key::NUMBER_AS_DOUBLE, d.to_bits()),
                Some(Number::Int(v)) => put_fixed64(buf, key::NUMBER_AS_INT, v as u64),
                None => {}
            }
            buf.extend_from_slice(attrs);
        }
    }

    fn put_histogram_point(&self, buf: &mut Vec<u8>, p: &HistogramPoint) {
        let attrs = self.histogram_sets.cached(Some(p.attribute_set));
        put_header(buf, key::DATA_POINTS, histogram_point_size(p, attrs.len()));
        put_fixed64_nonzero(buf, key::HISTOGRAM_START_TIME, p.start_time);
        put_fixed64_nonzero(buf, key::HISTOGRAM_TIME, p.time);
        put_fixed64_nonzero(buf, key::HISTOGRAM_COUNT, p.count);
        put_optional_double(buf, key::HISTOGRAM_SUM, p.sum);
        put_packed(
            buf,
            key::HISTOGRAM_BUCKET_COUNTS,
            p.bucket_counts.iter().copied(),
        );
        put_packed(
            buf,
            key::HISTOGRAM_EXPLICIT_BOUNDS,
            p.explicit_bounds.iter().map(|b| b.to_bits()),
        );
        buf.extend_from_slice(attrs);
        put_optional_double(buf, key::HISTOGRAM_MIN, p.min);
        put_optional_double(buf, key::HISTOGRAM_MAX, p.max);
    }
}

/// What the encoder will write for an output, computed without writing it:
/// the bytes of each attribute set's `KeyValue` fields (the same for number
/// and histogram points, whose `attributes` field numbers both fit one
/// byte). Used to refuse an output that expands too much
/// ([`crate::transform::output_check`]) and to cut requests by size before
/// encoding ([`crate::export::split`]).
pub struct Sizes {
    sets: Vec<usize>,
}

/// At most what a length prefix takes: lengths stay far below 2^35.
pub const MAX_LENGTH_PREFIX: usize = 5;

impl Sizes {
    pub fn new(output: &Output) -> Sizes {
        let sets = (0..output.attribute_set_ends.len() as u32)
            .map(|set| {
                attribute_set(output, set)
                    .map(|(k, v)| field_size(string_size(k) + field_size(any_value_size(v))))
                    .sum()
            })
            .collect();
        Sizes { sets }
    }

    /// The bytes of set `set`'s attributes; 0 for no set or an unknown one.
    pub fn set(&self, set: Option<u32>) -> usize {
        set.and_then(|s| self.sets.get(s as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Bytes point `i` of `data` adds to its metric, length prefix and key
    /// included; 0 for a point that does not exist.
    pub fn point(&self, data: &MetricData, i: usize) -> usize {
        match data {
            MetricData::Gauge(points) | MetricData::Sum(SumData { points, .. }) => {
                if i >= points.times.len() {
                    return 0;
                }
                let p = number_point(points, i);
                field_size(number_point_size(&p, self.set(p.set)))
            }
            MetricData::Histogram(h) => match h.points.get(i) {
                Some(p) => field_size(histogram_point_size(p, self.set(Some(p.attribute_set)))),
                None => 0,
            },
        }
    }

    /// At most what one metric adds to a request besides its points: its
    /// name, description and unit, the data message's header and its
    /// temporality and monotonic fields.
    pub fn metric_overhead(metric: &Metric) -> usize {
        1 + MAX_LENGTH_PREFIX
            + string_size(&metric.name)
            + string_size(&metric.description)
            + string_size(&metric.unit)
            + 1
            + MAX_LENGTH_PREFIX
            + TEMPORALITY_SIZE
            + MONOTONIC_SIZE
    }

    /// At most what a request adds besides its metrics: the resource, the
    /// scope and the headers around them.
    pub fn request_overhead(resource: &Resource) -> usize {
        let resource_bytes: usize = resource
            .attributes
            .iter()
            .map(|(k, v)| {
                field_size(string_size(k) + field_size(any_value_size(AttrValue::Str(v))))
            })
            .sum();
        let scope = string_size(&resource.scope_name) + string_size(&resource.scope_version);
        3 * (1 + MAX_LENGTH_PREFIX) + field_size(resource_bytes) + field_size(scope)
    }
}

fn metric_size(metric: &Metric, data: usize) -> usize {
    string_size(&metric.name)
        + string_size(&metric.description)
        + string_size(&metric.unit)
        + field_size(data)
}

fn number_point_size(p: &NumberPoint, attrs: usize) -> usize {
    nonzero_size(p.start) + nonzero_size(p.time) + if p.value.is_some() { 9 } else { 0 } + attrs
}

fn histogram_point_size(p: &HistogramPoint, attrs: usize) -> usize {
    let optional = [p.sum, p.min, p.max].iter().filter(|d| d.is_some()).count() * 9;
    nonzero_size(p.start_time)
        + nonzero_size(p.time)
        + nonzero_size(p.count)
        + optional
        + packed_size(p.bucket_counts.len())
        + packed_size(p.explicit_bounds.len())
        + attrs
}

/// Encoded attribute sets, filled in as sets are first used.
struct SetCache {
    field: u8,
    /// Per set, its range in `bytes`; `None` until encoded.
    spans: Vec<Option<(usize, usize)>>,
    bytes: Vec<u8>,
}

impl SetCache {
    fn new(field: u8) -> SetCache {
        SetCache {
            field,
            spans: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// The encoded set, encoding it on first use. A missing or unknown set
    /// encodes as no attributes.
    fn get(&mut self, output: &Output, set: Option<u32>) -> &[u8] {
        let Some(set) = set else { return &[] };
        if self.spans.is_empty() {
            self.spans.resize(output.attribute_set_ends.len(), None);
        }
        let Some(slot) = self.spans.get_mut(set as usize) else {
            return &[];
        };
        let (start, end) = match *slot {
            Some(span) => span,
            None => {
                let start = self.bytes.len();
                for (k, v) in attribute_set(output, set) {
                    put_key_value(&mut self.bytes, self.field, k, v);
                }
                *slot = Some((start, self.bytes.len()));
                (start, self.bytes.len())
            }
        };
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// A set that [`SetCache::get`] encoded already (empty otherwise).
    fn cached(&self, set: Option<u32>) -> &[u8] {
        match set.and_then(|s| self.spans.get(s as usize)) {
            Some(&Some((start, end))) => self.bytes.get(start..end).unwrap_or_default(),
            _ => &[],
        }
    }
}

fn put_key_value(buf: &mut Vec<u8>, field: u8, k: &str, v: AttrValue<'_>) {
    let value = any_value_size(v);
    put_header(buf, field, string_size(k) + field_size(value));
    put_string(buf, key::KEY_VALUE_KEY, k);
    put_header(buf, key::KEY_VALUE_VALUE, value);
    match v {
        // A oneof member is written even when it holds its default value.
        AttrValue::Str(s) => put_bytes(buf, key::ANY_STRING, s.as_bytes()),
        AttrValue::Bool(b) => buf.extend_from_slice(&[key::ANY_BOOL, u8::from(b)]),
        AttrValue::Int(i) => {
            buf.push(key::ANY_INT);
            put_varint(buf, i as u64);
        }
        AttrValue::Double(d) => put_fixed64(buf, key::ANY_DOUBLE, d.to_bits()),
    }
}

fn any_value_size(v: AttrValue<'_>) -> usize {
    match v {
        AttrValue::Str(s) => field_size(s.len()),
        AttrValue::Bool(_) => 2,
        // int64 is a plain varint of the two's complement: negatives take 10 bytes.
        AttrValue::Int(i) => 1 + varint_size(i as u64),
        AttrValue::Double(_) => 9,
    }
}

/// Size of a length-delimited field with a body of `len` bytes.
#[inline]
fn field_size(len: usize) -> usize {
    1 + varint_size(len as u64) + len
}

/// Size of a string field, which proto3 leaves out when empty.
fn string_size(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_size(s.len()) }
}

#[inline]
fn nonzero_size(v: u64) -> usize {
    if v == 0 { 0 } else { 9 }
}

fn packed_size(count: usize) -> usize {
    if count == 0 { 0 } else { field_size(count * 8) }
}

#[inline]
fn varint_size(v: u64) -> usize {
    // Seven bits a byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn put_header(buf: &mut Vec<u8>, key: u8, len: usize) {
    buf.push(key);
    put_varint(buf, len as u64);
}

fn put_bytes(buf: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    put_header(buf, key, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_string(buf: &mut Vec<u8>, key: u8, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, key, s.as_bytes());
    }
}

#[inline]
fn put_fixed64(buf: &mut Vec<u8>, key: u8, v: u64) {
    buf.push(key);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_fixed64_nonzero(buf: &mut Vec<u8>, key: u8, v: u64) {
    if v != 0 {
        put_fixed64(buf, key, v);
    }
}

fn put_optional_double(buf: &mut Vec<u8>, key: u8, v: Option<f64>) {
    if let Some(d) = v {
        put_fixed64(buf, key, d.to_bits());
    }
}

fn put_packed(buf: &mut Vec<u8>, key: u8, values: impl ExactSizeIterator<Item = u64>) {
    if values.len() == 0 {
        return;
    }
    put_header(buf, key, values.len() * 8);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture::{self, BIG, MINUTE, T};
    use crate::export::{split_points, whole};
    use crate::wit::{AttributeValue, NumberValues};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::metrics::v1 as pb;
    use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
    use pb::number_data_point::Value as NV;
    use prost::Message;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn set(n: u32) -> Vec<KeyValue> {
        use any_value::Value::*;
        match n {
            0 => vec![
                kv("host", s("web-1")),
                kv("code", IntValue(200)),
                kv("ratio", DoubleValue(0.25)),
                kv("ok", BoolValue(true)),
            ],
            1 => vec![kv("host", s("web-2")), kv("region", s("eastus"))],
            2 => vec![],
            3 => vec![kv("code", IntValue(-7)), kv("region", s(""))],
            _ => unreachable!(),
        }
    }

    fn point(attrs: u32, start: u64, time: u64, value: NV) -> pb::NumberDataPoint {
        pb::NumberDataPoint {
            attributes: set(attrs),
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(value),
            ..Default::default()
        }
    }

    fn metric(name: &str, description: &str, unit: &str, data: pb::metric::Data) -> pb::Metric {
        pb::Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<pb::Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![pb::ResourceMetrics {
                resource: Some(PbResource {
                    attributes: vec![
                        kv("service.name", s("adx-mon-metrics-exporter")),
                        kv("service.version", s(env!("CARGO_PKG_VERSION"))),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![pb::ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "adx-mon.azure.com/metrics-exporter".into(),
                        version: "v1".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The fixture, written out as prost messages by hand.
    fn expected() -> ExportMetricsServiceRequest {
        use pb::metric::Data;
        let cumulative = pb::AggregationTemporality::Cumulative as i32;
        let delta = pb::AggregationTemporality::Delta as i32;
        request(vec![
            metric(
                "requests_inflight",
                "Requests being served",
                "{request}",
                Data::Gauge(pb::Gauge {
                    data_points: vec![
                        point(0, 0, T, NV::AsInt(BIG)),
                        point(1, 0, T + 1, NV::AsInt(-42)),
                        point(0, 0, T + 2, NV::AsInt(0)),
                    ],
                }),
            ),
            metric(
                "cpu_ratio",
                "",
                "",
                Data::Gauge(pb::Gauge {
                    data_points: vec![
                        point(1, 0, T, NV::AsDouble(0.5)),
                        point(2, 0, T, NV::AsDouble(-1e300)),
                        point(3, 0, T, NV::AsDouble(0.0)),
                    ],
                }),
            ),
            metric(
                "requests_total",
                "Requests served",
                "{request}",
                Data::Sum(pb::Sum {
                    data_points: vec![
                        point(0, T - MINUTE, T, NV::AsInt(10)),
                        point(3, T - MINUTE, T, NV::AsInt(20)),
                    ],
                    aggregation_temporality: cumulative,
                    is_monotonic: true,
                }),
            ),
            metric(
                "bytes_delta",
                "Bytes moved",
                "By",
                Data::Sum(pb::Sum {
                    data_points: vec![point(1, T - MINUTE, T, NV::AsDouble(1.5))],
                    aggregation_temporality: delta,
                    is_monotonic: false,
                }),
            ),
            metric(
                "latency",
                "Request latency",
                "s",
                Data::Histogram(pb::Histogram {
                    data_points: vec![
                        pb::HistogramDataPoint {
                            attributes: set(0),
                            start_time_unix_nano: T - MINUTE,
                            time_unix_nano: T,
                            count: 6,
                            sum: Some(2.75),
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![0.1, 1.0],
                            min: Some(0.05),
                            max: Some(1.5),
                            ..Default::default()
                        },
                        pb::HistogramDataPoint {
                            attributes: set(2),
                            time_unix_nano: T,
                            bucket_counts: vec![0, 0, 0],
                            explicit_bounds: vec![0.1, 1.0],
                            ..Default::default()
                        },
                        pb::HistogramDataPoint {
                            attributes: set(1),
                            time_unix_nano: T,
                            count: 3,
                            sum: Some(0.0),
                            ..Default::default()
                        },
                    ],
                    aggregation_temporality: cumulative,
                }),
            ),
        ])
    }

    fn encode(output: &Output, slices: &[MetricSlice]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_request(&Resource::default_host(), output, slices, &mut buf);
        buf
    }

    #[test]
    fn bytes_equal_prost() {
        let out = fixture::output();
        let ours = encode(&out, &whole(&out));
        let want = expected();
        assert_eq!(ours, want.encode_to_vec());
        assert_eq!(
            ExportMetricsServiceRequest::decode(ours.as_slice()).unwrap(),
            want
        );
    }

    #[test]
    fn appends_to_buffer() {
        let out = fixture::output();
        let mut buf = b"head".to_vec();
        encode_request(&Resource::default_host(), &out, &whole(&out), &mut buf);
        assert_eq!(&buf[..4], b"head");
        assert_eq!(buf[4..], expected().encode_to_vec());
    }

    #[test]
    fn empty_request_equals_prost() {
        let out = fixture::output();
        assert_eq!(encode(&out, &[]), request(vec![]).encode_to_vec());
    }

    #[test]
    fn long_strings_and_many_points_equal_prost() {
        // Lengths of 128 bytes and more take multi-byte varints at every level.
        let mut out = fixture::output();
        out.strings[1] = "w".repeat(300);
        out.metrics = vec![fixture::gauge(&"m".repeat(200), T, 2000)];
        let mut resource = Resource::default_host();
        resource
            .attributes
            .push(("long".into(), "r".repeat(20_000)));
        let mut ours = Vec::new();
        encode_request(&resource, &out, &whole(&out), &mut ours);

        let mut want = request(vec![metric(
            &"m".repeat(200),
            "",
            "",
            pb::metric::Data::Gauge(pb::Gauge {
                data_points: (0..2000)
                    .map(|i| point(0, 0, T + i, NV::AsInt(i as i64)))
                    .collect(),
            }),
        )]);
        for p in want.resource_metrics[0].scope_metrics[0].metrics[0]
            .data
            .iter_mut()
        {
            if let pb::metric::Data::Gauge(g) = p {
                for dp in &mut g.data_points {
                    dp.attributes[0] = kv("host", s(&"w".repeat(300)));
                }
            }
        }
        let rm = &mut want.resource_metrics[0];
        rm.resource
            .as_mut()
            .unwrap()
            .attributes
            .push(kv("long", s(&"r".repeat(20_000))));
        assert_eq!(ours, want.encode_to_vec());
    }

    #[test]
    fn split_requests_decode_in_order() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", T, 4), fixture::gauge("b", T + 4, 6)];
        let requests = split_points(&out, 3);
        assert_eq!(requests.len(), 4);
        let mut encoder = Encoder::new(&Resource::default_host(), &out);
        let mut times = Vec::new();
        let mut counts = Vec::new();
        let mut names = Vec::new();
        for slices in &requests {
            let mut buf = Vec::new();
            encoder.encode(slices, &mut buf);
            assert_eq!(
                buf,
                encode(&out, slices),
                "a reused encoder writes the same bytes"
            );
            let req = ExportMetricsServiceRequest::decode(buf.as_slice()).unwrap();
            let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
            let mut count = 0;
            for m in metrics {
                let Some(pb::metric::Data::Gauge(g)) = &m.data else {
                    panic!("not a gauge")
                };
                names.push(m.name.clone());
                count += g.data_points.len();
                times.extend(g.data_points.iter().map(|p| p.time_unix_nano));
                let first_time = if m.name == "a" { T } else { T + 4 };
                for p in &g.data_points {
                    assert_eq!(
                        p.value,
                        Some(NV::AsInt((p.time_unix_nano - first_time) as i64))
                    );
                }
            }
            counts.push(count);
        }
        assert_eq!(counts, vec![3, 3, 3, 1]);
        assert_eq!(names, vec!["a", "a", "b", "b", "b"]);
        assert_eq!(times, (T..T + 10).collect::<Vec<u64>>());
    }

    #[test]
    fn bad_indexes_do_not_panic() {
        let mut out = fixture::output();
        out.attributes[0].key = 1000;
        out.attributes[4].value = AttributeValue::Str(1000);
        if let MetricData::Gauge(p) = &mut out.metrics[0].data {
            p.attribute_sets = vec![0, 77];
            p.values = NumberValues::Doubles(vec![]);
        }
        if let MetricData::Histogram(h) = &mut out.metrics[4].data {
            h.points[0].attribute_set = u32::MAX;
        }
        let mut slices = whole(&out);
        slices.push(MetricSlice {
            metric: 99,
            start: 0,
            end: 5,
        });
        slices.push(MetricSlice {
            metric: 1,
            start: 2,
            end: 50,
        });
        let req = ExportMetricsServiceRequest::decode(encode(&out, &slices).as_slice()).unwrap();
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 6);
        let Some(pb::metric::Data::Gauge(g)) = &metrics[0].data else {
            panic!()
        };
        assert_eq!(g.data_points[0].attributes, set(0)[1..].to_vec());
        assert!(g.data_points[1].attributes.is_empty());
        assert!(g.data_points.iter().all(|p| p.value.is_none()));
        let Some(pb::metric::Data::Gauge(g)) = &metrics[5].data else {
            panic!()
        };
        assert_eq!(g.data_points.len(), 1);
        let Some(pb::metric::Data::Sum(sum)) = &metrics[3].data else {
            panic!()
        };
        assert_eq!(
            sum.data_points[0].attributes,
            vec![kv("region", s("eastus"))]
        );
    }

    #[test]
    fn varints_match_prost() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            1 << 56,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(&mut ours, v);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(varint_size(v), theirs.len(), "{v}");
        }
    }

    #[test]
    fn non_finite_doubles_keep_their_bits() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("g", T, 3)];
        if let MetricData::Gauge(p) = &mut out.metrics[0].data {
            p.values = NumberValues::Doubles(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        }
        let req =
            ExportMetricsServiceRequest::decode(encode(&out, &whole(&out)).as_slice()).unwrap();
        let Some(pb::metric::Data::Gauge(g)) =
            &req.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!()
        };
        let values: Vec<u64> = g
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(NV::AsDouble(d)) => d.to_bits(),
                _ => panic!("not a double"),
            })
            .collect();
        assert_eq!(
            values,
            vec![
                f64::NAN.to_bits(),
                f64::INFINITY.to_bits(),
                f64::NEG_INFINITY.to_bits()
            ]
        );
    }
}
