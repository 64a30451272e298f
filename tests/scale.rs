//! Scale (issue 13): 10,000 MetricsExporters, each with its own SummaryRule
//! and a table of a few rows, load and run once (`run --once`, a stdout
//! exporter); every exporter's rows must come out exactly once. How long it
//! took and the peak RSS are printed, not asserted (the machine decides
//! them; `scripts/bench-scale.sh` measures them). A watchdog stops a run
//! that passes MAX_RSS or MAX_RUN, so a regression fails the test instead
//! of starving the machine.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const EXPORTERS: usize = 10_000;
const ROWS: i64 = 3;
/// Far above what the run needs; only a runaway host gets there.
const MAX_RSS: u64 = 6 << 30;
/// Likewise: a host that is stuck, not one that is slow.
const MAX_RUN: Duration = Duration::from_secs(900);

/// Writes the host config, one manifest per exporter (its SummaryRule and
/// the MetricsExporter selecting it by label) and one table per rule.
fn deploy(dir: &Path) {
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::create_dir_all(dir.join("tables/DB")).unwrap();
    std::fs::write(
        dir.join("kusto-metrics.yaml"),
        "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nguests:\n  cacheDir: cache\nexporters:\n  - name: console\n    stdout: {}\n",
    )
    .unwrap();
    for i in 0..EXPORTERS {
        let id = format!("{i:05}");
        std::fs::write(
            dir.join(format!("manifests/e{id}.yaml")),
            format!(
                r#"apiVersion: adx-mon.azure.com/v1
kind: SummaryRule
metadata:
  name: r{id}
  namespace: ns-{ns}
  labels: {{metrics-export: "enabled", team: "t{team}", app: "a{id}"}}
spec: {{database: DB, table: T{id}, body: "T | take 1", interval: 5m}}
---
apiVersion: adx-mon.azure.com/v1
kind: MetricsExporter
metadata: {{name: e{id}, namespace: ns-{ns}}}
spec:
  summaryRuleSelector:
    matchLabels: {{metrics-export: "enabled", app: "a{id}"}}
    matchExpressions: [{{key: team, operator: Exists}}]
  exporters: [console]
  interval: 1m
  transform: {{metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}}
"#,
                ns = i % 10,
                team = i % 100,
            ),
        )
        .unwrap();
        let mut rows = String::from("metric_name:string,v:long,t:datetime,host:string\n");
        for v in 0..ROWS {
            rows.push_str(&format!("m{id},{v},2025-06-25T10:00:{v:02}Z,h{}\n", v % 3));
        }
        std::fs::write(dir.join(format!("tables/DB/T{id}.csv")), rows).unwrap();
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Points by metric name, from OTLP/JSON requests one per line.
fn points(stdout: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut by_name: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let file = std::fs::File::open(stdout).unwrap();
    for line in BufReader::new(file).lines() {
        let request: Value = serde_json::from_str(&line.unwrap()).expect("OTLP/JSON per line");
        for rm in request["resourceMetrics"]
            .as_array()
            .expect("resourceMetrics")
        {
            for sm in rm["scopeMetrics"].as_array().expect("scopeMetrics") {
                for m in sm["metrics"].as_array().expect("metrics") {
                    let name = m["name"].as_str().expect("name").to_string();
                    let values = by_name.entry(name).or_default();
                    for p in m["gauge"]["dataPoints"].as_array().expect("gauge points") {
                        values.push(p["asInt"].as_str().unwrap().parse().unwrap());
                    }
                }
            }
        }
    }
    for values in by_name.values_mut() {
        values.sort();
    }
    by_name
}

#[test]
fn ten_thousand_exporters_load_and_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    deploy(dir.path());
    let deployed = started.elapsed();

    let stdout = dir.path().join("stdout.jsonl");
    let started = Instant::now();
    let mut child = Command::new(common::bin())
        .args(["run", "--once", "--config"])
        .arg(dir.path().join("kusto-metrics.yaml"))
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id();
    let mut err = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                let rss = status_kib(pid, "VmRSS:").unwrap_or(0) * 1024;
                peak = peak.max(status_kib(pid, "VmHWM:").unwrap_or(0) * 1024);
                if rss > MAX_RSS || started.elapsed() > MAX_RUN {
                    // SAFETY: pid is our child, not yet reaped.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    return (
                        peak,
                        Some(format!(
                            "stopped: RSS {} MiB after {:?}",
                            rss >> 20,
                            started.elapsed()
                        )),
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, None)
        })
    };
    let status = child.wait().unwrap();
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (peak, stopped) = watchdog.join().unwrap();
    let log = log.join().unwrap();
    let read_at = log
        .lines()
        .find(|l| l.contains("manifests read"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string());
    println!(
        "{EXPORTERS} MetricsExporters: deployed in {deployed:?}, `run --once` took {elapsed:?} \
         (manifests read at {read_at:?}), peak RSS about {} MiB, exit {status:?}",
        peak >> 20
    );
    assert!(stopped.is_none(), "{}", stopped.unwrap_or_default());
    assert!(
        status.success(),
        "exit {status:?} (signal {:?}); log tail:\n{}",
        status.signal(),
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let runs = log.lines().filter(|l| l.contains("export run")).count();
    let failed = log
        .lines()
        .filter(|l| l.contains("export run failed"))
        .count();
    assert_eq!(
        (runs, failed),
        (EXPORTERS, 0),
        "one successful run per exporter"
    );

    let by_name = points(&stdout);
    assert_eq!(by_name.len(), EXPORTERS, "every exporter's metric came out");
    let expected: Vec<i64> = (0..ROWS).collect();
    for i in 0..EXPORTERS {
        let name = format!("m{i:05}");
        assert_eq!(by_name.get(&name), Some(&expected), "{name}: each row once");
    }
}
