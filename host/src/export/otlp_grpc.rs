//! OTLP/gRPC: the `MetricsService/Export` unary call over tonic.
//!
//! Requests are already protobuf (from [`otlp_proto`](super::otlp_proto)),
//! so they go out through a codec that writes the bytes as they are instead
//! of decoding them into prost structs only for tonic to encode them again.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::config::{Compression, OtlpConfig};
use super::deliver::{Encoding, ErrorKind, MAX_REQUEST_BYTES, Settings, error_chain};
use super::otlp_http::read_pem;
use super::retry::RetryPolicy;
use crate::net::USER_AGENT;

/// A gRPC channel whose request messages are gzipped here, at `level`,
/// with the message's compressed flag and `grpc-encoding: gzip` set, as
/// tonic would do at its fixed level. `None` sends them as they are.
#[derive(Clone)]
struct GzipFrames {
    inner: Channel,
    level: Option<flate2::Compression>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for GzipFrames {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::codegen::StdError;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The channel polled ready is the one that sends (tower's contract);
        // a fresh clone stays behind for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let level = self.level;
        Box::pin(async move {
            let Some(level) = level else {
                return inner.call(request).await.map_err(Into::into);
            };
            let (mut parts, body) = request.into_parts();
            let frames = http_body_util::BodyExt::collect(body).await?.to_bytes();
            let compressed = super::deliver::cpu_bound(|| gzip_frames(&frames, level))?;
            parts
                .headers
                .insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
            let body = tonic::body::Body::new(http_body_util::Full::new(compressed));
            inner
                .call(http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}

/// Length-prefixed gRPC messages (flag, 4-byte big-endian length, payload)
/// with each uncompressed payload gzipped and flagged as compressed.
fn gzip_frames(frames: &[u8], level: flate2::Compression) -> std::io::Result<Bytes> {
    use std::io::Write;
    let mut out = Vec::with_capacity(frames.len() / 4);
    let mut rest = frames;
    while rest.len() >= 5 {
        let (flag, len) = (
            rest[0],
            u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]),
        );
        let end = 5 + len as usize;
        let Some(payload) = rest.get(5..end) else {
            return Err(std::io::Error::other(
                "a gRPC message shorter than its length",
            ));
        };
        if flag == 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
            gz.write_all(payload)?;
            let compressed = gz.finish()?;
            let len = u32::try_from(compressed.len()).map_err(std::io::Error::other)?;
            out.push(1);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&compressed);
        } else {
            out.extend_from_slice(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    Ok(Bytes::from(out))
}

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Responses are tiny, but a receiver may pad a partial-success message;
/// tonic's default 4 MiB would turn that into an error after the data was
/// taken.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct OtlpGrpc {
    settings: Settings,
    /// Boxed: tonic's endpoint is most of a kilobyte.
    endpoint: Box<Endpoint>,
    /// Made on first use: tonic spawns the channel's worker task, which
    /// needs a running runtime, and `build` may run before there is one.
    channel: OnceLock<Channel>,
    metadata: MetadataMap,
    /// The gzip level of request messages, when compressed.
    gzip: Option<flate2::Compression>,
}

impl OtlpGrpc {
    pub fn new(name: &str, config: &OtlpConfig) -> Result<OtlpGrpc, ErrorKind> {
        let mut metadata = MetadataMap::new();
        for (key, value) in &config.headers {
            let value = value.resolve(key).map_err(ErrorKind::Secret)?;
            let name = AsciiMetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes()).map_err(
                |_| ErrorKind::Config(format!("{key:?} is not a valid gRPC metadata key")),
            )?;
            let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| {
                ErrorKind::Secret(format!(
                    "header {key:?}: the value holds characters gRPC metadata cannot carry"
                ))
            })?;
            metadata.insert(name, value);
        }

        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| {
                ErrorKind::Config(format!(
                    "endpoint {:?}: {}",
                    config.endpoint,
                    error_chain(&e)
                ))
            })?
            .user_agent(USER_AGENT)
            .map_err(|e| ErrorKind::Config(error_chain(&e)))?
            .connect_timeout(config.timeout);
        if config.endpoint.starts_with("https://") {
            let tls = &config.tls;
            let mut tls_config = ClientTlsConfig::new().with_webpki_roots();
            if let Some(path) = &tls.ca_file {
                tls_config =
                    tls_config.ca_certificate(Certificate::from_pem(read_pem(path, "caFile")?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                tls_config = tls_config.identity(Identity::from_pem(
                    read_pem(cert, "certFile")?,
                    read_pem(key, "keyFile")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|e| ErrorKind::Tls(error_chain(&e)))?;
        }

        Ok(OtlpGrpc {
            settings: Settings {
                name: name.to_string(),
                encoding: Encoding::Protobuf,
                gzip_body: None,
                max_points: config.max_points_per_request,
                max_bytes: MAX_REQUEST_BYTES,
                timeout: config.timeout,
                retry: RetryPolicy::from_config(&config.retry),
            },
            endpoint: Box::new(endpoint),
            channel: OnceLock::new(),
            metadata,
            gzip: (config.compression == Compression::Gzip)
                .then(|| flate2::Compression::new(config.compression_level)),
        })
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One attempt: send the encoded request, and on success the points the
    /// receiver says it rejected.
    pub(crate) async fn export(&self, body: Bytes) -> Result<u64, ErrorKind> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        // tonic compresses at gzip level 6, which it does not let us set
        // (0.14): at that level compression alone caps a core near 1.1M
        // points/s. The messages are compressed by `GzipFrames` instead, at
        // the configured level.
        let mut grpc = tonic::client::Grpc::new(GzipFrames {
            inner: channel,
            level: self.gzip,
        })
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip);
        grpc.ready()
            .await
            .map_err(|e| ErrorKind::Connect(error_chain(&*e)))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        // Tells the server when the client stops waiting.
        request.set_timeout(self.settings.timeout);
        let response = grpc
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), PreEncoded)
            .await
            .map_err(status_error)?;
        let response = response.into_inner();
        let Some(partial) = response.partial_success else {
            return Ok(0);
        };
        let rejected = u64::try_from(partial.rejected_data_points).unwrap_or(0);
        if rejected > 0 || !partial.error_message.is_empty() {
            tracing::warn!(
                exporter = %self.settings.name,
                rejected,
                message = %partial.error_message,
                "receiver rejected points"
            );
        }
        Ok(rejected)
    }
}

fn status_error(status: tonic::Status) -> ErrorKind {
    if is_transport_error(&status) {
        return ErrorKind::Connect(error_chain(&status));
    }
    ErrorKind::Grpc {
        code: status.code(),
        message: status.message().to_string(),
        retry_after: google_rpc::retry_delay(status.details()),
    }
}

/// Whether the call never reached a server: the status was made on this
/// side from a connection failure rather than sent by a receiver.
fn is_transport_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Sends pre-encoded request bytes; decodes the response with prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportMetricsServiceResponse>, tonic::Status> {
        let response = <ExportMetricsServiceResponse as prost::Message>::decode(
            src.copy_to_bytes(src.remaining()),
        )
        .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))?;
        Ok(Some(response))
    }
}

