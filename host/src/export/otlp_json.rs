//! OTLP/JSON: the same request as [`otlp_proto`](super::otlp_proto), in the
//! proto3 JSON mapping that the OTLP specification prescribes.
//!
//! What differs from plain JSON: field names are lowerCamelCase, 64-bit
//! integers are decimal strings (JSON numbers lose precision past 2^53),
//! enums are integers, and non-finite doubles are the strings `"NaN"`,
//! `"Infinity"` and `"-Infinity"`. Fields holding their default value are
//! left out, except `timeUnixNano`, `count` and `isMonotonic`, which are
//! kept for people reading the output.
//!
//! The text is streamed through serde_json straight from the guest's output:
//! no intermediate tree is built.

use std::fmt::Display;
use std::ops::Range;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::{AttrValue, MetricSlice, Number, Resource, attribute_set, number_point};
use crate::wit::{HistogramPoint, Metric, MetricData, NumberPoints, Output, Temporality};

/// The OTLP/JSON text of one `ExportMetricsServiceRequest` holding `slices`
/// of `output`. Slices of metrics that do not exist are left out.
pub fn encode_json(resource: &Resource, output: &Output, slices: &[MetricSlice]) -> String {
    let request = Request {
        resource,
        output,
        slices,
    };
    // No value below fails to serialize and every map key is a string, so
    // serde_json has nothing to report when writing to memory.
    serde_json::to_string(&request).expect("OTLP/JSON serialization into memory cannot fail")
}

/// metrics.v1.AggregationTemporality
fn temporality(t: Temporality) -> u8 {
    match t {
        Temporality::Delta => 1,
        Temporality::Cumulative => 2,
    }
}

/// collector.metrics.v1.ExportMetricsServiceRequest
struct Request<'a> {
    resource: &'a Resource,
    output: &'a Output,
    slices: &'a [MetricSlice],
}

impl Serialize for Request<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("resourceMetrics", &[ResourceMetrics(self)])?;
        m.end()
    }
}

/// metrics.v1.ResourceMetrics
struct ResourceMetrics<'a>(&'a Request<'a>);

impl Serialize for ResourceMetrics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("resource", &ResourceJson(self.0.resource))?;
        m.serialize_entry("scopeMetrics", &[ScopeMetrics(self.0)])?;
        m.end()
    }
}

/// resource.v1.Resource
struct ResourceJson<'a>(&'a Resource);

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let attrs = &self.0.attributes;
        let mut m = s.serialize_map(None)?;
        if !attrs.is_empty() {
            let kvs = Seq(|| attrs.iter().map(|(k, v)| KeyValue(k, AttrValue::Str(v))));
            m.serialize_entry("attributes", &kvs)?;
        }
        m.end()
    }
}

/// metrics.v1.ScopeMetrics
struct ScopeMetrics<'a>(&'a Request<'a>);

impl Serialize for ScopeMetrics<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Request {
            resource,
            output,
            slices,
        } = *self.0;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("scope", &Scope(resource))?;
        let metrics = Seq(|| {
            let resolved = slices.iter().filter_map(|slice| slice.resolve(output));
            resolved.map(|(metric, range)| MetricJson {
                output,
                metric,
                range,
            })
        });
        m.serialize_entry("metrics", &metrics)?;
        m.end()
    }
}

/// common.v1.InstrumentationScope
struct Scope<'a>(&'a Resource);

impl Serialize for Scope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        non_empty(&mut m, "name", &self.0.scope_name)?;
        non_empty(&mut m, "version", &self.0.scope_version)?;
        m.end()
    }
}

/// metrics.v1.Metric
struct MetricJson<'a> {
    output: &'a Output,
    metric: &'a Metric,
    range: Range<usize>,
}

