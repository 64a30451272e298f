//! Sending an output to one exporter: cut into requests, encode, compress,
//! send in order with retries, and count what arrived.
//!
//! Requests are bounded twice: by point count (the user's
//! `maxPointsPerRequest`) and by encoded size ([`MAX_REQUEST_BYTES`]), since
//! points vary in size with their attributes and a receiver refuses a
//! message over its limit outright. Requests are cut by their computed
//! protobuf size before anything is encoded ([`split_by_size`]), and
//! encoded one at a time, so no buffer grows past the limit whatever the
//! guest returned; one point that cannot fit is a permanent error. The size
//! bound applies to OTLP/JSON too (collectors cap HTTP bodies as well): a
//! JSON request over it, which its longer spelling can make, is halved
//! until it fits.
//!
//! A failure stops the output at the failing request. The caller sends the
//! whole output again later, so the requests accepted before it arrive twice
//! then; the error says how many there were.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::config::{ExporterConfig, ExporterKind, Protocol};
use super::otlp_grpc::OtlpGrpc;
use super::otlp_http::OtlpHttp;
use super::otlp_json::encode_json;
use super::otlp_proto::Encoder;
use super::prometheus::UNNAMED_OWNER;
use super::prometheus::{RemoteWrite, ScrapeStore};
use super::retry::{self, AttemptTimeout, RetryPolicy};
use super::split::split_by_size;
use super::stdout::StdoutSink;
use super::{MetricSlice, Resource};
use crate::error::{Classify, RetryClass};
use crate::wit::Output;

/// gRPC's default maximum message size, which collectors keep: a request
/// (uncompressed, as the receiver counts it) must fit in it.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Gzip level 1, the default of `compressionLevel`. At level 6, compression
/// alone caps the pipeline at 1.1M points/s with the zlib-rs backend (0.3M
/// with miniz_oxide); level 1 runs at 6.1M points/s
/// (shared/spec/measurements.md), and OTLP bodies still shrink about 6×, so
/// the bytes saved by level 6 do not pay for the time.
pub const GZIP_LEVEL: flate2::Compression = flate2::Compression::fast();

/// Runs CPU-bound work (encoding, compression) without holding up the
/// other tasks of a multi-threaded runtime: the worker hands its tasks to
/// another thread while this one computes.
pub(crate) fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What an output's requests achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Requests the receiver accepted.
    pub requests: usize,
    /// Points in those requests, including any the receiver then rejected.
    pub points: usize,
    /// Points the receiver reported as rejected (OTLP partial success).
    pub rejected_points: u64,
    /// Request bodies as handed to the transport: gzipped for OTLP/HTTP
    /// with compression on, uncompressed for gRPC (tonic compresses inside
    /// its framing) and stdout.
    pub bytes: u64,
    /// Requests left out because an earlier run had them accepted (at most
    /// the `skip` asked for; less when the output has fewer requests).
    pub skipped: usize,
}

impl Delivered {
    fn add(&mut self, points: usize, rejected: u64, bytes: usize) {
        self.requests += 1;
        self.points += points;
        self.rejected_points += rejected;
        self.bytes += bytes as u64;
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A header's secret could not be read; the message names the header.
    #[error("{0}")]
    Secret(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("one point encodes to {bytes} bytes, over the {MAX_REQUEST_BYTES}-byte request limit")]
    TooLarge { bytes: usize },
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("gRPC {code:?}: {message}")]
    Grpc {
        code: tonic::Code,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A remote-write answer other than 2xx: retried on 5xx and 429 only,
    /// as the remote-write specification says (unlike OTLP, a 500 is
    /// retried).
    #[error("HTTP {status}: {message}")]
    RemoteWrite {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach the receiver: {0}")]
    Connect(String),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot write: {0}")]
    Io(String),
    #[error(
        "gave up after {attempts} attempt{} in {}: {last}",
        if *attempts == 1 { "" } else { "s" },
        humantime::format_duration(whole_millis(*elapsed))
    )]
    RetriesExhausted {
        attempts: u32,
        elapsed: Duration,
        last: Box<ErrorKind>,
    },
    /// The job was asked to stop now; the requests before it were accepted.
    #[error("stopped before the next request")]
    Stopped,
    /// What the receiver accepted could not be recorded; nothing more is
    /// sent until it is.
    #[error("cannot record what was delivered: {0}")]
    Commit(String),
}

