//! A Kusto REST client: queries (`POST /v2/rest/query`) and management
//! commands (`POST /v1/rest/mgmt`), signed in with [`Identity`], every
//! request with its own client request id and our application name, retried
//! on throttling, unavailability and timeouts.
//!
//! A query's answer is either read whole ([`KustoClient::query`], for small
//! answers: schemas, probes) or handed on as it arrives
//! ([`KustoClient::query_stream`], for windows of rows of any size): then
//! only what comes before the body is retried; a body that breaks fails the
//! read, and the caller reads the window again.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::auth::Identity;
use super::config::{AuthMode, KustoConfig};
use super::error::{DEFAULT_THROTTLE_WAIT, KustoError, KustoErrorKind, is_limit_message};
use crate::export::otlp_http::parse_retry_after;
use crate::export::retry::{RetryPolicy, retry};
use crate::net::{self, BodyError, Redirects, error_chain};
use crate::source::InputError;

/// `x-ms-app`: how ADX's own logs name us.
pub const APPLICATION: &str = "kusto-metrics";
/// Longest error body kept for a message.
const MAX_ERROR_BODY: usize = 2048;
/// The most of an error answer read at all.
const MAX_ERROR_READ: usize = 64 * 1024;
/// The largest answer read. ADX cuts a result at 64 MB by default
/// (`truncationmaxsize`); its JSON frames are larger than the data, so this
/// leaves room while a proxy's endless body still ends. Over it, the answer
/// counts as a limit hit: the window is halved, as for ADX's own.
pub const MAX_ANSWER_BYTES: usize = 512 << 20;
/// The most the client waits past the server's own timeout.
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(15);

/// One query.
#[derive(Debug, Clone)]
pub struct Query {
    pub database: String,
    pub csl: String,
    /// Declared parameter name to KQL literal, e.g.
    /// `("_from", "datetime(2025-06-25T10:00:00.0000000Z)")`.
    pub parameters: Vec<(String, String)>,
    /// Rows beyond this make the query fail with a limit error
    /// (`truncationmaxrecords`), so the caller can ask for less. Only for
    /// [`KustoClient::query`]: a streamed query is never truncated
    /// (`notruncation`), so this is not sent with it.
    pub max_records: Option<usize>,
    /// Names the kind of request in its client request id.
    pub activity: &'static str,
}

/// A response body and the request id it answered.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
    pub request_id: String,
}

/// An answer whose status was 200, its body read as it arrives.
pub struct BodyStream {
    pub request_id: String,
    database: String,
    response: reqwest::Response,
    /// The longest silence allowed between two pieces of the body.
    silence: Duration,
    received: u64,
}

impl BodyStream {
    /// The next piece of the body; `None` at its end. A connection that
    /// breaks or stays silent longer than the read timeout fails it
    /// (retryable: the same query may well succeed).
    pub async fn next(&mut self) -> Result<Option<Bytes>, KustoError> {
        match self.response.chunk().await {
            Ok(Some(piece)) => {
                self.received += piece.len() as u64;
                Ok(Some(piece))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let kind = if e.is_timeout() {
                    KustoErrorKind::Timeout(self.silence)
                } else {
                    KustoErrorKind::Network(format!(
                        "the answer broke off after {} bytes: {}",
                        self.received,
                        error_chain(&e)
                    ))
                };
                Err(KustoError::new(&self.database, &self.request_id, kind))
            }
        }
    }

    /// Bytes of the body read so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

pub struct KustoClient {
    http: reqwest::Client,
    /// For streamed answers: no bound on the whole request, only on each
    /// silence ([`net::Timeouts::streaming`]).
    stream_http: reqwest::Client,
    redirects: Redirects,
    config: KustoConfig,
    identity: Identity,
    retry: RetryPolicy,
}

impl KustoClient {
    pub fn new(config: &KustoConfig, identity: Identity) -> Result<KustoClient, String> {
        let redirects = Redirects::post(config.auth != AuthMode::None);
        let http = net::build(net::ClientSpec {
            purpose: "kusto",
            redirects,
            // ADX thinks for up to `servertimeout` before its first byte.
            timeouts: net::Timeouts::slow_first_byte(attempt_timeout(config.timeout)),
            tls: net::Tls::default(),
        })
        .map_err(|e| e.to_string())?;
        let stream_http = net::build(net::ClientSpec {
            purpose: "kusto",
            redirects,
            timeouts: net::Timeouts::streaming(attempt_timeout(config.timeout)),
            tls: net::Tls::default(),
        })
        .map_err(|e| e.to_string())?;
        Ok(KustoClient {
            http,
            stream_http,
            redirects,
            config: config.clone(),
            identity,
            retry: RetryPolicy::from_config(&config.retry),
        })
    }

