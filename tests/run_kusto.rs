//! `kusto-metrics run` reading Azure Data Explorer, end to end: the real
//! binary against a server speaking Kusto's REST protocol
//! (tests/common/kusto_server.rs) and a real OTLP receiver.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::kusto_server::{Fault, KustoServer, TICKS_PER_SECOND, format_ticks, now_ticks};
use common::receiver::Receiver;
use serde_json::{Value, json};

const DB: &str = "TelemetryDB";
const TABLE: &str = "ServiceMetrics";
const COLUMNS: [(&str, &str); 4] = [
    ("metric_name", "string"),
    ("v", "long"),
    ("t", "datetime"),
    ("host", "string"),
];

const RULE: &str = r#"apiVersion: adx-mon.azure.com/v1
kind: SummaryRule
metadata:
  name: service-metrics
  namespace: monitoring
  labels: {metrics-export: "enabled"}
spec:
  database: TelemetryDB
  table: ServiceMetrics
  interval: 5m
  body: "Raw | summarize v = count() by bin(t, 1m), host | extend metric_name = 'requests'"
"#;

const SELECTING_EXPORTER: &str = r#"apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {name: to-otlp, namespace: monitoring}
spec:
  summaryRuleSelector:
    matchLabels: {metrics-export: "enabled"}
  exporters: [sink]
  interval: 1m
  transform:
    metricNameColumn: metric_name
    valueColumn: v
    timestampColumn: t
    labelColumns: [host]
"#;

struct Setup {
    dir: tempfile::TempDir,
    server: KustoServer,
    receiver: Receiver,
}

impl Setup {
    /// A host reading `server` (auth none, no settle delay, short timeouts)
    /// and sending to a receiver; `source_extra` and `guests_extra` are
    /// added to `source.kusto` and `guests`.
    fn new(source_extra: &str, guests_extra: &str) -> Setup {
        Self::new_with(source_extra, guests_extra, "")
    }

    /// `sink_extra` is added to the OTLP exporter's settings.
    fn new_with(source_extra: &str, guests_extra: &str, sink_extra: &str) -> Setup {
        Self::build(Receiver::start(), source_extra, guests_extra, sink_extra)
    }

    fn build(
        receiver: Receiver,
        source_extra: &str,
        guests_extra: &str,
        sink_extra: &str,
    ) -> Setup {
        let server = KustoServer::start();
        // Windows are streamed whole: the host never asks ADX to cut them.
        server.forbid_truncation_max_records(true);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let config = format!(
            "manifests: manifests
source:
  kusto:
    endpoints: {{{DB}: {endpoint}}}
    auth: none
    settleDelay: 1s
    timeout: 2s
    retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 10s}}
{source_extra}state: state
reloadInterval: 200ms
minInterval: 100ms
guests:
  cacheDir: cache
{guests_extra}exporters:
  - name: sink
    otlp:
      endpoint: {otlp}
      timeout: 2s
      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 3s}}
{sink_extra}",
            endpoint = server.endpoint(),
            otlp = receiver.http_endpoint(),
        );
        std::fs::write(dir.path().join("kusto-metrics.yaml"), config).unwrap();
        server.create_table(DB, TABLE, &COLUMNS);
        Setup {
            dir,
            server,
            receiver,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn manifest(&self, file: &str, text: &str) {
        std::fs::write(self.path("manifests").join(file), text).unwrap();
    }

    /// Adds top-level keys to the host config.
    fn add_config(&self, yaml: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path("kusto-metrics.yaml"))
            .unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
    }

    fn run_once(&self) -> Output {
        self.run_once_with(&[])
    }

    /// `run --once`, killed (and the test failed) if it has not ended
    /// within [`RUN_TIMEOUT`]. Output goes through files: a pipe nobody
    /// reads would stall a chatty host.
    fn run_once_with(&self, env: &[(&str, &str)]) -> Output {
        let (out_path, err_path) = (self.path("stdout.log"), self.path("stderr.log"));
        let mut c = Command::new(common::bin());
        c.args(["run", "--once", "--config"])
            .arg(self.path("kusto-metrics.yaml"))
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`run --once` did not end within {RUN_TIMEOUT:?}\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }
}

