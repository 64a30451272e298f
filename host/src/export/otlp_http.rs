//! OTLP/HTTP: one POST per request, protobuf or JSON, gzip in the body.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::config::{Compression, OtlpConfig, Protocol, TlsConfig};
use super::deliver::{Encoding, ErrorKind, MAX_REQUEST_BYTES, Settings, error_chain};
use super::otlp_grpc::google_rpc;
use super::retry::RetryPolicy;
use crate::net::{self, NetError, Redirects};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;

/// How much of an error body goes into the error message: enough for a
/// collector's explanation, not a whole HTML error page.
pub const ERROR_SNIPPET_BYTES: usize = 512;
/// How much of any response body is read. OTLP responses are a few bytes;
/// the rest of a larger body is dropped with the connection.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub struct OtlpHttp {
    settings: Settings,
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    redirects: Redirects,
}

impl OtlpHttp {
    pub fn new(name: &str, config: &OtlpConfig) -> Result<OtlpHttp, ErrorKind> {
        let url = config.http_url().map_err(ErrorKind::Config)?;
        let encoding = match config.protocol {
            Protocol::HttpJson => Encoding::Json,
            Protocol::HttpProtobuf | Protocol::Grpc => Encoding::Protobuf,
        };
        let gzip = config.compression == Compression::Gzip;

        let mut headers = user_headers(&config.headers)?;
        let content_type = match encoding {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }

        // Any configured header may be a secret (an API key, a tenant):
        // none of them may follow a redirect to another server.
        let redirects = Redirects::post(!config.headers.is_empty());
        let client = build_client(name, &config.tls, config.timeout, redirects)?;
        Ok(OtlpHttp {
            settings: Settings {
                name: name.to_string(),
                encoding,
                gzip_body: gzip.then(|| flate2::Compression::new(config.compression_level)),
                max_points: config.max_points_per_request,
                max_bytes: MAX_REQUEST_BYTES,
                timeout: config.timeout,
                retry: RetryPolicy::from_config(&config.retry),
            },
            url,
            client,
            headers,
            redirects,
        })
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One attempt: POST `body`, and on success the points the receiver
    /// says it rejected.
    pub(crate) async fn post(&self, body: Bytes) -> Result<u64, ErrorKind> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| send_error(&e, self.settings.timeout))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ErrorKind::Config(net::redirect::explain(
                self.redirects,
                &self.url,
                &response,
            )));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let json = if content_type.is_empty() {
            self.settings.encoding == Encoding::Json
        } else {
            content_type.contains("json")
        };
        if status.is_success() {
            // The receiver has taken the data: a body cut short does not
            // undo that, so it is not worth resending.
            let body = match net::read_capped(response, MAX_RESPONSE_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(exporter = %self.settings.name, error = %error_chain(&e), "could not read the success response");
                    return Ok(0);
                }
            };
            return Ok(self.partial_success(&body, json));
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = net::read_prefix(response, MAX_RESPONSE_BYTES).await;
        let reason = status.canonical_reason().unwrap_or("");
        let detail = error_message(&body, json);
        let message = match (reason, detail.is_empty()) {
            (r, true) => r.to_string(),
            ("", false) => detail,
            (r, false) => format!("{r}: {detail}"),
        };
        Err(ErrorKind::Http {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }

    fn partial_success(&self, body: &[u8], json: bool) -> u64 {
        let parsed = if body.is_empty() {
            Ok((0, String::new()))
        } else if json {
            partial_success_json(body)
        } else {
            partial_success_proto(body)
        };
        match parsed {
            Ok((0, message)) => {
                if !message.is_empty() {
                    tracing::warn!(exporter = %self.settings.name, message, "receiver warns");
                }
                0
            }
            Ok((rejected, message)) => {
                tracing::warn!(exporter = %self.settings.name, rejected, message, "receiver rejected points");
                rejected
            }
            Err(e) => {
                tracing::warn!(exporter = %self.settings.name, error = %e, "could not decode the success response");
                0
            }
        }
    }
}

fn partial_success_proto(body: &[u8]) -> Result<(u64, String), String> {
    let response = <ExportMetricsServiceResponse as prost::Message>::decode(body)
        .map_err(|e| e.to_string())?;
    Ok(response.partial_success.map_or((0, String::new()), |p| {
        (
            u64::try_from(p.rejected_data_points).unwrap_or(0),
            p.error_message,
        )
    }))
}

/// `{"partialSuccess": {"rejectedDataPoints": "3", "errorMessage": "..."}}`;
/// proto3 JSON may write the int64 as a string or a number.
fn partial_success_json(body: &[u8]) -> Result<(u64, String), String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let partial = &value["partialSuccess"];
    let rejected = match &partial["rejectedDataPoints"] {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    let message = partial["errorMessage"].as_str().unwrap_or_default();
    Ok((rejected, message.to_string()))
}