    pub fn identity(&self) -> &str {
        &self.identity.description
    }

    /// Runs a query; the body is a v2 frame stream, read whole (at most
    /// [`MAX_ANSWER_BYTES`]).
    pub async fn query(&self, query: &Query) -> Result<Answer, KustoError> {
        let body = self.query_body(query, false);
        let deadline = attempt_timeout(self.config.timeout);
        let (body, request_id) = self
            .send(
                "/v2/rest/query",
                &query.database,
                query.activity,
                body,
                &self.http,
                move |response| read_whole(response, deadline),
            )
            .await?;
        Ok(Answer { body, request_id })
    }

    /// Runs a query and hands its body on as it arrives, once ADX answered
    /// 200: throttling, unavailability and timeouts before that are retried
    /// as for [`Self::query`]. The result is never truncated
    /// (`notruncation`): ADX's default cut at 500,000 rows or 64 MB does
    /// not apply, and however large, the answer is never held whole here.
    pub async fn query_stream(&self, query: &Query) -> Result<BodyStream, KustoError> {
        let body = self.query_body(query, true);
        let silence = attempt_timeout(self.config.timeout);
        let (response, request_id) = self
            .send(
                "/v2/rest/query",
                &query.database,
                query.activity,
                body,
                &self.stream_http,
                |response| async move { Ok(response) },
            )
            .await?;
        Ok(BodyStream {
            request_id,
            database: query.database.clone(),
            response,
            silence,
            received: 0,
        })
    }

    fn query_body(&self, query: &Query, streamed: bool) -> Value {
        let mut options = Map::new();
        options.insert(
            "servertimeout".into(),
            Value::from(timespan(self.config.timeout)),
        );
        // The host only reads: ADX refuses anything that would write.
        options.insert("request_readonly".into(), Value::from(true));
        // Rows just ingested must be visible by the time a window closes;
        // weak consistency (a workload group's or cluster's default) can
        // show them minutes late, after the window has moved on.
        options.insert("queryconsistency".into(), Value::from("strongconsistency"));
        if streamed {
            // Kusto's query limits: the result-set cut (500,000 records,
            // 64 MB) is lifted by `notruncation`; a stream is read in
            // chunks, so its size costs no memory here.
            options.insert("notruncation".into(), Value::from(true));
        } else if let Some(n) = query.max_records {
            options.insert("truncationmaxrecords".into(), Value::from(n));
        }
        let parameters: Map<String, Value> = query
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        json!({
            "db": query.database,
            "csl": query.csl,
            "properties": {"Options": options, "Parameters": parameters},
        })
    }

    /// Runs a management command; the body is a v1 response.
    pub async fn management(&self, database: &str, csl: &str) -> Result<Answer, KustoError> {
        let body = json!({
            "db": database,
            "csl": csl,
            "properties": {"Options": {"servertimeout": timespan(self.config.timeout)}},
        });
        let deadline = attempt_timeout(self.config.timeout);
        let (body, request_id) = self
            .send(
                "/v1/rest/mgmt",
                database,
                "Mgmt",
                body,
                &self.http,
                move |response| read_whole(response, deadline),
            )
            .await?;
        Ok(Answer { body, request_id })
    }

    /// Sends `body` until an attempt succeeds or gives up; `read` turns a
    /// 200 answer into the result, within the attempt (so its failures are
    /// retried too). Returns the result and the request id it answered.
    async fn send<T, F, Fut>(
        &self,
        path: &str,
        database: &str,
        activity: &str,
        body: Value,
        http: &reqwest::Client,
        read: F,
    ) -> Result<(T, String), KustoError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, KustoErrorKind>>,
    {
        let cluster = self.config.endpoint(database).ok_or_else(|| {
            KustoError::new(
                database,
                "-",
                KustoErrorKind::NoEndpoint(database.to_string()),
            )
        })?;
        let url = format!("{}{path}", cluster.trim_end_matches('/'));
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let last_id = Mutex::new(String::new());
        let result = retry(
            &self.retry,
            attempt_timeout(self.config.timeout),
            &format!("kusto {database}"),
            |_| {
                let request_id = format!("KM.{activity};{}", uuid::Uuid::new_v4());
                *last_id.lock().unwrap_or_else(|p| p.into_inner()) = request_id.clone();
                let (url, body) = (url.clone(), body.clone());
                let read = &read;
                async move {
                    let answer = match self.attempt(http, cluster, &url, body, &request_id).await {
                        Ok(response) => read(response).await,
                        Err(kind) => Err(kind),
                    };
                    answer
                        .map(|value| (value, request_id.clone()))
                        .map_err(|kind| KustoError::new(database, &request_id, kind))
                }
            },
        )
        .await;
        match result {
            Ok(success) => Ok(success.value),
            Err(failure) => {
                let mut e = failure.error;
                if e.request_id.is_empty() {
                    // A timeout: the loop made the error.
                    e.database = database.to_string();
                    e.request_id = last_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
                }
                Err(e)
            }
        }
    }