/// A row of [`COLUMNS`]: metric `m`, value `v`, time `t` (ticks), host.
fn row(v: i64, t: i64, host: &str) -> Vec<Value> {
    vec![json!("m"), json!(v), json!(format_ticks(t)), json!(host)]
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn values(points: &[Value]) -> Vec<i64> {
    let mut v: Vec<i64> = points
        .iter()
        .map(|p| {
            p["asInt"]
                .as_str()
                .expect("integer points")
                .parse()
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

const WAIT: Duration = Duration::from_secs(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn rows_ingested_since_the_last_run_go_out_once_read_by_declared_parameters() {
    let s = Setup::new("", "");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let t0 = 1_750_845_600 * TICKS_PER_SECOND; // 2025-06-25T10:00:00Z
    s.server.ingest(
        DB,
        TABLE,
        vec![
            row(1, t0, "a"),
            row(2, t0 + 1234567, "b"),
            row(3, t0 + 2 * TICKS_PER_SECOND, "a"),
        ],
    );
    ok(&s.run_once());
    let points = s.receiver.wait_for_points(3, WAIT);
    assert_eq!(values(&points), [1, 2, 3]);
    let p = points.iter().find(|p| p["asInt"] == "2").unwrap();
    assert_eq!(p["metric"], "m");
    assert_eq!(p["timeUnixNano"], "1750845600123456700", "100 ns kept");
    assert_eq!(p["attributes"][0]["value"]["stringValue"], "b");

    // Rows that land late, with old timestamps, are read by ingestion time.
    s.server
        .ingest(DB, TABLE, vec![row(4, t0 - 3600 * TICKS_PER_SECOND, "c")]);
    ok(&s.run_once());
    assert_eq!(values(&s.receiver.wait_for_points(4, WAIT)), [1, 2, 3, 4]);
    ok(&s.run_once());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.receiver.points().len(), 4, "nothing new, nothing sent");

    // What went over the wire.
    let requests = s.server.requests();
    let schema = requests
        .iter()
        .find(|r| r.csl.contains("getschema"))
        .expect("a schema query");
    assert_eq!(schema.database, DB);
    assert!(requests.iter().any(|r| r.path == "/v1/rest/mgmt"
        && r.csl == ".show table ['ServiceMetrics'] policy ingestiontime"));
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 3);
    for w in &windows {
        assert!(
            w.csl
                .starts_with("declare query_parameters(_from:datetime, _to:datetime);"),
            "{}",
            w.csl
        );
        assert!(
            w.csl
                .contains("ingestion_time() > _from and ingestion_time() <= _to"),
            "{}",
            w.csl
        );
        let project = w
            .csl
            .lines()
            .find_map(|l| l.strip_prefix("| project "))
            .expect("a project clause");
        let mut projected: Vec<&str> = project.split(", ").collect();
        projected.sort();
        assert_eq!(
            projected,
            ["['host']", "['metric_name']", "['t']", "['v']"],
            "only what the transform needs"
        );
        assert!(
            !w.csl.contains("datetime(2"),
            "no value pasted into the text: {}",
            w.csl
        );
        assert_eq!(w.app.as_deref(), Some("kusto-metrics"));
        assert_eq!(w.options["request_readonly"], true);
    }
    // Windows follow each other: no gap, no overlap.
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0].parameter_ticks("_to"),
            pair[1].parameter_ticks("_from")
        );
    }
    let ids: std::collections::HashSet<_> = requests
        .iter()
        .map(|r| r.request_id.clone().unwrap())
        .collect();
    assert_eq!(ids.len(), requests.len(), "a client request id per request");
    assert!(ids.iter().all(|id| id.starts_with("KM.")), "{ids:?}");
}

#[test]
fn a_metrics_exporter_body_runs_per_aligned_window_and_catches_up_oldest_first() {
    let s = Setup::new("", "");
    s.server.create_table(DB, "Raw", &COLUMNS);
    s.manifest(
        "me.yaml",
        r#"apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {name: direct, namespace: monitoring}
spec:
  database: TelemetryDB
  body: |
    Raw
    | where t between (_startTime .. _endTime)
  exporters: [sink]
  interval: 1s
  transform:
    metricNameColumn: metric_name
    valueColumn: v
    timestampColumn: t
    labelColumns: [host]
"#,
    );
    // One row on every whole second and one in the middle, from 10 s back
    // to 10 s ahead: a row on a boundary belongs to the window it starts.
    let now = now_ticks();
    let base = (now / TICKS_PER_SECOND - 10) * TICKS_PER_SECOND;
    let mut rows = Vec::new();
    for i in 0..40 {
        rows.push(row(i, base + i * TICKS_PER_SECOND / 2, "h"));
    }
    s.server.ingest(DB, "Raw", rows);
    ok(&s.run_once());
    let first = s.server.window_queries();
    assert_eq!(first.len(), 1, "without progress: the last whole interval");
    std::thread::sleep(Duration::from_millis(3500));
    ok(&s.run_once());
    let windows = s.server.window_queries();
    assert!(
        windows.len() >= 4,
        "caught up window by window: {}",
        windows.len()
    );
    for w in &windows {
        let start = w.parameter_ticks("_startTime").unwrap();
        let end = w.parameter_ticks("_endTime").unwrap();
        assert_eq!(start % TICKS_PER_SECOND, 0, "aligned to the interval");
        assert_eq!(
            end,
            start + TICKS_PER_SECOND - 1,
            "_endTime is one tick short"
        );
        assert!(
            w.csl
                .starts_with("declare query_parameters(_startTime:datetime, _endTime:datetime);"),
            "{}",
            w.csl
        );
    }
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0].parameter_ticks("_endTime").unwrap() + 1,
            pair[1].parameter_ticks("_startTime").unwrap(),
            "oldest first, no gap, no overlap"
        );
    }
    // Every row in the windows read went out exactly once.
    let read_start = windows[0].parameter_ticks("_startTime").unwrap();
    let read_end = windows.last().unwrap().parameter_ticks("_endTime").unwrap();
    let expected: Vec<i64> = (0..40)
        .filter(|i| {
            let t = base + i * TICKS_PER_SECOND / 2;
            t >= read_start && t <= read_end
        })
        .collect();
    assert!(
        expected.len() >= 8,
        "{expected:?} base {base} windows {:?}",
        windows
            .iter()
            .map(|w| (w.parameters.clone(), w.rows))
            .collect::<Vec<_>>()
    );
    let points = s.receiver.wait_for_points(expected.len(), WAIT);
    assert_eq!(values(&points), expected);
}

