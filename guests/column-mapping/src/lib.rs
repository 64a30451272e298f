//! The default transform: the spec's `TransformConfig` column mapping.
//!
//! One OTLP metric per distinct name, with all rows of that name as its data
//! points. Integer value columns become integer points (exact beyond 2^53),
//! real and decimal columns become doubles. Label columns become string
//! attributes in the order they are listed; a null label is left out. An
//! expanding entry turns a `dynamic` property bag into one label per key
//! ([`expand`]), sorted by name, in its entry's place. Rows whose value,
//! timestamp or property bag is unusable are skipped and counted by reason,
//! never exported as zero.

mod config;
pub mod expand;

use config::{Config, Kind, LabelEntry, TemporalityConfig, VALUE_TYPES};
use kusto_metrics_guest::{
    AttributeSetBuilder, AttributeValue, Batch, Column, ColumnExt, ColumnValues, ConfigError,
    KustoType, Metric, MetricData, NumberPoints, NumberValues, Output, OutputBuilder, Requirements,
    SkipCounter, SumData, Temporality, Text, TextDictionary, TransformError, ticks_to_unix_nanos,
};
use rustc_hash::{FxHashMap, FxHashSet};

/// Skip reasons, as they appear in the host's counters.
pub mod reason {
    pub const NULL_VALUE: &str = "null-value";
    pub const NON_FINITE_VALUE: &str = "non-finite-value";
    pub const INVALID_VALUE: &str = "invalid-value";
    pub const NULL_TIMESTAMP: &str = "null-timestamp";
    pub const TIMESTAMP_OUT_OF_RANGE: &str = "timestamp-out-of-range";
    pub const NO_METRIC_NAME: &str = "no-metric-name";
    /// An expanded property bag that is not JSON.
    pub const DYNAMIC_NOT_JSON: &str = "dynamic-not-json";
    /// An expanded property bag that is JSON but not an object.
    pub const DYNAMIC_NOT_OBJECT: &str = "dynamic-not-object";
    /// A property bag with more labels than its entry's `maxKeys`.
    pub const TOO_MANY_KEYS: &str = "too-many-keys";
    /// Two labels of one row with the same name: two keys that sanitize
    /// alike, or an expanded key meeting a label column, a constant label or
    /// another bag's key.
    pub const LABEL_COLLISION: &str = "label-collision";
    /// A row whose expanded labels would take the batch past
    /// `maxExpandedLabels` distinct names.
    pub const TOO_MANY_LABEL_NAMES: &str = "too-many-label-names";
}

pub struct ColumnMapping;

// One instance per batch: freeing is wasted work.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: kusto_metrics_guest::BumpAllocator = kusto_metrics_guest::BumpAllocator::new();

#[cfg(target_arch = "wasm32")]
kusto_metrics_guest::export!(ColumnMapping);

impl kusto_metrics_guest::Guest for ColumnMapping {
    fn validate(config: String) -> Result<Requirements, ConfigError> {
        validate(&config)
    }

    fn transform(config: String, batch: Batch) -> Result<Output, TransformError> {
        transform(&config, &batch)
    }
}

pub fn validate(config: &str) -> Result<Requirements, ConfigError> {
    Ok(Config::parse(config)?.requirements())
}

pub fn transform(config: &str, batch: &Batch) -> Result<Output, TransformError> {
    let config = Config::parse(config).map_err(|e| TransformError {
        column: None,
        row: None,
        message: e.message,
    })?;
    Mapping::new(&config, batch)?.run()
}

/// Where a metric's values come from.
enum ValueSource<'a> {
    Longs(&'a [i64]),
    Reals(&'a [f64]),
    Decimals(Text<'a>),
}

/// "Not resolved yet" in the per-dictionary-value caches.
const UNSET: u32 = u32::MAX;

struct ValueColumn<'a> {
    column: &'a Column,
    source: ValueSource<'a>,
    /// What `valueColumns` adds to the metric name; empty for `valueColumn`.
    suffix: &'a str,
    /// Metric index by the row's raw name.
    by_name: FxHashMap<&'a str, u32>,
    /// Metric index by the name column's dictionary index, when it has one.
    by_name_code: Vec<u32>,
}

/// Where a label's values come from: string-table indices are cached per
/// distinct value, by dictionary index when the host sent one.
enum LabelSource<'a> {
    Dictionary {
        dict: &'a TextDictionary,
        strings: Vec<u32>,
    },
    Plain {
        text: Text<'a>,
        strings: FxHashMap<&'a str, u32>,
    },
    /// Numbers, datetimes, booleans: rendered as text per row.
    Rendered,
    /// An expanding entry: many labels from one property bag.
    Expanded(Bags<'a>),
}

/// An expanding entry's property bags, each distinct text parsed once.
struct Bags<'a> {
    text: Text<'a>,
    prefix: &'a str,
    max_keys: usize,
    /// Bag index by dictionary index, when the column has a dictionary.
    by_code: Vec<u32>,
    by_text: FxHashMap<&'a str, u32>,
    /// Interned (name, value) pairs sorted by name, or the skip reason of
    /// every row holding the bag.
    parsed: Vec<Result<Vec<(u32, u32)>, &'static str>>,
    /// The bag of the row being mapped; `None` for a null cell.
    current: Option<u32>,
}