/// The few `google.rpc` messages a receiver's error carries: the status
/// and the `RetryInfo` detail that says when to come back.
pub(crate) mod google_rpc {
    use std::time::Duration;

    const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<ProtoDuration>,
    }

    /// google.protobuf.Duration
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtoDuration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// The `RetryInfo` delay in an encoded `google.rpc.Status` (the
    /// `grpc-status-details-bin` trailer), if there is one.
    pub fn retry_delay(status_details: &[u8]) -> Option<Duration> {
        if status_details.is_empty() {
            return None;
        }
        let status = <Status as prost::Message>::decode(status_details).ok()?;
        let detail = status.details.iter().find(|d| d.type_url == RETRY_INFO)?;
        let info = <RetryInfo as prost::Message>::decode(detail.value.as_slice()).ok()?;
        let delay = info.retry_delay?;
        let seconds = u64::try_from(delay.seconds).ok()?;
        let nanos = u32::try_from(delay.nanos).ok()?;
        Some(Duration::from_secs(seconds) + Duration::from_nanos(u64::from(nanos)))
    }

    #[cfg(test)]
    pub fn status_with_retry_delay(code: i32, message: &str, delay: Duration) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        let status = Status {
            code,
            message: message.into(),
            details: vec![
                Any {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![1, 2, 3],
                },
                Any {
                    type_url: RETRY_INFO.into(),
                    value: prost::Message::encode_to_vec(&info),
                },
            ],
        };
        prost::Message::encode_to_vec(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_info_is_found_among_details() {
        let details =
            google_rpc::status_with_retry_delay(8, "slow down", Duration::from_millis(1500));
        assert_eq!(
            google_rpc::retry_delay(&details),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(google_rpc::retry_delay(&[]), None);
        assert_eq!(google_rpc::retry_delay(&[0xff, 0xff]), None);
    }

    #[test]
    fn statuses_from_a_server_keep_their_code() {
        let details = google_rpc::status_with_retry_delay(8, "slow down", Duration::from_secs(2));
        let status = tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            Bytes::from(details),
        );
        match status_error(status) {
            ErrorKind::Grpc {
                code,
                message,
                retry_after,
            } => {
                assert_eq!(code, tonic::Code::ResourceExhausted);
                assert_eq!(message, "slow down");
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Against a real tonic server on a loopback port.
#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::error::{Classify, RetryClass};
    use crate::export::config::{HeaderValue as ConfigHeader, Protocol};
    use crate::export::deliver::Sink;
    use crate::export::{Resource, fixture};
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
    };
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use std::time::Instant;

    struct Received {
        request: ExportMetricsServiceRequest,
        metadata: MetadataMap,
        at: Instant,
    }

    #[derive(Default)]
    struct Receiver {
        received: Mutex<Vec<Received>>,
        /// Answers in order; an empty OK once they run out.
        script: Mutex<VecDeque<Result<ExportMetricsServiceResponse, tonic::Status>>>,
    }

    #[tonic::async_trait]
    impl MetricsService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let at = Instant::now();
            let metadata = request.metadata().clone();
            self.received.lock().expect("lock").push(Received {
                request: request.into_inner(),
                metadata,
                at,
            });
            let answer = self.script.lock().expect("lock").pop_front();
            answer
                .unwrap_or_else(|| Ok(ExportMetricsServiceResponse::default()))
                .map(tonic::Response::new)
        }
    }

    async fn serve(
        script: Vec<Result<ExportMetricsServiceResponse, tonic::Status>>,
    ) -> (String, Arc<Receiver>) {
        let receiver = Arc::new(Receiver {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
        });
        let service = MetricsServiceServer::from_arc(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (format!("http://{addr}"), receiver)
    }

    use crate::export::testing::{gauge_output, gauge_values};

    #[test]
    fn messages_are_gzipped_at_the_level_given() {
        let payload = b"metrics ".repeat(10_000);
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let fast = gzip_frames(&frame, flate2::Compression::new(1)).unwrap();
        let small = gzip_frames(&frame, flate2::Compression::new(9)).unwrap();
        for out in [&fast, &small] {
            assert_eq!(out[0], 1, "flagged compressed");
            let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
            assert_eq!(out.len(), 5 + len);
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[5..]), &mut plain)
                .unwrap();
            assert_eq!(plain, payload);
        }
        // gzip writes the level it used into its header (XFL: 4 fastest, 2 best).
        assert_eq!((fast[5 + 8], small[5 + 8]), (4, 2));
    }

    fn config(endpoint: &str) -> crate::export::config::OtlpConfig {
        crate::export::testing::otlp_config(endpoint, Protocol::Grpc)
    }

    fn sink(config: crate::export::config::OtlpConfig) -> Sink {
        crate::export::testing::otlp_sink("grpc", config)
    }

    #[tokio::test]
    async fn the_receiver_gets_the_points() {
        let (url, receiver) = serve(vec![]).await;
        let mut c = config(&url);
        c.headers
            .insert("X-Tenant".into(), ConfigHeader::Value("blue".into()));
        c.max_points_per_request = 4;
        let out = fixture::output();
        let delivered = sink(c)
            .send(&Resource::default_host(), &out)
            .await
            .expect("delivered");
        let received = receiver.received.lock().expect("lock");
        assert_eq!(received.len(), 3);
        assert_eq!(
            (delivered.requests, delivered.points),
            (3, out.point_count())
        );
        let first = &received[0];
        assert_eq!(
            first.metadata.get("x-tenant").map(|v| v.to_str().ok()),
            Some(Some("blue"))
        );
        assert_eq!(
            first.metadata.get("grpc-encoding").map(|v| v.to_str().ok()),
            Some(Some("gzip"))
        );
        let agent = first
            .metadata
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(agent.starts_with("kusto-metrics/"), "{agent}");
        let names: Vec<String> = received
            .iter()
            .flat_map(|r| {
                r.request.resource_metrics[0].scope_metrics[0]
                    .metrics
                    .clone()
            })
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "requests_inflight",
                "cpu_ratio",
                "cpu_ratio",
                "requests_total",
                "bytes_delta",
                "latency"
            ]
        );
        assert_eq!(
            gauge_values(&received[0].request)[..3],
            [fixture::BIG, -42, 0]
        );
        // The bytes as sent decode to what the encoder wrote, untouched.
        let mut expected = Vec::new();
        crate::export::otlp_proto::encode_request(
            &Resource::default_host(),
            &out,
            &crate::export::split_points(&out, 4)[0],
            &mut expected,
        );
        assert_eq!(prost::Message::encode_to_vec(&first.request), expected);
    }

    #[tokio::test]
    async fn unavailable_is_retried() {
        let (url, receiver) = serve(vec![Err(tonic::Status::unavailable("restarting"))]).await;
        let mut c = config(&url);
        c.compression = Compression::None;
        let delivered = sink(c)
            .send(&Resource::default_host(), &gauge_output(5))
            .await
            .expect("delivered");
        let received = receiver.received.lock().expect("lock");
        assert_eq!(received.len(), 2);
        assert!(received[0].metadata.get("grpc-encoding").is_none());
        assert_eq!(gauge_values(&received[1].request), vec![0, 1, 2, 3, 4]);
        assert_eq!(delivered.points, 5);
    }

    #[tokio::test]
    async fn invalid_argument_is_permanent() {
        let (url, receiver) =
            serve(vec![Err(tonic::Status::invalid_argument("no metric name"))]).await;
        let e = sink(config(&url))
            .send(&Resource::default_host(), &gauge_output(5))
            .await
            .expect_err("rejected");
        assert_eq!(receiver.received.lock().expect("lock").len(), 1);
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        assert_eq!(e.reason(), "grpc_invalid_argument");
        assert!(
            e.to_string().contains("InvalidArgument: no metric name"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn resource_exhausted_waits_as_retry_info_says() {
        let details =
            google_rpc::status_with_retry_delay(8, "slow down", Duration::from_millis(300));
        let (url, receiver) = serve(vec![Err(tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            Bytes::from(details),
        ))])
        .await;
        sink(config(&url))
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect("delivered");
        let gap = {
            let received = receiver.received.lock().expect("lock");
            assert_eq!(received.len(), 2);
            received[1].at - received[0].at
        };
        assert!(gap >= Duration::from_millis(300), "waited only {gap:?}");

        // Without RetryInfo it is permanent.
        let (url, receiver) = serve(vec![Err(tonic::Status::resource_exhausted("quota"))]).await;
        let e = sink(config(&url))
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect_err("permanent");
        assert_eq!(receiver.received.lock().expect("lock").len(), 1);
        assert_eq!(e.retry_class(), RetryClass::Permanent);
    }

    #[tokio::test]
    async fn partial_success_is_reported() {
        let (url, _receiver) = serve(vec![Ok(ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 4,
                error_message: "too old".into(),
            }),
        })])
        .await;
        let delivered = sink(config(&url))
            .send(&Resource::default_host(), &gauge_output(6))
            .await
            .expect("delivered");
        assert_eq!((delivered.points, delivered.rejected_points), (6, 4));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_retryable_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let mut c = config(&url);
        c.retry.enabled = false;
        let e = sink(c)
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect_err("nobody listens");
        assert_eq!(e.retry_class(), RetryClass::Retryable);
        assert_eq!(e.reason(), "connect", "{e}");
    }
}