#[test]
fn throttling_unavailability_and_slow_answers_are_retried_with_nothing_lost_or_doubled() {
    let s = Setup::new("", "");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let t = now_ticks();
    s.server
        .ingest(DB, TABLE, vec![row(1, t, "a"), row(2, t, "b")]);
    // The window query meets each fault in turn, then gets through.
    s.server.fail_next(Fault::Status {
        status: 429,
        retry_after: Some("1".into()),
        message: "throttled".into(),
    });
    s.server.fail_next(Fault::Status {
        status: 503,
        retry_after: None,
        message: "service unavailable".into(),
    });
    s.server.fail_next(Fault::Slow(Duration::from_secs(4)));
    s.server.fail_next(Fault::Status {
        status: 500,
        retry_after: None,
        message: "internal".into(),
    });
    let started = std::time::Instant::now();
    ok(&s.run_once());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(values(&s.receiver.wait_for_points(2, WAIT)), [1, 2]);
    let windows = s.server.window_queries();
    let statuses: Vec<u16> = windows.iter().map(|r| r.status).collect();
    // The slow answer (recorded as 200) came after the client gave up.
    assert_eq!(statuses, [429, 503, 200, 500, 200]);
    let ids: std::collections::HashSet<_> = windows.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(ids.len(), 5, "every attempt has its own id");
    let from: std::collections::HashSet<_> =
        windows.iter().map(|r| r.parameter_ticks("_from")).collect();
    assert_eq!(from.len(), 1, "every attempt asks for the same window");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.receiver.points().len(), 2, "delivered once");
}

#[test]
fn an_error_at_the_end_of_the_stream_fails_the_window_and_it_is_read_again() {
    let s = Setup::new("", "");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    ok(&s.run_once()); // nothing yet; progress starts here
    s.server.ingest(
        DB,
        TABLE,
        vec![row(1, now_ticks(), "a"), row(2, now_ticks(), "b")],
    );
    s.server.fail_next(Fault::ErrorAtEnd(
        "Partial query failure: An unexpected error occurred (shard not available)".into(),
    ));
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    let failed = &s.server.window_queries()[1];
    let id = failed.request_id.as_deref().unwrap();
    assert!(
        err.contains("MetricsExporter monitoring/to-otlp")
            && err.contains("rule monitoring/service-metrics")
            && err.contains("database TelemetryDB")
            && err.contains(id)
            && err.contains("shard not available"),
        "the error names the exporter, rule, database and request id: {err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        s.receiver.points().is_empty(),
        "a failed window sends nothing"
    );
    ok(&s.run_once());
    assert_eq!(values(&s.receiver.wait_for_points(2, WAIT)), [1, 2]);
    let again = &s.server.window_queries()[2];
    assert_eq!(
        again.parameter_ticks("_from"),
        failed.parameter_ticks("_from"),
        "the same window again"
    );
}

#[test]
fn a_window_larger_than_a_batch_is_streamed_whole_in_chunks() {
    let s = Setup::new("", "  maxRowsPerBatch: 4\n");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let now = now_ticks();
    s.server
        .ingest(DB, TABLE, (0..10).map(|i| row(i, now + i, "h")).collect());
    ok(&s.run_once());
    assert_eq!(
        values(&s.receiver.wait_for_points(10, WAIT)),
        (0..10).collect::<Vec<_>>()
    );
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 1, "one query for the window: {windows:?}");
    assert_eq!(windows[0].options["notruncation"], true);
    assert!(windows[0].options["truncationmaxrecords"].is_null());
    ok(&s.run_once());
    assert_eq!(s.receiver.points().len(), 10, "nothing twice");
}

