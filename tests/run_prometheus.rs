//! Prometheus as a destination, end to end: the real binary reading local
//! tables and writing to a real Prometheus (Debian's package) by remote
//! write, or serving `/exported/metrics` for a real Prometheus to scrape;
//! what arrived is read back through Prometheus' query API.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::prometheus::{Mode, Prometheus, free_port};
use common::receiver::http_request;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// RFC 3339 with milliseconds.
fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(exporters_yaml: &str, server: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
        std::fs::write(
            dir.path().join("kusto-metrics.yaml"),
            format!(
                "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nreloadInterval: 200ms\nminInterval: 100ms\nguests:\n  cacheDir: cache\n{server}exporters:\n{exporters_yaml}"
            ),
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn manifest(&self, file: &str, text: &str) {
        std::fs::write(self.path("manifests").join(file), text).unwrap();
    }

    fn table(&self, name: &str, header: &str, rows: &[String]) {
        use std::io::Write;
        let path = self.path("tables/DB").join(format!("{name}.csv"));
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        if new {
            writeln!(f, "{header}").unwrap();
        }
        for r in rows {
            writeln!(f, "{r}").unwrap();
        }
    }

    fn run_once(&self) -> Output {
        Command::new(common::bin())
            .args(["run", "--once", "--config"])
            .arg(self.path("kusto-metrics.yaml"))
            .output()
            .unwrap()
    }

    fn spawn(&self) -> Host {
        Host(
            Command::new(common::bin())
                .args(["run", "--config"])
                .arg(self.path("kusto-metrics.yaml"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// A running host; killed on drop.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rule(name: &str, table: &str) -> String {
    format!(
        "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: {name}, namespace: ns, labels: {{export: {name}}}}}\nspec: {{database: DB, table: {table}, body: \"T\", interval: 5m}}\n"
    )
}

fn exporter(name: &str, rule: &str, sinks: &str, transform: &str) -> String {
    format!(
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{export: {rule}}}}}\n  exporters: [{sinks}]\n  interval: 1s\n  transform:\n{transform}"
    )
}

fn remote_write(name: &str, endpoint: &str) -> String {
    format!(
        "  - name: {name}\n    prometheusRemoteWrite:\n      endpoint: {endpoint}\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 2s}}\n      maxSamplesPerRequest: 3\n"
    )
}

const LATENCY_HEADER: &str = "metric_name:string,v:real,t:datetime,host.name:string";
const LATENCY: &str = "    metricNameColumn: metric_name\n    valueColumn: v\n    timestampColumn: t\n    labelColumns: [host.name]\n    unit: ms\n    description: Request latency\n";
const REQUESTS_HEADER: &str = "n:long,t:datetime,route:string";
const REQUESTS: &str = "    defaultMetricName: requests\n    valueColumn: n\n    timestampColumn: t\n    labelColumns: [route]\n    kind: sum\n    monotonic: true\n    temporality: cumulative\n";

fn latency_rows(first_ms: i64, n: i64) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "http.server.duration,{}.5,{},web-{}",
                100 + i,
                rfc3339(first_ms + i * 10_000),
                i % 2
            )
        })
        .collect()
}

/// Labels every remote-written series carries besides its own.
fn written_labels(name: &str, own: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("__name__".into(), json!(name));
    m.insert("job".into(), json!("adx-mon-metrics-exporter"));
    m.insert(
        "otel_scope_name".into(),
        json!("adx-mon.azure.com/metrics-exporter"),
    );
    m.insert("otel_scope_version".into(), json!("v1"));
    for (k, v) in own {
        m.insert(k.to_string(), json!(v));
    }
    Value::Object(m)
}