/// The server's explanation from an error body: the `message` of a
/// google.rpc.Status (protobuf or JSON, as OTLP prescribes), else the text.
fn error_message(body: &[u8], json: bool) -> String {
    let status_message = if json {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
    } else {
        <google_rpc::Status as prost::Message>::decode(body)
            .ok()
            .map(|s| s.message)
    };
    match status_message {
        Some(m) if !m.is_empty() => snippet(m.as_bytes()),
        _ => snippet(body),
    }
}

/// At most [`ERROR_SNIPPET_BYTES`] of `body` as text, trimmed.
fn snippet(body: &[u8]) -> String {
    let cut = body.len().min(ERROR_SNIPPET_BYTES);
    let mut text = String::from_utf8_lossy(&body[..cut]).trim().to_string();
    if cut < body.len() {
        // A multi-byte character cut in two shows as U+FFFD; drop it.
        if text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push('…');
    }
    text
}

/// The configured headers with their secrets read, marked sensitive so
/// they never show in debug output.
pub(crate) fn user_headers(
    configured: &std::collections::BTreeMap<String, super::config::HeaderValue>,
) -> Result<HeaderMap, ErrorKind> {
    let mut headers = HeaderMap::new();
    for (key, value) in configured {
        let value = value.resolve(key).map_err(ErrorKind::Secret)?;
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| ErrorKind::Config(format!("{key:?} is not a valid header name")))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ErrorKind::Secret(format!(
                "header {key:?}: the value holds characters a header cannot carry"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The client of one exporter (OTLP/HTTP or remote write), built by
/// [`net::build`] with `tls` read now.
pub(crate) fn build_client(
    name: &str,
    tls: &TlsConfig,
    timeout: Duration,
    redirects: Redirects,
) -> Result<reqwest::Client, ErrorKind> {
    let pem = |path: &std::path::Path, key: &str| {
        net::Pem::read(path, &format!("tls.{key}")).map_err(tls_error)
    };
    let mut files = net::Tls {
        accept_invalid_certs: tls.insecure_skip_verify,
        ..net::Tls::default()
    };
    if let Some(path) = &tls.ca_file {
        files.roots.push(pem(path, "caFile")?);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        files.identity = Some((pem(cert, "certFile")?, pem(key, "keyFile")?));
    }
    net::build(net::ClientSpec {
        purpose: &format!("exporter {name}"),
        redirects,
        timeouts: net::Timeouts::within(timeout),
        tls: files,
    })
    .map_err(tls_error)
}

/// A request that failed before an answer: the client's own deadline (the
/// exporter's `timeout`) is a timeout like the retry loop's, anything else
/// a connection problem.
pub(crate) fn send_error(e: &reqwest::Error, timeout: Duration) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout(timeout)
    } else {
        ErrorKind::Connect(error_chain(e))
    }
}

fn tls_error(e: NetError) -> ErrorKind {
    ErrorKind::Tls(e.to_string())
}

pub(crate) fn read_pem(path: &std::path::Path, key: &str) -> Result<Vec<u8>, ErrorKind> {
    std::fs::read(path).map_err(|e| ErrorKind::Tls(format!("tls.{key} {}: {e}", path.display())))
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3); a date in
/// the past means now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The IMF-fixdate form that RFC 9110 requires senders to use:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = crate::source::values::days_from_civil(year, month, day as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_835_438_400))
        );
        for bad in [
            "soon",
            "-1",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn error_messages_are_bounded_and_prefer_the_status_message() {
        let status = google_rpc::Status {
            code: 3,
            message: "metric name missing".into(),
            details: vec![],
        };
        let body = prost::Message::encode_to_vec(&status);
        assert_eq!(error_message(&body, false), "metric name missing");
        assert_eq!(
            error_message(br#"{"code":3,"message":"bad json"}"#, true),
            "bad json"
        );
        assert_eq!(error_message(b"  plain text\n", true), "plain text");
        let long = "é".repeat(1000);
        let text = error_message(long.as_bytes(), true);
        assert!(text.ends_with('…'));
        assert!(text.len() <= ERROR_SNIPPET_BYTES + '…'.len_utf8());
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn partial_success_in_json() {
        assert_eq!(
            partial_success_json(
                br#"{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"dup"}}"#
            ),
            Ok((3, "dup".to_string()))
        );
        assert_eq!(
            partial_success_json(br#"{"partialSuccess":{"rejectedDataPoints":4}}"#),
            Ok((4, String::new()))
        );
        assert_eq!(partial_success_json(b"{}"), Ok((0, String::new())));
        assert!(partial_success_json(b"not json").is_err());
    }
}

/// Against a real HTTP server on a loopback port.
#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::error::{Classify, RetryClass};
    use crate::export::config::{ExporterConfig, ExporterKind, HeaderValue as ConfigHeader};
    use crate::export::deliver::Sink;
    use crate::export::{Resource, fixture};
    use axum::extract::State;
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
    };
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use prost::Message;
    use std::collections::VecDeque;
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    #[derive(Clone, Debug)]
    struct Received {
        method: String,
        path: String,
        headers: http::HeaderMap,
        /// As sent, before decompression.
        raw_len: usize,
        body: Vec<u8>,
        at: Instant,
    }

    #[derive(Clone, Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        delay: Duration,
    }

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: vec![],
            delay: Duration::ZERO,
        }
    }

    #[derive(Default)]
    struct ServerState {
        received: Mutex<Vec<Received>>,
        /// Replies in order; an empty 200 once they run out.
        script: Mutex<VecDeque<Reply>>,
    }

    struct Server {
        url: String,
        state: Arc<ServerState>,
    }

    impl Server {
        fn received(&self) -> Vec<Received> {
            self.state.received.lock().expect("lock").clone()
        }
    }

    async fn serve(script: Vec<Reply>) -> Server {
        let state = Arc::new(ServerState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            url: format!("http://{addr}"),
            state,
        }
    }

    async fn record(
        State(state): State<Arc<ServerState>>,
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let at = Instant::now();
        let gzipped = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v == "gzip");
        let mut plain = Vec::new();
        if gzipped {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .expect("valid gzip");
        } else {
            plain = body.to_vec();
        }
        state.received.lock().expect("lock").push(Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers,
            raw_len: body.len(),
            body: plain,
            at,
        });
        let reply = state
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| reply(200));
        tokio::time::sleep(reply.delay).await;
        let mut response = axum::response::Response::new(axum::body::Body::from(reply.body));
        *response.status_mut() = http::StatusCode::from_u16(reply.status).expect("status");
        for (name, value) in reply.headers {
            response
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        response
    }

    use crate::export::testing::{gauge_output, otlp_config as config};

    fn sink(config: OtlpConfig) -> Sink {
        crate::export::testing::otlp_sink("sink", config)
    }

    fn decode(body: &[u8]) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest::decode(body).expect("protobuf request")
    }

    use crate::export::testing::gauge_values;

    #[tokio::test]
    async fn gzip_protobuf_arrives_whole() {
        let server = serve(vec![]).await;
        let out = fixture::output();
        let delivered = sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &out)
            .await
            .expect("delivered");
        let received = server.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/metrics");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(
            r.headers["user-agent"],
            concat!("kusto-metrics/", env!("CARGO_PKG_VERSION"))
        );
        let request = decode(&r.body);
        let rm = &request.resource_metrics[0];
        let service = rm
            .resource
            .as_ref()
            .expect("resource")
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .expect("service.name");
        assert_eq!(
            format!("{:?}", service.value),
            format!(
                "{:?}",
                Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "adx-mon-metrics-exporter".into()
                        )
                    )
                })
            )
        );
        let metrics = &rm.scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "requests_inflight",
                "cpu_ratio",
                "requests_total",
                "bytes_delta",
                "latency"
            ]
        );
        assert_eq!(gauge_values(&request)[..3], [fixture::BIG, -42, 0]);
        let points: usize = metrics
            .iter()
            .map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(points, out.point_count());
        assert_eq!(
            delivered,
            crate::export::Delivered {
                requests: 1,
                points: out.point_count(),
                rejected_points: 0,
                bytes: r.raw_len as u64,
                skipped: 0,
            }
        );
        assert!(r.raw_len < r.body.len(), "gzip made it smaller");
    }

    #[tokio::test]
    async fn json_protocol_sends_json() {
        let server = serve(vec![]).await;
        let mut c = config(&format!("{}/otlp/custom", server.url), Protocol::HttpJson);
        c.compression = Compression::None;
        sink(c)
            .send(&Resource::default_host(), &gauge_output(3))
            .await
            .expect("delivered");
        let received = server.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!(r.path, "/otlp/custom", "a path given is used as is");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers.get("content-encoding").is_none());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        let points =
            &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"];
        assert_eq!(points.as_array().map(Vec::len), Some(3));
        assert_eq!(points[2]["asInt"], "2");
    }

    #[tokio::test]
    async fn headers_from_the_environment_arrive() {
        // SAFETY: the variable's name is used by no other test, and nothing
        // outside std reads the environment while this runs.
        unsafe { std::env::set_var("KM_HTTP_TEST_TOKEN", "Bearer t0ken") };
        let server = serve(vec![]).await;
        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.headers.insert(
            "Authorization".into(),
            ConfigHeader::Env("KM_HTTP_TEST_TOKEN".into()),
        );
        c.headers
            .insert("X-Tenant".into(), ConfigHeader::Value("blue".into()));
        sink(c)
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect("delivered");
        let r = &server.received()[0];
        assert_eq!(r.headers["authorization"], "Bearer t0ken");
        assert_eq!(r.headers["x-tenant"], "blue");

        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.headers.insert(
            "Authorization".into(),
            ConfigHeader::Env("KM_HTTP_TEST_MISSING".into()),
        );
        let e = Sink::build(&ExporterConfig {
            name: "sink".into(),
            kind: ExporterKind::Otlp(c),
            resource_attributes: Default::default(),
        })
        .err()
        .expect("missing variable");
        let text = e.to_string();
        assert!(
            text.contains("\"Authorization\"") && text.contains("KM_HTTP_TEST_MISSING"),
            "{text}"
        );
        assert_eq!(e.reason(), "secret");
        assert_eq!(e.retry_class(), RetryClass::Permanent);
    }

    #[tokio::test]
    async fn unavailable_twice_then_ok_is_delivered_on_the_third_attempt() {
        let server = serve(vec![reply(503), reply(503), reply(200)]).await;
        let delivered = sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(4))
            .await
            .expect("delivered");
        let received = server.received();
        assert_eq!(received.len(), 3);
        assert_eq!(delivered.requests, 1);
        assert_eq!(delivered.points, 4);
        // The same body each time.
        assert!(received.iter().all(|r| r.body == received[0].body));
    }

    #[tokio::test]
    async fn bad_request_is_permanent_after_one_attempt() {
        let server = serve(vec![Reply {
            body: b"metric name must not be empty".to_vec(),
            headers: vec![("content-type", "text/plain".into())],
            ..reply(400)
        }])
        .await;
        let e = sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(4))
            .await
            .expect_err("rejected");
        assert_eq!(server.received().len(), 1);
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        assert_eq!(e.reason(), "http_4xx");
        assert_eq!(e.request, Some(1));
        assert_eq!(e.delivered, crate::export::Delivered::default());
        let text = e.to_string();
        assert!(
            text.contains("HTTP 400: Bad Request: metric name must not be empty"),
            "{text}"
        );
        assert!(!text.contains("earlier"), "{text}");
    }

    #[tokio::test]
    async fn protobuf_error_bodies_give_the_status_message() {
        let status = super::google_rpc::Status {
            code: 3,
            message: "too many attributes".into(),
            details: vec![],
        };
        let server = serve(vec![Reply {
            body: status.encode_to_vec(),
            headers: vec![("content-type", "application/x-protobuf".into())],
            ..reply(413)
        }])
        .await;
        let e = sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect_err("rejected");
        assert!(
            e.to_string()
                .contains("HTTP 413: Payload Too Large: too many attributes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let server = serve(vec![Reply {
            headers: vec![("retry-after", "1".into())],
            ..reply(429)
        }])
        .await;
        sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect("delivered");
        let received = server.received();
        assert_eq!(received.len(), 2);
        let gap = received[1].at - received[0].at;
        // The backoff alone would wait at most 20 ms.
        assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
    }

    #[tokio::test]
    async fn requests_are_split_by_point_count_in_order() {
        let server = serve(vec![]).await;
        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.max_points_per_request = 10;
        let delivered = sink(c)
            .send(&Resource::default_host(), &gauge_output(25))
            .await
            .expect("delivered");
        let received = server.received();
        let values: Vec<Vec<i64>> = received
            .iter()
            .map(|r| gauge_values(&decode(&r.body)))
            .collect();
        assert_eq!(
            values,
            vec![
                (0..10).collect::<Vec<_>>(),
                (10..20).collect(),
                (20..25).collect()
            ]
        );
        assert_eq!((delivered.requests, delivered.points), (3, 25));
        assert_eq!(
            delivered.bytes,
            received.iter().map(|r| r.raw_len as u64).sum::<u64>()
        );
    }

    #[tokio::test]
    async fn giving_up_mid_output_says_what_was_accepted() {
        let mut script = vec![reply(200), reply(200)];
        script.extend(std::iter::repeat_n(reply(503), 1000));
        let server = serve(script).await;
        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.max_points_per_request = 10;
        c.retry.max_elapsed_time = Duration::from_millis(100);
        let e = sink(c)
            .send(&Resource::default_host(), &gauge_output(25))
            .await
            .expect_err("third request never gets through");
        let attempts = server.received().len() - 2;
        assert!(attempts >= 2, "retried: {attempts}");
        assert_eq!(e.request, Some(3));
        assert_eq!((e.delivered.requests, e.delivered.points), (2, 20));
        assert_eq!(e.retry_class(), RetryClass::Retryable);
        assert_eq!(e.reason(), "http_5xx");
        let text = e.to_string();
        assert!(
            text.contains(&format!("gave up after {attempts} attempts")),
            "{text}"
        );
        assert!(text.contains("2 earlier requests with 20 points"), "{text}");
    }

    #[tokio::test]
    async fn partial_success_is_reported() {
        let response = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 2,
                error_message: "stale points".into(),
            }),
        };
        let server = serve(vec![
            Reply {
                body: response.encode_to_vec(),
                headers: vec![("content-type", "application/x-protobuf".into())],
                ..reply(200)
            },
            Reply {
                body: br#"{"partialSuccess":{"rejectedDataPoints":"1"}}"#.to_vec(),
                headers: vec![("content-type", "application/json".into())],
                ..reply(200)
            },
        ])
        .await;
        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.max_points_per_request = 3;
        let delivered = sink(c)
            .send(&Resource::default_host(), &gauge_output(5))
            .await
            .expect("delivered");
        assert_eq!(delivered.requests, 2);
        assert_eq!(delivered.rejected_points, 3);
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out_each_attempt() {
        let server = serve(vec![Reply {
            delay: Duration::from_secs(30),
            ..reply(200)
        }])
        .await;
        let mut c = config(&server.url, Protocol::HttpProtobuf);
        c.timeout = Duration::from_millis(200);
        c.retry.enabled = false;
        let started = Instant::now();
        let e = sink(c)
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(e.reason(), "timeout");
        assert_eq!(e.retry_class(), RetryClass::Retryable);
        assert!(e.to_string().contains("no answer within 200ms"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_retryable_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let mut c = config(&url, Protocol::HttpProtobuf);
        c.retry.enabled = false;
        let e = sink(c)
            .send(&Resource::default_host(), &gauge_output(1))
            .await
            .expect_err("nobody listens");
        assert_eq!(e.reason(), "connect");
        assert_eq!(e.retry_class(), RetryClass::Retryable);
    }

    #[tokio::test]
    async fn redirects_are_followed_only_when_they_keep_the_body() {
        let moved = |status| Reply {
            headers: vec![("location", "/moved".into())],
            ..reply(status)
        };
        let server = serve(vec![moved(307)]).await;
        sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(2))
            .await
            .expect("delivered");
        let received = server.received();
        let paths: Vec<(&str, &str)> = received
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect();
        assert_eq!(paths, [("POST", "/v1/metrics"), ("POST", "/moved")]);
        assert_eq!(received[0].body, received[1].body);

        let server = serve(vec![moved(302)]).await;
        let e = sink(config(&server.url, Protocol::HttpProtobuf))
            .send(&Resource::default_host(), &gauge_output(2))
            .await
            .expect_err("not followed");
        assert_eq!(server.received().len(), 1);
        assert_eq!(e.reason(), "config");
        assert_eq!(e.retry_class(), RetryClass::Permanent);
        assert!(
            e.to_string().contains("HTTP 302") && e.to_string().contains("only 307 and 308"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn tls_files_are_checked_at_build() {
        let dir = std::env::temp_dir().join(format!("km-http-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let garbage = dir.join("ca.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let build = |tls: TlsConfig| {
            let mut c = config("https://127.0.0.1:1", Protocol::HttpProtobuf);
            c.tls = tls;
            Sink::build(&ExporterConfig {
                name: "sink".into(),
                kind: ExporterKind::Otlp(c),
                resource_attributes: Default::default(),
            })
            .err()
            .expect("refused")
        };
        let e = build(TlsConfig {
            ca_file: Some(dir.join("absent.pem")),
            ..TlsConfig::default()
        });
        assert_eq!(e.reason(), "tls");
        assert!(e.to_string().contains("absent.pem"), "{e}");
        let e = build(TlsConfig {
            ca_file: Some(garbage.clone()),
            ..TlsConfig::default()
        });
        assert_eq!(e.reason(), "tls");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = build(TlsConfig {
            cert_file: Some(garbage.clone()),
            key_file: Some(garbage),
            ..TlsConfig::default()
        });
        assert_eq!(e.reason(), "tls");
        std::fs::remove_dir_all(&dir).ok();
    }
}