#[test]
fn a_query_limit_halves_the_window_until_it_fits() {
    // A result limit `notruncation` does not lift (a workload group's).
    let s = Setup::new("    minWindow: 1s\n", "  maxRowsPerBatch: 4\n");
    s.server.set_hard_max_records(Some(4));
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let now = now_ticks();
    for i in 0..10 {
        s.server.ingest_at(
            DB,
            TABLE,
            now - (50 - i * 5) * TICKS_PER_SECOND,
            vec![row(i, now, "h")],
        );
    }
    ok(&s.run_once());
    assert_eq!(
        values(&s.receiver.wait_for_points(10, WAIT)),
        (0..10).collect::<Vec<_>>()
    );
    let windows = s.server.window_queries();
    let spans: Vec<i64> = windows
        .iter()
        .map(|w| w.parameter_ticks("_to").unwrap() - w.parameter_ticks("_from").unwrap())
        .collect();
    assert!(
        spans.windows(2).any(|p| p[1] * 2 == p[0]),
        "halved: {spans:?}"
    );
    ok(&s.run_once());
    assert_eq!(s.receiver.points().len(), 10, "nothing twice");
}

#[test]
fn a_window_over_a_query_limit_at_the_floor_fails_with_the_limit_named() {
    let s = Setup::new("    minWindow: 30s\n", "");
    s.server.set_hard_max_records(Some(2));
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    s.server.ingest(
        DB,
        TABLE,
        vec![
            row(1, now_ticks(), "a"),
            row(2, now_ticks(), "b"),
            row(3, now_ticks(), "c"),
        ],
    );
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("too large") && err.contains("E_QUERY_RESULT_SET_TOO_LARGE"),
        "{err}"
    );
}

#[test]
fn a_window_refused_halfway_is_read_again_and_only_the_rest_is_sent() {
    // Three requests of two points; the receiver takes the first and
    // refuses the second.
    let s = Setup::new_with("", "", "      maxPointsPerRequest: 2\n");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    ok(&s.run_once()); // progress starts here
    let t = now_ticks();
    s.server
        .ingest(DB, TABLE, (1..=6).map(|i| row(i, t + i, "h")).collect());
    s.receiver.fail_after(1, 1, 400);
    assert!(!s.run_once().status.success());
    let first = s.receiver.points().len();
    assert_eq!(first, 2, "one request accepted");
    // The same window comes back with its rows in another order, and more
    // rows have landed since.
    s.server.set_reverse_rows(true);
    s.server.ingest(DB, TABLE, vec![row(7, t + 7, "h")]);
    ok(&s.run_once());
    assert_eq!(
        values(&s.receiver.wait_for_points(7, WAIT)),
        (1..=7).collect::<Vec<_>>(),
        "each point once"
    );
    let windows = s.server.window_queries();
    let (refused, again) = (&windows[1], &windows[2]);
    assert_eq!(
        (again.parameter_ticks("_from"), again.parameter_ticks("_to")),
        (
            refused.parameter_ticks("_from"),
            refused.parameter_ticks("_to")
        ),
        "exactly the refused window again"
    );
}

const BODY_EXPORTER: &str = "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: direct, namespace: monitoring}\nspec:\n  database: TelemetryDB\n  body: \"Raw | where t between (_startTime .. _endTime)\"\n  exporters: [sink]\n  interval: 1m\n  transform: {metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}\n";

#[test]
fn a_body_interval_over_a_query_limit_is_not_cut_in_parts() {
    let s = Setup::new("", "");
    s.server.set_hard_max_records(Some(2));
    s.server.create_table(DB, "Raw", &COLUMNS);
    s.manifest("me.yaml", BODY_EXPORTER);
    let start = (now_ticks() / (60 * TICKS_PER_SECOND) - 1) * 60 * TICKS_PER_SECOND;
    s.server.ingest(
        DB,
        "Raw",
        (0..5)
            .map(|i| row(i, start + i * TICKS_PER_SECOND, "h"))
            .collect(),
    );
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not cut in parts") && err.contains("MetricsExporter monitoring/direct"),
        "{err}"
    );
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 1, "no halving of an interval");
}

