//! The outbound HTTP policy, end to end through `kusto-metrics run --once`:
//! an OTLP/HTTP or remote-write endpoint that answers 307 or 308 to another
//! origin never hands that server the configured headers (and the export
//! fails, saying why), while a redirect within the origin, or one without
//! configured headers, is still followed; and a secret header over plain
//! http to a network host is refused at config load, naming the exporter
//! and the header.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// One request as a test server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// An HTTP server on a loopback port that records every request and
/// answers each with `status` (and `location`, when given).
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(rt: &tokio::runtime::Runtime, status: u16, location: Option<String>) -> Server {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                let location = location.clone();
                async move {
                    record.lock().unwrap().push(Seen {
                        path: uri.path().to_string(),
                        headers,
                        body_len: body.len(),
                    });
                    let mut response = axum::response::Response::new(axum::body::Body::empty());
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    if let Some(l) = location {
                        response
                            .headers_mut()
                            .insert(http::header::LOCATION, l.parse().unwrap());
                    }
                    response
                }
            },
        );
        rt.spawn(async move { axum::serve(listener, app).await });
        Server { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A local deployment with one table of two rows and one MetricsExporter
/// sending to the exporter `sink` that `exporter_yaml` configures.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(exporter_yaml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
        std::fs::write(
            dir.path().join("kusto-metrics.yaml"),
            format!(
                "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nguests:\n  cacheDir: cache\nexporters:\n  - name: sink\n{exporter_yaml}"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("manifests/all.yaml"),
            "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {name: r, namespace: team-a, labels: {a: b}}\nspec: {database: DB, table: T, body: \"T\", interval: 5m}\n---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: e, namespace: team-a}\nspec:\n  summaryRuleSelector: {matchLabels: {a: b}}\n  exporters: [sink]\n  interval: 1m\n  transform:\n    metricNameColumn: metric_name\n    valueColumn: v\n    timestampColumn: t\n    labelColumns: [host]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tables/DB/T.csv"),
            "metric_name:string,v:long,t:datetime,host:string\nm,1,2025-06-25T10:00:00Z,h\nm,2,2025-06-25T10:00:01Z,h\n",
        )
        .unwrap();
        Setup { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("kusto-metrics.yaml")
    }

    fn run_once(&self) -> Output {
        Command::new(common::bin())
            .args(["run", "--once", "--config"])
            .arg(self.config())
            .env("KM_TEST_DD_KEY", "dd-secret-value")
            .output()
            .unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SECRET_HEADERS: &str =
    "      headers: {DD-API-KEY: {env: KM_TEST_DD_KEY}, X-Tenant: team-a}\n";
const NO_RETRY: &str = "      timeout: 2s\n      retry: {enabled: false}\n";

fn otlp(endpoint: &str, headers: &str) -> String {
    format!("    otlp:\n      endpoint: {endpoint}\n{headers}{NO_RETRY}")
}

fn remote_write(endpoint: &str, headers: &str) -> String {
    format!("    prometheusRemoteWrite:\n      endpoint: {endpoint}\n{headers}{NO_RETRY}")
}

/// No header the exporter was configured with reached `server`.
fn assert_no_configured_header(server: &Server) {
    for s in server.seen() {
        assert!(
            !s.headers.contains_key("dd-api-key") && !s.headers.contains_key("x-tenant"),
            "the other origin saw a configured header: {s:?}"
        );
    }
}

#[test]
fn configured_headers_never_follow_a_redirect_to_another_origin() {
    let rt = runtime();
    for status in [307, 308] {
        for (kind, path, make) in [
            ("otlp", "/v1/metrics", otlp as fn(&str, &str) -> String),
            ("prometheusRemoteWrite", "/api/v1/write", remote_write),
        ] {
            // Another origin: localhost instead of 127.0.0.1, another port.
            let elsewhere = Server::start(&rt, 200, None);
            let target = format!("http://localhost:{}{path}", elsewhere.port());
            let redirector = Server::start(&rt, status, Some(target.clone()));
            let endpoint = format!("http://127.0.0.1:{}{path}", redirector.port());
            let setup = Setup::new(&make(&endpoint, SECRET_HEADERS));
            let out = setup.run_once();
            let err = stderr(&out);
            assert!(
                !out.status.success(),
                "{kind} {status}: the export must fail\n{err}"
            );
            assert_eq!(
                redirector.seen().len(),
                1,
                "{kind} {status}: one attempt\n{err}"
            );
            assert_eq!(
                redirector.seen()[0].headers["dd-api-key"],
                "dd-secret-value",
                "the configured origin gets the header"
            );
            assert!(
                elsewhere.seen().is_empty(),
                "{kind} {status}: the other origin was contacted: {:?}",
                elsewhere.seen()
            );
            assert_no_configured_header(&elsewhere);
            assert!(
                err.contains(&format!("HTTP {status}"))
                    && err.contains(&format!("http://localhost:{}", elsewhere.port()))
                    && err.contains("another origin"),
                "{kind} {status}: the error says a redirect to another origin was refused\n{err}"
            );
            assert!(
                !err.contains("dd-secret-value"),
                "no secret in the log\n{err}"
            );
        }
    }
}

#[test]
fn redirects_within_the_origin_or_without_headers_are_still_followed() {
    let rt = runtime();
    for (kind, path, make) in [
        ("otlp", "/v1/metrics", otlp as fn(&str, &str) -> String),
        ("prometheusRemoteWrite", "/api/v1/write", remote_write),
    ] {
        // Without configured headers, another origin is fine: there is
        // nothing to leak, and the data arrives.
        let elsewhere = Server::start(&rt, 200, None);
        let redirector = Server::start(
            &rt,
            307,
            Some(format!("http://localhost:{}{path}", elsewhere.port())),
        );
        let setup = Setup::new(&make(
            &format!("http://127.0.0.1:{}{path}", redirector.port()),
            "",
        ));
        let out = setup.run_once();
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let seen = elsewhere.seen();
        assert_eq!(seen.len(), 1, "{kind}: followed to the other origin");
        assert_eq!(seen[0].path, path);
        assert!(seen[0].body_len > 0, "{kind}: the body was resent");
    }
    // With headers, a redirect on the same origin (scheme, host, port) is
    // followed and keeps them.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let moved = uri.path() == "/v1/metrics";
                record.lock().unwrap().push(Seen {
                    path: uri.path().to_string(),
                    headers,
                    body_len: body.len(),
                });
                let mut response = axum::response::Response::new(axum::body::Body::empty());
                if moved {
                    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
                    response
                        .headers_mut()
                        .insert(http::header::LOCATION, "/otlp/v1/metrics".parse().unwrap());
                }
                response
            }
        },
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    let setup = Setup::new(&otlp(&format!("http://127.0.0.1:{port}"), SECRET_HEADERS));
    let out = setup.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/v1/metrics", "/otlp/v1/metrics"]);
    assert_eq!(seen[1].headers["dd-api-key"], "dd-secret-value");
    assert_eq!(seen[1].headers["x-tenant"], "team-a");
}