#[test]
fn remote_write_lands_with_exact_names_labels_values_and_timestamps() {
    let prometheus = Prometheus::start(Mode::RemoteWrite);
    let s = Setup::new(&remote_write("prom", &prometheus.write_url()), "");
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "prom", LATENCY)
        ),
    );
    s.manifest(
        "requests.yaml",
        &format!(
            "{}---\n{}",
            rule("requests", "Requests"),
            exporter("requests", "requests", "prom", REQUESTS)
        ),
    );
    let t0 = now_ms() - 5 * 60_000 + 123;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 5));
    s.table(
        "Requests",
        REQUESTS_HEADER,
        &[
            format!("10,{},/a", rfc3339(t0)),
            format!("25,{},/a", rfc3339(t0 + 60_000)),
            format!("9007199254740993,{},/b", rfc3339(t0)),
        ],
    );
    ok(&s.run_once());
    let at = (now_ms() as f64) / 1000.0;
    let latency = prometheus.wait_for_series("http_server_duration_milliseconds", 2, 600, at, WAIT);
    assert_eq!(
        latency,
        vec![
            (
                written_labels(
                    "http_server_duration_milliseconds",
                    &[("host_name", "web-0")]
                ),
                vec![(t0, 100.5), (t0 + 20_000, 102.5), (t0 + 40_000, 104.5)]
            ),
            (
                written_labels(
                    "http_server_duration_milliseconds",
                    &[("host_name", "web-1")]
                ),
                vec![(t0 + 10_000, 101.5), (t0 + 30_000, 103.5)]
            ),
        ],
        "a unit suffix, a sanitized label, millisecond timestamps"
    );
    let requests = prometheus.wait_for_series("requests_total", 2, 600, at, WAIT);
    assert_eq!(
        requests,
        vec![
            (
                written_labels("requests_total", &[("route", "/a")]),
                vec![(t0, 10.0), (t0 + 60_000, 25.0)]
            ),
            // Prometheus samples are doubles: 2^53 + 1 arrives as 2^53.
            (
                written_labels("requests_total", &[("route", "/b")]),
                vec![(t0, 9007199254740992.0)]
            ),
        ],
        "an integer sum becomes a counter with `_total`"
    );
    // A second run sends nothing again; appended rows go out.
    ok(&s.run_once());
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[format!(
            "http.server.duration,7,{},web-0",
            rfc3339(t0 + 50_000)
        )],
    );
    ok(&s.run_once());
    let web0 = prometheus.samples(
        "http_server_duration_milliseconds{host_name=\"web-0\"}",
        600,
        at + 1.0,
    );
    assert_eq!(
        web0[0].1,
        vec![
            (t0, 100.5),
            (t0 + 20_000, 102.5),
            (t0 + 40_000, 104.5),
            (t0 + 50_000, 7.0)
        ]
    );
}

#[test]
fn a_prometheus_that_is_down_then_up_gets_everything() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}/api/v1/write");
    let s = Setup::new(&remote_write("prom", &endpoint), "");
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "prom", LATENCY)
        ),
    );
    let t0 = now_ms() - 60_000;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 4));
    let down = s.run_once();
    assert!(!down.status.success(), "nobody listening: the run fails");
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains("export run failed") && err.contains("cannot reach"),
        "{err}"
    );
    let prometheus = Prometheus::start_on(port, Mode::RemoteWrite);
    ok(&s.run_once());
    let at = (now_ms() as f64) / 1000.0;
    let series = prometheus.wait_for_series("http_server_duration_milliseconds", 2, 600, at, WAIT);
    let total: usize = series.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(total, 4, "nothing lost: {series:?}");
}