#[test]
fn a_body_interval_larger_than_a_batch_goes_to_the_guest_in_chunks() {
    let s = Setup::new("", "  maxRowsPerBatch: 2\n");
    s.server.create_table(DB, "Raw", &COLUMNS);
    s.manifest("me.yaml", BODY_EXPORTER);
    let start = (now_ticks() / (60 * TICKS_PER_SECOND) - 1) * 60 * TICKS_PER_SECOND;
    s.server.ingest(
        DB,
        "Raw",
        (0..5)
            .map(|i| row(i, start + i * TICKS_PER_SECOND, "h"))
            .collect(),
    );
    ok(&s.run_once());
    assert_eq!(
        values(&s.receiver.wait_for_points(5, WAIT)),
        (0..5).collect::<Vec<_>>()
    );
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 1, "the interval in one query");
    ok(&s.run_once());
    assert_eq!(s.receiver.points().len(), 5, "nothing twice");
}

#[test]
fn a_four_million_row_body_window_is_exported_whole_once_and_resumed_exactly() {
    const ROWS: usize = 4_000_000;
    let s = Setup::build(
        Receiver::start_values_only(),
        "",
        "  maxRowsPerBatch: 100000\n",
        "      maxPointsPerRequest: 10000\n",
    );
    let start = (now_ticks() / (60 * TICKS_PER_SECOND) - 1) * 60 * TICKS_PER_SECOND;
    s.server.create_generated_table(
        DB,
        "Raw",
        &COLUMNS,
        ROWS,
        start,
        std::sync::Arc::new(move |i| {
            vec![
                json!("requests"),
                json!(i),
                json!(format_ticks(start + (i as i64 % 60) * TICKS_PER_SECOND)),
                json!(format!("host-{}", i % 50)),
            ]
        }),
    );
    s.manifest("me.yaml", BODY_EXPORTER);
    // ADX (and the test server) sorts the whole result before the first
    // row: more than the other tests' 2 s.
    let config = std::fs::read_to_string(s.path("kusto-metrics.yaml")).unwrap();
    std::fs::write(
        s.path("kusto-metrics.yaml"),
        config.replacen("\n    timeout: 2s\n", "\n    timeout: 30s\n", 1),
    )
    .unwrap();
    // The receiver refuses a request in the middle: the run fails there.
    s.receiver.fail_after(150, 1, 400);
    let out = s.run_once();
    assert!(!out.status.success());
    let first = s.receiver.values().len();
    assert_eq!(
        first,
        150 * 10_000,
        "the requests before the refused one: {}",
        stderr(&out)
    );
    let out = s.run_once();
    ok(&out);
    let values = s.receiver.values();
    assert_eq!(values.len(), ROWS, "every row once, nothing twice");
    let mut seen = vec![false; ROWS];
    for v in values {
        let i = v as usize;
        assert!(i < ROWS && !seen[i], "value {v} twice or unknown");
        seen[i] = true;
    }
    // (A later interval may have closed meanwhile: it is read too.)
    let windows = s.server.window_queries();
    let first = windows[0].parameter_ticks("_startTime");
    assert_eq!(
        windows
            .iter()
            .filter(|w| w.parameter_ticks("_startTime") == first)
            .count(),
        2,
        "the interval read once per run: {}",
        stderr(&out)
    );
}

#[test]
fn a_host_clock_ahead_of_adx_loses_no_rows() {
    let s = Setup::new("", "");
    // ADX's clock is 10 s behind the host's, far more than the settle delay.
    s.server.set_clock_skew(-10 * TICKS_PER_SECOND);
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let out = s.run_once();
    ok(&out);
    assert!(
        stderr(&out).contains("ADX's clock and the host's differ"),
        "{}",
        stderr(&out)
    );
    // A row ADX stamps now: by the host's clock, that is behind where the
    // first run ended.
    let stamped = s.server.now();
    s.server
        .ingest_at(DB, TABLE, stamped, vec![row(1, now_ticks(), "h")]);
    std::thread::sleep(Duration::from_millis(1500));
    ok(&s.run_once());
    assert_eq!(values(&s.receiver.wait_for_points(1, WAIT)), [1]);
    let windows = s.server.window_queries();
    let last = windows.last().unwrap();
    assert!(
        last.parameter_ticks("_to").unwrap() < now_ticks() - 9 * TICKS_PER_SECOND,
        "the window ends by ADX's clock"
    );
}

#[test]
fn progressive_frames_give_the_same_points() {
    let s = Setup::new("", "");
    s.server.set_progressive(true);
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let rows: Vec<_> = (1..=7).map(|i| row(i, now_ticks(), "h")).collect();
    s.server.ingest(DB, TABLE, rows);
    ok(&s.run_once());
    assert_eq!(
        values(&s.receiver.wait_for_points(7, WAIT)),
        (1..=7).collect::<Vec<_>>()
    );
}