#[test]
fn a_secret_header_over_plain_http_to_a_network_host_is_refused_at_load() {
    let rt = runtime();
    // A real server the request could reach, if it were ever sent.
    let server = Server::start(&rt, 200, None);
    for (exporter, key) in [
        (
            otlp(
                "http://collector.example:4318",
                "      headers: {DD-API-KEY: abc}\n",
            ),
            "otlp.headers.DD-API-KEY",
        ),
        (
            format!(
                "    otlp:\n      endpoint: http://10.255.0.1:4317\n      protocol: grpc\n      headers: {{X-Tenant: {{env: KM_TEST_DD_KEY}}}}\n{NO_RETRY}"
            ),
            "otlp.headers.X-Tenant",
        ),
        (
            remote_write(
                "http://mimir.example:9009/api/v1/push",
                "      headers: {X-Scope-OrgID: {file: tenant}}\n",
            ),
            "prometheusRemoteWrite.headers.X-Scope-OrgID",
        ),
    ] {
        let setup = Setup::new(&exporter);
        let out = setup.run_once();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("exporters[0] (sink): {key}:"))
                && err.contains("not sent over plain http://")
                && err.contains("use https://"),
            "the message names the exporter and the header: {err}"
        );
    }
    // The same headers to loopback, or inline and no credential, load.
    let setup = Setup::new(&otlp(
        &format!("http://127.0.0.1:{}", server.port()),
        "      headers: {DD-API-KEY: {env: KM_TEST_DD_KEY}}\n",
    ));
    let out = setup.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.seen().len(), 1);
}