#[test]
fn a_refused_sample_is_left_out_named_and_the_good_ones_beside_it_land() {
    let prometheus = Prometheus::start(Mode::RemoteWrite);
    let s = Setup::new(&remote_write("prom", &prometheus.write_url()), "");
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "prom", LATENCY)
        ),
    );
    let t0 = now_ms() - 60_000;
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[format!("http.server.duration,1,{},web-0", rfc3339(t0))],
    );
    ok(&s.run_once());
    // In one request: a sample older than what Prometheus holds for the
    // series (out of order, HTTP 400) between two it takes.
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[
            format!("http.server.duration,2,{},web-1", rfc3339(t0)),
            format!("http.server.duration,3,{},web-0", rfc3339(t0 - 30_000)),
            format!("http.server.duration,4,{},web-0", rfc3339(t0 + 10_000)),
        ],
    );
    let out = s.run_once();
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 400")
            && err.contains("out of order")
            && err.contains("rejected_samples=1"),
        "the server's reason is named: {err}"
    );
    assert!(err.contains("points_rejected=1"), "{err}");
    assert!(
        !err.contains("gave up after"),
        "a 400 is not retried: {err}"
    );
    let at = (now_ms() as f64) / 1000.0;
    let series = prometheus.samples("http_server_duration_milliseconds", 600, at);
    assert_eq!(
        series[0].1,
        vec![(t0, 1.0), (t0 + 10_000, 4.0)],
        "web-0: the good one landed, the refused one is out"
    );
    assert_eq!(series[1].1, vec![(t0, 2.0)], "web-1");
    // Progress moved: the next run sends nothing again.
    ok(&s.run_once());
    let later = String::from_utf8_lossy(&s.run_once().stderr).to_string();
    assert!(!later.contains("refused"), "{later}");
}

