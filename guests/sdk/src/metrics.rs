//! Writing metrics point by point: `out.gauge("name").unit("1").point(&attrs,
//! time, value)`. Strings and attribute sets are interned underneath
//! ([`crate::OutputBuilder`]), points gathered column by column, and the
//! contract's [`Output`] built when the transform returns.

use std::ops::Range;

use rustc_hash::FxHashMap;

use crate::readers::LabelColumn;
use crate::{
    AttributeSetBuilder, AttributeValue, HistogramData, HistogramPoint, Metric, MetricData,
    NumberPoints, NumberValues, Output, OutputBuilder, SkipCounter, SumData, Temporality,
    TransformError,
};

/// The attributes of one point. Reuse one across rows ([`Attributes::clear`]):
/// it keeps its buffers. A key set twice keeps the later value.
#[derive(Default)]
pub struct Attributes {
    text: String,
    entries: Vec<(Range<usize>, Value)>,
    scratch: String,
}

#[derive(Clone)]
enum Value {
    Str(Range<usize>),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) -> &mut Self {
        self.text.clear();
        self.entries.clear();
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let start = self.text.len();
        self.text.push_str(value);
        let range = start..self.text.len();
        self.set(key, Value::Str(range))
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.set(key, Value::Int(value))
    }

    pub fn double(&mut self, key: &str, value: f64) -> &mut Self {
        self.set(key, Value::Double(value))
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.set(key, Value::Bool(value))
    }

    /// Row `row` of `column` as text (see [`LabelColumn`]); nothing for a
    /// null, so a null label is left out of the point.
    pub fn label(&mut self, key: &str, column: &LabelColumn<'_>, row: usize) -> &mut Self {
        let mut scratch = std::mem::take(&mut self.scratch);
        if column.render(row, &mut scratch) {
            self.str(key, &scratch);
        }
        self.scratch = scratch;
        self
    }

    /// Row `row` of each column, keyed by the column's name.
    pub fn labels(&mut self, columns: &[LabelColumn<'_>], row: usize) -> &mut Self {
        for column in columns {
            self.label(column.name(), column, row);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn set(&mut self, key: &str, value: Value) -> &mut Self {
        let existing = self
            .entries
            .iter()
            .position(|(k, _)| &self.text[k.clone()] == key);
        let start = self.text.len();
        self.text.push_str(key);
        let key_range = start..self.text.len();
        match existing {
            Some(i) => self.entries[i] = (key_range, value),
            None => self.entries.push((key_range, value)),
        }
        self
    }
}

/// A gauge or sum value: integers stay exact; a metric that gets a double
/// after integers turns them all to doubles (one metric holds one kind).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
}

impl From<i64> for Number {
    fn from(v: i64) -> Self {
        Number::Int(v)
    }
}

impl From<i32> for Number {
    fn from(v: i32) -> Self {
        Number::Int(v.into())
    }
}

impl From<u32> for Number {
    fn from(v: u32) -> Self {
        Number::Int(v.into())
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Self {
        Number::Double(v)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "a gauge",
            Kind::Sum => "a sum",
            Kind::Histogram => "a histogram",
        }
    }
}

struct Pending {
    name: String,
    description: String,
    unit: String,
    kind: Kind,
    monotonic: bool,
    temporality: Temporality,
    sets: Vec<u32>,
    starts: Vec<u64>,
    times: Vec<u64>,
    values: NumberValues,
    bounds: Vec<f64>,
    histogram: Vec<HistogramPoint>,
}

/// What a transform writes: metrics, their points, and the rows it skipped.
#[derive(Default)]
pub struct Out {
    builder: OutputBuilder,
    skips: SkipCounter,
    metrics: Vec<Pending>,
    by_name: FxHashMap<String, usize>,
    set: AttributeSetBuilder,
    /// The first metric written as two kinds: the batch fails with it.
    conflict: Option<String>,
}

impl Out {
    pub fn new() -> Self {
        Self::default()
    }

    /// The gauge `name`, created when first named.
    pub fn gauge(&mut self, name: &str) -> NumberWriter<'_> {
        let index = self.metric(name, Kind::Gauge);
        NumberWriter { out: self, index }
    }

    /// The sum `name`, created when first named: delta and monotonic (a
    /// count per window, what SummaryRules write) unless told otherwise.
    pub fn sum(&mut self, name: &str) -> NumberWriter<'_> {
        let index = self.metric(name, Kind::Sum);
        NumberWriter { out: self, index }
    }

    /// The histogram `name`, created when first named: delta unless told
    /// otherwise.
    pub fn histogram(&mut self, name: &str) -> HistogramWriter<'_> {
        let index = self.metric(name, Kind::Histogram);
        HistogramWriter { out: self, index }
    }

    /// Leaves row `row` (0-based) out for `reason`: a short stable
    /// kebab-case name of a kind of problem (`null-value`,
    /// `zero-denominator`), never a value. The host counts rows by reason.
    #[inline]
    pub fn skip(&mut self, reason: &'static str, row: usize) {
        self.skips.skip(reason, row);
    }

    /// Rows skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skips.total()
    }

    /// The contract's output; an error when a metric was written as two
    /// kinds.
    pub fn finish(mut self) -> Result<Output, TransformError> {
        if let Some(message) = self.conflict {
            return Err(TransformError::new(message));
        }
        for m in self.metrics {
            let points = NumberPoints {
                attribute_sets: m.sets,
                start_times: m.starts,
                times: m.times,
                values: m.values,
            };
            let data = match m.kind {
                Kind::Gauge => MetricData::Gauge(points),
                Kind::Sum => MetricData::Sum(SumData {
                    points,
                    monotonic: m.monotonic,
                    temporality: m.temporality,
                }),
                Kind::Histogram => MetricData::Histogram(HistogramData {
                    points: m.histogram,
                    temporality: m.temporality,
                }),
            };
            self.builder.push_metric(Metric {
                name: m.name,
                description: m.description,
                unit: m.unit,
                data,
            });
        }
        Ok(self.builder.finish(self.skips))
    }

    fn metric(&mut self, name: &str, kind: Kind) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            let had = self.metrics[i].kind;
            if had != kind && self.conflict.is_none() {
                self.conflict = Some(format!(
                    "metric `{name}` is written as {} and as {}",
                    had.name(),
                    kind.name()
                ));
            }
            return i;
        }
        let i = self.metrics.len();
        self.metrics.push(Pending {
            name: name.to_string(),
            description: String::new(),
            unit: String::new(),
            kind,
            monotonic: true,
            temporality: Temporality::Delta,
            sets: Vec::new(),
            starts: Vec::new(),
            times: Vec::new(),
            values: NumberValues::Ints(Vec::new()),
            bounds: Vec::new(),
            histogram: Vec::new(),
        });
        self.by_name.insert(name.to_string(), i);
        i
    }

    /// The index of the attribute set `attrs`, interned.
    fn attribute_set(&mut self, attrs: &Attributes) -> u32 {
        self.set.clear();
        for (key, value) in &attrs.entries {
            let key = self.builder.intern(&attrs.text[key.clone()]);
            let value = match value {
                Value::Str(range) => {
                    AttributeValue::Str(self.builder.intern(&attrs.text[range.clone()]))
                }
                Value::Int(v) => AttributeValue::Int(*v),
                Value::Double(v) => AttributeValue::Double(*v),
                Value::Bool(v) => AttributeValue::Boolean(*v),
            };
            self.set.push(key, value);
        }
        self.builder.attribute_set(&self.set)
    }
}