/// Sub-millisecond digits are noise in a message.
fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<AttemptTimeout> for ErrorKind {
    fn from(t: AttemptTimeout) -> Self {
        ErrorKind::Timeout(t.0)
    }
}

/// HTTP statuses worth another try, as the OTLP specification lists them.
pub fn http_status_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// gRPC codes worth another try, as the OTLP specification and the
/// Collector's OTLP exporter list them. RESOURCE_EXHAUSTED is retried only
/// when the server says when ([`ErrorKind::retry_class`]).
pub fn grpc_code_retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn hinted(retry_after: Option<Duration>) -> RetryClass {
    retry_after.map_or(RetryClass::Retryable, RetryClass::Throttled)
}

impl Classify for ErrorKind {
    fn retry_class(&self) -> RetryClass {
        match self {
            ErrorKind::Config(_)
            | ErrorKind::Secret(_)
            | ErrorKind::Tls(_)
            | ErrorKind::TooLarge { .. } => RetryClass::Permanent,
            ErrorKind::Http {
                status,
                retry_after,
                ..
            } => {
                if http_status_retryable(*status) {
                    hinted(*retry_after)
                } else {
                    RetryClass::Permanent
                }
            }
            ErrorKind::RemoteWrite {
                status,
                retry_after,
                ..
            } => {
                if *status == 429 || (500..=599).contains(status) {
                    hinted(*retry_after)
                } else {
                    RetryClass::Permanent
                }
            }
            ErrorKind::Grpc {
                code, retry_after, ..
            } => match (code, retry_after) {
                (tonic::Code::ResourceExhausted, Some(hint)) => RetryClass::Throttled(*hint),
                (code, hint) if grpc_code_retryable(*code) => hinted(*hint),
                _ => RetryClass::Permanent,
            },
            // A closed stdout is no fault of the data: sending the window
            // again later is the right answer if anything is.
            ErrorKind::Connect(_) | ErrorKind::Timeout(_) | ErrorKind::Io(_) => {
                RetryClass::Retryable
            }
            ErrorKind::RetriesExhausted { last, .. } => last.retry_class(),
            ErrorKind::Stopped | ErrorKind::Commit(_) => RetryClass::Retryable,
        }
    }
}

impl ErrorKind {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ErrorKind::Config(_) => "config",
            ErrorKind::Secret(_) => "secret",
            ErrorKind::Tls(_) => "tls",
            ErrorKind::TooLarge { .. } => "too_large",
            ErrorKind::Http { status, .. } | ErrorKind::RemoteWrite { status, .. } => {
                match status {
                    400..=499 => "http_4xx",
                    500..=599 => "http_5xx",
                    _ => "http_other",
                }
            }
            ErrorKind::Grpc { code, .. } => grpc_reason(*code),
            ErrorKind::Connect(_) => "connect",
            ErrorKind::Timeout(_) => "timeout",
            ErrorKind::Io(_) => "io",
            ErrorKind::Stopped => "stopped",
            ErrorKind::Commit(_) => "commit",
            ErrorKind::RetriesExhausted { last, .. } => last.reason(),
        }
    }
}

fn grpc_reason(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "grpc_ok",
        Code::Cancelled => "grpc_cancelled",
        Code::Unknown => "grpc_unknown",
        Code::InvalidArgument => "grpc_invalid_argument",
        Code::DeadlineExceeded => "grpc_deadline_exceeded",
        Code::NotFound => "grpc_not_found",
        Code::AlreadyExists => "grpc_already_exists",
        Code::PermissionDenied => "grpc_permission_denied",
        Code::ResourceExhausted => "grpc_resource_exhausted",
        Code::FailedPrecondition => "grpc_failed_precondition",
        Code::Aborted => "grpc_aborted",
        Code::OutOfRange => "grpc_out_of_range",
        Code::Unimplemented => "grpc_unimplemented",
        Code::Internal => "grpc_internal",
        Code::Unavailable => "grpc_unavailable",
        Code::DataLoss => "grpc_data_loss",
        Code::Unauthenticated => "grpc_unauthenticated",
    }
}

