//! Prometheus remote write 1.0: each request a snappy-compressed protobuf
//! `WriteRequest`, POSTed with the headers the specification names, retried
//! on 5xx and 429 (after `Retry-After`), never on other 4xx.
//!
//! An output becomes series ([`super::series`]); their samples are cut into
//! requests of at most `maxSamplesPerRequest`, in a fixed order, so the same
//! output always gives the same requests and a partly delivered output can
//! resume after the requests already accepted.
//!
//! Delta points go out as running totals ([`super::cumulative`]), computed
//! against the destination's totals and committed only once every request
//! of the output was accepted: a failed output gives the same requests when
//! it is sent again, so the accepted ones can still be skipped, and its
//! deltas are counted once.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::UNNAMED_OWNER;
use super::config::RemoteWriteConfig;
use super::cumulative::Accumulator;
use super::naming::FamilyType;
use super::series::{ConvertOptions, Converted, convert_with};
use crate::export::Resource;
use crate::export::deliver::{Delivered, ErrorKind, ExportError};
use crate::export::otlp_http::{build_client, parse_retry_after, send_error, user_headers};
use crate::export::retry::{self, RetryPolicy};
use crate::net::{self, Redirects, USER_AGENT};
use crate::wit::Output;

/// The protocol version header of remote write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";
/// How much of an error answer is kept in the message.
const ERROR_SNIPPET_BYTES: usize = 512;
/// How much of an error answer is read at all.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Refusal reasons quoted in one log line.
const MAX_REASONS_LOGGED: usize = 5;

/// Prometheus' words for a sample it will never take, whatever else is in
/// the request.
const SAMPLE_REJECTIONS: [&str; 5] = [
    "out of order sample",
    "out of bounds",
    "duplicate sample for timestamp",
    "too old sample",
    "sample timestamp out of order",
];

fn is_sample_rejection(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    SAMPLE_REJECTIONS.iter().any(|r| m.contains(r))
}

fn sample_count(r: &prompb::WriteRequest) -> usize {
    r.timeseries.iter().map(|t| t.samples.len()).sum()
}

/// Two requests with about half the samples each, in the same order.
fn split(r: prompb::WriteRequest) -> (prompb::WriteRequest, prompb::WriteRequest) {
    let half = sample_count(&r) / 2;
    let mut first = prompb::WriteRequest {
        timeseries: Vec::new(),
        metadata: r.metadata.clone(),
    };
    let mut second = prompb::WriteRequest {
        timeseries: Vec::new(),
        metadata: r.metadata,
    };
    let mut taken = 0;
    for mut ts in r.timeseries {
        if taken >= half {
            second.timeseries.push(ts);
            continue;
        }
        let room = half - taken;
        if ts.samples.len() <= room {
            taken += ts.samples.len();
            first.timeseries.push(ts);
        } else {
            let rest = ts.samples.split_off(room);
            taken += room;
            second.timeseries.push(prompb::TimeSeries {
                labels: ts.labels.clone(),
                samples: rest,
            });
            first.timeseries.push(ts);
        }
    }
    (first, second)
}

/// The messages of Prometheus' `prompb/remote.proto` and `types.proto`
/// that remote write 1.0 uses.
pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name; `__name__` among them.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
    }
}

pub struct RemoteWrite {
    name: String,
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    redirects: Redirects,
    timeout: std::time::Duration,
    retry: RetryPolicy,
    max_samples: usize,
    options: ConvertOptions,
    totals: Accumulator,
}