/// Points of one gauge or sum, and its settings.
pub struct NumberWriter<'a> {
    out: &'a mut Out,
    index: usize,
}

impl<'a> NumberWriter<'a> {
    /// The unit, in UCUM as OTLP has it (`1`, `ms`, `By`, `{request}`).
    pub fn unit(self, unit: &str) -> Self {
        set_text(&mut self.out.metrics[self.index].unit, unit);
        self
    }

    pub fn description(self, description: &str) -> Self {
        set_text(&mut self.out.metrics[self.index].description, description);
        self
    }

    /// A sum that only goes up (the default) or one that may go down.
    pub fn monotonic(self, monotonic: bool) -> Self {
        self.out.metrics[self.index].monotonic = monotonic;
        self
    }

    /// Values since the start of the series instead of per window.
    pub fn cumulative(self) -> Self {
        self.out.metrics[self.index].temporality = Temporality::Cumulative;
        self
    }

    /// A point at `time` (Unix nanoseconds).
    pub fn point(self, attrs: &Attributes, time: u64, value: impl Into<Number>) {
        self.push(attrs, None, time, value.into());
    }

    /// A point over `start ..= time` (Unix nanoseconds), for sums.
    pub fn point_since(self, attrs: &Attributes, start: u64, time: u64, value: impl Into<Number>) {
        self.push(attrs, Some(start), time, value.into());
    }