impl<'a> Bags<'a> {
    /// The bag of `row`, parsed the first time its text is seen.
    fn resolve(&mut self, row: usize, out: &mut OutputBuilder) -> u32 {
        let dictionary = self.text.dictionary();
        let code = dictionary.and_then(|d| d.indices.get(row).copied());
        let cached = match code {
            Some(c) => self.by_code.get(c as usize).copied(),
            None => self.by_text.get(self.text.get(row)).copied(),
        };
        if let Some(i) = cached.filter(|&i| i != UNSET) {
            return i;
        }
        let text = match (dictionary, code) {
            (Some(d), Some(c)) => d.values.get(c as usize),
            _ => self.text.get(row),
        };
        let parsed = expand::labels(text, self.prefix, self.max_keys).map(|pairs| {
            pairs
                .iter()
                .map(|(name, value)| (out.intern(name), out.intern(value)))
                .collect()
        });
        let i = self.parsed.len() as u32;
        self.parsed.push(parsed);
        match code.and_then(|c| self.by_code.get_mut(c as usize)) {
            Some(slot) => *slot = i,
            None => {
                self.by_text.insert(text, i);
            }
        }
        i
    }
}

struct LabelColumn<'a> {
    column: &'a Column,
    key: u32,
    source: LabelSource<'a>,
}

/// Attribute sets by a row's combination of label codes, when every label
/// column is dictionary encoded: the code of a label is its dictionary index,
/// or the dictionary's length for a null. Resolving a row's set then costs a
/// few multiplications instead of hashing its labels.
struct Combinations {
    /// Per label column: the multiplier of its code.
    strides: Vec<u64>,
    sets: CombinationTable,
}

enum CombinationTable {
    /// Every combination has a slot: used when there are not many more
    /// combinations than rows.
    Direct(Vec<u32>),
    Hashed(FxHashMap<u64, u32>),
}

impl Combinations {
    /// `None` unless every label column is dictionary encoded.
    fn new(labels: &[LabelColumn<'_>], rows: usize) -> Option<Combinations> {
        let mut strides = Vec::with_capacity(labels.len());
        let mut product: u64 = 1;
        for label in labels {
            let LabelSource::Dictionary { dict, .. } = &label.source else {
                return None;
            };
            strides.push(product);
            let codes = dict.values.len() as u64 + 1;
            product = product.checked_mul(codes)?;
        }
        let direct_limit = (rows as u64).saturating_mul(2).max(4096);
        let sets = if product <= direct_limit {
            CombinationTable::Direct(vec![UNSET; product as usize])
        } else {
            CombinationTable::Hashed(FxHashMap::default())
        };
        Some(Combinations { strides, sets })
    }
}

struct MetricBuilder {
    name: String,
    attribute_sets: Vec<u32>,
    start_times: Vec<u64>,
    times: Vec<u64>,
    values: NumberValues,
}

/// The metric name column, and its dictionary when it has one.
struct Names<'a> {
    column: &'a Column,
    text: Text<'a>,
    codes: Option<&'a [u32]>,
}

