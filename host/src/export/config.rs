//! The `exporters` list users write: where metrics go and how.
//!
//! Every struct refuses keys it does not know, so a typo such as `compresion`
//! fails at start instead of silently falling back to a default. Serde checks
//! shapes and types; [`ExporterConfig::validate`] checks what serde cannot
//! (URL scheme, positive durations, certificate and key given together).
//! Secrets in headers are not read here but when the exporter is built
//! ([`HeaderValue::resolve`]), so a config can be checked without them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::prometheus::{RemoteWriteConfig, ScrapeConfig};

/// Points per request unless the config says otherwise; about 1.2 MB of
/// protobuf, well under the 4 MiB gRPC limit.
pub const DEFAULT_MAX_POINTS_PER_REQUEST: usize = 10_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ELAPSED_TIME: Duration = Duration::from_secs(5 * 60);

/// One named destination.
#[derive(Clone, Debug, PartialEq)]
pub struct ExporterConfig {
    pub name: String,
    pub kind: ExporterKind,
    /// Resource attributes of everything this exporter sends, over the
    /// host's (`resourceAttributes` beside `name`).
    pub resource_attributes: BTreeMap<String, String>,
}

/// What kind of destination, chosen by the key present next to `name`.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful are read once at start; boxing would only clutter matching"
)]
pub enum ExporterKind {
    Otlp(OtlpConfig),
    Stdout(StdoutConfig),
    PrometheusRemoteWrite(RemoteWriteConfig),
    PrometheusScrape(ScrapeConfig),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http(s)://host:port[/path]`.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Header name to value; a `BTreeMap` so requests carry them in a stable
    /// order.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    #[serde(default)]
    pub compression: Compression,
    /// The gzip level, 1 (fastest; the default) to 9 (smallest), for
    /// OTLP/HTTP bodies and gRPC messages alike. OTLP shrinks about 6× at
    /// level 1, and level 6 costs 5× the CPU (shared/spec/measurements.md).
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// Per attempt, not per request: each retry gets a fresh deadline.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default = "default_max_points")]
    pub max_points_per_request: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    Grpc,
    /// The OTLP specification's default for exporters.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;

fn default_compression_level() -> u32 {
    DEFAULT_COMPRESSION_LEVEL
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// A header's value: inline, or read at start from an environment variable
/// or a file so that secrets need not sit in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Value(String),
    Env(String),
    File(PathBuf),
}

/// Inline values may be secrets too: never print them.
impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Value(_) => f.write_str("Value(<redacted>)"),
            HeaderValue::Env(var) => f.debug_tuple("Env").field(var).finish(),
            HeaderValue::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl HeaderValue {
    /// The value, reading the variable or file now. Errors name the header
    /// and where the value was looked for, never the value.
    pub fn resolve(&self, header: &str) -> Result<String, String> {
        match self {
            HeaderValue::Value(v) => Ok(v.clone()),
            HeaderValue::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(v),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "header {header:?}: environment variable {var:?} is not set"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "header {header:?}: environment variable {var:?} is not valid UTF-8"
                )),
            },
            HeaderValue::File(path) => match std::fs::read_to_string(path) {
                // Secret files written by `echo` or mounted from Kubernetes
                // secrets often end with a newline that is no part of the value.
                Ok(v) => Ok(trim_newline(&v).to_string()),
                Err(e) => Err(format!(
                    "header {header:?}: cannot read {}: {e}",
                    path.display()
                )),
            },
        }
    }
}

fn trim_newline(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_initial_interval", deserialize_with = "duration")]
    pub initial_interval: Duration,
    #[serde(default = "default_max_interval", deserialize_with = "duration")]
    pub max_interval: Duration,
    /// Retrying stops when the next wait would end past this much time since
    /// the first attempt.
    #[serde(default = "default_max_elapsed_time", deserialize_with = "duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: DEFAULT_INITIAL_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            max_elapsed_time: DEFAULT_MAX_ELAPSED_TIME,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM; trusted in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.insecure_skip_verify
    }
}