impl Serialize for MetricJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let metric = self.metric;
        let mut m = s.serialize_map(None)?;
        non_empty(&mut m, "name", &metric.name)?;
        non_empty(&mut m, "description", &metric.description)?;
        non_empty(&mut m, "unit", &metric.unit)?;
        let data = DataJson {
            output: self.output,
            data: &metric.data,
            range: self.range.clone(),
        };
        let key = match metric.data {
            MetricData::Gauge(_) => "gauge",
            MetricData::Sum(_) => "sum",
            MetricData::Histogram(_) => "histogram",
        };
        m.serialize_entry(key, &data)?;
        m.end()
    }
}

/// metrics.v1.Gauge, Sum or Histogram.
struct DataJson<'a> {
    output: &'a Output,
    data: &'a MetricData,
    range: Range<usize>,
}

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self.data {
            MetricData::Gauge(points) => {
                m.serialize_entry("dataPoints", &self.number_points(points))?;
            }
            MetricData::Sum(sum) => {
                m.serialize_entry("dataPoints", &self.number_points(&sum.points))?;
                m.serialize_entry("aggregationTemporality", &temporality(sum.temporality))?;
                m.serialize_entry("isMonotonic", &sum.monotonic)?;
            }
            MetricData::Histogram(h) => {
                let points = h.points.get(self.range.clone()).unwrap_or_default();
                let output = self.output;
                let points = Seq(|| points.iter().map(|point| HistogramJson { output, point }));
                m.serialize_entry("dataPoints", &points)?;
                m.serialize_entry("aggregationTemporality", &temporality(h.temporality))?;
            }
        }
        m.end()
    }
}

impl<'a> DataJson<'a> {
    fn number_points(&self, points: &'a NumberPoints) -> impl Serialize + 'a {
        let output = self.output;
        let range = self.range.clone();
        Seq(move || range.clone().map(move |i| NumberJson { output, points, i }))
    }
}

/// metrics.v1.NumberDataPoint
struct NumberJson<'a> {
    output: &'a Output,
    points: &'a NumberPoints,
    i: usize,
}

impl Serialize for NumberJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = number_point(self.points, self.i);
        let mut m = s.serialize_map(None)?;
        if let Some(set) = p.set {
            attributes(&mut m, self.output, set)?;
        }
        times(&mut m, p.start, p.time)?;
        match p.value {
            Some(Number::Int(v)) => m.serialize_entry("asInt", &Decimal(v))?,
            Some(Number::Double(v)) => m.serialize_entry("asDouble", &Double(v))?,
            None => {}
        }
        m.end()
    }
}

/// metrics.v1.HistogramDataPoint
struct HistogramJson<'a> {
    output: &'a Output,
    point: &'a HistogramPoint,
}

impl Serialize for HistogramJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.point;
        let mut m = s.serialize_map(None)?;
        attributes(&mut m, self.output, p.attribute_set)?;
        times(&mut m, p.start_time, p.time)?;
        m.serialize_entry("count", &Decimal(p.count))?;
        optional_double(&mut m, "sum", p.sum)?;
        if !p.bucket_counts.is_empty() {
            m.serialize_entry("bucketCounts", &Seq(|| p.bucket_counts.iter().map(Decimal)))?;
        }
        if !p.explicit_bounds.is_empty() {
            let bounds = Seq(|| p.explicit_bounds.iter().map(|&b| Double(b)));
            m.serialize_entry("explicitBounds", &bounds)?;
        }
        optional_double(&mut m, "min", p.min)?;
        optional_double(&mut m, "max", p.max)?;
        m.end()
    }
}

/// A string field, which proto3 leaves out when empty.
fn non_empty<M: SerializeMap>(m: &mut M, key: &'static str, value: &str) -> Result<(), M::Error> {
    if value.is_empty() {
        Ok(())
    } else {
        m.serialize_entry(key, value)
    }
}