#[test]
fn a_bad_row_is_skipped_and_counted_and_the_window_still_goes_out() {
    let s = Setup::new("", "");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let t = now_ticks();
    s.server.ingest(
        DB,
        TABLE,
        vec![
            row(1, t, "a"),
            vec![
                json!("m"),
                json!("not a number"),
                json!(format_ticks(t)),
                json!("b"),
            ],
            row(3, t, "c"),
        ],
    );
    let out = s.run_once();
    ok(&out);
    assert_eq!(values(&s.receiver.wait_for_points(2, WAIT)), [1, 3]);
    let err = stderr(&out);
    assert!(
        err.contains("row skipped") && err.contains("invalid-row=1"),
        "{err}"
    );
}

#[test]
fn a_table_without_ingestion_time_is_read_by_its_timestamp_column() {
    let s = Setup::new("    fallbackLookback: 1s\n", "");
    s.server.set_ingestion_time_policy(DB, TABLE, Some(false));
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let now = now_ticks();
    s.server.ingest(
        DB,
        TABLE,
        vec![
            row(1, now - 20 * TICKS_PER_SECOND, "a"),
            row(2, now - 10 * TICKS_PER_SECOND, "b"),
        ],
    );
    let out = s.run_once();
    ok(&out);
    assert_eq!(values(&s.receiver.wait_for_points(2, WAIT)), [1, 2]);
    assert!(
        stderr(&out).contains("no ingestion-time policy"),
        "{}",
        stderr(&out)
    );
    let w = &s.server.window_queries()[0];
    assert!(
        w.csl.contains("['t'] > _from and ['t'] <= _to"),
        "{}",
        w.csl
    );
}

#[test]
fn without_a_policy_the_rows_tell_whether_ingestion_times_are_kept() {
    let s = Setup::new("    fallbackLookback: 1s\n", "");
    s.server.set_ingestion_time_policy(DB, TABLE, None);
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    // No rows yet: nothing read, nothing decided.
    ok(&s.run_once());
    assert!(s.server.window_queries().is_empty());
    // Rows with ingestion times: read by ingestion time.
    s.server.ingest(DB, TABLE, vec![row(1, now_ticks(), "a")]);
    let out = s.run_once();
    ok(&out);
    assert_eq!(values(&s.receiver.wait_for_points(1, WAIT)), [1]);
    let w = &s.server.window_queries()[0];
    assert!(w.csl.contains("ingestion_time() > _from"), "{}", w.csl);
    assert!(
        s.server
            .requests()
            .iter()
            .any(|r| r.csl.contains("isnotnull(ingestion_time())"))
    );
}

#[test]
fn missing_columns_are_named_before_anything_is_read() {
    let s = Setup::new("", "");
    s.server.create_table(
        DB,
        TABLE,
        &[
            ("metric_name", "string"),
            ("v", "string"),
            ("t", "datetime"),
        ],
    );
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("TelemetryDB.ServiceMetrics")
            && err.contains("column `host` is missing")
            && err.contains("column `v` is string"),
        "{err}"
    );
    assert!(s.server.window_queries().is_empty(), "no window read");
}

#[test]
fn a_refused_identity_is_reported_as_an_auth_problem() {
    let s = Setup::new("", "");
    s.server.require_token(Some("secret-token"));
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ADX refused the identity")
            && err.contains("HTTP 401")
            && err.contains("auth: none"),
        "{err}"
    );
    assert_eq!(s.server.requests().len(), 1, "401 is not retried");
}

#[test]
fn a_managed_identity_token_is_sent_and_cached() {
    let s = Setup::new("", "");
    let config = s.path("kusto-metrics.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    // Plain HTTP carries a token only to a loopback address.
    std::fs::write(
        &config,
        text.replace("auth: none", "auth: managed-identity"),
    )
    .unwrap();
    s.server
        .issue_tokens("token-1", Duration::from_secs(3600), "msi-secret");
    s.manifest("rule.yaml", RULE);
    s.manifest("me.yaml", SELECTING_EXPORTER);
    s.server.ingest(DB, TABLE, vec![row(1, now_ticks(), "a")]);
    let endpoint = s.server.msi_endpoint();
    let env = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "msi-secret"),
    ];
    ok(&s.run_once_with(&env));
    assert_eq!(values(&s.receiver.wait_for_points(1, WAIT)), [1]);
    let requests = s.server.requests();
    assert!(requests.len() >= 3);
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer token-1"))
    );
    let tokens = s.server.token_requests();
    assert_eq!(
        tokens.len(),
        1,
        "one token for every request of the run: {tokens:?}"
    );
    assert_eq!(
        tokens[0],
        s.server.endpoint(),
        "the token is for the cluster"
    );
}