    /// One request, up to a 200 answer whose body is not read yet.
    async fn attempt(
        &self,
        http: &reqwest::Client,
        cluster: &str,
        url: &str,
        body: Bytes,
        request_id: &str,
    ) -> Result<reqwest::Response, KustoErrorKind> {
        let mut request = http
            .post(url)
            .header("content-type", "application/json; charset=utf-8")
            .header("accept", "application/json")
            .header("x-ms-client-request-id", request_id)
            .header("x-ms-app", APPLICATION)
            .header(
                "x-ms-client-version",
                concat!("kusto-metrics:", env!("CARGO_PKG_VERSION")),
            )
            .body(body);
        let token =
            self.identity
                .token(cluster)
                .await
                .map_err(|message| KustoErrorKind::Credential {
                    identity: self.identity.description.clone(),
                    message,
                })?;
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let deadline = attempt_timeout(self.config.timeout);
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                KustoErrorKind::Timeout(deadline)
            } else {
                KustoErrorKind::Network(error_chain(&e))
            }
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        if status == 200 {
            return Ok(response);
        }
        if (300..400).contains(&status) {
            return Err(KustoErrorKind::Refused {
                status,
                message: net::redirect::explain(self.redirects, url, &response),
            });
        }
        // An error answer is read only so far: a proxy's endless page must
        // not fill memory.
        let bytes = net::read_prefix(response, MAX_ERROR_READ).await;
        let message = error_message(&bytes);
        Err(match status {
            401 | 403 => KustoErrorKind::Unauthorized {
                identity: self.identity.description.clone(),
                status,
                message,
            },
            429 => KustoErrorKind::Throttled {
                retry_after: retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT),
            },
            _ if is_limit_message(&message) => KustoErrorKind::ResultTooLarge(message),
            500..=599 => KustoErrorKind::Unavailable {
                status,
                message,
                retry_after,
            },
            _ => KustoErrorKind::Refused { status, message },
        })
    }
}

/// A 200 answer's body, whole, when it is at most [`MAX_ANSWER_BYTES`].
/// `deadline` is the attempt's, for the message of a timeout.
async fn read_whole(
    response: reqwest::Response,
    deadline: Duration,
) -> Result<Bytes, KustoErrorKind> {
    net::read_capped(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::Read { timeout: true, .. } => KustoErrorKind::Timeout(deadline),
            BodyError::Read { .. } => KustoErrorKind::Network(e.to_string()),
            _ => KustoErrorKind::ResultTooLarge(e.to_string()),
        })
}

/// A response body's failure as a [`KustoError`]: a limit hit becomes
/// [`KustoErrorKind::ResultTooLarge`].
pub fn response_error(database: &str, request_id: &str, e: InputError) -> KustoError {
    let kind = match &e {
        InputError::QueryFailed { message, .. } if is_limit_message(message) => {
            KustoErrorKind::ResultTooLarge(message.clone())
        }
        _ => KustoErrorKind::Response(e),
    };
    KustoError::new(database, request_id, kind)
}

/// The client waits a little longer than the `servertimeout` it sends, so
/// ADX can answer with its own timeout error rather than the client hanging
/// up at the same instant.
pub fn attempt_timeout(server: Duration) -> Duration {
    server + (server / 2).min(CLIENT_TIMEOUT_MARGIN)
}

/// `hh:mm:ss`, the timespan format of request options.
fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// ADX's error body (`{"error": {"code", "message", "@message"}}`) as text.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        let code = e.get("code").and_then(Value::as_str).unwrap_or("");
        let message = e
            .get("@message")
            .or_else(|| e.get("message"))
            .and_then(Value::as_str)?;
        Some(if code.is_empty() {
            message.to_string()
        } else {
            format!("{code}: {message}")
        })
    });
    from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let mut cut = text.len().min(MAX_ERROR_BODY);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if text.trim().is_empty() {
            "(empty body)".to_string()
        } else {
            text[..cut].to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_and_error_bodies() {
        assert_eq!(timespan(Duration::from_secs(120)), "00:02:00");
        assert_eq!(timespan(Duration::from_secs(3723)), "01:02:03");
        assert_eq!(
            error_message(
                br#"{"error":{"code":"General_BadRequest","message":"Request is invalid","@message":"Syntax error: x"}}"#
            ),
            "General_BadRequest: Syntax error: x"
        );
        assert_eq!(error_message(b"upstream down"), "upstream down");
        assert_eq!(error_message(b""), "(empty body)");
    }
}
