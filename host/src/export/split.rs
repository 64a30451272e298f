//! Cutting an output into requests.
//!
//! One batch can hold millions of points, far more than a collector accepts
//! in one request (gRPC's default 4 MiB limit holds a few tens of thousands
//! of points), so requests are bounded by point count and by encoded size,
//! and a metric may be spread over several requests. Sizes come from
//! [`Sizes`], computed before anything is encoded: no request is ever built
//! larger than its limit, whatever the guest returned.

use std::ops::Range;

use super::Resource;
use super::otlp_proto::Sizes;
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

/// One point that cannot fit in a request of the size limit on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointTooLarge {
    /// What a request holding only this point would take.
    pub bytes: usize,
}

/// Every point of every metric in order, in requests of at most
/// `max_points` points (0 counts as 1) whose protobuf encoding stays within
/// `max_bytes` (an upper bound is summed from [`Sizes`]; the encoding itself
/// is never larger). Metrics without points are left out.
pub fn split_by_size(
    output: &Output,
    resource: &Resource,
    max_points: usize,
    max_bytes: usize,
) -> Result<Vec<Vec<MetricSlice>>, PointTooLarge> {
    let sizes = Sizes::new(output);
    let max_points = max_points.max(1);
    let base = Sizes::request_overhead(resource);
    let mut requests = Vec::new();
    let mut current: Vec<MetricSlice> = Vec::new();
    let mut bytes = base;
    let mut points = 0usize;
    for (metric, m) in output.metrics.iter().enumerate() {
        let count = m.data.point_count();
        let overhead = Sizes::metric_overhead(m);
        let mut start = 0;
        while start < count {
            // A slice of this metric opens in the current request.
            let mut end = start;
            let mut slice_bytes = overhead;
            while end < count && points < max_points {
                let point = sizes.point(&m.data, end);
                if bytes + slice_bytes + point > max_bytes {
                    break;
                }
                slice_bytes += point;
                end += 1;
                points += 1;
            }
            if end > start {
                current.push(MetricSlice { metric, start, end });
                bytes += slice_bytes;
                start = end;
            }
            if start < count {
                if current.is_empty() {
                    // Not even one point fits in an empty request.
                    return Err(PointTooLarge {
                        bytes: base + overhead + sizes.point(&m.data, start),
                    });
                }
                requests.push(std::mem::take(&mut current));
                bytes = base;
                points = 0;
            }
        }
    }
    if !current.is_empty() {
        requests.push(current);
    }
    Ok(requests)
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
    fn size_limit_cuts_before_encoding_and_bounds_every_request() {
        use crate::export::otlp_proto::encode_request;
        let out = two_metrics(40, 60);
        let resource = Resource::default_host();
        let mut whole_bytes = Vec::new();
        encode_request(&resource, &out, &whole(&out), &mut whole_bytes);
        let limit = whole_bytes.len() / 5;
        let requests = split_by_size(&out, &resource, usize::MAX, limit).unwrap();
        assert!(requests.len() >= 5, "{} requests", requests.len());
        let mut points = 0;
        for slices in &requests {
            let mut buf = Vec::new();
            encode_request(&resource, &out, slices, &mut buf);
            assert!(buf.len() <= limit, "{} > {limit}", buf.len());
            points += slices.iter().map(|s| s.end - s.start).sum::<usize>();
        }
        assert_eq!(points, 100, "every point once");
        // Point counts still bound requests too.
        assert_eq!(
            split_by_size(&out, &resource, 30, usize::MAX).unwrap(),
            split_points(&out, 30)
        );
    }

    #[test]
    fn a_point_too_large_for_any_request_is_refused() {
        let out = two_metrics(2, 2);
        let resource = Resource::default_host();
        let err = split_by_size(&out, &resource, 10, 20).unwrap_err();
        assert!(err.bytes > 20);
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