struct Mapping<'a> {
    config: &'a Config,
    rows: usize,
    names: Option<Names<'a>>,
    default_name: &'a str,
    timestamps: (&'a Column, &'a [i64]),
    start_times: Option<(&'a Column, &'a [i64])>,
    values: Vec<ValueColumn<'a>>,
    labels: Vec<LabelColumn<'a>>,
    /// `constantLabels`, interned: (key, value).
    constants: Vec<(u32, u32)>,
    /// Whether an entry expands a property bag.
    expands: bool,
    /// Names an expanded label may not have: the label columns' and the
    /// constant labels'.
    reserved: FxHashSet<u32>,
    /// Expanded label names given so far in this batch, and the cap.
    expanded_names: FxHashSet<u32>,
    expanded_cap: usize,
    /// The expanded names of the row being mapped.
    row_names: Vec<u32>,
    combinations: Option<Combinations>,
    out: OutputBuilder,
    metrics: Vec<MetricBuilder>,
    skips: SkipCounter,
}

fn type_error(column: &Column, wanted: &str) -> TransformError {
    TransformError::column(
        &column.name,
        format!(
            "column `{}` has type {}, but {wanted}",
            column.name,
            type_name(column.kusto_type)
        ),
    )
}

pub fn type_name(t: KustoType) -> &'static str {
    match t {
        KustoType::Bool => "bool",
        KustoType::Int => "int",
        KustoType::Long => "long",
        KustoType::Real => "real",
        KustoType::Decimal => "decimal",
        KustoType::String => "string",
        KustoType::Datetime => "datetime",
        KustoType::Timespan => "timespan",
        KustoType::Guid => "guid",
        KustoType::Dynamic => "dynamic",
    }
}

fn datetime_column<'a>(
    batch: &'a Batch,
    name: &str,
) -> Result<(&'a Column, &'a [i64]), TransformError> {
    let column = batch.column(name)?;
    match (column.kusto_type, column.ticks()) {
        (KustoType::Datetime, Some(ticks)) => Ok((column, ticks)),
        _ => Err(type_error(column, "a timestamp column must be datetime")),
    }
}