/// OTLP/JSON on standard output, one request per line.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StdoutConfig {
    #[serde(default = "default_max_points")]
    pub max_points_per_request: usize,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            max_points_per_request: DEFAULT_MAX_POINTS_PER_REQUEST,
        }
    }
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_initial_interval() -> Duration {
    DEFAULT_INITIAL_INTERVAL
}
fn default_max_interval() -> Duration {
    DEFAULT_MAX_INTERVAL
}
fn default_max_elapsed_time() -> Duration {
    DEFAULT_MAX_ELAPSED_TIME
}
fn default_max_points() -> usize {
    DEFAULT_MAX_POINTS_PER_REQUEST
}
fn yes() -> bool {
    true
}

/// A duration written as `10s`, `1m30s`, `500ms`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(de::Error::custom)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like 10s, 1m or 500ms"))
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeaderValueVisitor)
    }
}

struct HeaderValueVisitor;

impl<'de> Visitor<'de> for HeaderValueVisitor {
    type Value = HeaderValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, {env: VARIABLE} or {file: path}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValue, E> {
        Ok(HeaderValue::Value(v.to_string()))
    }

    // YAML reads `X-Scope-OrgID: 1234` as a number; the header is still meant.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValue, E> {
        Ok(HeaderValue::Value(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValue, E> {
        Ok(HeaderValue::Value(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderValue, E> {
        Ok(HeaderValue::Value(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderValue, A::Error> {
        const KEYS: &[&str] = &["env", "file"];
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = match key.as_str() {
                "env" => HeaderValue::Env(map.next_value()?),
                "file" => HeaderValue::File(map.next_value()?),
                _ => return Err(de::Error::unknown_field(&key, KEYS)),
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a header value takes one of `env` or `file`, not both",
                ));
            }
            found = Some(value);
        }
        found.ok_or_else(|| de::Error::custom("a header value needs `env` or `file`"))
    }
}

impl<'de> Deserialize<'de> for ExporterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ExporterVisitor)
    }
}

/// By hand because `#[serde(flatten)]` disables `deny_unknown_fields`, and a
/// misspelt `otpl:` must not read as "no exporter kind given".
struct ExporterVisitor;

const EXPORTER_KEYS: &[&str] = &[
    "name",
    "resourceAttributes",
    "otlp",
    "stdout",
    "prometheusRemoteWrite",
    "prometheusScrape",
];

impl<'de> Visitor<'de> for ExporterVisitor {
    type Value = ExporterConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "an exporter: `name` and one of `otlp`, `stdout`, `prometheusRemoteWrite` or `prometheusScrape`",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExporterConfig, A::Error> {
        let mut name: Option<String> = None;
        let mut kind: Option<ExporterKind> = None;
        let mut resource_attributes: Option<BTreeMap<String, String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resourceAttributes" => {
                    if resource_attributes.is_some() {
                        return Err(de::Error::duplicate_field("resourceAttributes"));
                    }
                    resource_attributes = Some(map.next_value()?);
                }
                "name" => {
                    if name.is_some() {
                        return Err(de::Error::duplicate_field("name"));
                    }
                    name = Some(map.next_value()?);
                }
                "otlp" | "stdout" | "prometheusRemoteWrite" | "prometheusScrape" => {
                    let next = match key.as_str() {
                        "otlp" => ExporterKind::Otlp(map.next_value()?),
                        "prometheusRemoteWrite" => {
                            ExporterKind::PrometheusRemoteWrite(map.next_value()?)
                        }
                        // `stdout:` or `prometheusScrape:` with nothing
                        // after it is YAML null.
                        "prometheusScrape" => {
                            let config: Option<ScrapeConfig> = map.next_value()?;
                            ExporterKind::PrometheusScrape(config.unwrap_or_default())
                        }
                        _ => {
                            let config: Option<StdoutConfig> = map.next_value()?;
                            ExporterKind::Stdout(config.unwrap_or_default())
                        }
                    };
                    if let Some(previous) = &kind {
                        return Err(de::Error::custom(format!(
                            "an exporter has one kind, but both `{}` and `{key}` are given",
                            previous.key()
                        )));
                    }
                    kind = Some(next);
                }
                _ => return Err(de::Error::unknown_field(&key, EXPORTER_KEYS)),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let kind = kind.ok_or_else(|| {
            de::Error::custom(format!(
                "exporter {name:?} needs one of `otlp`, `stdout`, `prometheusRemoteWrite` or `prometheusScrape`"
            ))
        })?;
        Ok(ExporterConfig {
            name,
            kind,
            resource_attributes: resource_attributes.unwrap_or_default(),
        })
    }
}

impl ExporterKind {
    /// The config key that selects this kind.
    pub fn key(&self) -> &'static str {
        match self {
            ExporterKind::Otlp(_) => "otlp",
            ExporterKind::Stdout(_) => "stdout",
            ExporterKind::PrometheusRemoteWrite(_) => "prometheusRemoteWrite",
            ExporterKind::PrometheusScrape(_) => "prometheusScrape",
        }
    }
}