const TENANCY: &str = "tenancy:
  namespaces:
    team-a: {databases: [telemetrydb], allowBody: true}
    team-b: {databases: [OtherDB], allowBody: true}
";

fn direct_exporter(ns: &str, body: &str) -> String {
    format!(
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: direct, namespace: {ns}}}\nspec:\n  database: TelemetryDB\n  body: {body:?}\n  exporters: [sink]\n  interval: 1s\n  transform: {{metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}}\n"
    )
}

#[test]
fn a_namespace_without_access_to_the_database_sends_no_query() {
    let s = Setup::new("", "");
    s.add_config(TENANCY);
    s.server.ingest(DB, TABLE, vec![row(1, now_ticks(), "a")]);
    // The rule and its exporter in team-b, which may read OtherDB only.
    s.manifest(
        "rule.yaml",
        &RULE.replace("namespace: monitoring", "namespace: team-b"),
    );
    s.manifest(
        "me.yaml",
        &SELECTING_EXPORTER.replace("namespace: monitoring", "namespace: team-b"),
    );
    let out = s.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("MetricsExporter team-b/to-otlp")
            && err.contains("SummaryRule team-b/service-metrics: namespace `team-b` may not read database `TelemetryDB` (tenancy.namespaces.team-b allows databases: OtherDB; allowBody: true)"),
        "{err}"
    );
    // Its own body, in a database it may not read: the same.
    std::fs::remove_file(s.path("manifests/rule.yaml")).unwrap();
    s.manifest("me.yaml", &direct_exporter("team-b", "Raw | take 1"));
    let err = stderr(&s.run_once());
    assert!(
        err.contains("namespace `team-b` may not read database `TelemetryDB`"),
        "{err}"
    );
    assert!(
        s.server.requests().is_empty(),
        "no query reached ADX: {:?}",
        s.server.requests()
    );
    assert!(s.receiver.points().is_empty());
}

#[test]
fn a_body_that_reaches_another_cluster_or_database_is_refused_before_it_is_sent() {
    let s = Setup::new("", "");
    s.add_config(TENANCY);
    s.server.create_table(DB, "Raw", &COLUMNS);
    for (body, why) in [
        (
            "cluster(\"other\").database(\"TelemetryDB\").Raw | where t between (_startTime .. _endTime)",
            "it calls cluster(...) (at byte 0): cross-cluster queries are not allowed",
        ),
        (
            "Raw | union database('OtherDB').Raw | where t between (_startTime .. _endTime)",
            "it reads database `OtherDB`",
        ),
        (
            "Raw | evaluate http_request('https://example.invalid')",
            "it calls http_request(...)",
        ),
    ] {
        s.manifest("me.yaml", &direct_exporter("team-a", body));
        let out = s.run_once();
        let err = stderr(&out);
        assert!(
            !out.status.success()
                && err.contains("MetricsExporter team-a/direct")
                && err.contains("spec.body in namespace `team-a`")
                && err.contains(why),
            "{body}: {err}"
        );
    }
    // Body queries need allowBody.
    s.manifest("me.yaml", &direct_exporter("monitoring", "Raw"));
    let err = stderr(&s.run_once());
    assert!(
        err.contains("namespace `monitoring` may not run its own KQL (spec.body) (tenancy.namespaces has no entry `monitoring` and no `*` entry)"),
        "{err}"
    );
    assert!(s.server.requests().is_empty(), "{:?}", s.server.requests());
    // Inside its database, the same exporter runs.
    s.manifest(
        "me.yaml",
        &direct_exporter("team-a", "Raw | where t between (_startTime .. _endTime)"),
    );
    ok(&s.run_once());
    assert_eq!(s.server.window_queries().len(), 1);
}

