//! `kusto-metrics run` end to end on the local default: manifests from a
//! folder, tables from files, delivery to stdout and to a real OTLP receiver
//! (tests/servers/otlp_receiver.py, protobuf decoded by Python's protobuf).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use serde_json::Value;

const RULE: &str = r#"apiVersion: adx-mon.azure.com/v1
kind: SummaryRule
metadata:
  name: NAME
  namespace: NS
  labels: {metrics-export: "enabled", team: TEAM}
spec: {database: DB, table: TABLE, body: "T | take 1", interval: 5m}
"#;

fn rule(name: &str, ns: &str, team: &str, table: &str) -> String {
    RULE.replace("NAME", name)
        .replace("NS", ns)
        .replace("TEAM", team)
        .replace("TABLE", table)
}

fn exporter(name: &str, ns: &str, team: &str, sinks: &str, interval: &str) -> String {
    format!(
        r#"apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {{name: {name}, namespace: {ns}}}
spec:
  summaryRuleSelector:
    matchLabels: {{metrics-export: "enabled", team: {team}}}
  exporters: [{sinks}]
  interval: {interval}
  transform:
    metricNameColumn: metric_name
    valueColumn: v
    timestampColumn: t
    labelColumns: [host]
"#
    )
}

/// A scratch deployment: config, manifests, tables, state.
struct Setup {
    dir: tempfile::TempDir,
}

/// The floor the tests run under, so that their exporters can run every
/// second (the host's own default is 10s).
const TEST_MIN_INTERVAL: &str = "minInterval: 100ms\n";

impl Setup {
    fn new(exporters_yaml: &str) -> Setup {
        Self::with_config(exporters_yaml, TEST_MIN_INTERVAL)
    }

