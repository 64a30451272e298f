//! A bound on the distinct attribute keys (label names) one MetricsExporter
//! sends over the process's life, whatever its guest does.
//!
//! A guest runs in a fresh instance per batch and cannot remember what it
//! sent before, so a cap it keeps (the default transform's
//! `maxExpandedLabels`) holds per batch only: a property bag with a new
//! key in every row would still grow label names without end across
//! batches. The host remembers each MetricsExporter's keys (as 64-bit
//! hashes) up to [`MAX_LABEL_KEYS_PER_METRICS_EXPORTER`]; a point whose
//! attribute set brings a key beyond that is left out and counted, and the
//! keys already admitted keep flowing. The memory is the process's: a
//! restart starts every budget afresh.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use crate::wit::{MetricData, NumberPoints, NumberValues, Output};

/// Distinct attribute keys one MetricsExporter may send; above the default
/// transform's own per-batch limit (`maxExpandedLabels` at most 2048, plus
/// its plain label columns).
pub const MAX_LABEL_KEYS_PER_METRICS_EXPORTER: usize = 4096;

/// The skip reason points left out by the budget are counted under.
pub const TOO_MANY_LABEL_KEYS: &str = "too-many-label-keys";

#[derive(Default)]
pub struct LabelKeys {
    seen: Mutex<HashMap<String, HashSet<u64>>>,
    hasher: std::hash::RandomState,
}

impl LabelKeys {
    /// Takes out of `output` the points whose attribute set has a key
    /// `metrics_exporter` may not add; returns how many were taken out.
    pub fn admit(&self, metrics_exporter: &str, output: &mut Output) -> u64 {
        self.admit_with(
            metrics_exporter,
            output,
            MAX_LABEL_KEYS_PER_METRICS_EXPORTER,
        )
    }

    fn admit_with(&self, metrics_exporter: &str, output: &mut Output, max: usize) -> u64 {
        // Each key string hashed once, outside the lock. (The output's
        // indices were checked before it got here; one out of range counts
        // as no key.)
        let mut key_hashes: Vec<Option<u64>> = vec![None; output.strings.len()];
        // One per attribute, so sets keep their bounds.
        let attribute_keys: Vec<Option<u64>> = output
            .attributes
            .iter()
            .map(|a| {
                let slot = key_hashes.get_mut(a.key as usize)?;
                Some(*slot.get_or_insert_with(|| self.hash(&output.strings[a.key as usize])))
            })
            .collect();
        if attribute_keys.iter().all(Option::is_none) {
            return 0;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains_key(metrics_exporter) {
            seen.insert(metrics_exporter.to_string(), HashSet::new());
        }
        let Some(keys) = seen.get_mut(metrics_exporter) else {
            return 0;
        };
        // The common case, once per output: everything fits.
        let new: HashSet<u64> = attribute_keys
            .iter()
            .flatten()
            .copied()
            .filter(|h| !keys.contains(h))
            .collect();
        if keys.len() + new.len() <= max {
            keys.extend(new);
            return 0;
        }
        // Over the budget: set by set, in order, the first keys to come
        // are the ones admitted.
        let mut start = 0usize;
        let allowed: Vec<bool> = output
            .attribute_set_ends
            .iter()
            .map(|&end| {
                let end = (end as usize).min(attribute_keys.len()).max(start);
                let set = &attribute_keys[start..end];
                start = end;
                let new: HashSet<u64> = set
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|h| !keys.contains(h))
                    .collect();
                if keys.len() + new.len() > max {
                    return false;
                }
                keys.extend(new);
                true
            })
            .collect();
        drop(seen);
        if allowed.iter().all(|a| *a) {
            return 0;
        }
        let ok = |set: u32| allowed.get(set as usize).copied().unwrap_or(true);
        let mut removed = 0u64;
        for metric in &mut output.metrics {
            match &mut metric.data {
                MetricData::Gauge(p) => removed += retain_points(p, ok),
                MetricData::Sum(s) => removed += retain_points(&mut s.points, ok),
                MetricData::Histogram(h) => {
                    let before = h.points.len();
                    h.points.retain(|p| ok(p.attribute_set));
                    removed += (before - h.points.len()) as u64;
                }
            }
        }
        removed
    }

    fn hash(&self, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(key.as_bytes());
        h.finish()
    }
}

/// Keeps the points whose set passes `ok`, every column alike.
fn retain_points(p: &mut NumberPoints, ok: impl Fn(u32) -> bool) -> u64 {
    let keep: Vec<bool> = p.attribute_sets.iter().map(|&s| ok(s)).collect();
    if keep.iter().all(|k| *k) {
        return 0;
    }
    retain_by(&mut p.times, &keep);
    retain_by(&mut p.start_times, &keep);
    match &mut p.values {
        NumberValues::Ints(v) => retain_by(v, &keep),
        NumberValues::Doubles(v) => retain_by(v, &keep),
    }
    let before = p.attribute_sets.len();
    retain_by(&mut p.attribute_sets, &keep);
    (before - p.attribute_sets.len()) as u64
}

/// Keeps `column[i]` where `keep[i]`; a column of another length (no
/// start times) is left as it is.
fn retain_by<T>(column: &mut Vec<T>, keep: &[bool]) {
    if column.len() != keep.len() {
        return;
    }
    let mut i = 0;
    column.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{Attribute, AttributeValue, Metric};

    /// One gauge point per key `k0..k{n}`, each in its own set.
    fn output(keys: std::ops::Range<u32>) -> Output {
        let mut strings = Vec::new();
        let mut attributes = Vec::new();
        let mut ends = Vec::new();
        for k in keys.clone() {
            strings.push(format!("k{k}"));
            attributes.push(Attribute {
                key: strings.len() as u32 - 1,
                value: AttributeValue::Int(1),
            });
            ends.push(attributes.len() as u32);
        }
        let n = keys.len();
        Output {
            strings,
            attributes,
            attribute_set_ends: ends,
            metrics: vec![Metric {
                name: "m".into(),
                description: String::new(),
                unit: String::new(),
                data: MetricData::Gauge(NumberPoints {
                    attribute_sets: (0..n as u32).collect(),
                    start_times: Vec::new(),
                    times: (0..n as u64).collect(),
                    values: NumberValues::Ints((0..n as i64).collect()),
                }),
            }],
            skipped: Vec::new(),
        }
    }

    #[test]
    fn keys_beyond_the_budget_are_left_out_across_batches_and_known_ones_flow() {
        let budget = LabelKeys::default();
        let mut first = output(0..6);
        assert_eq!(budget.admit_with("ns/a", &mut first, 8), 0);
        let mut second = output(4..12);
        assert_eq!(
            budget.admit_with("ns/a", &mut second, 8),
            4,
            "k8..k11 are new and over"
        );
        let MetricData::Gauge(p) = &second.metrics[0].data else {
            unreachable!()
        };
        assert_eq!(p.times, vec![0, 1, 2, 3], "the columns stay aligned");
        assert_eq!(p.values, NumberValues::Ints(vec![0, 1, 2, 3]));
        assert_eq!(p.attribute_sets, vec![0, 1, 2, 3]);
        // Known keys still go out; another MetricsExporter has its own budget.
        assert_eq!(budget.admit_with("ns/a", &mut output(0..8), 8), 0);
        assert_eq!(budget.admit_with("ns/b", &mut output(4..12), 8), 0);
    }
}
