//! What a guest returned, checked before the host spends anything on it:
//! every index points where it should, every count is within its cap, and
//! the size the output expands to when encoded (every point with its
//! attribute set) is within [`Limits::max_encoded_bytes`]. One pass over the
//! output, O(strings + attributes + points); nothing is allocated in
//! proportion to what the guest claims.
//!
//! Skip reasons are then made safe to count by ([`SkipReasons`]): cut,
//! spelled as metric labels allow, and bounded per guest.

use std::sync::Mutex;

use super::counters::{self, COUNTERS};
use super::limits::{
    Limits, MAX_HISTOGRAM_BUCKETS, MAX_OUTPUT_ATTRIBUTE_SETS, MAX_OUTPUT_METRICS,
    MAX_OUTPUT_SKIP_REASONS, MAX_SKIP_REASON_BYTES, MAX_SKIP_REASONS_PER_GUEST, OTHER_SKIP_REASON,
};
use crate::export::otlp_proto::Sizes;
use crate::wit::{AttributeValue, MetricData, Output, SkipCount, SumData};

/// Why an output is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a cap: says which, with the figure and the cap.
    TooLarge(String),
    /// Indices or lengths that do not fit together.
    Malformed(String),
}

fn over(what: &str, count: usize, cap: usize) -> Result<(), Refusal> {
    if count > cap {
        return Err(Refusal::TooLarge(format!(
            "{count} {what}, more than the limit of {cap}"
        )));
    }
    Ok(())
}

fn malformed(message: String) -> Result<(), Refusal> {
    Err(Refusal::Malformed(message))
}

/// Checks `out` against `limits`.
pub fn check(out: &Output, limits: &Limits) -> Result<(), Refusal> {
    // Counts first: each is a length, known without a pass.
    over("metrics", out.metrics.len(), MAX_OUTPUT_METRICS)?;
    over(
        "attribute sets",
        out.attribute_set_ends.len(),
        MAX_OUTPUT_ATTRIBUTE_SETS,
    )?;
    over("skip reasons", out.skipped.len(), MAX_OUTPUT_SKIP_REASONS)?;
    let points: usize = out.metrics.iter().map(|m| m.data.point_count()).sum();
    over("data points", points, limits.max_output_points)?;
    let string_bytes: usize = out.strings.iter().map(String::len).sum::<usize>()
        + out
            .metrics
            .iter()
            .map(|m| m.name.len() + m.description.len() + m.unit.len())
            .sum::<usize>();
    over(
        "bytes of strings",
        string_bytes,
        limits.max_output_string_bytes,
    )?;

    check_indices(out)?;

    // Only now, with every index known good, what it expands to.
    let expanded = expanded_size(out);
    if expanded > limits.max_encoded_bytes as u64 {
        return Err(Refusal::TooLarge(format!(
            "it expands to {expanded} bytes when encoded (every point with its attributes), \
             more than the limit of {}",
            limits.max_encoded_bytes
        )));
    }
    Ok(())
}

