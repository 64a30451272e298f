//! Which rows the next query reads. Times are ticks (100 ns) since the Unix
//! epoch, the unit of Kusto's `datetime`.
//!
//! Two kinds of window:
//! - by ingestion time, `(start, end]`: from the stored progress to
//!   `now - settleDelay`, at most `maxWindow` at once;
//! - for a MetricsExporter's own `body`, `[start, end)`: aligned to the
//!   interval from the epoch, one interval each, oldest first, with
//!   `_endTime = end - 1 tick` so `between (_startTime .. _endTime)` counts a
//!   boundary row in one window only.
//!
//! Either way the next window starts where the last one ended: no gap, no
//! overlap.

use std::time::Duration;

use super::kql::TICKS_PER_SECOND;

/// One tick: what `_endTime` is short of the window's end.
pub const TICK: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn span(&self) -> i64 {
        self.end - self.start
    }

    /// The first half, or `None` when it would be shorter than `min`.
    pub fn halve(&self, min: i64) -> Option<Window> {
        let half = self.span() / 2;
        (half >= min.max(1)).then_some(Window {
            start: self.start,
            end: self.start + half,
        })
    }

    /// At most `span` long, keeping the start.
    pub fn limit(&self, span: i64) -> Window {
        Window {
            start: self.start,
            end: self.end.min(self.start.saturating_add(span.max(1))),
        }
    }
}

pub fn ticks(d: Duration) -> i64 {
    i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX)
}

pub fn now_ticks() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    ticks(now)
}

/// The next ingestion-time window after `progress` (ticks), or `None` when
/// nothing has settled yet. Without progress, the first window reaches one
/// `first_span` back from the settled edge.
pub fn next_ingestion_window(
    progress: Option<i64>,
    now: i64,
    settle: i64,
    first_span: i64,
    max_window: i64,
) -> Option<Window> {
    let settled = now - settle;
    let start = progress.unwrap_or(settled - first_span);
    (start < settled).then(|| Window {
        start,
        end: settled.min(start.saturating_add(max_window)),
    })
}

/// The next interval-aligned window after `progress` whose end has settled.
/// Without progress, the last whole interval before the settled edge.
pub fn next_aligned_window(
    progress: Option<i64>,
    now: i64,
    settle: i64,
    interval: i64,
) -> Option<Window> {
    let interval = interval.max(1);
    let settled = now - settle;
    let window = match progress {
        Some(start) => Window {
            start,
            // A window cut short by halving ends off the grid; the next one
            // ends on it again.
            end: start.div_euclid(interval) * interval + interval,
        },
        None => {
            let end = settled.div_euclid(interval) * interval;
            Window {
                start: end - interval,
                end,
            }
        }
    };
    (window.end <= settled).then_some(window)
}

/// Seconds for messages.
pub fn seconds(ticks: i64) -> f64 {
    ticks as f64 / TICKS_PER_SECOND as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = TICKS_PER_SECOND;
    const MIN: i64 = 60 * S;

    #[test]
    fn ingestion_windows_follow_progress_up_to_the_settled_edge() {
        let now = 1_000_000 * S;
        let settle = 2 * MIN;
        let first = next_ingestion_window(None, now, settle, 5 * MIN, 60 * MIN).unwrap();
        assert_eq!(first.end, now - settle);
        assert_eq!(first.span(), 5 * MIN);
        // Caught up: nothing until time moves on.
        assert_eq!(
            next_ingestion_window(Some(first.end), now, settle, 5 * MIN, 60 * MIN),
            None
        );
        let later =
            next_ingestion_window(Some(first.end), now + S, settle, 5 * MIN, 60 * MIN).unwrap();
        assert_eq!((later.start, later.end), (first.end, first.end + S));
        // A long way behind: one maxWindow at a time, oldest first.
        let behind =
            next_ingestion_window(Some(now - 300 * MIN), now, settle, 5 * MIN, 60 * MIN).unwrap();
        assert_eq!(behind.span(), 60 * MIN);
        assert_eq!(behind.start, now - 300 * MIN);
    }

    #[test]
    fn aligned_windows_have_no_gap_and_no_overlap() {
        let interval = 5 * MIN;
        let settle = 2 * MIN;
        let now = 1_750_845_600 * S + 13 * MIN + 7 * S; // 10:13:07
        let first = next_aligned_window(None, now, settle, interval).unwrap();
        // Settled edge 10:11:07 -> the last whole interval is 10:05..10:10.
        assert_eq!(first.end, 1_750_845_600 * S + 10 * MIN);
        assert_eq!(first.span(), interval);
        assert_eq!(
            next_aligned_window(Some(first.end), now, settle, interval),
            None
        );
        // Fallen behind by an hour: every window in turn.
        let mut progress = first.end - 60 * MIN;
        let mut seen = 0;
        while let Some(w) = next_aligned_window(Some(progress), now, settle, interval) {
            assert_eq!(w.start, progress);
            assert_eq!(w.end % interval, 0);
            progress = w.end;
            seen += 1;
        }
        assert_eq!((seen, progress), (12, first.end));
        // After a halved window, back on the grid.
        let half = first.halve(S).unwrap();
        let next = next_aligned_window(Some(half.end), now + 60 * MIN, settle, interval).unwrap();
        assert_eq!((next.start, next.end), (half.end, first.end));
    }

    #[test]
    fn halving_stops_at_the_floor() {
        let w = Window {
            start: 0,
            end: 4 * S,
        };
        let h = w.halve(S).unwrap();
        assert_eq!(h.end, 2 * S);
        assert_eq!(h.halve(S).unwrap().end, S);
        assert_eq!(h.halve(S).unwrap().halve(S), None);
        assert_eq!(w.limit(S).end, S);
        assert_eq!(w.limit(100 * S), w);
    }
}