    fn push(self, attrs: &Attributes, start: Option<u64>, time: u64, value: Number) {
        let set = self.out.attribute_set(attrs);
        let m = &mut self.out.metrics[self.index];
        if m.kind == Kind::Histogram {
            return;
        }
        // Start times are all there or all absent: a first one fills the
        // points before it with 0 (unknown).
        match start {
            Some(s) => {
                m.starts.resize(m.times.len(), 0);
                m.starts.push(s);
            }
            None if !m.starts.is_empty() => m.starts.push(0),
            None => {}
        }
        m.sets.push(set);
        m.times.push(time);
        match (&mut m.values, value) {
            (NumberValues::Ints(v), Number::Int(x)) => v.push(x),
            (NumberValues::Doubles(v), Number::Double(x)) => v.push(x),
            (NumberValues::Doubles(v), Number::Int(x)) => v.push(x as f64),
            (NumberValues::Ints(v), Number::Double(x)) => {
                let mut doubles: Vec<f64> = v.iter().map(|i| *i as f64).collect();
                doubles.push(x);
                m.values = NumberValues::Doubles(doubles);
            }
        }
    }
}

/// Points of one histogram, and its settings.
pub struct HistogramWriter<'a> {
    out: &'a mut Out,
    index: usize,
}

impl<'a> HistogramWriter<'a> {
    pub fn unit(self, unit: &str) -> Self {
        set_text(&mut self.out.metrics[self.index].unit, unit);
        self
    }

    pub fn description(self, description: &str) -> Self {
        set_text(&mut self.out.metrics[self.index].description, description);
        self
    }

    pub fn cumulative(self) -> Self {
        self.out.metrics[self.index].temporality = Temporality::Cumulative;
        self
    }

    /// The upper bounds of every bucket but the last (`+Inf`), ascending;
    /// the same for all points of this histogram.
    pub fn bounds(self, bounds: &[f64]) -> Self {
        let m = &mut self.out.metrics[self.index];
        if m.bounds != bounds {
            m.bounds = bounds.to_vec();
        }
        self
    }

    /// A point at `time` (Unix nanoseconds) with one count per bucket (one
    /// more than there are bounds); its count is their sum.
    pub fn point(self, attrs: &Attributes, time: u64, counts: Vec<u64>, sum: Option<f64>) {
        let set = self.out.attribute_set(attrs);
        let m = &mut self.out.metrics[self.index];
        if m.kind != Kind::Histogram {
            return;
        }
        m.histogram.push(HistogramPoint {
            attribute_set: set,
            start_time: 0,
            time,
            count: counts.iter().sum(),
            sum,
            min: None,
            max: None,
            bucket_counts: counts,
            explicit_bounds: m.bounds.clone(),
        });
    }
}

