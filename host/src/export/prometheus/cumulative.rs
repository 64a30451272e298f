//! Delta sums (and delta histograms) made cumulative for Prometheus, which
//! has no delta type: per series (sample name and label set, the resource's
//! labels included), a running total of the deltas applied so far and the
//! start of the first one. A delta point goes out as a point whose value is
//! the total so far. Monotonic delta sums become counters; non-monotonic
//! ones gauges of the running total (see [`super::series`]).
//!
//! - **Order**: an output's points are applied in time order per series
//!   (one per millisecond, as for every series). A point at or before the
//!   last one applied to its series is late: it is left out and counted,
//!   never added again. A window sent again after it was delivered whole
//!   is therefore not counted twice.
//! - **Nothing twice**: the totals are computed against a view of the state
//!   ([`Accumulator::stage`]) and only [`Accumulator::commit`]ted once the
//!   receiver took the whole output (remote write: every request; scrape:
//!   the update). A failed delivery is discarded, so the same window sent
//!   again gives the same samples, and the requests a receiver had already
//!   accepted can be skipped on the retry as for every other series.
//! - **Bound**: at most [`MAX_SERIES`] series per destination, and at most
//!   [`MAX_SERIES_PER_METRICS_EXPORTER`] for one MetricsExporter when
//!   several share it. The points of a new series beyond that are left out
//!   and counted (`kusto_metrics_prometheus_delta_points_dropped_total`,
//!   reason `series-limit`), with a warning at most every
//!   [`WARN_EVERY`]; the series held keep counting. Nothing held is evicted
//!   to make room.
//! - **Idle series**: a series without a point for [`IDLE_AFTER`] is
//!   forgotten; when it comes back it starts again from its new deltas,
//!   with a new start time: a counter reset.
//! - **Restart**: the totals are in memory only. After a restart every
//!   counter starts again from 0 with a new start time. Prometheus'
//!   `rate()` and `increase()` take a value lower than the previous one as
//!   a reset and carry on; where the first total after the reset is not
//!   lower than the last one before it, the increase across the reset is
//!   undercounted (remote write 1.0 has no start time to tell).
//! - **Histograms**: bucket counts, sum and count accumulate series by
//!   series; when a series' bucket bounds change, its totals start again
//!   (a reset, counted as `bounds-changed`), since buckets of different
//!   bounds cannot be added up.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::series::Sample;
use crate::telemetry::metrics::ExporterLabels;

/// Series one destination keeps running totals for.
pub const MAX_SERIES: usize = 100_000;
/// Series one MetricsExporter may hold in a shared destination, so one
/// team's new series cannot use up the room of the others.
pub const MAX_SERIES_PER_METRICS_EXPORTER: usize = 50_000;
/// A series without a point for this long is forgotten (a reset when it
/// comes back). A day, so that series of hourly or daily windows keep
/// counting.
pub const IDLE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often idle series are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// At most one warning per reason per destination this often.
pub const WARN_EVERY: Duration = Duration::from_secs(600);

/// Reasons points are left out.
pub const LATE: &str = "late";
pub const SERIES_LIMIT: &str = "series-limit";
/// Reasons a series starts again.
pub const IDLE: &str = "idle";
pub const BOUNDS_CHANGED: &str = "bounds-changed";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub exporter: String,
    pub reason: String,
}

/// Process-wide, registered by [`crate::telemetry::metrics::Metrics`].
#[derive(Default)]
pub struct DeltaCounters {
    /// Delta points sent as running totals (counted once delivered).
    pub converted: Family<ExporterLabels, Counter>,
    /// Delta points left out, by reason.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Series whose totals started again, by reason.
    pub resets: Family<ReasonLabels, Counter>,
    /// Series held.
    pub series: Family<ExporterLabels, Gauge>,
}

pub static COUNTERS: LazyLock<DeltaCounters> = LazyLock::new(DeltaCounters::default);