    /// `extra` goes at the top level of the host config.
    fn with_config(exporters_yaml: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
        std::fs::write(
            dir.path().join("kusto-metrics.yaml"),
            format!(
                "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nreloadInterval: 200ms\n{extra}guests:\n  cacheDir: cache\nexporters:\n{exporters_yaml}"
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

    /// Appends rows `v` (long) with metric `m`, host `h`, one second apart.
    fn append(&self, table: &str, values: impl IntoIterator<Item = i64>) {
        use std::io::Write;
        let path = self.path("tables/DB").join(format!("{table}.csv"));
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        if new {
            writeln!(f, "metric_name:string,v:long,t:datetime,host:string").unwrap();
        }
        for v in values {
            writeln!(
                f,
                "m,{v},2025-06-25T10:{:02}:{:02}Z,h{}",
                (v / 60) % 60,
                v % 60,
                v % 3
            )
            .unwrap();
        }
    }

    fn run_once(&self) -> Output {
        Command::new(common::bin())
            .args(["run", "--once", "--config"])
            .arg(self.path("kusto-metrics.yaml"))
            .output()
            .unwrap()
    }

    fn spawn(&self) -> Child {
        Command::new(common::bin())
            .args(["run", "--config"])
            .arg(self.path("kusto-metrics.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Rule `ns/r1` (team a, table T1) and exporter `ns/e1` selecting it.
fn one_rule_and_exporter(sinks: &str, interval: &str) -> String {
    format!(
        "{}---\n{}",
        rule("r1", "ns", "a", "T1"),
        exporter("e1", "ns", "a", sinks, interval)
    )
}

fn otlp(name: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    otlp:\n      endpoint: {endpoint}\n      protocol: http/protobuf\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 3s}}\n{extra}"
    )
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

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exact_points_arrive_and_only_appended_rows_go_out_next() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("rules.yaml", &rule("r1", "ns", "a", "T1"));
    s.manifest("me.yaml", &exporter("e1", "ns", "a", "sink", "1m"));
    s.append("T1", 1..=3);
    ok(&s.run_once());
    let points = receiver.wait_for_points(3, Duration::from_secs(5));
    assert_eq!(values(&points), [1, 2, 3]);
    let p = points.iter().find(|p| p["asInt"] == "2").unwrap();
    assert_eq!(p["metric"], "m");
    assert_eq!(p["timeUnixNano"], "1750845602000000000");
    assert_eq!(p["attributes"][0]["key"], "host");
    assert_eq!(p["attributes"][0]["value"]["stringValue"], "h2");

    ok(&s.run_once());
    assert_eq!(receiver.points().len(), 3, "nothing new, nothing sent");
    s.append("T1", 4..=5);
    ok(&s.run_once());
    assert_eq!(
        values(&receiver.wait_for_points(5, Duration::from_secs(5))),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn a_receiver_answering_503_then_200_gets_everything_once() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", 1..=4);
    receiver.fail_next(2, 503, None);
    ok(&s.run_once());
    assert_eq!(
        values(&receiver.wait_for_points(4, Duration::from_secs(5))),
        [1, 2, 3, 4]
    );
    ok(&s.run_once());
    assert_eq!(receiver.points().len(), 4);
}

#[test]
fn a_receiver_that_is_down_gets_the_missed_rows_afterwards() {
    let mut receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", 1..=2);
    ok(&s.run_once());
    receiver.stop();
    s.append("T1", 3..=4);
    let down = s.run_once();
    assert!(!down.status.success(), "a failed export makes --once fail");
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("export run failed"), "{stderr}");
    receiver.restart();
    ok(&s.run_once());
    assert_eq!(
        values(&receiver.wait_for_points(4, Duration::from_secs(5))),
        [1, 2, 3, 4]
    );
}

#[test]
fn a_permanent_rejection_is_not_retried_and_fails_the_run() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", 1..=2);
    receiver.fail_next(1, 400, None);
    let out = s.run_once();
    assert!(!out.status.success());
    assert!(receiver.points().is_empty());
    ok(&s.run_once());
    assert_eq!(
        values(&receiver.points()),
        [1, 2],
        "not lost: sent on the next run"
    );
}

#[test]
fn one_failing_exporter_does_not_hold_back_the_others_and_progress_is_per_exporter() {
    let mut down = Receiver::start();
    let up = Receiver::start();
    let exporters = format!(
        "{}{}",
        otlp("down", &down.http_endpoint(), ""),
        otlp("up", &up.http_endpoint(), "")
    );
    down.stop();
    let s = Setup::new(&exporters);
    s.manifest("all.yaml", &one_rule_and_exporter("down, up", "1m"));
    s.append("T1", 1..=3);
    assert!(!s.run_once().status.success());
    assert_eq!(
        values(&up.wait_for_points(3, Duration::from_secs(5))),
        [1, 2, 3]
    );
    down.restart();
    ok(&s.run_once());
    assert_eq!(
        values(&down.wait_for_points(3, Duration::from_secs(5))),
        [1, 2, 3]
    );
    assert_eq!(
        up.points().len(),
        3,
        "the exporter that had them does not get them twice"
    );
}

#[test]
fn selectors_pick_rules_by_label_and_namespace() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest(
        "rules.yaml",
        &[
            rule("match", "ns", "a", "T1"),
            rule("other-team", "ns", "b", "T2"),
            rule("other-namespace", "elsewhere", "a", "T3"),
        ]
        .join("---\n"),
    );
    s.manifest("me.yaml", &exporter("e1", "ns", "a", "sink", "1m"));
    s.append("T1", [1]);
    s.append("T2", [2]);
    s.append("T3", [3]);
    ok(&s.run_once());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(values(&receiver.points()), [1]);
}

#[test]
fn stdout_exporter_and_config_errors() {
    let s = Setup::new("  - name: console\n    stdout: {}\n");
    s.manifest("all.yaml", &one_rule_and_exporter("console", "1m"));
    s.append("T1", 1..=2);
    let out = s.run_once();
    ok(&out);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one OTLP/JSON request per line"))
        .collect();
    assert_eq!(lines.len(), 1);
    let points =
        &lines[0]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"];
    assert_eq!(points.as_array().unwrap().len(), 2);

    s.manifest("bad.yaml", &exporter("e2", "ns", "a", "nowhere", "1m"));
    let out = s.run_once();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml")
            && err.contains("MetricsExporter ns/e2")
            && err.contains("`nowhere` is not defined"),
        "{err}"
    );

    std::fs::remove_file(s.path("manifests/bad.yaml")).unwrap();
    let config = s.path("kusto-metrics.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("state: state", "stat: state")).unwrap();
    let out = s.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("kusto-metrics.yaml")
            && err.contains("unknown field `stat`"),
        "{err}"
    );
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn manifest_changes_take_effect_without_a_restart() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("me.yaml", &exporter("e1", "ns", "a", "sink", "300ms"));
    s.append("T1", [1]);
    s.append("T2", [2]);
    let _host = Running(s.spawn());
    std::thread::sleep(Duration::from_millis(800));
    assert!(receiver.points().is_empty(), "no rule matches yet");

    s.manifest("r1.yaml", &rule("r1", "ns", "a", "T1"));
    wait_until("the new rule's rows", Duration::from_secs(10), || {
        receiver.points().len() == 1
    });
    // A label change takes the rule out of the selection.
    s.manifest("r1.yaml", &rule("r1", "ns", "other", "T1"));
    s.manifest("r2.yaml", &rule("r2", "ns", "a", "T2"));
    wait_until("the second rule's rows", Duration::from_secs(10), || {
        receiver.points().len() == 2
    });
    s.append("T1", [10]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        values(&receiver.points()),
        [1, 2],
        "a rule that no longer matches is not read"
    );
}

#[test]
fn a_host_killed_mid_run_loses_nothing() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    let config = s.path("kusto-metrics.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "  cacheDir: cache\n",
            "  cacheDir: cache\n  maxRowsPerBatch: 50\n",
        ),
    )
    .unwrap();
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "200ms"));
    // Enough chunks that the kill lands in the middle of the run.
    s.append("T1", 0..20_000);
    let mut host = Running(s.spawn());
    wait_until("some points", Duration::from_secs(20), || {
        !receiver.points().is_empty()
    });
    // SIGKILL: no chance to tidy up.
    host.0.kill().unwrap();
    let _ = host.0.wait();
    let before = receiver.points().len();
    assert!(before < 20_000, "killed mid-run ({before} points)");
    ok(&s.run_once());
    let mut got = values(&receiver.points());
    got.dedup();
    assert_eq!(
        got,
        (0..20_000).collect::<Vec<_>>(),
        "every row arrived at least once"
    );
}