fn check_indices(out: &Output) -> Result<(), Refusal> {
    let strings = out.strings.len();
    let sets = out.attribute_set_ends.len();
    let mut previous_end = 0u32;
    for (i, &end) in out.attribute_set_ends.iter().enumerate() {
        if end < previous_end || end as usize > out.attributes.len() {
            return malformed(format!(
                "attribute set {i} ends at {end}, outside {previous_end}..={}",
                out.attributes.len()
            ));
        }
        previous_end = end;
    }
    for (i, a) in out.attributes.iter().enumerate() {
        let value_index = match a.value {
            AttributeValue::Str(s) => Some(s),
            _ => None,
        };
        if a.key as usize >= strings || value_index.is_some_and(|s| s as usize >= strings) {
            return malformed(format!(
                "attribute {i} refers to a string past the {strings} in the table"
            ));
        }
    }
    for (i, s) in out.skipped.iter().enumerate() {
        if s.reason as usize >= strings {
            return malformed(format!(
                "skip count {i} names reason {} of the {strings} strings in the table",
                s.reason
            ));
        }
    }
    for m in &out.metrics {
        if m.name.is_empty() {
            return malformed("a metric has an empty name".to_string());
        }
        let bad_set = |set: u32| set as usize >= sets;
        match &m.data {
            MetricData::Gauge(p) | MetricData::Sum(SumData { points: p, .. }) => {
                let n = p.times.len();
                if p.attribute_sets.len() != n
                    || p.values.len() != n
                    || !(p.start_times.is_empty() || p.start_times.len() == n)
                {
                    return malformed(format!(
                        "metric `{}`: point lists differ in length (times {n}, attribute sets {}, values {}, start times {})",
                        m.name,
                        p.attribute_sets.len(),
                        p.values.len(),
                        p.start_times.len()
                    ));
                }
                if let Some(set) = p.attribute_sets.iter().find(|s| bad_set(**s)) {
                    return malformed(format!(
                        "metric `{}` refers to attribute set {set} of {sets}",
                        m.name
                    ));
                }
            }
            MetricData::Histogram(h) => {
                for p in &h.points {
                    if bad_set(p.attribute_set) {
                        return malformed(format!(
                            "metric `{}` refers to attribute set {} of {sets}",
                            m.name, p.attribute_set
                        ));
                    }
                    if p.explicit_bounds.len() > MAX_HISTOGRAM_BUCKETS {
                        return Err(Refusal::TooLarge(format!(
                            "metric `{}`: a histogram point has {} bucket bounds, more than the limit of {MAX_HISTOGRAM_BUCKETS}",
                            m.name,
                            p.explicit_bounds.len()
                        )));
                    }
                    if !(p.bucket_counts.is_empty() && p.explicit_bounds.is_empty())
                        && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                    {
                        return malformed(format!(
                            "metric `{}`: a histogram point has {} bucket counts for {} bounds (want bounds + 1)",
                            m.name,
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The bytes the output expands to: the larger of its OTLP protobuf
/// encoding (each point carries its attribute set) and its Prometheus
/// series (labels once per series; a histogram point is a series per bucket
/// plus `_sum` and `_count`, bounded here by one per point).
fn expanded_size(out: &Output) -> u64 {
    let sizes = Sizes::new(out);
    let mut otlp: u64 = 0;
    let mut series: u64 = 0;
    for m in &out.metrics {
        otlp += Sizes::metric_overhead(m) as u64;
        let n = m.data.point_count();
        for i in 0..n {
            otlp += sizes.point(&m.data, i) as u64;
        }
        match &m.data {
            MetricData::Gauge(p) | MetricData::Sum(SumData { points: p, .. }) => {
                for &set in &p.attribute_sets {
                    series += sizes.set(Some(set)) as u64;
                }
            }
            MetricData::Histogram(h) => {
                for p in &h.points {
                    let per_series = sizes.set(Some(p.attribute_set)) as u64;
                    series += per_series * (p.bucket_counts.len() as u64 + 2);
                }
            }
        }
    }
    otlp.max(series)
}

/// The distinct skip reasons one guest has reported: the first
/// [`MAX_SKIP_REASONS_PER_GUEST`] are kept, later ones count as
/// [`OTHER_SKIP_REASON`], so a guest cannot grow the host's counters or logs
/// by inventing reasons.
#[derive(Default)]
pub struct SkipReasons {
    known: Mutex<Vec<String>>,
}

impl SkipReasons {
    /// Rewrites `out.skipped` so that each reason is a kept name (cut and
    /// spelled for a label), reasons past the limit are merged into
    /// `other`, and no reason appears twice. New names are added to the
    /// output's string table, which only the skip counts refer to.
    pub fn normalize(&self, out: &mut Output) {
        if out.skipped.is_empty() {
            return;
        }
        let mut merged: Vec<(String, u64, u32)> = Vec::new();
        for s in &out.skipped {
            let raw = out
                .strings
                .get(s.reason as usize)
                .map_or("", String::as_str);
            let name = self.keep(&label_safe(raw));
            match merged.iter_mut().find(|(n, _, _)| *n == name) {
                Some(entry) => {
                    entry.1 = entry.1.saturating_add(s.count);
                    entry.2 = entry.2.min(s.first_row);
                }
                None => merged.push((name, s.count, s.first_row)),
            }
        }
        out.skipped = merged
            .into_iter()
            .map(|(name, count, first_row)| {
                let reason = out.strings.len() as u32;
                out.strings.push(name);
                SkipCount {
                    reason,
                    count,
                    first_row,
                }
            })
            .collect();
    }

    fn keep(&self, name: &str) -> String {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.iter().any(|k| k == name) {
            return name.to_string();
        }
        if known.len() < MAX_SKIP_REASONS_PER_GUEST {
            known.push(name.to_string());
            return name.to_string();
        }
        COUNTERS.skip_reasons_folded.inc();
        OTHER_SKIP_REASON.to_string()
    }
}

/// A reason as a label value and log field can carry it: lowercase ASCII
/// letters, digits, `-`, `_` and `.`, anything else as `-`, at most
/// [`MAX_SKIP_REASON_BYTES`]; `unnamed` when nothing is left.
fn label_safe(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .take(MAX_SKIP_REASON_BYTES + 1)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if name.len() > MAX_SKIP_REASON_BYTES {
        name.truncate(MAX_SKIP_REASON_BYTES);
        counters::text_cut("skip_reason");
    }
    if name.is_empty() {
        name.push_str("unnamed");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{Attribute, Metric, NumberPoints, NumberValues};

    fn gauge(points: usize, set: u32) -> Metric {
        Metric {
            name: "g".into(),
            description: String::new(),
            unit: String::new(),
            data: MetricData::Gauge(NumberPoints {
                attribute_sets: vec![set; points],
                start_times: Vec::new(),
                times: vec![1; points],
                values: NumberValues::Ints(vec![1; points]),
            }),
        }
    }

    /// One attribute set holding `value_bytes` of value, used by `points`.
    fn shared_attribute(value_bytes: usize, points: usize) -> Output {
        Output {
            strings: vec!["k".into(), "x".repeat(value_bytes)],
            attributes: vec![Attribute {
                key: 0,
                value: AttributeValue::Str(1),
            }],
            attribute_set_ends: vec![1],
            metrics: vec![gauge(points, 0)],
            skipped: Vec::new(),
        }
    }

    #[test]
    fn an_attribute_shared_by_many_points_is_counted_per_point() {
        let limits = Limits::default();
        // 1 MiB × 10,000 points: 10 GiB once encoded, though the table holds 1 MiB.
        let out = shared_attribute(1 << 20, 10_000);
        match check(&out, &limits) {
            Err(Refusal::TooLarge(what)) => {
                assert!(what.contains("expands to"), "{what}");
                assert!(
                    what.contains(&limits.max_encoded_bytes.to_string()),
                    "{what}"
                );
            }
            other => panic!("want TooLarge, got {other:?}"),
        }
        // The same attribute on a few points is fine.
        assert_eq!(check(&shared_attribute(1 << 20, 10), &limits), Ok(()));
    }

    #[test]
    fn the_expanded_size_is_the_encoded_size() {
        use crate::export::otlp_proto::encode_request;
        use crate::export::{Resource, whole};
        let out = shared_attribute(1000, 50);
        let mut buf = Vec::new();
        encode_request(&Resource::default_host(), &out, &whole(&out), &mut buf);
        let expanded = expanded_size(&out) as usize;
        // The encoding adds only the request's own headers and resource.
        assert!(expanded <= buf.len(), "{expanded} > {}", buf.len());
        assert!(buf.len() - expanded < 300, "{expanded} vs {}", buf.len());
    }

    #[test]
    fn skip_reasons_must_name_strings() {
        let mut out = shared_attribute(1, 1);
        out.skipped = vec![SkipCount {
            reason: 9,
            count: 1,
            first_row: 0,
        }];
        assert!(matches!(
            check(&out, &Limits::default()),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn too_many_skip_reasons_in_one_output_are_refused() {
        let mut out = shared_attribute(1, 1);
        out.skipped = (0..=MAX_OUTPUT_SKIP_REASONS)
            .map(|_| SkipCount {
                reason: 0,
                count: 1,
                first_row: 0,
            })
            .collect();
        assert!(matches!(
            check(&out, &Limits::default()),
            Err(Refusal::TooLarge(_))
        ));
    }

    #[test]
    fn reasons_are_cut_spelled_for_labels_and_bounded_per_guest() {
        let reasons = SkipReasons::default();
        let mut names: Vec<String> = vec!["Null Value".into(), "y".repeat(1 << 20)];
        names.extend((0..40).map(|i| format!("reason-{i}")));
        let mut out = Output {
            strings: names.clone(),
            attributes: Vec::new(),
            attribute_set_ends: Vec::new(),
            metrics: Vec::new(),
            skipped: (0..names.len() as u32)
                .map(|i| SkipCount {
                    reason: i,
                    count: 2,
                    first_row: i,
                })
                .collect(),
        };
        reasons.normalize(&mut out);
        let seen: Vec<(&str, u64, u32)> = out
            .skipped
            .iter()
            .map(|s| {
                (
                    out.strings[s.reason as usize].as_str(),
                    s.count,
                    s.first_row,
                )
            })
            .collect();
        assert_eq!(seen.len(), MAX_SKIP_REASONS_PER_GUEST + 1);
        assert_eq!(seen[0], ("null-value", 2, 0));
        assert_eq!(seen[1].0.len(), MAX_SKIP_REASON_BYTES);
        let other = seen.last().unwrap();
        assert_eq!(other.0, OTHER_SKIP_REASON);
        assert_eq!(
            other.1,
            2 * (names.len() - MAX_SKIP_REASONS_PER_GUEST) as u64
        );
        assert_eq!(
            other.2, MAX_SKIP_REASONS_PER_GUEST as u32,
            "the first row of them"
        );
        let total: u64 = out.skipped.iter().map(|s| s.count).sum();
        assert_eq!(total, 2 * names.len() as u64, "no row lost in folding");
    }
}