impl ExporterConfig {
    /// Checks what serde cannot. The message starts with the key at fault
    /// (`otlp.timeout: ...`); callers add which exporter it is.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        super::resource::check_attributes(&self.resource_attributes)
            .map_err(|m| format!("resourceAttributes: {m}"))?;
        match &self.kind {
            ExporterKind::Stdout(s) => {
                if s.max_points_per_request == 0 {
                    return Err("stdout.maxPointsPerRequest: must be at least 1".into());
                }
            }
            ExporterKind::Otlp(o) => o.validate().map_err(|msg| format!("otlp.{msg}"))?,
            ExporterKind::PrometheusRemoteWrite(r) => r
                .validate()
                .map_err(|msg| format!("prometheusRemoteWrite.{msg}"))?,
            ExporterKind::PrometheusScrape(s) => s
                .validate()
                .map_err(|msg| format!("prometheusScrape.{msg}"))?,
        }
        Ok(())
    }

    /// Makes relative certificate, key and header files relative to `base`,
    /// the folder of the config file, instead of the working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        let (tls, headers) = match &mut self.kind {
            ExporterKind::Otlp(o) => (&mut o.tls, &mut o.headers),
            ExporterKind::PrometheusRemoteWrite(r) => (&mut r.tls, &mut r.headers),
            ExporterKind::Stdout(_) | ExporterKind::PrometheusScrape(_) => return,
        };
        for path in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
            .into_iter()
            .flatten()
        {
            resolve(path, base);
        }
        for value in headers.values_mut() {
            if let HeaderValue::File(path) = value {
                resolve(path, base);
            }
        }
    }
}

fn resolve(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// An endpoint split into the parts the exporters need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub uri: http::Uri,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("endpoint {text:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!(
                    "endpoint {text:?}: scheme {other:?} is not supported; use http:// or https://"
                ));
            }
            None => {
                return Err(format!(
                    "endpoint {text:?} needs a scheme: http://host:port or https://host:port"
                ));
            }
        };
        match uri.host() {
            Some(host) if !host.is_empty() => {}
            _ => return Err(format!("endpoint {text:?} has no host")),
        }
        Ok(Endpoint { https, uri })
    }

    /// Whether the URL names no path beyond `/`.
    pub fn has_path(&self) -> bool {
        !matches!(self.uri.path(), "" | "/")
    }
}