#[test]
fn thirty_kills_lose_nothing_and_repeat_at_most_the_request_in_flight() {
    const ROWS: i64 = 2_000_000;
    const POINTS_PER_REQUEST: usize = 500;
    let receiver = Receiver::start_values_only();
    let s = Setup::new(&otlp(
        "sink",
        &receiver.http_endpoint(),
        &format!("      maxPointsPerRequest: {POINTS_PER_REQUEST}\n"),
    ));
    let config = s.path("kusto-metrics.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    // Chunks of 20 requests: without a record per accepted request, a kill
    // would repeat up to 19 of them.
    std::fs::write(
        &config,
        text.replace(
            "  cacheDir: cache\n",
            "  cacheDir: cache\n  maxRowsPerBatch: 10000\n",
        ),
    )
    .unwrap();
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "200ms"));
    s.append("T1", 0..ROWS);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut kills_mid_run = 0;
    for _ in 0..30 {
        let before = receiver.values().len();
        let mut host = Running(s.spawn());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        host.0.kill().unwrap();
        let _ = host.0.wait();
        let after = receiver.values().len();
        if after > before && after < ROWS as usize {
            kills_mid_run += 1;
        }
    }
    ok(&s.run_once());
    let values = receiver.values();
    let mut seen = vec![0u32; ROWS as usize];
    for v in &values {
        seen[*v as usize] += 1;
    }
    let missing = seen.iter().filter(|n| **n == 0).count();
    let repeated: usize = seen.iter().map(|n| n.saturating_sub(1) as usize).sum();
    println!(
        "30 SIGKILLs ({kills_mid_run} while points were flowing): {} points received for {ROWS} rows, {repeated} repeated, {missing} missing",
        values.len()
    );
    assert_eq!(missing, 0, "every row arrived");
    assert!(
        kills_mid_run >= 5,
        "the kills landed mid-run: {kills_mid_run}"
    );
    assert!(
        repeated <= kills_mid_run * POINTS_PER_REQUEST,
        "at most the request in flight is repeated per kill: {repeated} points repeated over {kills_mid_run} kills"
    );
}