#[test]
fn cluster_labels_reach_a_body_as_declared_parameters_and_an_unknown_one_is_named() {
    let s = Setup::new("", "");
    s.add_config("clusterLabels: {region: eastus, k8s.cluster: c1}\n");
    s.server.create_table(DB, "Raw", &COLUMNS);
    let now = now_ticks();
    let base = (now / TICKS_PER_SECOND - 10) * TICKS_PER_SECOND;
    let mut rows = Vec::new();
    for i in 0..100 {
        let host = if i % 2 == 0 { "eastus" } else { "westus" };
        rows.push(row(i, base + i * TICKS_PER_SECOND / 10, host));
    }
    s.server.ingest(DB, "Raw", rows);
    s.manifest(
        "me.yaml",
        &direct_exporter(
            "monitoring",
            "Raw | where host == _region and t between (_startTime .. _endTime)",
        ),
    );
    ok(&s.run_once());
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 1, "{windows:?}");
    let w = &windows[0];
    assert!(
        w.csl.starts_with(
            "declare query_parameters(_startTime:datetime, _endTime:datetime, _region:string);\n"
        ),
        "{}",
        w.csl
    );
    assert!(
        !w.csl.contains("eastus"),
        "values never in the text: {}",
        w.csl
    );
    assert_eq!(
        w.parameters.get("_region").map(String::as_str),
        Some("eastus")
    );
    assert!(
        !w.parameters.contains_key("_k8s.cluster"),
        "a key that is no identifier is not passed: {:?}",
        w.parameters
    );
    let (start, end) = (
        w.parameter_ticks("_startTime").unwrap(),
        w.parameter_ticks("_endTime").unwrap(),
    );
    let expected: Vec<i64> = (0..100)
        .filter(|i| {
            let t = base + i * TICKS_PER_SECOND / 10;
            i % 2 == 0 && t >= start && t <= end
        })
        .collect();
    assert!(!expected.is_empty());
    let points = s.receiver.wait_for_points(expected.len(), WAIT);
    assert_eq!(values(&points), expected, "only this cluster's rows");

    // A body written for a label this host does not have fails with the
    // names it may use.
    s.manifest(
        "me.yaml",
        &direct_exporter(
            "monitoring",
            "Raw | where host == _cluster and t between (_startTime .. _endTime)",
        )
        .replace("name: direct", "name: other-labels"),
    );
    let out = s.run_once();
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("monitoring/other-labels")
            && err.contains("failed to resolve scalar expression named '_cluster'")
            && err.contains("(the body may use the parameters _startTime, _endTime, _region)"),
        "{err}"
    );
}

#[test]
fn a_rule_read_for_two_exporters_is_queried_once_and_a_failed_exporter_catches_up_then_rejoins() {
    let mut second = Receiver::start();
    let s = Setup::new_with(
        "",
        "",
        &format!(
            "  - name: second\n    otlp:\n      endpoint: {}\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 1s}}\n",
            second.http_endpoint()
        ),
    );
    s.manifest("rule.yaml", RULE);
    s.manifest(
        "me.yaml",
        &SELECTING_EXPORTER.replace("exporters: [sink]", "exporters: [sink, second]"),
    );
    let t0 = 1_750_845_600 * TICKS_PER_SECOND;
    let ingest = |values: std::ops::Range<i64>| {
        let rows = values
            .map(|v| row(v, t0 + v * TICKS_PER_SECOND, "a"))
            .collect();
        s.server.ingest(DB, TABLE, rows);
    };
    ingest(0..5);
    ok(&s.run_once());
    assert_eq!(
        s.server.window_queries().len(),
        1,
        "one query for both exporters"
    );
    assert_eq!(
        values(&s.receiver.wait_for_points(5, WAIT)),
        (0..5).collect::<Vec<_>>()
    );
    assert_eq!(
        values(&second.wait_for_points(5, WAIT)),
        (0..5).collect::<Vec<_>>()
    );

    // The second exporter is down for a run: the first still gets its rows.
    second.stop();
    std::thread::sleep(Duration::from_millis(1100));
    ingest(5..10);
    let out = s.run_once();
    assert!(!out.status.success(), "the second exporter's run failed");
    let windows = s.server.window_queries();
    assert_eq!(windows.len(), 2, "still one query: {windows:?}");
    let missed = windows[1].clone();
    assert_eq!(
        values(&s.receiver.wait_for_points(10, WAIT)),
        (0..10).collect::<Vec<_>>()
    );

    // Back: the second catches up to exactly where the first stands, then
    // both share the next window again.
    second.restart();
    std::thread::sleep(Duration::from_millis(1100));
    ingest(10..15);
    ok(&s.run_once());
    let windows = s.server.window_queries();
    assert_eq!(
        windows.len(),
        4,
        "the catch-up, then one shared query: {windows:?}"
    );
    let (catch_up, shared) = (&windows[2], &windows[3]);
    assert_eq!(
        catch_up.parameter_ticks("_from"),
        missed.parameter_ticks("_from")
    );
    assert_eq!(
        catch_up.parameter_ticks("_to"),
        missed.parameter_ticks("_to"),
        "the catch-up stops where the first exporter stands"
    );
    assert_eq!(
        shared.parameter_ticks("_from"),
        missed.parameter_ticks("_to")
    );
    let all: Vec<i64> = (0..15).collect();
    assert_eq!(
        values(&s.receiver.wait_for_points(15, WAIT)),
        all,
        "each row once"
    );
    assert_eq!(
        values(&second.wait_for_points(15, WAIT)),
        all,
        "each row once"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.receiver.points().len(), 15);
    assert_eq!(second.points().len(), 15);
}