impl RemoteWrite {
    pub fn new(name: &str, config: &RemoteWriteConfig) -> Result<RemoteWrite, ErrorKind> {
        let mut headers = user_headers(&config.headers)?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static(REMOTE_WRITE_VERSION),
        );
        // Mimir's `X-Scope-OrgID` names the tenant the samples land in: no
        // configured header may follow a redirect to another server.
        let redirects = Redirects::post(!config.headers.is_empty());
        let client = build_client(name, &config.tls, config.timeout, redirects)?;
        Ok(RemoteWrite {
            name: name.to_string(),
            url: config.endpoint.clone(),
            client,
            headers,
            redirects,
            timeout: config.timeout,
            retry: RetryPolicy::from_config(&config.retry),
            max_samples: config.max_samples_per_request,
            options: config.convert_options(),
            totals: Accumulator::new(name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape_key(&self) -> String {
        format!("remote-write/{}/{:?}", self.max_samples, self.options)
    }

    /// Sends `output` as remote-write requests, leaving out the first
    /// `skip` (accepted before a later one failed).
    pub async fn send_from(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
    ) -> Result<Delivered, ExportError> {
        self.send_with(
            resource,
            output,
            skip,
            &mut crate::export::deliver::Unwatched,
        )
        .await
    }

    /// Like [`RemoteWrite::send_from`], telling `accepted` after each
    /// request Prometheus took.
    pub async fn send_with(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
        accepted: &mut dyn crate::export::deliver::Accepted,
    ) -> Result<Delivered, ExportError> {
        self.send_for(UNNAMED_OWNER, resource, output, skip, accepted)
            .await
    }

    /// Like [`RemoteWrite::send_with`], for the MetricsExporter `owner`
    /// (`namespace/name`), whose delta series count against its own share
    /// of the running totals.
    pub async fn send_for(
        &self,
        owner: &str,
        resource: &Resource,
        output: &Output,
        skip: usize,
        accepted: &mut dyn crate::export::deliver::Accepted,
    ) -> Result<Delivered, ExportError> {
        let (converted, staged) = {
            let mut view = self.totals.stage(owner);
            let converted = crate::export::deliver::cpu_bound(|| {
                convert_with(resource, output, &self.options, Some(&mut view))
            })
            .map_err(|e| ExportError::new(&self.name, ErrorKind::Config(e.to_string())))?;
            (converted, view.finish())
        };
        for (reason, count) in &converted.dropped {
            tracing::warn!(exporter = %self.name, reason, points = count, "delta points Prometheus cannot take were left out");
        }
        let delivered = self.send_converted(&converted, skip, accepted).await?;
        // Only now: a failed output is sent again from the same totals.
        self.totals.commit(staged);
        Ok(delivered)
    }

    async fn send_converted(
        &self,
        converted: &Converted,
        skip: usize,
        accepted: &mut dyn crate::export::deliver::Accepted,
    ) -> Result<Delivered, ExportError> {
        let requests = requests(converted, self.max_samples);
        let mut delivered = Delivered {
            skipped: skip.min(requests.len()),
            ..Delivered::default()
        };
        for (i, (samples, request)) in requests.into_iter().enumerate().skip(skip) {
            let mut size = 0usize;
            match self.send_salvaging(request, &mut size).await {
                Ok(rejected) => {
                    delivered.requests += 1;
                    delivered.points += samples;
                    delivered.rejected_points += rejected;
                    delivered.bytes += size as u64;
                    if let Err(kind) = accepted
                        .accepted(delivered.skipped + delivered.requests)
                        .await
                    {
                        return Err(ExportError {
                            exporter: self.name.clone(),
                            kind,
                            request: u32::try_from(i + 2).ok(),
                            delivered,
                        });
                    }
                }
                Err(kind) => {
                    return Err(ExportError {
                        exporter: self.name.clone(),
                        kind,
                        request: u32::try_from(i + 1).ok(),
                        delivered,
                    });
                }
            }
        }
        Ok(delivered)
    }

    /// One request with retries. When the server refuses it for a sample it
    /// will never take (out of order, out of bounds, a duplicate with another
    /// value), Prometheus drops the whole request: the request is split in
    /// halves and sent again until only the refused samples are left out,
    /// so the good samples beside a bad one still land. Returns how many
    /// samples were left out.
    async fn send_salvaging(
        &self,
        request: prompb::WriteRequest,
        bytes: &mut usize,
    ) -> Result<u64, ErrorKind> {
        let mut pending = vec![request];
        let mut rejected = 0u64;
        let mut reasons: Vec<String> = Vec::new();
        while let Some(request) = pending.pop() {
            let body = Bytes::from(
                snap::raw::Encoder::new()
                    .compress_vec(&prost::Message::encode_to_vec(&request))
                    .map_err(|e| ErrorKind::Io(format!("snappy: {e}")))?,
            );
            *bytes += body.len();
            let result = retry::retry(&self.retry, self.timeout, &self.name, |_| {
                self.post(body.clone())
            })
            .await;
            let error = match result {
                Ok(_) => continue,
                Err(failure) if failure.gave_up => {
                    return Err(ErrorKind::RetriesExhausted {
                        attempts: failure.attempts,
                        elapsed: failure.elapsed,
                        last: Box::new(failure.error),
                    });
                }
                Err(failure) => failure.error,
            };
            let ErrorKind::RemoteWrite {
                status: 400,
                message,
                ..
            } = &error
            else {
                return Err(error);
            };
            if !is_sample_rejection(message) {
                return Err(error);
            }
            let count = sample_count(&request);
            if count <= 1 {
                rejected += count as u64;
                if reasons.len() < MAX_REASONS_LOGGED {
                    reasons.push(message.clone());
                }
                continue;
            }
            let (a, b) = split(request);
            // Later half first on the stack: the earlier half goes first,
            // keeping samples of a series in time order.
            pending.push(b);
            pending.push(a);
        }
        if rejected > 0 {
            tracing::error!(
                exporter = %self.name, rejected_samples = rejected, reasons = ?reasons,
                "Prometheus refused samples for good (HTTP 400); they are left out, the rest was written"
            );
        }
        Ok(rejected)
    }

    async fn post(&self, body: Bytes) -> Result<u64, ErrorKind> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| send_error(&e, self.timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(0);
        }
        if status.is_redirection() {
            return Err(ErrorKind::Config(net::redirect::explain(
                self.redirects,
                &self.url,
                &response,
            )));
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = net::read_prefix(response, MAX_ERROR_BODY).await;
        let mut message = String::from_utf8_lossy(&body).trim().to_string();
        if message.len() > ERROR_SNIPPET_BYTES {
            let mut cut = ERROR_SNIPPET_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("").to_string();
        }
        Err(ErrorKind::RemoteWrite {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }
}

/// The requests of an output, each with its sample count: series in order,
/// a series' samples split across requests when it does not fit, the
/// metadata of every family a request touches.
pub fn requests(converted: &Converted, max_samples: usize) -> Vec<(usize, prompb::WriteRequest)> {
    let max = max_samples.max(1);
    let mut out = Vec::new();
    let mut current = prompb::WriteRequest::default();
    let mut count = 0;
    let mut families_in_current: Vec<usize> = Vec::new();
    let flush = |current: &mut prompb::WriteRequest,
                 count: &mut usize,
                 families: &mut Vec<usize>,
                 out: &mut Vec<(usize, prompb::WriteRequest)>| {
        if *count == 0 {
            return;
        }
        for &fi in families.iter() {
            let f = &converted.families[fi];
            current.metadata.push(prompb::MetricMetadata {
                r#type: match f.family_type {
                    FamilyType::Gauge => prompb::MetricType::Gauge,
                    FamilyType::Counter => prompb::MetricType::Counter,
                    FamilyType::Histogram => prompb::MetricType::Histogram,
                } as i32,
                metric_family_name: f.name.clone(),
                help: f.help.clone(),
                unit: f.unit.clone(),
            });
        }
        out.push((*count, std::mem::take(current)));
        *count = 0;
        families.clear();
    };
    for (fi, family) in converted.families.iter().enumerate() {
        for series in &family.series {
            let mut labels = Vec::with_capacity(series.labels.len() + 1);
            labels.push(prompb::Label {
                name: "__name__".into(),
                value: series.name.clone(),
            });
            labels.extend(series.labels.iter().map(|(k, v)| prompb::Label {
                name: k.clone(),
                value: v.clone(),
            }));
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let mut rest = &series.samples[..];
            while !rest.is_empty() {
                let room = max - count;
                let (take, left) = rest.split_at(room.min(rest.len()));
                current.timeseries.push(prompb::TimeSeries {
                    labels: labels.clone(),
                    samples: take
                        .iter()
                        .map(|s| prompb::Sample {
                            value: s.value,
                            timestamp: s.timestamp_ms,
                        })
                        .collect(),
                });
                if families_in_current.last() != Some(&fi) {
                    families_in_current.push(fi);
                }
                count += take.len();
                rest = left;
                if count == max {
                    flush(&mut current, &mut count, &mut families_in_current, &mut out);
                }
            }
        }
    }
    flush(&mut current, &mut count, &mut families_in_current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;
    use crate::export::prometheus::series::{ConvertOptions, convert};

    fn converted() -> Converted {
        let options = ConvertOptions {
            add_suffixes: true,
            scope_labels: false,
            job_label: true,
            promote_resource_attributes: Vec::new(),
            target_info: false,
        };
        convert(&Resource::default_host(), &fixture::output(), &options).unwrap()
    }

    #[test]
    fn requests_hold_at_most_the_limit_and_every_sample_once() {
        let c = converted();
        let total = c.sample_count();
        for max in [1, 2, 3, 7, 1000] {
            let reqs = requests(&c, max);
            assert!(reqs.iter().all(|(n, r)| *n <= max
                && *n == r.timeseries.iter().map(|t| t.samples.len()).sum::<usize>()));
            assert_eq!(
                reqs.iter().map(|(n, _)| n).sum::<usize>(),
                total,
                "max {max}"
            );
            // Labels sorted, `__name__` among them, metadata for what is in the request.
            for (_, r) in &reqs {
                for ts in &r.timeseries {
                    assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name));
                    let name = &ts
                        .labels
                        .iter()
                        .find(|l| l.name == "__name__")
                        .unwrap()
                        .value;
                    assert!(
                        r.metadata
                            .iter()
                            .any(|m| name.starts_with(&m.metric_family_name)),
                        "{name}"
                    );
                }
            }
        }
        assert_eq!(requests(&c, 1000).len(), 1);
    }

    #[test]
    fn splitting_keeps_every_sample_in_order() {
        let c = converted();
        let (_, request) = requests(&c, 1000).remove(0);
        let all: Vec<(String, i64)> = request
            .timeseries
            .iter()
            .flat_map(|t| {
                t.samples
                    .iter()
                    .map(move |s| (format!("{:?}", t.labels), s.timestamp))
            })
            .collect();
        let (a, b) = split(request.clone());
        assert_eq!(sample_count(&a), sample_count(&request) / 2);
        let joined: Vec<(String, i64)> = a
            .timeseries
            .iter()
            .chain(b.timeseries.iter())
            .flat_map(|t| {
                t.samples
                    .iter()
                    .map(move |s| (format!("{:?}", t.labels), s.timestamp))
            })
            .collect();
        assert_eq!(joined, all);
        assert!(is_sample_rejection("out of order sample"));
        assert!(is_sample_rejection("Out of bounds"));
        assert!(!is_sample_rejection("unauthorized"));
    }

    #[test]
    fn the_body_decodes_as_a_write_request() {
        let c = converted();
        let (_, request) = requests(&c, 1000).remove(0);
        let bytes = prost::Message::encode_to_vec(&request);
        let compressed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
        let back: prompb::WriteRequest = prost::Message::decode(
            &snap::raw::Decoder::new()
                .decompress_vec(&compressed)
                .unwrap()[..],
        )
        .unwrap();
        assert_eq!(back, request);
        let counter = back
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == "requests_total")
            })
            .unwrap();
        assert!(
            counter
                .labels
                .iter()
                .any(|l| l.name == "job" && l.value == "adx-mon-metrics-exporter")
        );
        assert_eq!(
            counter.samples[0].timestamp,
            (fixture::T / 1_000_000) as i64
        );
        assert_eq!(counter.samples[0].value, 10.0);
    }
}