impl<'a> Mapping<'a> {
    fn new(config: &'a Config, batch: &'a Batch) -> Result<Self, TransformError> {
        let mut out = OutputBuilder::new();
        let names = match config
            .metric_name_column
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            Some(name) => {
                let column = batch.column(name)?;
                match column.text() {
                    Some(text) if column.kusto_type == KustoType::String => Some(Names {
                        column,
                        text,
                        codes: text.dictionary().map(|d| d.indices.as_slice()),
                    }),
                    _ => return Err(type_error(column, "a metric name column must be string")),
                }
            }
            None => None,
        };
        let name_codes = names
            .as_ref()
            .and_then(|n| n.text.dictionary())
            .map_or(0, |d| d.values.len());
        let timestamps = datetime_column(batch, &config.timestamp_column)?;
        let start_times = match &config.start_timestamp_column {
            Some(name) => Some(datetime_column(batch, name)?),
            None => None,
        };
        let several = !config.value_columns.is_empty();
        let mut values = Vec::new();
        for name in config.values() {
            let column = batch.column(name)?;
            let source = match (&column.values, column.kusto_type, column.text()) {
                (ColumnValues::Longs(v), KustoType::Int | KustoType::Long, _) => {
                    ValueSource::Longs(v)
                }
                (ColumnValues::Reals(v), KustoType::Real, _) => ValueSource::Reals(v),
                (_, KustoType::Decimal, Some(t)) => ValueSource::Decimals(t),
                _ => {
                    let allowed: Vec<&str> = VALUE_TYPES.iter().map(|t| type_name(*t)).collect();
                    return Err(type_error(
                        column,
                        &format!("a value column must be one of {}", allowed.join(", ")),
                    ));
                }
            };
            values.push(ValueColumn {
                column,
                source,
                suffix: if several { name } else { "" },
                by_name: FxHashMap::default(),
                by_name_code: vec![UNSET; name_codes],
            });
        }
        let mut labels = Vec::new();
        for entry in &config.label_columns {
            let name = entry.column();
            let column = batch.column(name)?;
            if let LabelEntry::Expand(e) = entry {
                let text = match column.text() {
                    Some(text) if column.kusto_type == KustoType::Dynamic => text,
                    _ => {
                        return Err(type_error(
                            column,
                            "an expanding label column must be dynamic",
                        ));
                    }
                };
                labels.push(LabelColumn {
                    column,
                    key: UNSET,
                    source: LabelSource::Expanded(Bags {
                        text,
                        prefix: &e.prefix,
                        max_keys: e.max_keys,
                        by_code: vec![UNSET; text.dictionary().map_or(0, |d| d.values.len())],
                        by_text: FxHashMap::default(),
                        parsed: Vec::new(),
                        current: None,
                    }),
                });
                continue;
            }
            let source = match column.text() {
                Some(text) => match text.dictionary() {
                    Some(dict) => LabelSource::Dictionary {
                        dict,
                        strings: vec![UNSET; dict.values.len()],
                    },
                    None => LabelSource::Plain {
                        text,
                        strings: FxHashMap::default(),
                    },
                },
                None => LabelSource::Rendered,
            };
            labels.push(LabelColumn {
                column,
                key: out.intern(name),
                source,
            });
        }
        let constants: Vec<(u32, u32)> = config
            .constant_labels
            .iter()
            .map(|(k, v)| (out.intern(k), out.intern(v)))
            .collect();
        let expands = labels
            .iter()
            .any(|l| matches!(l.source, LabelSource::Expanded(_)));
        let reserved = labels
            .iter()
            .filter(|l| !matches!(l.source, LabelSource::Expanded(_)))
            .map(|l| l.key)
            .chain(constants.iter().map(|c| c.0))
            .collect();
        let rows = batch.row_count as usize;
        Ok(Mapping {
            config,
            constants,
            expands,
            reserved,
            expanded_names: FxHashSet::default(),
            expanded_cap: config.expanded_label_cap(),
            row_names: Vec::new(),
            rows,
            names,
            default_name: config.default_metric_name.as_deref().unwrap_or(""),
            timestamps,
            start_times,
            values,
            combinations: Combinations::new(&labels, rows),
            labels,
            out,
            metrics: Vec::new(),
            skips: SkipCounter::default(),
        })
    }

    fn run(mut self) -> Result<Output, TransformError> {
        let mut set = AttributeSetBuilder::default();
        let mut scratch = String::new();
        for row in 0..self.rows {
            let (ts_column, ts) = self.timestamps;
            if !ts_column.is_valid(row) {
                self.skips.skip(reason::NULL_TIMESTAMP, row);
                continue;
            }
            let Some(time) = ts.get(row).copied().and_then(ticks_to_unix_nanos) else {
                self.skips.skip(reason::TIMESTAMP_OUT_OF_RANGE, row);
                continue;
            };
            let start = match self.start_times {
                Some((column, ticks)) if column.is_valid(row) => ticks
                    .get(row)
                    .copied()
                    .and_then(ticks_to_unix_nanos)
                    .unwrap_or(0),
                _ => 0,
            };
            let (raw_name, name_code) = self.raw_name(row);
            if raw_name.is_empty() && self.values.iter().all(|v| v.suffix.is_empty()) {
                self.skips.skip(reason::NO_METRIC_NAME, row);
                continue;
            }
            let attrs = match self.attribute_set(row, &mut set, &mut scratch) {
                Ok(attrs) => attrs,
                Err(reason) => {
                    self.skips.skip(reason, row);
                    continue;
                }
            };
            for v in 0..self.values.len() {
                let Some(value) = self.value(v, row) else {
                    continue;
                };
                let metric = self.metric_index(v, raw_name, name_code) as usize;
                let m = &mut self.metrics[metric];
                m.attribute_sets.push(attrs);
                m.times.push(time);
                if self.start_times.is_some() {
                    m.start_times.push(start);
                }
                match (&mut m.values, value) {
                    (NumberValues::Ints(ints), Value::Int(i)) => ints.push(i),
                    (NumberValues::Doubles(ds), Value::Double(d)) => ds.push(d),
                    // Two value columns of different types under one name:
                    // keep every point, as doubles.
                    (values, value) => {
                        let mut ds =
                            match std::mem::replace(values, NumberValues::Doubles(Vec::new())) {
                                NumberValues::Ints(ints) => {
                                    ints.into_iter().map(|i| i as f64).collect()
                                }
                                NumberValues::Doubles(ds) => ds,
                            };
                        ds.push(match value {
                            Value::Int(i) => i as f64,
                            Value::Double(d) => d,
                        });
                        *values = NumberValues::Doubles(ds);
                    }
                }
            }
        }
        self.finish()
    }

    /// The row's metric name before prefix and suffix (the default name
    /// when the column is null or empty), and its dictionary index when the
    /// column has one and the row is not null.
    #[inline]
    fn raw_name(&self, row: usize) -> (&'a str, Option<u32>) {
        let Some(names) = &self.names else {
            return (self.default_name, None);
        };
        if !names.column.is_valid(row) {
            return (self.default_name, None);
        }
        let code = names.codes.and_then(|c| c.get(row).copied());
        match names.text.get(row) {
            "" => (self.default_name, None),
            name => (name, code),
        }
    }

    /// The row's value from value column `v`, or `None` after counting why not.
    #[inline]
    fn value(&mut self, v: usize, row: usize) -> Option<Value> {
        let vc = &self.values[v];
        if !vc.column.is_valid(row) {
            self.skips.skip(reason::NULL_VALUE, row);
            return None;
        }
        let value = match &vc.source {
            ValueSource::Longs(l) => return l.get(row).map(|i| Value::Int(*i)),
            ValueSource::Reals(r) => *r.get(row)?,
            ValueSource::Decimals(t) => match t.get(row).trim().parse::<f64>() {
                Ok(d) => d,
                Err(_) => {
                    self.skips.skip(reason::INVALID_VALUE, row);
                    return None;
                }
            },
        };
        if value.is_finite() {
            Some(Value::Double(value))
        } else {
            self.skips.skip(reason::NON_FINITE_VALUE, row);
            None
        }
    }

    #[inline]
    fn metric_index(&mut self, v: usize, raw_name: &'a str, code: Option<u32>) -> u32 {
        let vc = &self.values[v];
        let cached = match code {
            Some(c) => vc.by_name_code.get(c as usize).copied(),
            None => vc.by_name.get(raw_name).copied(),
        };
        if let Some(i) = cached.filter(|&i| i != UNSET) {
            return i;
        }
        let parts = [
            self.config.metric_name_prefix.as_deref().unwrap_or(""),
            raw_name,
            vc.suffix,
        ];
        let name = parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("_");
        let i = match self.metrics.iter().position(|m| m.name == name) {
            Some(i) => i,
            None => {
                self.metrics.push(MetricBuilder {
                    name,
                    attribute_sets: Vec::new(),
                    start_times: Vec::new(),
                    times: Vec::new(),
                    values: match vc.source {
                        ValueSource::Longs(_) => NumberValues::Ints(Vec::new()),
                        _ => NumberValues::Doubles(Vec::new()),
                    },
                });
                self.metrics.len() - 1
            }
        } as u32;
        let vc = &mut self.values[v];
        match code.and_then(|c| vc.by_name_code.get_mut(c as usize)) {
            Some(slot) => *slot = i,
            None => {
                vc.by_name.insert(raw_name, i);
            }
        }
        i
    }

    /// The row's attribute set, or the reason the row is skipped.
    #[inline]
    fn attribute_set(
        &mut self,
        row: usize,
        set: &mut AttributeSetBuilder,
        scratch: &mut String,
    ) -> Result<u32, &'static str> {
        if self.expands {
            self.check_expanded(row)?;
        }
        let Some(combination) = self.combination(row) else {
            return Ok(self.build_attribute_set(row, set, scratch));
        };
        let Some(combinations) = &self.combinations else {
            return Ok(self.build_attribute_set(row, set, scratch));
        };
        let known = match &combinations.sets {
            CombinationTable::Direct(slots) => slots.get(combination as usize).copied(),
            CombinationTable::Hashed(map) => map.get(&combination).copied(),
        };
        if let Some(set) = known.filter(|&s| s != UNSET) {
            return Ok(set);
        }
        // A combination of dictionary indices names one attribute set, so a
        // combination not seen before is a set not seen before.
        self.collect_attributes(row, set, scratch);
        let index = self.out.push_attribute_set(set);
        if let Some(combinations) = &mut self.combinations {
            match &mut combinations.sets {
                CombinationTable::Direct(slots) => {
                    if let Some(slot) = slots.get_mut(combination as usize) {
                        *slot = index;
                    }
                }
                CombinationTable::Hashed(map) => {
                    map.insert(combination, index);
                }
            }
        }
        Ok(index)
    }

    /// Resolves the row's property bags and refuses the row when they
    /// cannot all be labels: a bag refused as such, a name met twice in the
    /// row or reserved, or too many distinct names in the batch. Never
    /// lets one label overwrite another.
    fn check_expanded(&mut self, row: usize) -> Result<(), &'static str> {
        self.row_names.clear();
        for label in &mut self.labels {
            let LabelSource::Expanded(bags) = &mut label.source else {
                continue;
            };
            bags.current = None;
            if !label.column.is_valid(row) {
                continue;
            }
            let i = bags.resolve(row, &mut self.out);
            bags.current = Some(i);
            match bags.parsed.get(i as usize) {
                Some(Ok(pairs)) => self.row_names.extend(pairs.iter().map(|p| p.0)),
                Some(Err(reason)) => return Err(reason),
                None => {}
            }
        }
        if self.row_names.iter().any(|n| self.reserved.contains(n)) {
            return Err(reason::LABEL_COLLISION);
        }
        // Each bag's names are distinct already; two bags may share one.
        self.row_names.sort_unstable();
        if self.row_names.windows(2).any(|w| w[0] == w[1]) {
            return Err(reason::LABEL_COLLISION);
        }
        let new = self
            .row_names
            .iter()
            .filter(|n| !self.expanded_names.contains(n))
            .count();
        if self.expanded_names.len() + new > self.expanded_cap {
            return Err(reason::TOO_MANY_LABEL_NAMES);
        }
        self.expanded_names.extend(self.row_names.iter().copied());
        Ok(())
    }

    /// The row's combination of label codes, when every label column is
    /// dictionary encoded.
    #[inline]
    fn combination(&self, row: usize) -> Option<u64> {
        let combinations = self.combinations.as_ref()?;
        let mut combination = 0u64;
        for (label, stride) in self.labels.iter().zip(&combinations.strides) {
            let LabelSource::Dictionary { dict, .. } = &label.source else {
                return None;
            };
            let code = match dict.indices.get(row) {
                Some(&i) if label.column.is_valid(row) => u64::from(i),
                _ => dict.values.len() as u64,
            };
            combination += code * stride;
        }
        Some(combination)
    }

    fn build_attribute_set(
        &mut self,
        row: usize,
        set: &mut AttributeSetBuilder,
        scratch: &mut String,
    ) -> u32 {
        self.collect_attributes(row, set, scratch);
        self.out.attribute_set(set)
    }

    /// The row's labels into `set`.
    fn collect_attributes(
        &mut self,
        row: usize,
        set: &mut AttributeSetBuilder,
        scratch: &mut String,
    ) {
        set.clear();
        for label in &mut self.labels {
            if !label.column.is_valid(row) {
                continue;
            }
            let value = match &mut label.source {
                LabelSource::Dictionary { dict, strings } => {
                    let code = dict.indices.get(row).copied().unwrap_or(0) as usize;
                    match strings.get(code) {
                        Some(&i) if i != UNSET => i,
                        _ => {
                            let i = self.out.intern(dict.values.get(code));
                            if let Some(slot) = strings.get_mut(code) {
                                *slot = i;
                            }
                            i
                        }
                    }
                }
                LabelSource::Plain { text, strings } => {
                    let s = text.get(row);
                    match strings.get(s) {
                        Some(&i) => i,
                        None => {
                            let i = self.out.intern(s);
                            strings.insert(s, i);
                            i
                        }
                    }
                }
                LabelSource::Rendered => {
                    label.column.render(row, scratch);
                    self.out.intern(scratch)
                }
                LabelSource::Expanded(bags) => {
                    if let Some(Ok(pairs)) = bags.current.and_then(|i| bags.parsed.get(i as usize))
                    {
                        for &(name, value) in pairs {
                            set.push(name, AttributeValue::Str(value));
                        }
                    }
                    continue;
                }
            };
            set.push(label.key, AttributeValue::Str(value));
        }
        for &(key, value) in &self.constants {
            set.push(key, AttributeValue::Str(value));
        }
    }

    fn finish(mut self) -> Result<Output, TransformError> {
        let temporality = match self.config.temporality {
            Some(TemporalityConfig::Delta) => Temporality::Delta,
            _ => Temporality::Cumulative,
        };
        for m in std::mem::take(&mut self.metrics) {
            let points = NumberPoints {
                attribute_sets: m.attribute_sets,
                start_times: m.start_times,
                times: m.times,
                values: m.values,
            };
            let data = match self.config.kind {
                Kind::Gauge => MetricData::Gauge(points),
                Kind::Sum => MetricData::Sum(SumData {
                    points,
                    monotonic: self.config.monotonic.unwrap_or(false),
                    temporality,
                }),
            };
            self.out.push_metric(Metric {
                name: m.name,
                description: self.config.description.clone(),
                unit: self.config.unit.clone(),
                data,
            });
        }
        Ok(self.out.finish(self.skips))
    }
}

#[derive(Clone, Copy)]
enum Value {
    Int(i64),
    Double(f64),
}