fn attributes<M: SerializeMap>(m: &mut M, output: &Output, set: u32) -> Result<(), M::Error> {
    if attribute_set(output, set).next().is_none() {
        return Ok(());
    }
    let kvs = Seq(|| attribute_set(output, set).map(|(k, v)| KeyValue(k, v)));
    m.serialize_entry("attributes", &kvs)
}

/// A zero start time means "unknown" and is left out; the time is always written.
fn times<M: SerializeMap>(m: &mut M, start: u64, time: u64) -> Result<(), M::Error> {
    if start != 0 {
        m.serialize_entry("startTimeUnixNano", &Decimal(start))?;
    }
    m.serialize_entry("timeUnixNano", &Decimal(time))
}

fn optional_double<M: SerializeMap>(
    m: &mut M,
    key: &'static str,
    value: Option<f64>,
) -> Result<(), M::Error> {
    match value {
        Some(d) => m.serialize_entry(key, &Double(d)),
        None => Ok(()),
    }
}

/// common.v1.KeyValue
struct KeyValue<'a>(&'a str, AttrValue<'a>);

impl Serialize for KeyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", self.0)?;
        m.serialize_entry("value", &AnyValue(self.1))?;
        m.end()
    }
}

/// common.v1.AnyValue
struct AnyValue<'a>(AttrValue<'a>);

impl Serialize for AnyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self.0 {
            AttrValue::Str(v) => m.serialize_entry("stringValue", v)?,
            AttrValue::Int(v) => m.serialize_entry("intValue", &Decimal(v))?,
            AttrValue::Double(v) => m.serialize_entry("doubleValue", &Double(v))?,
            AttrValue::Bool(v) => m.serialize_entry("boolValue", &v)?,
        }
        m.end()
    }
}

/// A 64-bit integer, as a decimal string.
struct Decimal<T>(T);