/// An export that failed, with what the same output had delivered before.
#[derive(Debug)]
pub struct ExportError {
    pub exporter: String,
    pub kind: ErrorKind,
    /// The 1-based number of the request of the output that failed; `None`
    /// when the exporter could not be built.
    pub request: Option<u32>,
    /// Requests of the same output accepted before the failure.
    pub delivered: Delivered,
}

impl ExportError {
    pub fn new(exporter: &str, kind: ErrorKind) -> ExportError {
        ExportError {
            exporter: exporter.to_string(),
            kind,
            request: None,
            delivered: Delivered::default(),
        }
    }

    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
}

impl Classify for ExportError {
    fn retry_class(&self) -> RetryClass {
        self.kind.retry_class()
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exporter {:?}: ", self.exporter)?;
        if let Some(n) = self.request {
            write!(f, "request {n}: ")?;
        }
        write!(f, "{}", self.kind)?;
        let d = &self.delivered;
        if d.requests > 0 {
            write!(
                f,
                " ({} earlier request{} with {} points of this output had been accepted; \
                 sending the output again repeats them)",
                d.requests,
                if d.requests == 1 { "" } else { "s" },
                d.points
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

/// One configured destination, ready to send.
pub enum Sink {
    Stdout(StdoutSink),
    OtlpHttp(OtlpHttp),
    OtlpGrpc(OtlpGrpc),
    RemoteWrite(RemoteWrite),
    Scrape(Arc<ScrapeStore>),
}

impl Sink {
    /// Checks the config, reads header secrets and sets up clients and TLS.
    /// Nothing connects yet.
    pub fn build(config: &ExporterConfig) -> Result<Sink, ExportError> {
        let name = &config.name;
        config
            .validate()
            .map_err(|e| ExportError::new(name, ErrorKind::Config(e)))?;
        let sink = match &config.kind {
            ExporterKind::Stdout(s) => Sink::Stdout(StdoutSink::new(name, s)),
            ExporterKind::Otlp(o) if o.protocol == Protocol::Grpc => {
                Sink::OtlpGrpc(OtlpGrpc::new(name, o).map_err(|k| ExportError::new(name, k))?)
            }
            ExporterKind::Otlp(o) => {
                Sink::OtlpHttp(OtlpHttp::new(name, o).map_err(|k| ExportError::new(name, k))?)
            }
            ExporterKind::PrometheusRemoteWrite(r) => {
                Sink::RemoteWrite(RemoteWrite::new(name, r).map_err(|k| ExportError::new(name, k))?)
            }
            ExporterKind::PrometheusScrape(s) => Sink::Scrape(Arc::new(ScrapeStore::new(name, s))),
        };
        Ok(sink)
    }

    pub fn name(&self) -> &str {
        match self {
            Sink::Stdout(s) => s.name(),
            Sink::OtlpHttp(h) => &h.settings().name,
            Sink::OtlpGrpc(g) => &g.settings().name,
            Sink::RemoteWrite(r) => r.name(),
            Sink::Scrape(s) => s.name(),
        }
    }

    /// What decides how an output is cut into requests: when it changes, a
    /// partly delivered output is not resumed by request count.
    pub fn shape_key(&self) -> String {
        match self {
            Sink::Stdout(s) => format!("stdout/{}/{SPLIT_VERSION}", s.max_points()),
            Sink::OtlpHttp(h) => settings_shape("otlp-http", h.settings()),
            Sink::OtlpGrpc(g) => settings_shape("otlp-grpc", g.settings()),
            Sink::RemoteWrite(r) => r.shape_key(),
            Sink::Scrape(_) => "scrape".to_string(),
        }
    }

    /// The store a scrape exporter serves from.
    pub fn scrape_store(&self) -> Option<&Arc<ScrapeStore>> {
        match self {
            Sink::Scrape(s) => Some(s),
            _ => None,
        }
    }

    /// Sends every point of `output` under `resource`, request by request in
    /// order, each with retries. Stops at the first request that fails for
    /// good; the error tells what had been accepted before it.
    pub async fn send(
        &self,
        resource: &Resource,
        output: &Output,
    ) -> Result<Delivered, ExportError> {
        self.send_from(resource, output, 0).await
    }

    /// Like [`Sink::send`], leaving out the first `skip` requests: those a
    /// receiver already accepted before a later request of the same output
    /// failed. The split is deterministic, so the same output gives the same
    /// requests. `Delivered` counts only the requests sent now.
    pub async fn send_from(
        &self,
        resource: &Resource,
        output: &Output,
        skip: usize,
    ) -> Result<Delivered, ExportError> {
        self.send_for(UNNAMED_OWNER, resource, output, skip, &mut Unwatched)
            .await
    }

    /// Like [`Sink::send_from`], for the MetricsExporter `owner`
    /// (`namespace/name`: a scrape destination's families and a Prometheus
    /// destination's running totals are kept per owner), telling `accepted`
    /// after each request the receiver accepted (how many of this output so
    /// far, skipped ones included); an error from it stops the output before
    /// the next request.
    pub async fn send_for(
        &self,
        owner: &str,
        resource: &Resource,
        output: &Output,
        skip: usize,
        accepted: &mut dyn Accepted,
    ) -> Result<Delivered, ExportError> {
        match self {
            Sink::Stdout(s) => s.send_with(resource, output, skip, accepted).await,
            Sink::OtlpHttp(h) => {
                send_requests(h.settings(), resource, output, skip, accepted, |body| {
                    h.post(body)
                })
                .await
            }
            Sink::OtlpGrpc(g) => {
                send_requests(g.settings(), resource, output, skip, accepted, |body| {
                    g.export(body)
                })
                .await
            }
            Sink::RemoteWrite(r) => r.send_for(owner, resource, output, skip, accepted).await,
            // One update, all or nothing: nothing to resume.
            Sink::Scrape(s) if skip == 0 => s.update_for(owner, resource, output),
            Sink::Scrape(_) => Ok(Delivered {
                skipped: 1,
                ..Delivered::default()
            }),
        }
    }
}

/// Told after each request a receiver accepted, before the next one is
/// sent: the job records it there, so a crash repeats at most the request
/// in flight, and stops there when asked to.
pub trait Accepted: Send {
    /// `requests`: requests of the output accepted so far, skipped ones
    /// included.
    fn accepted(
        &mut self,
        requests: usize,
    ) -> futures::future::BoxFuture<'_, Result<(), ErrorKind>>;
}

/// Nobody watches: every request goes out.
pub struct Unwatched;

impl Accepted for Unwatched {
    fn accepted(&mut self, _: usize) -> futures::future::BoxFuture<'_, Result<(), ErrorKind>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Changes whenever the way requests are cut changes, so a partly
/// delivered output saved by an older version is not resumed by a request
/// count that meant other requests.
const SPLIT_VERSION: &str = "by-size";

fn settings_shape(kind: &str, s: &Settings) -> String {
    format!(
        "{kind}/{:?}/{}/{}/{SPLIT_VERSION}",
        s.encoding, s.max_points, s.max_bytes
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

/// What the request loop needs to know of a network exporter.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub name: String,
    pub encoding: Encoding,
    /// The gzip level of bodies gzipped here; `None` for none (gRPC
    /// compresses inside its own framing).
    pub gzip_body: Option<flate2::Compression>,
    pub max_points: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// Encodes, compresses and sends each request of `output` with `attempt`,
/// retrying as `settings` say. `attempt` returns the rejected point count.
pub(crate) async fn send_requests<F, Fut>(
    settings: &Settings,
    resource: &Resource,
    output: &Output,
    skip: usize,
    accepted: &mut dyn Accepted,
    attempt: F,
) -> Result<Delivered, ExportError>
where
    F: Fn(Bytes) -> Fut,
    Fut: Future<Output = Result<u64, ErrorKind>>,
{
    let mut delivered = Delivered::default();
    let fail = |kind, delivered: Delivered| ExportError {
        exporter: settings.name.clone(),
        kind,
        request: u32::try_from(delivered.requests + 1).ok(),
        delivered,
    };
    let mut requests = Requests::new(resource, output, settings).map_err(|k| fail(k, delivered))?;
    for _ in 0..skip {
        if requests.next().map_err(|k| fail(k, delivered))?.is_none() {
            break;
        }
        delivered.skipped += 1;
    }
    loop {
        let next = cpu_bound(|| {
            let Some((points, encoded)) = requests.next()? else {
                return Ok(None);
            };
            let body = match settings.gzip_body {
                Some(level) => {
                    gzip(encoded, level).map_err(|e| ErrorKind::Io(format!("gzip: {e}")))?
                }
                None => Bytes::copy_from_slice(encoded),
            };
            Ok(Some((points, body)))
        });
        let Some((points, body)) = next.map_err(|k| fail(k, delivered))? else {
            break;
        };
        let size = body.len();
        let result = retry::retry(&settings.retry, settings.timeout, &settings.name, |_| {
            attempt(body.clone())
        })
        .await;
        match result {
            Ok(success) => {
                delivered.add(points, success.value, size);
                if let Err(kind) = accepted
                    .accepted(delivered.skipped + delivered.requests)
                    .await
                {
                    return Err(fail(kind, delivered));
                }
            }
            Err(failure) => {
                let kind = if failure.gave_up {
                    ErrorKind::RetriesExhausted {
                        attempts: failure.attempts,
                        elapsed: failure.elapsed,
                        last: Box::new(failure.error),
                    }
                } else {
                    failure.error
                };
                return Err(fail(kind, delivered));
            }
        }
    }
    tracing::debug!(
        exporter = %settings.name,
        requests = delivered.requests,
        points = delivered.points,
        bytes = delivered.bytes,
        "output delivered"
    );
    Ok(delivered)
}

fn gzip(data: &[u8], level: flate2::Compression) -> std::io::Result<Bytes> {
    // OTLP shrinks about 6× at level 1: a quarter is room enough to rarely grow.
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), level);
    encoder.write_all(data)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// The requests of one output, each within the point and byte limits, in
/// point order.
pub(crate) struct Requests<'a> {
    resource: &'a Resource,
    output: &'a Output,
    encoding: Encoding,
    max_bytes: usize,
    /// One encoder for all requests, so each attribute set is encoded once.
    encoder: Encoder<'a>,
    pending: VecDeque<Vec<MetricSlice>>,
    buf: Vec<u8>,
}

impl<'a> Requests<'a> {
    pub fn new(
        resource: &'a Resource,
        output: &'a Output,
        settings: &Settings,
    ) -> Result<Requests<'a>, ErrorKind> {
        let pending = split_by_size(output, resource, settings.max_points, settings.max_bytes)
            .map_err(|e| ErrorKind::TooLarge { bytes: e.bytes })?;
        Ok(Requests {
            resource,
            output,
            encoding: settings.encoding,
            max_bytes: settings.max_bytes,
            encoder: Encoder::new(resource, output),
            pending: pending.into(),
            buf: Vec::new(),
        })
    }

    /// The next request's point count and encoded body.
    pub fn next(&mut self) -> Result<Option<(usize, &[u8])>, ErrorKind> {
        while let Some(slices) = self.pending.pop_front() {
            self.buf.clear();
            match self.encoding {
                Encoding::Protobuf => self.encoder.encode(&slices, &mut self.buf),
                Encoding::Json => {
                    self.buf = encode_json(self.resource, self.output, &slices).into_bytes();
                }
            }
            let points = point_count(&slices);
            if self.buf.len() <= self.max_bytes {
                return Ok(Some((points, &self.buf)));
            }
            let Some((first, second)) = halve(&slices) else {
                return Err(ErrorKind::TooLarge {
                    bytes: self.buf.len(),
                });
            };
            tracing::debug!(
                points,
                bytes = self.buf.len(),
                limit = self.max_bytes,
                "request over the size limit; halving it"
            );
            self.pending.push_front(second);
            self.pending.push_front(first);
        }
        Ok(None)
    }
}

fn point_count(slices: &[MetricSlice]) -> usize {
    slices.iter().map(|s| s.end.saturating_sub(s.start)).sum()
}

/// Two requests with half the points each (the first gets the smaller half),
/// or `None` when there is at most one point.
fn halve(slices: &[MetricSlice]) -> Option<(Vec<MetricSlice>, Vec<MetricSlice>)> {
    let total = point_count(slices);
    if total <= 1 {
        return None;
    }
    let mut room = total / 2;
    let mut first = Vec::new();
    let mut second = Vec::new();
    for s in slices {
        let len = s.end.saturating_sub(s.start);
        if room == 0 {
            second.push(*s);
        } else if len <= room {
            first.push(*s);
            room -= len;
        } else {
            let cut = s.start + room;
            first.push(MetricSlice { end: cut, ..*s });
            second.push(MetricSlice { start: cut, ..*s });
            room = 0;
        }
    }
    Some((first, second))
}

/// Error text with its causes, since clients' top-level messages ("error
/// sending request") rarely say what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    use std::sync::Mutex;

    fn settings(max_points: usize, max_bytes: usize) -> Settings {
        Settings {
            name: "t".into(),
            encoding: Encoding::Protobuf,
            gzip_body: None,
            max_points,
            max_bytes,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::disabled(),
        }
    }

    fn slice(metric: usize, start: usize, end: usize) -> MetricSlice {
        MetricSlice { metric, start, end }
    }

    /// Gauge values of every request, in order.
    fn values(bodies: &[Vec<u8>]) -> Vec<Vec<i64>> {
        bodies
            .iter()
            .map(|b| {
                let req = ExportMetricsServiceRequest::decode(b.as_slice()).expect("decodes");
                crate::export::testing::gauge_values(&req)
            })
            .collect()
    }

    #[test]
    fn halving_splits_points_evenly_across_slices() {
        assert_eq!(halve(&[slice(0, 0, 1)]), None);
        assert_eq!(
            halve(&[slice(0, 0, 3), slice(1, 0, 2)]),
            Some((vec![slice(0, 0, 2)], vec![slice(0, 2, 3), slice(1, 0, 2)]))
        );
        assert_eq!(
            halve(&[slice(0, 5, 7), slice(1, 0, 2)]),
            Some((vec![slice(0, 5, 7)], vec![slice(1, 0, 2)]))
        );
    }

    #[test]
    fn requests_are_cut_by_size_in_order() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 10)];
        let resource = Resource::default_host();
        let whole = {
            let mut r = Requests::new(&resource, &out, &settings(100, usize::MAX)).expect("splits");
            let (points, body) = r.next().expect("ok").expect("one request");
            assert_eq!(points, 10);
            let len = body.len();
            assert!(r.next().expect("ok").is_none());
            len
        };
        let limit = whole / 2 - 1;
        let mut r = Requests::new(&resource, &out, &settings(100, limit)).expect("splits");
        let mut bodies = Vec::new();
        let mut counts = Vec::new();
        while let Some((points, body)) = r.next().expect("fits") {
            assert!(body.len() <= limit);
            counts.push(points);
            bodies.push(body.to_vec());
        }
        assert!(counts.len() >= 3, "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 10);
        let flat: Vec<i64> = values(&bodies).into_iter().flatten().collect();
        assert_eq!(
            flat,
            (0..10).collect::<Vec<_>>(),
            "every point once, in order"
        );
    }

    #[test]
    fn a_single_point_over_the_limit_is_permanent() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 3)];
        let resource = Resource::default_host();
        let e = Requests::new(&resource, &out, &settings(100, 20))
            .err()
            .expect("too large");
        assert!(matches!(e, ErrorKind::TooLarge { .. }), "{e}");
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        assert_eq!(e.reason(), "too_large");
    }

    #[test]
    fn json_requests_are_bounded_too() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 25)];
        let resource = Resource::default_host();
        let mut s = settings(10, usize::MAX);
        s.encoding = Encoding::Json;
        let mut r = Requests::new(&resource, &out, &s).expect("splits");
        let mut counts = Vec::new();
        while let Some((points, body)) = r.next().expect("ok") {
            let v: serde_json::Value = serde_json::from_slice(body).expect("json");
            assert!(v["resourceMetrics"].is_array());
            counts.push(points);
        }
        assert_eq!(counts, vec![10, 10, 5]);
    }

    #[tokio::test]
    async fn failure_reports_what_was_accepted_before() {
        let mut out = fixture::output();
        out.metrics = vec![fixture::gauge("a", 0, 25)];
        let resource = Resource::default_host();
        let calls = Mutex::new(0);
        let result = send_requests(
            &settings(10, MAX_REQUEST_BYTES),
            &resource,
            &out,
            0,
            &mut Unwatched,
            |_| {
                let n = {
                    let mut c = calls.lock().expect("lock");
                    *c += 1;
                    *c
                };
                async move {
                    if n == 3 {
                        Err(ErrorKind::Http {
                            status: 400,
                            message: "bad".into(),
                            retry_after: None,
                        })
                    } else {
                        Ok(1)
                    }
                }
            },
        )
        .await;
        let e = result.expect_err("third request fails");
        assert_eq!(e.request, Some(3));
        assert_eq!(
            (
                e.delivered.requests,
                e.delivered.points,
                e.delivered.rejected_points
            ),
            (2, 20, 2)
        );
        let text = e.to_string();
        assert!(
            text.starts_with("exporter \"t\": request 3: HTTP 400: bad"),
            "{text}"
        );
        assert!(text.contains("2 earlier requests with 20 points"), "{text}");
        assert!(text.contains("repeats them"), "{text}");
    }

    #[test]
    fn classes_and_reasons() {
        let http = |status, retry_after| ErrorKind::Http {
            status,
            message: String::new(),
            retry_after,
        };
        let grpc = |code, retry_after| ErrorKind::Grpc {
            code,
            message: String::new(),
            retry_after,
        };
        let s = Duration::from_secs;
        for status in [429, 502, 503, 504] {
            assert_eq!(
                http(status, None).retry_class(),
                RetryClass::Retryable,
                "{status}"
            );
        }
        assert_eq!(
            http(429, Some(s(3))).retry_class(),
            RetryClass::Throttled(s(3))
        );
        for status in [400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(
                http(status, Some(s(3))).retry_class(),
                RetryClass::Permanent,
                "{status}"
            );
        }
        assert_eq!(http(413, None).reason(), "http_4xx");
        assert_eq!(http(503, None).reason(), "http_5xx");

        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
            Code::Cancelled,
        ] {
            assert_eq!(
                grpc(code, None).retry_class(),
                RetryClass::Retryable,
                "{code:?}"
            );
        }
        assert_eq!(
            grpc(Code::ResourceExhausted, Some(s(2))).retry_class(),
            RetryClass::Throttled(s(2))
        );
        assert_eq!(
            grpc(Code::ResourceExhausted, None).retry_class(),
            RetryClass::Permanent
        );
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unimplemented,
        ] {
            assert_eq!(
                grpc(code, None).retry_class(),
                RetryClass::Permanent,
                "{code:?}"
            );
        }
        assert_eq!(grpc(Code::Unavailable, None).reason(), "grpc_unavailable");
        assert_eq!(
            grpc(Code::InvalidArgument, None).reason(),
            "grpc_invalid_argument"
        );
        assert_eq!(ErrorKind::Timeout(s(1)).reason(), "timeout");
        assert_eq!(ErrorKind::Connect(String::new()).reason(), "connect");
        let exhausted = ErrorKind::RetriesExhausted {
            attempts: 4,
            elapsed: s(90),
            last: Box::new(http(503, Some(s(7)))),
        };
        assert_eq!(exhausted.reason(), "http_5xx");
        assert_eq!(exhausted.retry_class(), RetryClass::Throttled(s(7)));
        assert_eq!(
            exhausted.to_string(),
            "gave up after 4 attempts in 1m 30s: HTTP 503: "
        );
    }

    #[test]
    fn gzip_round_trips() {
        let data = b"abc".repeat(1000);
        let body = gzip(&data, GZIP_LEVEL).expect("gzip");
        assert!(body.len() < data.len());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
            .expect("gunzip");
        assert_eq!(plain, data);
    }
}