/// A series: sample name and labels (sorted, without `__name__`).
pub type SeriesKey = (String, Vec<(String, String)>);

#[derive(Clone, Debug, PartialEq)]
struct Running {
    total: f64,
    /// Milliseconds since the epoch.
    start_ms: i64,
    last_ms: i64,
    /// Histogram bucket series: the bounds of its histogram, as text.
    bounds: Option<String>,
    owner: String,
    touched: Instant,
}

#[derive(Debug)]
struct State {
    series: HashMap<SeriesKey, Running>,
    per_owner: HashMap<String, usize>,
    last_prune: Instant,
    last_warned: HashMap<&'static str, Instant>,
}

/// Limits, named constants unless a test sets its own.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_series: usize,
    max_per_owner: usize,
    idle_after: Duration,
}

/// The running totals of one destination.
pub struct Accumulator {
    exporter: String,
    limits: Limits,
    state: Mutex<State>,
}

/// One series' change, applied on commit.
#[derive(Debug, Clone)]
struct Change {
    /// The total the samples were computed from; `None`: a new series.
    base: Option<f64>,
    total: f64,
    /// The sum of the deltas applied, for when the series moved since.
    added: f64,
    start_ms: i64,
    last_ms: i64,
    bounds: Option<String>,
    /// The held series was started again (bounds changed).
    reset: bool,
}