impl<T: Display> Serialize for Decimal<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A double; JSON has no non-finite numbers, so proto3 spells them as strings.
struct Double(f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.is_finite() {
            s.serialize_f64(d)
        } else if d.is_nan() {
            s.serialize_str("NaN")
        } else if d > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

/// A JSON array of what the closure yields. A closure rather than an
/// iterator because `serialize` takes `&self` and iterators are used up.
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: IntoIterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture::{self, BIG, MINUTE, T};
    use crate::export::{split_points, whole};
    use crate::wit::NumberValues;
    use serde_json::{Value, json};

    fn encode(output: &Output, slices: &[MetricSlice]) -> Value {
        let text = encode_json(&Resource::default_host(), output, slices);
        serde_json::from_str(&text).unwrap()
    }

    fn fixture_json() -> Value {
        let out = fixture::output();
        encode(&out, &whole(&out))
    }

    fn metrics(v: &Value) -> &Vec<Value> {
        v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
            .as_array()
            .unwrap()
    }

    #[test]
    fn resource_and_scope() {
        let v = fixture_json();
        assert_eq!(v.as_object().unwrap().len(), 1);
        let rm = &v["resourceMetrics"];
        assert_eq!(rm.as_array().unwrap().len(), 1);
        assert_eq!(
            rm[0]["resource"],
            json!({"attributes": [
                {"key": "service.name", "value": {"stringValue": "adx-mon-metrics-exporter"}},
                {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
            ]})
        );
        assert_eq!(
            rm[0]["scopeMetrics"][0]["scope"],
            json!({"name": "adx-mon.azure.com/metrics-exporter", "version": "v1"})
        );
        assert_eq!(
            metrics(&v).len(),
            5,
            "the metric without points is left out"
        );
    }

    #[test]
    fn int_gauge() {
        let v = fixture_json();
        let m = &metrics(&v)[0];
        assert_eq!(m["name"], "requests_inflight");
        assert_eq!(m["description"], "Requests being served");
        assert_eq!(m["unit"], "{request}");
        let points = &m["gauge"]["dataPoints"];
        assert_eq!(
            v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["timeUnixNano"],
            "1750845600000000000"
        );
        assert_eq!(points[0]["asInt"], "9007199254740993");
        assert_eq!(points[0]["asInt"], BIG.to_string());
        assert_eq!(points[1]["asInt"], "-42");
        assert_eq!(points[2]["asInt"], "0");
        assert_eq!(points[1]["timeUnixNano"], (T + 1).to_string());
        assert!(points[0].get("startTimeUnixNano").is_none());
        assert!(points[0].get("asDouble").is_none());
        // Order of attributes and of each value kind.
        assert_eq!(
            points[0]["attributes"],
            json!([
                {"key": "host", "value": {"stringValue": "web-1"}},
                {"key": "code", "value": {"intValue": "200"}},
                {"key": "ratio", "value": {"doubleValue": 0.25}},
                {"key": "ok", "value": {"boolValue": true}},
            ])
        );
        assert_eq!(points[1]["attributes"][1]["value"]["stringValue"], "eastus");
        assert_eq!(points[2]["attributes"], points[0]["attributes"]);
    }

    #[test]
    fn double_gauge_without_description() {
        let v = fixture_json();
        let m = &metrics(&v)[1];
        let mut keys: Vec<_> = m.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["gauge", "name"]);
        let points = &m["gauge"]["dataPoints"];
        assert_eq!(points[0]["asDouble"], 0.5);
        assert_eq!(points[1]["asDouble"], -1e300);
        assert_eq!(points[2]["asDouble"], 0.0);
        assert!(points[1].get("attributes").is_none(), "empty set");
        assert_eq!(
            points[2]["attributes"],
            json!([
                {"key": "code", "value": {"intValue": "-7"}},
                {"key": "region", "value": {"stringValue": ""}},
            ])
        );
    }

    #[test]
    fn sums() {
        let v = fixture_json();
        let total = &metrics(&v)[2]["sum"];
        assert_eq!(total["aggregationTemporality"], 2);
        assert_eq!(total["isMonotonic"], true);
        let p = &total["dataPoints"][1];
        assert_eq!(p["startTimeUnixNano"], (T - MINUTE).to_string());
        assert_eq!(p["timeUnixNano"], T.to_string());
        assert_eq!(p["asInt"], "20");
        let delta = &metrics(&v)[3]["sum"];
        assert_eq!(delta["aggregationTemporality"], 1);
        assert_eq!(delta["isMonotonic"], false);
        assert_eq!(delta["dataPoints"][0]["asDouble"], 1.5);
    }

    #[test]
    fn histogram() {
        let v = fixture_json();
        let h = &metrics(&v)[4]["histogram"];
        assert_eq!(h["aggregationTemporality"], 2);
        let p = &h["dataPoints"];
        assert_eq!(p.as_array().unwrap().len(), 3);
        assert_eq!(p[0]["startTimeUnixNano"], (T - MINUTE).to_string());
        assert_eq!(p[0]["count"], "6");
        assert_eq!(p[0]["sum"], 2.75);
        assert_eq!(p[0]["min"], 0.05);
        assert_eq!(p[0]["max"], 1.5);
        assert_eq!(p[0]["bucketCounts"], json!(["1", "2", "3"]));
        assert_eq!(p[0]["explicitBounds"], json!([0.1, 1.0]));
        assert_eq!(p[0]["attributes"][3]["key"], "ok");
        assert_eq!(
            p[1],
            json!({
                "timeUnixNano": T.to_string(),
                "count": "0",
                "bucketCounts": ["0", "0", "0"],
                "explicitBounds": [0.1, 1.0],
            })
        );
        assert_eq!(p[2]["sum"], 0.0);
        assert!(p[2].get("bucketCounts").is_none());
        assert!(p[2].get("min").is_none());
    }

    #[test]
    fn non_finite_doubles_are_strings() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("g", T, 4)];
        if let MetricData::Gauge(p) = &mut out.metrics[0].data {
            p.values = NumberValues::Doubles(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.1]);
        }
        out.attributes[2].value = crate::wit::AttributeValue::Double(f64::NAN);
        let v = encode(&out, &whole(&out));
        let points = &metrics(&v)[0]["gauge"]["dataPoints"];
        assert_eq!(points[0]["asDouble"], "NaN");
        assert_eq!(points[1]["asDouble"], "Infinity");
        assert_eq!(points[2]["asDouble"], "-Infinity");
        assert_eq!(points[3]["asDouble"], 0.1);
        assert_eq!(
            points[0]["attributes"][2]["value"],
            json!({"doubleValue": "NaN"})
        );
    }

    #[test]
    fn doubles_round_trip() {
        let values = vec![
            0.1,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -2.5e-8,
            1e21,
        ];
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("g", T, values.len())];
        if let MetricData::Gauge(p) = &mut out.metrics[0].data {
            p.values = NumberValues::Doubles(values.clone());
        }
        let v = encode(&out, &whole(&out));
        let decoded: Vec<f64> = metrics(&v)[0]["gauge"]["dataPoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["asDouble"].as_f64().unwrap())
            .collect();
        assert_eq!(
            decoded.iter().map(|d| d.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|d| d.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn field_order_follows_the_proto() {
        let out = fixture::output();
        let text = encode_json(&Resource::default_host(), &out, &whole(&out));
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(at("\"resource\"") < at("\"scopeMetrics\""));
        assert!(at("\"scope\"") < at("\"metrics\""));
        assert!(at("\"name\":\"requests_inflight\"") < at("\"description\""));
        assert!(text.contains("\"dataPoints\":[{\"attributes\":[{\"key\":\"host\""));
        assert!(text.contains(
            "}],\"timeUnixNano\":\"1750845600000000000\",\"asInt\":\"9007199254740993\"}"
        ));
        assert!(text.contains(
            "\"startTimeUnixNano\":\"1750845540000000000\",\"timeUnixNano\":\"1750845600000000000\",\"asInt\":\"10\"}"
        ));
    }

    #[test]
    fn splits_keep_points_in_order() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", T, 4), fixture::gauge("b", T + 4, 6)];
        let mut times = Vec::new();
        let mut counts = Vec::new();
        for slices in split_points(&out, 3) {
            let v = encode(&out, &slices);
            let mut count = 0;
            for m in metrics(&v) {
                let points = m["gauge"]["dataPoints"].as_array().unwrap();
                count += points.len();
                times.extend(
                    points
                        .iter()
                        .map(|p| p["timeUnixNano"].as_str().unwrap().to_string()),
                );
            }
            counts.push(count);
        }
        assert_eq!(counts, vec![3, 3, 3, 1]);
        let want: Vec<String> = (T..T + 10).map(|t| t.to_string()).collect();
        assert_eq!(times, want);
    }

    #[test]
    fn bad_indexes_do_not_panic() {
        let mut out = fixture::output();
        out.attributes[0].key = 1000;
        if let MetricData::Gauge(p) = &mut out.metrics[0].data {
            p.attribute_sets = vec![0, 77];
            p.values = NumberValues::Ints(vec![]);
        }
        if let MetricData::Histogram(h) = &mut out.metrics[4].data {
            h.points[0].attribute_set = u32::MAX;
        }
        let mut slices = whole(&out);
        slices.push(MetricSlice {
            metric: 99,
            start: 0,
            end: 1,
        });
        let v = encode(&out, &slices);
        assert_eq!(metrics(&v).len(), 5);
        let points = &metrics(&v)[0]["gauge"]["dataPoints"];
        assert_eq!(points[0]["attributes"].as_array().unwrap().len(), 3);
        assert!(points[1].get("attributes").is_none());
        assert!(points[2].get("asInt").is_none());
        assert!(
            metrics(&v)[4]["histogram"]["dataPoints"][0]
                .get("attributes")
                .is_none()
        );
    }
}