/// Refuses a secret header (read from `env`/`file`, or named like a
/// credential) that would go over plain `http://` to a host that is not
/// loopback: the rule of [`crate::net::cleartext`], for OTLP (HTTP and gRPC
/// metadata alike) and remote write.
pub(crate) fn refuse_secret_headers_in_clear(
    endpoint: &str,
    headers: &BTreeMap<String, HeaderValue>,
) -> Result<(), String> {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        // Endpoint::parse has named what is wrong with it.
        return Ok(());
    };
    for (name, value) in headers {
        let what = match value {
            HeaderValue::Env(_) => "a header read from `env` (a secret)",
            HeaderValue::File(_) => "a header read from `file` (a secret)",
            HeaderValue::Value(_) => "a header named like a credential",
        };
        let from_env_or_file = !matches!(value, HeaderValue::Value(_));
        if crate::net::cleartext::is_secret_header(name, from_env_or_file) {
            crate::net::refuse_plain_http(&url, &format!("headers.{name}"), what)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Where OTLP/HTTP metrics go when the endpoint names only the receiver.
pub const HTTP_METRICS_PATH: &str = "/v1/metrics";

impl OtlpConfig {
    fn validate(&self) -> Result<(), String> {
        let endpoint = Endpoint::parse(&self.endpoint).map_err(|e| format!("endpoint: {e}"))?;
        if self.protocol == Protocol::Grpc {
            if endpoint.has_path() || endpoint.uri.query().is_some() {
                return Err(format!(
                    "endpoint: {:?}: a gRPC endpoint is host and port only; the method path is fixed",
                    self.endpoint
                ));
            }
            if self.tls.insecure_skip_verify {
                return Err(
                    "tls.insecureSkipVerify: not supported with protocol grpc; give tls.caFile instead"
                        .into(),
                );
            }
        }
        if !endpoint.https && self.tls.is_set() {
            return Err(format!(
                "tls: settings are given but endpoint {:?} is plain http://; use https://",
                self.endpoint
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be positive".into());
        }
        if !(1..=9).contains(&self.compression_level) {
            return Err(format!(
                "compressionLevel: {} is not a gzip level (1 fastest .. 9 smallest)",
                self.compression_level
            ));
        }
        if self.max_points_per_request == 0 {
            return Err("maxPointsPerRequest: must be at least 1".into());
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => return Err("tls.certFile: needs tls.keyFile".into()),
            (None, Some(_)) => return Err("tls.keyFile: needs tls.certFile".into()),
            _ => {}
        }
        let r = &self.retry;
        if r.enabled {
            if r.initial_interval.is_zero() {
                return Err("retry.initialInterval: must be positive".into());
            }
            if r.max_interval < r.initial_interval {
                return Err(format!(
                    "retry.maxInterval: {} is shorter than retry.initialInterval ({})",
                    humantime::format_duration(r.max_interval),
                    humantime::format_duration(r.initial_interval)
                ));
            }
            if r.max_elapsed_time.is_zero() {
                return Err(
                    "retry.maxElapsedTime: must be positive; use `enabled: false` for no retries"
                        .into(),
                );
            }
        }
        refuse_secret_headers_in_clear(&self.endpoint, &self.headers)?;
        for name in self.headers.keys() {
            let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            if !valid {
                return Err(format!("headers: {name:?} is not a valid header name"));
            }
            if self.protocol == Protocol::Grpc && name.to_ascii_lowercase().ends_with("-bin") {
                return Err(format!(
                    "headers: {name:?}: binary (-bin) metadata is not supported"
                ));
            }
        }
        Ok(())
    }

    /// The URL requests are posted to: the endpoint as given when it has a
    /// path, else with `/v1/metrics` appended, as the OTLP specification
    /// asks of a signal-independent endpoint.
    pub fn http_url(&self) -> Result<String, String> {
        let endpoint = Endpoint::parse(&self.endpoint)?;
        if endpoint.has_path() {
            Ok(self.endpoint.clone())
        } else {
            let base = self.endpoint.trim_end_matches('/');
            Ok(format!("{base}{HTTP_METRICS_PATH}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct File {
        exporters: Vec<ExporterConfig>,
    }

    fn parse(yaml: &str) -> Result<Vec<ExporterConfig>, String> {
        serde_yaml::from_str::<File>(yaml)
            .map(|f| f.exporters)
            .map_err(|e| e.to_string())
    }

    fn otlp(yaml: &str) -> OtlpConfig {
        let text = format!("exporters:\n  - name: x\n    otlp:\n{yaml}");
        match parse(&text).expect("parses").remove(0).kind {
            ExporterKind::Otlp(o) => o,
            other => panic!("not otlp: {other:?}"),
        }
    }

    fn otlp_error(yaml: &str) -> String {
        let text = format!("exporters:\n  - name: x\n    otlp:\n{yaml}");
        let mut exporters = match parse(&text) {
            Ok(e) => e,
            Err(e) => return e,
        };
        exporters
            .remove(0)
            .validate()
            .expect_err("should be invalid")
    }

    const SAMPLE: &str = r#"
exporters:
  - name: sink
    otlp:
      endpoint: http://127.0.0.1:4318
      protocol: http/protobuf
      headers:
        x-plain: abc
        x-tenant: 42
        authorization: {env: SINK_TOKEN}
        x-key: {file: secrets/key}
      compression: gzip
      timeout: 10s
      retry: {initialInterval: 1s, maxInterval: 30s, maxElapsedTime: 5m}
      maxPointsPerRequest: 10000
  - name: secure
    otlp:
      endpoint: https://collector:4317
      protocol: grpc
      compression: none
      retry: {enabled: false}
      tls: {caFile: ca.pem, certFile: /abs/client.pem, keyFile: client.key}
  - name: console
    stdout: {}
  - name: bare
    stdout:
"#;

    #[test]
    fn sample_parses() {
        let mut exporters = parse(SAMPLE).expect("sample parses");
        assert_eq!(exporters.len(), 4);
        for e in &exporters {
            e.validate().expect("sample is valid");
        }
        assert_eq!(exporters[0].name, "sink");
        let ExporterKind::Otlp(sink) = &exporters[0].kind else {
            panic!("sink is otlp")
        };
        assert_eq!(sink.protocol, Protocol::HttpProtobuf);
        assert_eq!(sink.compression, Compression::Gzip);
        assert_eq!(sink.timeout, Duration::from_secs(10));
        assert_eq!(sink.retry, RetryConfig::default());
        assert_eq!(sink.max_points_per_request, 10_000);
        assert_eq!(
            sink.headers.get("x-tenant"),
            Some(&HeaderValue::Value("42".into()))
        );
        assert_eq!(
            sink.headers.get("authorization"),
            Some(&HeaderValue::Env("SINK_TOKEN".into()))
        );
        assert_eq!(
            sink.http_url().as_deref(),
            Ok("http://127.0.0.1:4318/v1/metrics")
        );

        let ExporterKind::Otlp(secure) = &exporters[1].kind else {
            panic!("secure is otlp")
        };
        assert_eq!(secure.protocol, Protocol::Grpc);
        assert_eq!(secure.compression, Compression::None);
        assert!(!secure.retry.enabled);
        assert_eq!(secure.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            exporters[2].kind,
            ExporterKind::Stdout(StdoutConfig::default())
        );
        assert_eq!(
            exporters[3].kind,
            ExporterKind::Stdout(StdoutConfig::default())
        );

        for e in &mut exporters {
            e.resolve_paths(Path::new("/etc/km"));
        }
        let ExporterKind::Otlp(sink) = &exporters[0].kind else {
            unreachable!()
        };
        assert_eq!(
            sink.headers.get("x-key"),
            Some(&HeaderValue::File("/etc/km/secrets/key".into()))
        );
        let ExporterKind::Otlp(secure) = &exporters[1].kind else {
            unreachable!()
        };
        assert_eq!(
            secure.tls.ca_file.as_deref(),
            Some(Path::new("/etc/km/ca.pem"))
        );
        assert_eq!(
            secure.tls.cert_file.as_deref(),
            Some(Path::new("/abs/client.pem"))
        );
        assert_eq!(
            secure.tls.key_file.as_deref(),
            Some(Path::new("/etc/km/client.key"))
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("exporters:\n  - name: x\n    otlp:\n      endpoint: http://a:1\n      compresion: none\n")
            .expect_err("typo");
        assert!(e.contains("unknown field `compresion`"), "{e}");
        let e = parse("exporters:\n  - name: x\n    otpl:\n      endpoint: http://a:1\n")
            .expect_err("typo");
        assert!(e.contains("unknown field `otpl`"), "{e}");
        assert!(e.contains("`otlp`"), "lists the valid keys: {e}");
        let e = parse("exporters:\n  - name: x\n    otlp: {endpoint: 'http://a:1', retry: {maxElapsed: 1m}}\n")
            .expect_err("typo");
        assert!(e.contains("unknown field `maxElapsed`"), "{e}");
        let e = parse("exporters:\n  - name: x\n    otlp: {endpoint: 'http://a:1', headers: {a: {envv: X}}}\n")
            .expect_err("typo");
        assert!(e.contains("unknown field `envv`"), "{e}");
        let e = parse("exporters:\n  - name: x\n    stdout: {pretty: true}\n").expect_err("typo");
        assert!(e.contains("unknown field `pretty`"), "{e}");
    }

    #[test]
    fn kind_is_exactly_one() {
        let e = parse("exporters:\n  - name: x\n").expect_err("no kind");
        assert!(
            e.contains(
                "needs one of `otlp`, `stdout`, `prometheusRemoteWrite` or `prometheusScrape`"
            ),
            "{e}"
        );
        let e = parse("exporters:\n  - name: x\n    prometheusScrape:\n    stdout: {}\n")
            .expect_err("two kinds");
        assert!(e.contains("both `prometheusScrape` and `stdout`"), "{e}");
        let ok = parse("exporters:\n  - name: x\n    prometheusScrape:\n").unwrap();
        assert!(matches!(ok[0].kind, ExporterKind::PrometheusScrape(_)));
        let e =
            parse("exporters:\n  - name: x\n    stdout: {}\n    otlp: {endpoint: 'http://a:1'}\n")
                .expect_err("two kinds");
        assert!(e.contains("both `stdout` and `otlp`"), "{e}");
        let e = parse("exporters:\n  - stdout: {}\n").expect_err("no name");
        assert!(e.contains("missing field `name`"), "{e}");
        let e =
            parse("exporters:\n  - name: x\n    otlp: {protocol: grpc}\n").expect_err("endpoint");
        assert!(e.contains("missing field `endpoint`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = otlp_error("      endpoint: http://a:1\n      timeout: 10x\n");
        assert!(e.contains("invalid duration \"10x\""), "{e}");
        let e = otlp_error("      endpoint: http://a:1\n      retry: {maxInterval: soon}\n");
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        let e = otlp_error("      endpoint: http://a:1\n      protocol: http/xml\n");
        assert!(e.contains("http/xml"), "{e}");
        let e = otlp_error("      endpoint: http://a:1\n      compression: zstd\n");
        assert!(e.contains("zstd"), "{e}");
    }

    #[test]
    fn validate_checks_what_serde_cannot() {
        let cases = [
            ("      endpoint: ftp://a:1\n", "scheme \"ftp\""),
            ("      endpoint: a:4318\n", "endpoint"),
            (
                "      endpoint: http://a:1\n      timeout: 0s\n",
                "timeout: must be positive",
            ),
            (
                "      endpoint: http://a:1\n      maxPointsPerRequest: 0\n",
                "maxPointsPerRequest",
            ),
            (
                "      endpoint: https://a:1\n      tls: {certFile: c.pem}\n",
                "certFile: needs tls.keyFile",
            ),
            (
                "      endpoint: https://a:1\n      tls: {keyFile: k.pem}\n",
                "keyFile: needs tls.certFile",
            ),
            (
                "      endpoint: http://a:1\n      tls: {caFile: ca.pem}\n",
                "plain http://",
            ),
            (
                "      endpoint: http://a:1/x\n      protocol: grpc\n",
                "host and port only",
            ),
            (
                "      endpoint: https://a:1\n      protocol: grpc\n      tls: {insecureSkipVerify: true}\n",
                "insecureSkipVerify",
            ),
            (
                "      endpoint: http://a:1\n      retry: {initialInterval: 10s, maxInterval: 1s}\n",
                "maxInterval",
            ),
            (
                "      endpoint: http://a:1\n      headers: {'bad header': x}\n",
                "bad header",
            ),
            (
                "      endpoint: http://collector.monitoring:4318\n      headers: {DD-API-KEY: abc}\n",
                "headers.DD-API-KEY: a header named like a credential: not sent over plain http://",
            ),
            (
                "      endpoint: http://10.0.0.7:4317\n      protocol: grpc\n      headers: {x-tenant: {env: TENANT}}\n",
                "headers.x-tenant: a header read from `env` (a secret): not sent over plain http:// to `10.0.0.7`",
            ),
        ];
        for (yaml, expected) in cases {
            let e = otlp_error(yaml);
            assert!(e.contains(expected), "{yaml}: {e}");
            assert!(e.starts_with("otlp."), "{e}");
        }
        let e = ExporterConfig {
            name: "c".into(),
            kind: ExporterKind::Stdout(StdoutConfig {
                max_points_per_request: 0,
            }),
            resource_attributes: BTreeMap::new(),
        }
        .validate()
        .expect_err("zero points");
        assert!(e.contains("maxPointsPerRequest"), "{e}");
    }

    #[test]
    fn plain_http_takes_secrets_only_to_loopback() {
        let ok = |yaml: &str| {
            let text = format!("exporters:\n  - name: x\n    otlp:\n{yaml}");
            parse(&text).expect("parses")[0]
                .validate()
                .unwrap_or_else(|e| panic!("{yaml}: {e}"));
        };
        // Loopback does not leave the machine; https protects the rest.
        ok("      endpoint: http://127.0.0.1:4318\n      headers: {Authorization: {env: T}}\n");
        ok("      endpoint: http://localhost:4318\n      headers: {DD-API-KEY: {file: k}}\n");
        ok("      endpoint: https://collector:4318\n      headers: {DD-API-KEY: {file: k}}\n");
        // A header that is no secret may cross a cluster network in clear.
        ok("      endpoint: http://mimir:9009/otlp\n      headers: {X-Scope-OrgID: team-a}\n");
    }

    #[test]
    fn http_url_appends_the_metrics_path_only_without_a_path() {
        let url = |endpoint: &str| {
            otlp(&format!("      endpoint: {endpoint}\n"))
                .http_url()
                .expect("valid")
        };
        assert_eq!(url("http://a:4318"), "http://a:4318/v1/metrics");
        assert_eq!(url("http://a:4318/"), "http://a:4318/v1/metrics");
        assert_eq!(
            url("https://a/otlp/v1/metrics"),
            "https://a/otlp/v1/metrics"
        );
        assert_eq!(url("https://a/custom"), "https://a/custom");
    }

    #[test]
    fn header_values_resolve() {
        let dir = std::env::temp_dir().join(format!("km-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\r\n").expect("write");
        assert_eq!(
            HeaderValue::File(file.clone()).resolve("authorization"),
            Ok("s3cret".to_string())
        );
        let e = HeaderValue::File(dir.join("absent"))
            .resolve("x-key")
            .expect_err("missing file");
        assert!(
            e.contains("header \"x-key\"") && e.contains("absent"),
            "{e}"
        );
        let e = HeaderValue::Env("KM_TEST_SURELY_MISSING_VARIABLE".into())
            .resolve("authorization")
            .expect_err("missing variable");
        assert!(
            e.contains("header \"authorization\"") && e.contains("KM_TEST_SURELY_MISSING_VARIABLE"),
            "{e}"
        );
        assert_eq!(
            format!("{:?}", HeaderValue::Value("hunter2".into())),
            "Value(<redacted>)"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