/// Totals computed for one output, not yet applied: [`Accumulator::commit`]
/// when the receiver took it, dropped otherwise.
#[derive(Debug)]
#[must_use = "a staged output changes nothing until it is committed"]
pub struct Staged {
    owner: String,
    changes: HashMap<SeriesKey, Change>,
    new_series: usize,
    converted: u64,
    dropped: Vec<(&'static str, u64)>,
    resets: Vec<(&'static str, u64)>,
}

impl Staged {
    /// Delta points turned into running totals.
    pub fn converted(&self) -> u64 {
        self.converted
    }

    /// Delta points left out, by reason.
    pub fn dropped(&self, reason: &str) -> u64 {
        count(&self.dropped, reason)
    }

    pub fn resets(&self, reason: &str) -> u64 {
        count(&self.resets, reason)
    }
}

fn count(counts: &[(&'static str, u64)], reason: &str) -> u64 {
    counts
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

fn bump(counts: &mut Vec<(&'static str, u64)>, reason: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    match counts.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, c)) => *c += n,
        None => counts.push((reason, n)),
    }
}

/// The state as one output sees it while it is converted: what is
/// committed, and what this output changed so far.
pub struct View<'a> {
    state: MutexGuard<'a, State>,
    limits: Limits,
    staged: Staged,
}

impl View<'_> {
    /// Turns the delta `samples` of one series (in time order, one per
    /// millisecond) into running totals, leaving out late points and the
    /// points of a series that does not fit. `start_ms`: the start of the
    /// earliest point's interval. `bounds`: for a histogram's series, its
    /// bucket bounds; a change starts the series again.
    pub fn accumulate(
        &mut self,
        key: SeriesKey,
        samples: &mut Vec<Sample>,
        start_ms: i64,
        bounds: Option<&str>,
    ) {
        if samples.is_empty() {
            return;
        }
        let held = match self.staged.changes.get(&key) {
            Some(c) => Some((c.total, c.start_ms, c.last_ms, c.bounds.clone())),
            None => self
                .state
                .series
                .get(&key)
                .map(|r| (r.total, r.start_ms, r.last_ms, r.bounds.clone())),
        };
        let mut reset = false;
        let held = match held {
            Some((_, _, _, ref b)) if bounds.is_some() && b.as_deref() != bounds => {
                reset = true;
                bump(&mut self.staged.resets, BOUNDS_CHANGED, 1);
                None
            }
            other => other,
        };
        let (base, start_ms, mut last_ms) = match held {
            Some((total, start, last, _)) => (Some(total), start, last),
            None => {
                let is_new = !reset && !self.state.series.contains_key(&key);
                if is_new && !self.has_room() {
                    bump(&mut self.staged.dropped, SERIES_LIMIT, samples.len() as u64);
                    samples.clear();
                    return;
                }
                if is_new {
                    self.staged.new_series += 1;
                }
                (None, start_ms, i64::MIN)
            }
        };
        let mut total = base.unwrap_or(0.0);
        let mut added = 0.0;
        let mut late = 0u64;
        samples.retain_mut(|s| {
            if s.timestamp_ms <= last_ms {
                late += 1;
                return false;
            }
            total += s.value;
            added += s.value;
            last_ms = s.timestamp_ms;
            s.value = total;
            true
        });
        bump(&mut self.staged.dropped, LATE, late);
        self.staged.converted += samples.len() as u64;
        if samples.is_empty() && !reset {
            return;
        }
        let previous_added = self.staged.changes.get(&key).map_or(0.0, |c| c.added);
        let base_of_output = self.staged.changes.get(&key).map_or(base, |c| c.base);
        self.staged.changes.insert(
            key,
            Change {
                base: base_of_output,
                total,
                added: previous_added + added,
                start_ms,
                last_ms,
                bounds: bounds.map(str::to_string),
                reset,
            },
        );
    }

    /// The start of a series' running total, once [`View::accumulate`]d.
    pub fn start_of(&self, key: &SeriesKey) -> Option<i64> {
        match self.staged.changes.get(key) {
            Some(c) => Some(c.start_ms),
            None => self.state.series.get(key).map(|r| r.start_ms),
        }
    }

    fn has_room(&self) -> bool {
        let held = self.state.series.len() + self.staged.new_series;
        let own = self
            .state
            .per_owner
            .get(&self.staged.owner)
            .copied()
            .unwrap_or(0)
            + self.staged.new_series;
        held < self.limits.max_series && own < self.limits.max_per_owner
    }

    /// What was computed, for [`Accumulator::commit`]; the state is free
    /// again.
    pub fn finish(self) -> Staged {
        self.staged
    }
}

impl Accumulator {
    pub fn new(exporter: &str) -> Accumulator {
        Self::with_limits(
            exporter,
            Limits {
                max_series: MAX_SERIES,
                max_per_owner: MAX_SERIES_PER_METRICS_EXPORTER,
                idle_after: IDLE_AFTER,
            },
        )
    }

    fn with_limits(exporter: &str, limits: Limits) -> Accumulator {
        Accumulator {
            exporter: exporter.to_string(),
            limits,
            state: Mutex::new(State {
                series: HashMap::new(),
                per_owner: HashMap::new(),
                last_prune: Instant::now(),
                last_warned: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A view for converting one output of MetricsExporter `owner`. The
    /// state is locked until [`View::finish`]: conversion is CPU work with
    /// nothing to wait for.
    pub fn stage(&self, owner: &str) -> View<'_> {
        let mut state = self.lock();
        let now = Instant::now();
        if now.duration_since(state.last_prune) >= PRUNE_EVERY.min(self.limits.idle_after) {
            self.prune(&mut state, now);
        }
        View {
            state,
            limits: self.limits,
            staged: Staged {
                owner: owner.to_string(),
                changes: HashMap::new(),
                new_series: 0,
                converted: 0,
                dropped: Vec::new(),
                resets: Vec::new(),
            },
        }
    }

    fn prune(&self, state: &mut State, now: Instant) {
        state.last_prune = now;
        let idle_after = self.limits.idle_after;
        let mut gone: Vec<String> = Vec::new();
        state.series.retain(|_, r| {
            let keep = now.duration_since(r.touched) < idle_after;
            if !keep {
                gone.push(r.owner.clone());
            }
            keep
        });
        for owner in &gone {
            release(&mut state.per_owner, owner);
        }
        if !gone.is_empty() {
            tracing::debug!(exporter = %self.exporter, series = gone.len(), "idle delta series forgotten; they start again when they come back");
            COUNTERS
                .resets
                .get_or_create(&ReasonLabels {
                    exporter: self.exporter.clone(),
                    reason: IDLE.to_string(),
                })
                .inc_by(gone.len() as u64);
        }
    }

    /// Applies what the receiver took, and counts it.
    pub fn commit(&self, staged: Staged) {
        let now = Instant::now();
        let mut state = self.lock();
        for (key, change) in staged.changes {
            match state.series.get_mut(&key) {
                Some(r) if !change.reset => {
                    // Another output moved the series since: add the deltas
                    // rather than overwrite.
                    r.total = match change.base {
                        Some(base) if base.to_bits() == r.total.to_bits() => change.total,
                        _ => r.total + change.added,
                    };
                    r.last_ms = r.last_ms.max(change.last_ms);
                    r.touched = now;
                }
                Some(r) => {
                    r.total = change.total;
                    r.start_ms = change.start_ms;
                    r.last_ms = change.last_ms;
                    r.bounds = change.bounds;
                    r.touched = now;
                }
                None => {
                    *state.per_owner.entry(staged.owner.clone()).or_default() += 1;
                    state.series.insert(
                        key,
                        Running {
                            total: change.total,
                            start_ms: change.start_ms,
                            last_ms: change.last_ms,
                            bounds: change.bounds,
                            owner: staged.owner.clone(),
                            touched: now,
                        },
                    );
                }
            }
        }
        let held = state.series.len();
        let mut warn: Vec<(&'static str, u64)> = Vec::new();
        for &(reason, n) in &staged.dropped {
            let due = state
                .last_warned
                .get(reason)
                .is_none_or(|t| now.duration_since(*t) >= WARN_EVERY);
            if due {
                state.last_warned.insert(reason, now);
                warn.push((reason, n));
            }
        }
        drop(state);
        for (reason, points) in warn {
            match reason {
                SERIES_LIMIT => tracing::warn!(
                    exporter = %self.exporter, metrics_exporter = %staged.owner, points,
                    max_series = self.limits.max_series,
                    max_series_per_metrics_exporter = self.limits.max_per_owner,
                    "delta points of new series left out: the destination holds its most running totals (warned at most every 10 minutes)"
                ),
                _ => tracing::warn!(
                    exporter = %self.exporter, metrics_exporter = %staged.owner, points,
                    "delta points at or before the last one applied to their series left out, not added again (warned at most every 10 minutes)"
                ),
            }
        }
        let labels = ExporterLabels {
            exporter: self.exporter.clone(),
        };
        COUNTERS.series.get_or_create(&labels).set(held as i64);
        if staged.converted > 0 {
            COUNTERS
                .converted
                .get_or_create(&labels)
                .inc_by(staged.converted);
        }
        for (family, counts) in [
            (&COUNTERS.dropped, &staged.dropped),
            (&COUNTERS.resets, &staged.resets),
        ] {
            for &(reason, n) in counts {
                family
                    .get_or_create(&ReasonLabels {
                        exporter: self.exporter.clone(),
                        reason: reason.to_string(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Series held.
    pub fn series_count(&self) -> usize {
        self.lock().series.len()
    }
}

fn release(per_owner: &mut HashMap<String, usize>, owner: &str) {
    if let Some(n) = per_owner.get_mut(owner) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_owner.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, host: &str) -> SeriesKey {
        (
            name.to_string(),
            vec![("host".to_string(), host.to_string())],
        )
    }

    fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(timestamp_ms, value)| Sample {
                value,
                timestamp_ms,
            })
            .collect()
    }

    fn pairs(s: &[Sample]) -> Vec<(i64, f64)> {
        s.iter().map(|s| (s.timestamp_ms, s.value)).collect()
    }

    /// Stages one series' deltas and returns the samples sent and the
    /// staged change.
    fn run(
        acc: &Accumulator,
        owner: &str,
        k: &SeriesKey,
        points: &[(i64, f64)],
    ) -> (Vec<(i64, f64)>, Staged) {
        let mut view = acc.stage(owner);
        let mut s = samples(points);
        view.accumulate(
            k.clone(),
            &mut s,
            points.first().map_or(0, |p| p.0 - 10),
            None,
        );
        (pairs(&s), view.finish())
    }

    fn limits(max_series: usize, max_per_owner: usize, idle_after: Duration) -> Limits {
        Limits {
            max_series,
            max_per_owner,
            idle_after,
        }
    }

    #[test]
    fn deltas_become_running_totals_across_outputs_once_committed() {
        let acc = Accumulator::new("prom");
        let k = key("x_total", "a");
        let (sent, staged) = run(&acc, "ns/a", &k, &[(100, 3.0), (200, 1.5)]);
        assert_eq!(sent, vec![(100, 3.0), (200, 4.5)]);
        assert_eq!(staged.converted(), 2);
        acc.commit(staged);
        let (sent, staged) = run(&acc, "ns/a", &k, &[(300, 4.0)]);
        assert_eq!(sent, vec![(300, 8.5)]);
        acc.commit(staged);
        assert_eq!(acc.series_count(), 1);
        let view = acc.stage("ns/a");
        assert_eq!(view.start_of(&k), Some(90), "the first delta's start");
    }

    #[test]
    fn a_discarded_output_changes_nothing_and_gives_the_same_samples_again() {
        let acc = Accumulator::new("prom");
        let k = key("x_total", "a");
        let (_, staged) = run(&acc, "ns/a", &k, &[(100, 3.0)]);
        acc.commit(staged);
        // Delivery failed: dropped, not committed.
        let (first, staged) = run(&acc, "ns/a", &k, &[(200, 4.0), (300, 1.0)]);
        drop(staged);
        let (again, staged) = run(&acc, "ns/a", &k, &[(200, 4.0), (300, 1.0)]);
        assert_eq!(first, again);
        assert_eq!(again, vec![(200, 7.0), (300, 8.0)]);
        acc.commit(staged);
        // Delivered whole, then sent again: every point is late, none is
        // added twice.
        let (replay, staged) = run(&acc, "ns/a", &k, &[(200, 4.0), (300, 1.0)]);
        assert!(replay.is_empty(), "{replay:?}");
        assert_eq!(staged.dropped(LATE), 2);
        acc.commit(staged);
        let (sent, _) = run(&acc, "ns/a", &k, &[(400, 2.0)]);
        assert_eq!(sent, vec![(400, 10.0)]);
    }

    #[test]
    fn late_points_are_left_out_and_counted_the_rest_go_on() {
        let acc = Accumulator::new("prom");
        let k = key("x_total", "a");
        let (_, staged) = run(&acc, "ns/a", &k, &[(100, 1.0), (200, 1.0)]);
        acc.commit(staged);
        // 150 and 200 are not after 200; 250 is.
        let (sent, staged) = run(&acc, "ns/a", &k, &[(150, 5.0), (200, 5.0), (250, 1.0)]);
        assert_eq!(sent, vec![(250, 3.0)]);
        assert_eq!(staged.dropped(LATE), 2);
        assert_eq!(staged.converted(), 1);
    }

    #[test]
    fn new_series_past_the_bound_are_left_out_while_held_ones_keep_counting() {
        let acc = Accumulator::with_limits("prom", limits(2, 10, IDLE_AFTER));
        let mut view = acc.stage("ns/a");
        for host in ["a", "b", "c"] {
            let mut s = samples(&[(100, 1.0)]);
            view.accumulate(key("x_total", host), &mut s, 0, None);
            assert_eq!(s.is_empty(), host == "c", "{host}");
        }
        let staged = view.finish();
        assert_eq!(staged.dropped(SERIES_LIMIT), 1);
        acc.commit(staged);
        assert_eq!(acc.series_count(), 2);
        let (sent, staged) = run(&acc, "ns/a", &key("x_total", "a"), &[(200, 1.0)]);
        assert_eq!(
            sent,
            vec![(200, 2.0)],
            "held series are never evicted for room"
        );
        acc.commit(staged);
        let (sent, staged) = run(&acc, "ns/a", &key("x_total", "c"), &[(200, 1.0)]);
        assert!(sent.is_empty());
        assert_eq!(staged.dropped(SERIES_LIMIT), 1);
    }

    #[test]
    fn one_metrics_exporter_cannot_take_the_room_of_the_others() {
        let acc = Accumulator::with_limits("prom", limits(10, 1, IDLE_AFTER));
        let (_, staged) = run(&acc, "ns/a", &key("x_total", "a"), &[(100, 1.0)]);
        acc.commit(staged);
        let (sent, staged) = run(&acc, "ns/a", &key("x_total", "b"), &[(100, 1.0)]);
        assert!(sent.is_empty());
        assert_eq!(staged.dropped(SERIES_LIMIT), 1);
        let (sent, staged) = run(&acc, "ns/b", &key("y_total", "a"), &[(100, 1.0)]);
        assert_eq!(sent, vec![(100, 1.0)]);
        acc.commit(staged);
        assert_eq!(acc.series_count(), 2);
    }

    #[test]
    fn an_idle_series_is_forgotten_and_starts_again_with_a_new_start() {
        let acc = Accumulator::with_limits("prom", limits(10, 10, Duration::from_millis(50)));
        let k = key("x_total", "a");
        let (_, staged) = run(&acc, "ns/a", &k, &[(100, 5.0)]);
        acc.commit(staged);
        std::thread::sleep(Duration::from_millis(80));
        let mut view = acc.stage("ns/a");
        assert_eq!(view.start_of(&k), None, "forgotten");
        let mut s = samples(&[(1000, 2.0)]);
        view.accumulate(k.clone(), &mut s, 990, None);
        assert_eq!(pairs(&s), vec![(1000, 2.0)], "from 0 again");
        assert_eq!(view.start_of(&k), Some(990), "a new start");
        acc.commit(view.finish());
        assert_eq!(acc.series_count(), 1);
    }

    #[test]
    fn changed_bucket_bounds_start_the_series_again() {
        let acc = Accumulator::new("prom");
        let k = key("h_bucket", "a");
        let mut view = acc.stage("ns/a");
        let mut s = samples(&[(100, 2.0)]);
        view.accumulate(k.clone(), &mut s, 90, Some("0.1,1"));
        acc.commit(view.finish());
        let mut view = acc.stage("ns/a");
        let mut s = samples(&[(200, 3.0)]);
        view.accumulate(k.clone(), &mut s, 190, Some("0.1,1"));
        assert_eq!(pairs(&s), vec![(200, 5.0)]);
        acc.commit(view.finish());
        let mut view = acc.stage("ns/a");
        let mut s = samples(&[(300, 1.0)]);
        view.accumulate(k.clone(), &mut s, 290, Some("0.5,1"));
        assert_eq!(pairs(&s), vec![(300, 1.0)]);
        assert_eq!(view.start_of(&k), Some(290));
        let staged = view.finish();
        assert_eq!(staged.resets(BOUNDS_CHANGED), 1);
        acc.commit(staged);
        let mut view = acc.stage("ns/a");
        let mut s = samples(&[(400, 1.0)]);
        view.accumulate(k.clone(), &mut s, 390, Some("0.5,1"));
        assert_eq!(pairs(&s), vec![(400, 2.0)]);
        assert_eq!(view.start_of(&k), Some(290));
        drop(view);
        assert_eq!(acc.series_count(), 1);
    }
}