#[test]
fn the_spec_use_cases_arrive_by_remote_write() {
    let prometheus = Prometheus::start(Mode::RemoteWrite);
    let quickstart = common::root().join("examples/quickstart");
    let names = [
        "prometheus",
        "datadog",
        "custom-analytics-endpoint",
        "grafana-cloud",
        "central-prometheus",
    ];
    let exporters: String = names
        .iter()
        .map(|n| remote_write(n, &prometheus.write_url()))
        .collect();
    let s = Setup::new(&exporters, "");
    for entry in std::fs::read_dir(quickstart.join("manifests")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), s.path("manifests").join(entry.file_name())).unwrap();
    }
    // The quickstart's rows, moved to the last hour (Prometheus refuses
    // samples far older than what it holds).
    let shift_to = now_ms() - 30 * 60_000;
    let shift = |text: &str| -> String {
        let mut out = text.to_string();
        for minute in 0..60 {
            let old = format!("2025-06-25T10:{minute:02}:00Z");
            let new = humantime::format_rfc3339_seconds(
                UNIX_EPOCH
                    + Duration::from_millis((shift_to / 1000 * 1000 + minute * 60_000) as u64),
            )
            .to_string();
            out = out.replace(&old, &new);
        }
        out
    };
    for db in std::fs::read_dir(quickstart.join("tables")).unwrap() {
        let db = db.unwrap();
        let target = s.path("tables").join(db.file_name());
        std::fs::create_dir_all(&target).unwrap();
        for t in std::fs::read_dir(db.path()).unwrap() {
            let t = t.unwrap();
            let text = std::fs::read_to_string(t.path()).unwrap();
            std::fs::write(target.join(t.file_name()), shift(&text)).unwrap();
        }
    }
    ok(&s.run_once());
    let at = (now_ms() as f64) / 1000.0;
    let start = shift_to / 1000 * 1000;
    let response = prometheus.wait_for_series("service_response_time_avg", 1, 3600, at, WAIT);
    assert_eq!(response[0].0["ServiceName"], "api-gateway");
    assert_eq!(response[0].0["Environment"], "production");
    assert_eq!(
        response[0].1[..2],
        [(start, 245.7), (start + 60_000, 251.2)]
    );
    // Unit "1" on a gauge: `_ratio`.
    let premium =
        prometheus.wait_for_series("customer_success_rate_premium_ratio", 1, 3600, at, WAIT);
    assert_eq!(premium[0].0["Numerator"], "2456");
    assert_eq!(premium[0].0["AvgLatency"], "145.3");
    assert_eq!(premium[0].1, vec![(start, 0.987)]);
    let cpu = prometheus.wait_for_series("node_cpu_percent", 2, 3600, at, WAIT);
    assert!(
        cpu.iter().all(|(l, _)| l["NodeName"] != "dev-node"),
        "development is left out: {cpu:?}"
    );
    prometheus.wait_for_series("node_memory_percent", 1, 3600, at, WAIT);
    let global = prometheus.wait_for_series("global_error_count", 1, 3600, at, WAIT);
    assert!(
        global
            .iter()
            .any(|(l, v)| l["Region"] == "eastus" && v[0] == (start, 42.0)),
        "{global:?}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_latest_points() {
    let port = free_port();
    let s = Setup::new(
        "  - name: scrape\n    prometheusScrape: {}\n",
        &format!("server: {{listen: 127.0.0.1:{port}}}\n"),
    );
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "scrape", LATENCY)
        ),
    );
    s.manifest(
        "requests.yaml",
        &format!(
            "{}---\n{}",
            rule("requests", "Requests"),
            exporter("requests", "requests", "scrape", REQUESTS)
        ),
    );
    let t0 = now_ms() - 2 * 60_000;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 4));
    s.table(
        "Requests",
        REQUESTS_HEADER,
        &[
            format!("10,{},/a", rfc3339(t0)),
            format!("12,{},/a", rfc3339(t0 + 1000)),
        ],
    );
    let _host = s.spawn();
    let prometheus = Prometheus::start(Mode::Scrape {
        target: format!("127.0.0.1:{port}"),
        path: "/exported/metrics".into(),
        bearer_file: None,
    });
    let at = (now_ms() as f64) / 1000.0 + 30.0;
    let instance = format!("127.0.0.1:{port}");
    let scraped_labels = |name: &str, own: &[(&str, &str)]| {
        let mut m = serde_json::Map::new();
        m.insert("__name__".into(), json!(name));
        m.insert("job".into(), json!("kusto-metrics"));
        m.insert("instance".into(), json!(instance));
        m.insert(
            "otel_scope_name".into(),
            json!("adx-mon.azure.com/metrics-exporter"),
        );
        m.insert("otel_scope_version".into(), json!("v1"));
        for (k, v) in own {
            m.insert(k.to_string(), json!(v));
        }
        Value::Object(m)
    };
    let latency = prometheus.wait_for_series("http_server_duration_milliseconds", 2, 600, at, WAIT);
    // The latest point of each series, with its own timestamp.
    assert_eq!(
        latency,
        vec![
            (
                scraped_labels(
                    "http_server_duration_milliseconds",
                    &[("host_name", "web-0")]
                ),
                vec![(t0 + 20_000, 102.5)]
            ),
            (
                scraped_labels(
                    "http_server_duration_milliseconds",
                    &[("host_name", "web-1")]
                ),
                vec![(t0 + 30_000, 103.5)]
            ),
        ]
    );
    let requests = prometheus.wait_for_series("requests_total", 1, 600, at, WAIT);
    assert_eq!(
        requests,
        vec![(
            scraped_labels("requests_total", &[("route", "/a")]),
            vec![(t0 + 1000, 12.0)]
        )]
    );
    // A newer row is scraped too, and the older points stay.
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[format!(
            "http.server.duration,9,{},web-1",
            rfc3339(t0 + 45_000)
        )],
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let web1 = prometheus.samples(
            "http_server_duration_milliseconds{host_name=\"web-1\"}",
            600,
            at,
        );
        if web1[0].1 == vec![(t0 + 30_000, 103.5), (t0 + 45_000, 9.0)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{web1:?}\n{}",
            prometheus.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The text format for anyone who does not ask for OpenMetrics.
    let text = http_request(&instance, "GET", "/exported/metrics", &[], b"").unwrap();
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        text.text().contains("# TYPE requests_total counter\n"),
        "{}",
        text.text()
    );
    let om = http_request(
        &instance,
        "GET",
        "/exported/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
        b"",
    )
    .unwrap();
    assert!(
        om.text().contains("# TYPE requests counter\n") && om.text().ends_with("# EOF\n"),
        "{}",
        om.text()
    );
}