#[test]
fn the_hosts_metric_name_prefix_goes_before_every_name() {
    let receiver = Receiver::start();
    let s = Setup::with_config(
        &otlp("sink", &receiver.http_endpoint(), ""),
        &format!("{TEST_MIN_INTERVAL}metricNamePrefix: cluster_a\n"),
    );
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", [1, 2]);
    ok(&s.run_once());
    let points = receiver.wait_for_points(2, Duration::from_secs(10));
    assert!(
        points.iter().all(|p| p["metric"] == "cluster_a_m"),
        "{points:?}"
    );
    let bad = Setup::with_config("", &format!("{TEST_MIN_INTERVAL}metricNamePrefix: 9x\n"));
    let out = bad.run_once();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("metricNamePrefix: `9x` is not a metric name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_endpoint_counts_what_happened() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    let config = s.path("kusto-metrics.yaml");
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}server:\n  listen: 127.0.0.1:{port}\n"),
    )
    .unwrap();
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "200ms"));
    s.append("T1", 1..=3);
    std::fs::write(s.path("tables/DB/T1.csv"), {
        let mut t = std::fs::read_to_string(s.path("tables/DB/T1.csv")).unwrap();
        t.push_str("m,,2025-06-25T10:00:09Z,h0\n");
        t
    })
    .unwrap();
    let _host = Running(s.spawn());
    wait_until("points", Duration::from_secs(10), || {
        receiver.points().len() == 3
    });
    let body = http_get(port, "/metrics");
    assert!(body.contains(r#"kusto_metrics_points_sent_total{metrics_exporter="ns/e1",rule="ns/r1",exporter="sink"} 3"#), "{body}");
    assert!(body.contains(r#"kusto_metrics_rows_skipped_total{metrics_exporter="ns/e1",rule="ns/r1",reason="null-value"} 1"#), "{body}");
    assert!(
        body.contains("kusto_metrics_export_duration_seconds_bucket"),
        "{body}"
    );
    assert!(http_get(port, "/healthz").contains("ok"));
    assert!(http_get(port, "/readyz").contains("ready"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server on {port} did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn grpc_and_http_json_deliver_the_same_points() {
    let receiver = Receiver::start();
    let grpc = format!(
        "  - name: grpc\n    otlp:\n      endpoint: {}\n      protocol: grpc\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 3s}}\n",
        receiver.grpc_endpoint()
    );
    let json = format!(
        "  - name: json\n    otlp:\n      endpoint: {}\n      protocol: http/json\n      compression: none\n      timeout: 2s\n",
        receiver.http_endpoint()
    );
    let s = Setup::new(&format!("{grpc}{json}"));
    s.manifest("all.yaml", &one_rule_and_exporter("grpc, json", "1m"));
    s.append("T1", 1..=3);
    receiver.fail_next(1, 503, None);
    ok(&s.run_once());
    let requests = receiver.requests();
    let transports: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| {
            (
                r["transport"].as_str().unwrap(),
                r["encoding"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        transports.contains(&("grpc", "protobuf")) && transports.contains(&("http", "json")),
        "{transports:?}"
    );
    assert_eq!(
        values(&receiver.wait_for_points(6, Duration::from_secs(5))),
        [1, 1, 2, 2, 3, 3]
    );
}

#[test]
fn the_quickstart_exports_the_spec_use_cases_once() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = common::root().join("examples/quickstart");
    for sub in ["manifests", "tables"] {
        copy_dir(&quickstart.join(sub), &dir.path().join(sub));
    }
    let config = std::fs::read_to_string(quickstart.join("kusto-metrics.yaml")).unwrap();
    let config_path = dir.path().join("kusto-metrics.yaml");
    std::fs::write(
        &config_path,
        config.replace("127.0.0.1:9464", "127.0.0.1:0"),
    )
    .unwrap();
    let run = || {
        let out = Command::new(common::bin())
            .args(["run", "--once", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        ok(&out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let requests = run();
    let mut by_metric: Vec<(String, usize)> = Vec::new();
    for r in &requests {
        for m in r["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
            .as_array()
            .unwrap()
        {
            let name = m["name"].as_str().unwrap().to_string();
            let n = m["gauge"]["dataPoints"].as_array().unwrap().len();
            match by_metric.iter_mut().find(|(k, _)| *k == name) {
                Some((_, c)) => *c += n,
                None => by_metric.push((name, n)),
            }
        }
    }
    by_metric.sort();
    assert_eq!(
        by_metric,
        [
            ("customer_success_rate_premium".to_string(), 2),
            ("customer_success_rate_standard".to_string(), 2),
            ("global_error_count".to_string(), 2),
            ("node_cpu_percent".to_string(), 4),
            ("node_memory_percent".to_string(), 2),
            ("service_response_time_avg".to_string(), 3),
        ],
        "two exporters for use cases 2 and 3; the development rule is left out"
    );
    let text = serde_json::to_string(&requests).unwrap();
    assert!(
        !text.contains("dev-node"),
        "node-cpu-dev does not match the selector"
    );
    assert!(run().is_empty(), "a second run has nothing new");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_failure_mid_chunk_resends_only_what_was_not_accepted() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp(
        "sink",
        &receiver.http_endpoint(),
        "      maxPointsPerRequest: 2\n",
    ));
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", 1..=5);
    // Three requests of 2, 2 and 1 points; the second is refused for good.
    receiver.fail_after(1, 1, 400);
    assert!(!s.run_once().status.success());
    assert_eq!(values(&receiver.points()), [1, 2]);
    // Rows appended meanwhile do not change the chunk being finished.
    s.append("T1", [6]);
    ok(&s.run_once());
    assert_eq!(
        values(&receiver.points()),
        [1, 2, 3, 4, 5, 6],
        "nothing twice, nothing lost"
    );
}

#[test]
fn an_interval_below_the_hosts_floor_is_refused() {
    // No minInterval in the config: the default floor, 10s.
    let s = Setup::with_config("  - name: console\n    stdout: {}\n", "");
    s.manifest("all.yaml", &one_rule_and_exporter("console", "1ms"));
    s.append("T1", 1..=3);
    let out = s.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("MetricsExporter ns/e1")
            && err.contains("spec.interval: `1ms` is shorter than this host's minInterval (10s"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
    // At the floor it runs.
    s.manifest("all.yaml", &one_rule_and_exporter("console", "10s"));
    ok(&s.run_once());
}

/// A table file `tables/<db>/<table>.csv` with rows `values`.
fn local_table(s: &Setup, db: &str, table: &str, values: &[i64]) {
    let dir = s.path("tables").join(db);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = "metric_name:string,v:long,t:datetime,host:string\n".to_string();
    for v in values {
        text.push_str(&format!("m,{v},2025-06-25T10:00:{v:02}Z,h\n"));
    }
    std::fs::write(dir.join(format!("{table}.csv")), text).unwrap();
}

fn rule_in(name: &str, ns: &str, db: &str, table: &str) -> String {
    rule(name, ns, name, table).replace("database: DB", &format!("database: \"{db}\""))
}

#[test]
fn tenancy_decides_which_table_folders_a_namespace_reads() {
    let receiver = Receiver::start();
    let s = Setup::with_config(
        &otlp("sink", &receiver.http_endpoint(), ""),
        &format!(
            "{TEST_MIN_INTERVAL}tenancy:\n  namespaces:\n    team-a: {{databases: [teama]}}\n    admins: {{databases: ['*']}}\n"
        ),
    );
    local_table(&s, "TeamA", "T", &[1, 2]);
    local_table(&s, "TeamB", "T", &[50]);
    // Database names compare without case, as in Kusto.
    s.manifest(
        "a.yaml",
        &format!(
            "{}---\n{}",
            rule_in("ra", "team-a", "TeamA", "T"),
            exporter("ea", "team-a", "ra", "sink", "1s")
        ),
    );
    ok(&s.run_once());
    assert_eq!(values(&receiver.points()), [1, 2]);

    // Team A's rule for team B's folder: the exporter does not run.
    s.manifest(
        "a2.yaml",
        &format!(
            "{}---\n{}",
            rule_in("steal", "team-a", "TeamB", "T"),
            exporter("thief", "team-a", "steal", "sink", "1s")
        ),
    );
    let out = s.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("MetricsExporter team-a/thief")
            && err.contains("SummaryRule team-a/steal: namespace `team-a` may not read database `TeamB` (tenancy.namespaces.team-a allows databases: teama; allowBody: false)"),
        "{err}"
    );
    // A namespace with no entry reads nothing.
    std::fs::remove_file(s.path("manifests/a2.yaml")).unwrap();
    s.manifest(
        "c.yaml",
        &format!(
            "{}---\n{}",
            rule_in("rc", "team-c", "TeamA", "T"),
            exporter("ec", "team-c", "rc", "sink", "1s")
        ),
    );
    let err = String::from_utf8_lossy(&s.run_once().stderr).to_string();
    assert!(
        err.contains("namespace `team-c` may not read database `TeamA` (tenancy.namespaces has no entry `team-c` and no `*` entry)"),
        "{err}"
    );
    // Even where every database is allowed, a name that is a path is not.
    std::fs::remove_file(s.path("manifests/c.yaml")).unwrap();
    s.manifest(
        "admins.yaml",
        &format!(
            "{}---\n{}",
            rule_in("up", "admins", "../tables/TeamB", "T"),
            exporter("eup", "admins", "up", "sink", "1s")
        ),
    );
    let err = String::from_utf8_lossy(&s.run_once().stderr).to_string();
    assert!(
        err.contains("spec.database `../tables/TeamB` cannot name a local table folder or file: it holds a path separator"),
        "{err}"
    );
    assert_eq!(
        values(&receiver.points()),
        [1, 2],
        "team B's rows never went out"
    );
}

/// One row the guest cannot handle among 100,000: the chunk is cut down
/// to that row, which is skipped and counted; every other row arrives.
#[test]
fn a_poison_row_is_skipped_and_counted_while_the_rest_arrive() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    let module = common::guest_path("test-guest-hostile");
    s.manifest(
        "all.yaml",
        &format!(
            "{}---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: e1, namespace: ns}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{team: a}}}}\n  exporters: [sink]\n  interval: 1m\n  transform:\n    behaviour: \"poison:4242\"\n    module: {{file: {}}}\n",
            rule("r1", "ns", "a", "T1"),
            module.display()
        ),
    );
    s.append("T1", 0..100_000);
    let out = s.run_once();
    let log = String::from_utf8_lossy(&out.stderr);
    ok(&out);
    assert!(
        log.contains("the guest hits a limit on it alone") && log.contains("guest-limit=1"),
        "{}",
        &log[..log.len().min(4000)]
    );
    let got = values(&receiver.points());
    assert_eq!(got.len(), 99_999, "every row but the poison one");
    assert!(!got.contains(&4242));
    assert_eq!(got[..3], [0, 1, 2]);
}

/// A pass that finds nothing new writes nothing: no sync, no change to
/// the progress files.
#[test]
fn an_idle_pass_does_not_rewrite_the_state() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest("all.yaml", &one_rule_and_exporter("sink", "1m"));
    s.append("T1", 0..10);
    ok(&s.run_once());
    let files = |s: &Setup| -> Vec<(String, u64, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(s.path("state"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap(),
                )
            })
            .filter(|(name, _, _)| name.starts_with("progress"))
            .collect();
        v.sort();
        v
    };
    let before = files(&s);
    assert!(!before.is_empty(), "the first pass wrote progress");
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        ok(&s.run_once());
    }
    assert_eq!(files(&s), before, "idle passes left the state as it was");
    assert_eq!(values(&receiver.points()), (0..10).collect::<Vec<_>>());
    // New rows do move it.
    s.append("T1", 10..12);
    ok(&s.run_once());
    assert_ne!(files(&s), before);
}

/// The resource attributes of the first recorded request, as a map.
fn resource_of(receiver: &Receiver) -> std::collections::BTreeMap<String, String> {
    let requests = receiver.requests();
    let first = requests.first().expect("a request");
    string_attributes(&first["request"]["resourceMetrics"][0]["resource"]["attributes"])
        .into_iter()
        .collect()
}

/// An OTLP/JSON attribute list of string values, as (key, value) in order.
fn string_attributes(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .expect("an attribute list")
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["value"]["stringValue"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn resource_attributes_come_from_host_exporter_and_metrics_exporter_in_layers() {
    let (plain, own) = (Receiver::start(), Receiver::start());
    let s = Setup::with_config(
        &format!(
            "{}{}",
            otlp("plain", &plain.http_endpoint(), ""),
            otlp(
                "own",
                &own.http_endpoint(),
                "    resourceAttributes: {deployment.environment: staging, owner: sre}\n"
            )
        ),
        &format!(
            "{TEST_MIN_INTERVAL}clusterLabels: {{region: eastus, cluster: c1}}\nresource: {{includeClusterLabels: true}}\nresourceAttributes: {{deployment.environment: prod, cluster: c1-override}}\n"
        ),
    );
    let me = exporter("e1", "ns", "a", "plain, own", "1m").replace(
        "  interval: 1m\n",
        "  interval: 1m\n  resourceAttributes: {team: payments, region: spoofed, owner: tenant}\n",
    );
    s.manifest(
        "all.yaml",
        &format!("{}---\n{me}", rule("r1", "ns", "a", "T1")),
    );
    s.append("T1", [1, 2]);
    let out = s.run_once();
    ok(&out);
    plain.wait_for_points(2, Duration::from_secs(10));
    own.wait_for_points(2, Duration::from_secs(10));
    let expected = |extra: &[(&str, &str)]| {
        let mut m: std::collections::BTreeMap<String, String> = [
            ("service.name", "adx-mon-metrics-exporter"),
            ("service.version", env!("CARGO_PKG_VERSION")),
            ("region", "eastus"),
            ("cluster", "c1-override"),
            ("team", "payments"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        m
    };
    assert_eq!(
        resource_of(&plain),
        expected(&[("deployment.environment", "prod"), ("owner", "tenant")]),
        "host attributes, cluster labels, then the MetricsExporter's new keys"
    );
    assert_eq!(
        resource_of(&own),
        expected(&[("deployment.environment", "staging"), ("owner", "sre")]),
        "the exporter's win over the host's; the tenant's never over either"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keys the host or an exporter sets keep the platform's value")
            && err.contains("region")
            && err.contains("owner"),
        "{err}"
    );
    // A bad map is refused naming where it is.
    let me = exporter("e2", "ns", "a", "plain", "1m").replace(
        "  interval: 1m\n",
        &format!(
            "  interval: 1m\n  resourceAttributes: {{big: {}}}\n",
            "x".repeat(5000)
        ),
    );
    s.manifest(
        "all.yaml",
        &format!("{}---\n{me}", rule("r1", "ns", "a", "T1")),
    );
    let out = s.run_once();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.resourceAttributes: `big`: the value is longer than 4096 bytes"),
        "{err}"
    );
}

#[test]
fn a_property_bag_reaches_the_receiver_as_labels() {
    let receiver = Receiver::start();
    let s = Setup::new(&otlp("sink", &receiver.http_endpoint(), ""));
    s.manifest(
        "all.yaml",
        &format!(
            "{}---\n{}",
            rule("r1", "ns", "a", "T1"),
            exporter("e1", "ns", "a", "sink", "1m").replace(
                "labelColumns: [host]",
                "labelColumns: [host, {column: props, expand: true, prefix: p_, maxKeys: 4}]",
            )
        ),
    );
    std::fs::write(
        s.path("tables/DB/T1.csv"),
        "metric_name:string,v:long,t:datetime,host:string,props:dynamic\n\
         m,1,2025-06-25T10:00:01Z,h1,\"{\"\"zone\"\": \"\"eu-1\"\", \"\"pod.name\"\": \"\"api-7\"\", \"\"n\"\": 2}\"\n\
         m,2,2025-06-25T10:00:02Z,h2,\"[\"\"not\"\", \"\"an object\"\"]\"\n\
         m,3,2025-06-25T10:00:03Z,h3,\n",
    )
    .unwrap();
    let out = s.run_once();
    ok(&out);
    let points = receiver.wait_for_points(2, Duration::from_secs(10));
    assert_eq!(
        values(&points),
        [1, 3],
        "the row whose bag is an array is skipped"
    );
    let attrs = |v: &str| -> Vec<(String, String)> {
        let p = points.iter().find(|p| p["asInt"] == v).unwrap();
        string_attributes(&p["attributes"])
    };
    let owned = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        attrs("1"),
        owned(&[
            ("host", "h1"),
            ("p_n", "2"),
            ("p_pod_name", "api-7"),
            ("p_zone", "eu-1")
        ])
    );
    assert_eq!(
        attrs("3"),
        owned(&[("host", "h3")]),
        "a null bag adds nothing"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("dynamic-not-object=1"), "{log}");
}

#[test]
fn label_names_a_metrics_exporter_sends_are_bounded_across_batches() {
    // A new key in every row: the guest's cap holds per batch only; the
    // host's holds over the process's life (4096 names per MetricsExporter).
    let receiver = Receiver::start();
    let s = Setup::with_config(
        &otlp("sink", &receiver.http_endpoint(), ""),
        TEST_MIN_INTERVAL,
    );
    let config = std::fs::read_to_string(s.path("kusto-metrics.yaml"))
        .unwrap()
        .replace("guests:\n", "guests:\n  maxRowsPerBatch: 1000\n");
    std::fs::write(s.path("kusto-metrics.yaml"), config).unwrap();
    s.manifest(
        "all.yaml",
        &format!(
            "{}---\n{}",
            rule("r1", "ns", "a", "T1"),
            exporter("e1", "ns", "a", "sink", "1m")
                .replace(
                    "labelColumns: [host]",
                    "labelColumns: [{column: props, expand: true, prefix: p_, maxKeys: 1}]\n    maxExpandedLabels: 1000",
                )
        ),
    );
    let rows = |range: std::ops::Range<i64>| -> String {
        range
            .map(|i| {
                format!(
                    "m,{i},2025-06-25T10:{:02}:{:02}Z,\"{{\"\"k{i}\"\": 1}}\"\n",
                    (i / 60) % 60,
                    i % 60
                )
            })
            .collect()
    };
    std::fs::write(
        s.path("tables/DB/T1.csv"),
        format!(
            "metric_name:string,v:long,t:datetime,props:dynamic\n{}",
            rows(0..5000)
        ),
    )
    .unwrap();
    let out = s.run_once();
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("too-many-label-keys=904"), "{log}");
    let points = receiver.wait_for_points(4096, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.points().len(), 4096, "{}", points.len());
    let names: std::collections::HashSet<String> = receiver
        .points()
        .iter()
        .map(|p| p["attributes"][0]["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4096, "one name per point, 4096 names");
}
