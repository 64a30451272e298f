//! Cutting an output into requests.
//!
//! One batch can hold millions of points, far more than a collector accepts
//! in one request (gRPC's default 4 MiB limit holds a few tens of thousands
//! of points), so requests are bounded by point count and a metric may be
//! spread over several requests.

use std::ops::Range;

use crate::wit::{Metric, Output};

/// Points `start..end` of metric `metric` of an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricSlice {
    pub metric: usize,
    pub start: usize,
    pub end: usize,
}

impl MetricSlice {
    /// The metric and its point range, clamped to the points it has; `None`
    /// when the metric does not exist.
    pub fn resolve<'a>(&self, output: &'a Output) -> Option<(&'a Metric, Range<usize>)> {
        let metric = output.metrics.get(self.metric)?;
        let end = self.end.min(metric.data.point_count());
        Some((metric, self.start.min(end)..end))
    }
}

/// Every point of every metric in order, in requests of at most `max_points`
/// points (0 counts as 1). Metrics without points are left out, so an output
/// without points gives no request at all.
pub fn split_points(output: &Output, max_points: usize) -> Vec<Vec<MetricSlice>> {
    let max_points = max_points.max(1);
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut room = max_points;
    for (metric, m) in output.metrics.iter().enumerate() {
        let count = m.data.point_count();
        let mut start = 0;
        while start < count {
            let end = start + room.min(count - start);
            current.push(MetricSlice { metric, start, end });
            room -= end - start;
            start = end;
            if room == 0 {
                requests.push(std::mem::take(&mut current));
                room = max_points;
            }
        }
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

/// The whole output as one request: one slice per metric that has points.
pub fn whole(output: &Output) -> Vec<MetricSlice> {
    output
        .metrics
        .iter()
        .enumerate()
        .map(|(metric, m)| MetricSlice {
            metric,
            start: 0,
            end: m.data.point_count(),
        })
        .filter(|s| s.end > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;

    fn slice(metric: usize, start: usize, end: usize) -> MetricSlice {
        MetricSlice { metric, start, end }
    }

    fn two_metrics(a: usize, b: usize) -> Output {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, a), fixture::gauge("b", 100, b)];
        out
    }

    #[test]
    fn cuts_across_metrics() {
        let out = two_metrics(4, 6);
        assert_eq!(
            split_points(&out, 3),
            vec![
                vec![slice(0, 0, 3)],
                vec![slice(0, 3, 4), slice(1, 0, 2)],
                vec![slice(1, 2, 5)],
                vec![slice(1, 5, 6)],
            ]
        );
    }

    #[test]
    fn exact_fit_leaves_no_empty_request() {
        let out = two_metrics(2, 4);
        assert_eq!(
            split_points(&out, 3),
            vec![vec![slice(0, 0, 2), slice(1, 0, 1)], vec![slice(1, 1, 4)]]
        );
        assert_eq!(split_points(&out, 6), vec![whole(&out)]);
        assert_eq!(split_points(&out, usize::MAX), vec![whole(&out)]);
    }

    #[test]
    fn zero_limit_counts_as_one() {
        let out = two_metrics(1, 2);
        assert_eq!(split_points(&out, 0).len(), 3);
    }

    #[test]
    fn empty_metrics_are_left_out() {
        let out = two_metrics(0, 2);
        assert_eq!(split_points(&out, 5), vec![vec![slice(1, 0, 2)]]);
        assert_eq!(whole(&out), vec![slice(1, 0, 2)]);
        let none = two_metrics(0, 0);
        assert!(split_points(&none, 5).is_empty());
        assert!(whole(&none).is_empty());
    }

    #[test]
    fn whole_covers_every_point() {
        let out = fixture::output();
        let slices = whole(&out);
        assert_eq!(
            slices,
            vec![
                slice(0, 0, 3),
                slice(1, 0, 3),
                slice(2, 0, 2),
                slice(3, 0, 1),
                slice(4, 0, 3)
            ]
        );
    }

    #[test]
    fn resolve_clamps() {
        let out = two_metrics(4, 6);
        assert_eq!(slice(0, 1, 3).resolve(&out).map(|(_, r)| r), Some(1..3));
        assert_eq!(slice(0, 2, 99).resolve(&out).map(|(_, r)| r), Some(2..4));
        assert_eq!(slice(0, 9, 99).resolve(&out).map(|(_, r)| r), Some(4..4));
        assert!(slice(2, 0, 1).resolve(&out).is_none());
    }
}