#[test]
fn scraped_series_go_stale_and_their_number_is_bounded() {
    let port = free_port();
    let s = Setup::new(
        "  - name: scrape\n    prometheusScrape: {staleAfter: 3s, maxSeries: 2}\n",
        &format!("server: {{listen: 127.0.0.1:{port}}}\n"),
    );
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "scrape", LATENCY)
        ),
    );
    let t0 = now_ms() - 60_000;
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[
            format!("a,1,{},h", rfc3339(t0)),
            format!("b,2,{},h", rfc3339(t0)),
            format!("c,3,{},h", rfc3339(t0)),
        ],
    );
    let _host = s.spawn();
    let addr = format!("127.0.0.1:{port}");
    let get = |path: &str| {
        http_request(&addr, "GET", path, &[], b"")
            .map(|r| r.text())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !get("/exported/metrics").contains("_milliseconds{") {
        assert!(std::time::Instant::now() < deadline, "nothing served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = get("/exported/metrics");
    let samples = served.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples, 2, "at most maxSeries: {served}");
    let own = get("/metrics");
    assert!(
        own.contains("kusto_metrics_scrape_series_refused_total{exporter=\"scrape\"} 1"),
        "{own}"
    );
    assert!(
        own.contains("kusto_metrics_scrape_series{exporter=\"scrape\"} 2"),
        "{own}"
    );
    // Nothing new arrives: after staleAfter the series are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get("/exported/metrics").contains("_milliseconds{") {
        assert!(std::time::Instant::now() < deadline, "stale series stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_scrape_token_guards_the_exported_paths_and_a_real_prometheus_sends_it() {
    let port = free_port();
    let s = Setup::new(
        "  - name: scrape\n    prometheusScrape: {}\n",
        &format!("server: {{listen: 127.0.0.1:{port}, scrapeToken: {{file: scrape-token}}}}\n"),
    );
    std::fs::write(s.path("scrape-token"), "s3cret\n").unwrap();
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "scrape", LATENCY)
        ),
    );
    let t0 = now_ms() - 60_000;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 2));
    let _host = s.spawn();
    let addr = format!("127.0.0.1:{port}");
    let get = |path: &str, headers: &[(&str, &str)]| loop {
        if let Ok(r) = http_request(&addr, "GET", path, headers, b"") {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let refused = get("/exported/metrics", &[]);
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert!(
        !refused.text().contains("http_server"),
        "{}",
        refused.text()
    );
    assert_eq!(
        get("/exported/metrics", &[("Authorization", "Bearer guess")]).status,
        401
    );
    for open in ["/metrics", "/healthz"] {
        assert_eq!(get(open, &[]).status, 200, "{open} stays open");
    }
    let deadline = std::time::Instant::now() + WAIT;
    while !get("/exported/metrics", &[("Authorization", "Bearer s3cret")])
        .text()
        .contains("http_server_duration_milliseconds{")
    {
        assert!(std::time::Instant::now() < deadline, "nothing served");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Prometheus with `authorization: {type: Bearer, credentials_file: ...}`.
    let prometheus = Prometheus::start(Mode::Scrape {
        target: addr.clone(),
        path: "/exported/metrics".into(),
        bearer_file: Some(s.path("scrape-token")),
    });
    let at = (now_ms() as f64) / 1000.0 + 30.0;
    let latency = prometheus.wait_for_series("http_server_duration_milliseconds", 2, 600, at, WAIT);
    assert_eq!(latency.len(), 2, "{latency:?}");
}

#[test]
fn a_family_another_metrics_exporter_serves_refuses_only_the_newcomer() {
    let port = free_port();
    let s = Setup::new(
        "  - name: scrape\n    prometheusScrape: {}\n",
        &format!("server: {{listen: 127.0.0.1:{port}}}\n"),
    );
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "scrape", LATENCY)
        ),
    );
    let t0 = now_ms() - 60_000;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 2));
    s.table(
        "Requests",
        REQUESTS_HEADER,
        &[format!("10,{},/a", rfc3339(t0))],
    );
    let log = s.path("host.log");
    let _host = Host(
        Command::new(common::bin())
            .args(["run", "--config"])
            .arg(s.path("kusto-metrics.yaml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let get = |path: &str| {
        http_request(&addr, "GET", path, &[], b"")
            .map(|r| r.text())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !get("/exported/metrics").contains("http_server_duration_milliseconds{") {
        assert!(std::time::Instant::now() < deadline, "nothing served");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another team's exporter names the same family (a gauge with the same
    // name and unit).
    s.manifest(
        "copycat.yaml",
        &format!(
            "{}---\n{}",
            rule("requests", "Requests"),
            exporter(
                "copycat",
                "requests",
                "scrape",
                "    defaultMetricName: http.server.duration\n    valueColumn: n\n    timestampColumn: t\n    labelColumns: [route]\n    unit: ms\n"
            )
        ),
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !get("/metrics")
        .contains("kusto_metrics_scrape_updates_refused_total{exporter=\"scrape\"}")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = get("/exported/metrics");
    assert!(
        !served.contains("route=") && served.contains("host_name=\"web-1\""),
        "the first exporter's family, as it was: {served}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("family `http_server_duration_milliseconds` (a gauge) is served for MetricsExporter ns/latency; MetricsExporter ns/copycat cannot serve a family of that name too"),
        "{text}"
    );
    // The first one keeps exporting.
    s.table(
        "Latency",
        LATENCY_HEADER,
        &[format!(
            "http.server.duration,7,{},web-1",
            rfc3339(t0 + 50_000)
        )],
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !get("/exported/metrics").contains("host_name=\"web-1\",otel_scope_name=\"adx-mon.azure.com/metrics-exporter\",otel_scope_version=\"v1\"} 7 ") {
        assert!(std::time::Instant::now() < deadline, "{}", get("/exported/metrics"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

const SENT_HEADER: &str = "n:long,t:datetime,route:string";
const SENT: &str = "    defaultMetricName: sent\n    valueColumn: n\n    timestampColumn: t\n    labelColumns: [route]\n    kind: sum\n    monotonic: true\n    temporality: delta\n";

fn sent_row(n: i64, ms: i64, route: &str) -> String {
    format!("{n},{},{route}", rfc3339(ms))
}

/// Waits until `f` gives `Some`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The samples of `selector` once they are `want`, failing with what
/// Prometheus holds after `WAIT`.
fn wait_for_samples(prometheus: &Prometheus, selector: &str, want: &[(i64, f64)]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let at = (now_ms() as f64) / 1000.0;
        let got = prometheus.samples(selector, 600, at);
        if got.len() == 1 && got[0].1 == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{selector}: want {want:?}, got {got:?}\n{}",
            prometheus.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of one line of the host's own `/metrics`.
fn own_metric(addr: &str, line_start: &str) -> Option<f64> {
    let text = http_request(addr, "GET", "/metrics", &[], b"").ok()?.text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

fn sent_setup(exporters: &str, port: u16) -> Setup {
    let s = Setup::new(
        exporters,
        &format!("server: {{listen: 127.0.0.1:{port}}}\n"),
    );
    s.manifest(
        "sent.yaml",
        &format!(
            "{}---\n{}",
            rule("sent", "Sent"),
            exporter(
                "sent",
                "sent",
                exporters
                    .trim_start()
                    .strip_prefix("- name: ")
                    .and_then(|r| r.lines().next())
                    .unwrap(),
                SENT
            )
        ),
    );
    s
}

#[test]
fn a_delta_sum_arrives_by_remote_write_as_a_counter_of_its_running_total() {
    let prometheus = Prometheus::start(Mode::RemoteWrite);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = sent_setup(&remote_write("prom", &prometheus.write_url()), port);
    let t0 = now_ms() - 2 * 60_000;
    s.table("Sent", SENT_HEADER, &[sent_row(3, t0, "/a")]);
    let host = s.spawn();
    wait_for_samples(&prometheus, "sent_total", &[(t0, 3.0)]);
    // The next run adds its delta to the total.
    s.table("Sent", SENT_HEADER, &[sent_row(4, t0 + 10_000, "/a")]);
    wait_for_samples(&prometheus, "sent_total", &[(t0, 3.0), (t0 + 10_000, 7.0)]);
    let meta = prometheus.query("sent_total", (now_ms() as f64) / 1000.0);
    assert_eq!(meta[0]["metric"]["route"], "/a");
    // A row older than the last delta applied: left out and counted, not
    // added.
    s.table("Sent", SENT_HEADER, &[sent_row(100, t0 + 5_000, "/a")]);
    let dropped =
        "kusto_metrics_prometheus_delta_points_dropped_total{exporter=\"prom\",reason=\"late\"} ";
    wait_for("the late point counted", WAIT, || {
        own_metric(&addr, dropped).filter(|v| *v == 1.0)
    });
    assert_eq!(
        own_metric(
            &addr,
            "kusto_metrics_prometheus_delta_points_converted_total{exporter=\"prom\"} "
        ),
        Some(2.0)
    );
    assert_eq!(
        own_metric(
            &addr,
            "kusto_metrics_prometheus_delta_series{exporter=\"prom\"} "
        ),
        Some(1.0)
    );
    // After a restart the total starts again from 0: a counter reset.
    drop(host);
    let _host = s.spawn();
    s.table("Sent", SENT_HEADER, &[sent_row(5, t0 + 20_000, "/a")]);
    wait_for_samples(
        &prometheus,
        "sent_total",
        &[(t0, 3.0), (t0 + 10_000, 7.0), (t0 + 20_000, 5.0)],
    );
    // Prometheus takes the drop as a reset: 4 after 3, then 5 from 0.
    let at = (t0 + 20_000) as f64 / 1000.0;
    let resets = prometheus.query("resets(sent_total[1m])", at);
    assert_eq!(resets[0]["value"][1], "1", "{resets:?}");
}

#[test]
fn a_failed_remote_write_sent_again_does_not_count_its_deltas_twice() {
    let mut prometheus = Prometheus::start(Mode::RemoteWrite);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = sent_setup(&remote_write("prom", &prometheus.write_url()), port);
    let t0 = now_ms() - 2 * 60_000;
    s.table("Sent", SENT_HEADER, &[sent_row(3, t0, "/a")]);
    let _host = s.spawn();
    wait_for_samples(&prometheus, "sent_total{route=\"/a\"}", &[(t0, 3.0)]);
    prometheus.stop();
    // Two requests' worth (maxSamplesPerRequest: 3), sent again run after
    // run while Prometheus is down.
    let routes = ["/a", "/b", "/c", "/d"];
    let rows: Vec<String> = routes.iter().map(|r| sent_row(4, t0 + 10_000, r)).collect();
    s.table("Sent", SENT_HEADER, &rows);
    let failures = "kusto_metrics_export_failures_total{exporter=\"prom\",reason=\"connect\"} ";
    wait_for("two failed deliveries", Duration::from_secs(30), || {
        own_metric(&addr, failures).filter(|v| *v >= 2.0)
    });
    prometheus.restart();
    wait_for_samples(
        &prometheus,
        "sent_total{route=\"/a\"}",
        &[(t0, 3.0), (t0 + 10_000, 7.0)],
    );
    for r in &routes[1..] {
        wait_for_samples(
            &prometheus,
            &format!("sent_total{{route=\"{r}\"}}"),
            &[(t0 + 10_000, 4.0)],
        );
    }
    // Another run later: the totals went on from 7, not from a doubled 11.
    s.table("Sent", SENT_HEADER, &[sent_row(1, t0 + 20_000, "/a")]);
    wait_for_samples(
        &prometheus,
        "sent_total{route=\"/a\"}",
        &[(t0, 3.0), (t0 + 10_000, 7.0), (t0 + 20_000, 8.0)],
    );
    assert_eq!(
        own_metric(
            &addr,
            "kusto_metrics_prometheus_delta_points_converted_total{exporter=\"prom\"} "
        ),
        Some(6.0),
        "each delta counted once it was delivered"
    );
}

#[test]
fn a_real_prometheus_scrapes_a_delta_sum_as_its_running_total() {
    let port = free_port();
    let instance = format!("127.0.0.1:{port}");
    let s = sent_setup("  - name: scrape\n    prometheusScrape: {}\n", port);
    let t0 = now_ms() - 2 * 60_000;
    s.table("Sent", SENT_HEADER, &[sent_row(3, t0, "/a")]);
    let _host = s.spawn();
    let prometheus = Prometheus::start(Mode::Scrape {
        target: instance.clone(),
        path: "/exported/metrics".into(),
        bearer_file: None,
    });
    wait_for_samples(&prometheus, "sent_total", &[(t0, 3.0)]);
    s.table("Sent", SENT_HEADER, &[sent_row(4, t0 + 1000, "/a")]);
    wait_for_samples(&prometheus, "sent_total", &[(t0, 3.0), (t0 + 1000, 7.0)]);
    let scraped = prometheus.query("sent_total", (now_ms() as f64) / 1000.0);
    assert_eq!(scraped[0]["metric"]["job"], "kusto-metrics");
    // OpenMetrics names the start of the running total (no start column:
    // the first delta's time).
    let om = http_request(
        &instance,
        "GET",
        "/exported/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
        b"",
    )
    .unwrap()
    .text();
    let t1 = t0 + 1000;
    let created = format!(
        "sent_created{{otel_scope_name=\"adx-mon.azure.com/metrics-exporter\",otel_scope_version=\"v1\",route=\"/a\"}} {} {}.{:03}\n",
        t0 as f64 / 1000.0,
        t1 / 1000,
        t1 % 1000
    );
    assert!(
        om.contains("# TYPE sent counter\n") && om.contains(&created),
        "{created}\n{om}"
    );
}

#[test]
fn resource_attributes_arrive_as_target_info_and_promoted_labels() {
    let prometheus = Prometheus::start(Mode::RemoteWrite);
    let s = Setup::new(
        &format!(
            "{}      naming: {{promoteResourceAttributes: [k8s.cluster.name]}}\n",
            remote_write("prom", &prometheus.write_url())
        ),
        "resourceAttributes: {k8s.cluster.name: c1, deployment.environment: prod, service.instance.id: host-7}\n",
    );
    s.manifest(
        "latency.yaml",
        &format!(
            "{}---\n{}",
            rule("latency", "Latency"),
            exporter("latency", "latency", "prom", LATENCY).replace(
                "  interval: 1s\n",
                "  interval: 1s\n  resourceAttributes: {team: payments}\n"
            )
        ),
    );
    let t0 = now_ms() - 5 * 60_000 + 123;
    s.table("Latency", LATENCY_HEADER, &latency_rows(t0, 2));
    ok(&s.run_once());
    let at = (now_ms() as f64) / 1000.0;
    let info = prometheus.wait_for_series("target_info", 1, 600, at, WAIT);
    assert_eq!(
        info,
        vec![(
            json!({
                "__name__": "target_info",
                "job": "adx-mon-metrics-exporter",
                "instance": "host-7",
                "k8s_cluster_name": "c1",
                "deployment_environment": "prod",
                "service_version": env!("CARGO_PKG_VERSION"),
                "team": "payments",
            }),
            vec![(t0 + 10_000, 1.0)]
        )],
        "one target_info at the newest sample, the resource's attributes as labels"
    );
    let latency = prometheus.wait_for_series("http_server_duration_milliseconds", 2, 600, at, WAIT);
    for (labels, _) in &latency {
        assert_eq!(labels["k8s_cluster_name"], "c1", "promoted: {labels}");
        assert!(labels.get("team").is_none(), "not promoted: {labels}");
    }
}