fn set_text(field: &mut String, value: &str) {
    if field != value {
        *field = value.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs_of(out: &Output, set: u32) -> Vec<(String, String)> {
        let start = match set {
            0 => 0,
            i => out.attribute_set_ends[i as usize - 1] as usize,
        };
        let end = out.attribute_set_ends[set as usize] as usize;
        out.attributes[start..end]
            .iter()
            .map(|a| {
                let value = match a.value {
                    AttributeValue::Str(i) => out.strings[i as usize].clone(),
                    AttributeValue::Int(v) => v.to_string(),
                    AttributeValue::Double(v) => v.to_string(),
                    AttributeValue::Boolean(v) => v.to_string(),
                };
                (out.strings[a.key as usize].clone(), value)
            })
            .collect()
    }

    #[test]
    fn gauges_gather_points_and_share_attribute_sets() {
        let mut out = Out::new();
        let mut attrs = Attributes::new();
        for (row, service) in ["api", "web", "api"].iter().enumerate() {
            attrs.clear().str("service", service).int("code", 200);
            out.gauge("ratio").unit("1").point(&attrs, row as u64, 1);
        }
        attrs.clear().str("service", "api").str("service", "db");
        out.gauge("ratio").point(&attrs, 9, 0.5);
        out.skip("zero-denominator", 4);
        out.skip("zero-denominator", 6);
        let o = out.finish().unwrap();
        assert_eq!(o.metrics.len(), 1);
        assert_eq!(o.metrics[0].unit, "1");
        let MetricData::Gauge(p) = &o.metrics[0].data else {
            panic!("a gauge")
        };
        assert_eq!(p.attribute_sets, [0, 1, 0, 2], "equal sets are one");
        assert_eq!(p.times, [0, 1, 2, 9]);
        assert!(p.start_times.is_empty());
        assert_eq!(p.values, NumberValues::Doubles(vec![1.0, 1.0, 1.0, 0.5]));
        assert_eq!(
            attrs_of(&o, 1),
            [
                ("service".into(), "web".into()),
                ("code".into(), "200".into())
            ]
        );
        assert_eq!(
            attrs_of(&o, 2),
            [("service".into(), "db".into())],
            "the later value wins"
        );
        assert_eq!(o.skipped.len(), 1);
        assert_eq!((o.skipped[0].count, o.skipped[0].first_row), (2, 4));
        assert_eq!(o.strings[o.skipped[0].reason as usize], "zero-denominator");
    }

    #[test]
    fn sums_histograms_and_conflicts() {
        let mut out = Out::new();
        let attrs = Attributes::new();
        out.sum("requests").point(&attrs, 5, 3);
        out.sum("requests")
            .cumulative()
            .point_since(&attrs, 1, 6, 4);
        out.histogram("latency")
            .bounds(&[100.0])
            .point(&attrs, 5, vec![3, 1], Some(250.0));
        let o = out.finish().unwrap();
        let MetricData::Sum(s) = &o.metrics[0].data else {
            panic!("a sum")
        };
        assert!(s.monotonic);
        assert_eq!(s.temporality, Temporality::Cumulative);
        assert_eq!(s.points.start_times, [0, 1]);
        assert_eq!(s.points.values, NumberValues::Ints(vec![3, 4]));
        let MetricData::Histogram(h) = &o.metrics[1].data else {
            panic!("a histogram")
        };
        assert_eq!((h.points[0].count, h.points[0].sum), (4, Some(250.0)));
        assert_eq!(h.points[0].explicit_bounds, [100.0]);

        let mut out = Out::new();
        out.gauge("m").point(&attrs, 1, 1);
        out.sum("m").point(&attrs, 1, 1);
        let e = out.finish().unwrap_err();
        assert_eq!(e.message, "metric `m` is written as a gauge and as a sum");
    }
}
