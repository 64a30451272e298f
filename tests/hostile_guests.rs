//! Hostile guests through the real binary: `kusto-metrics run --once` with
//! two MetricsExporters on one table, a hostile one first and the default
//! mapping second. Each attack must fail its own batch with the right typed
//! error, quickly, while the process's peak RSS (the kernel's, from
//! `wait4`) stays under a stated bound, and the second exporter must still
//! export. The peak of a run without the hostile exporter is measured in
//! the same test as the baseline; every figure is printed.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a run may hold at its peak: the baseline plus the guest's memory
/// limit and the output limits (see `host/src/transform/limits.rs`), far
/// below the GiBs these attacks took before the limits existed.
const PEAK_RSS_BOUND: u64 = 700 << 20;

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    peak_rss: u64,
    elapsed: Duration,
}

/// Runs the binary and reads its peak RSS from the kernel when it exits.
// The child is reaped by wait4 (for its rusage), not by std's `wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], config: &Path) -> Run {
    let started = Instant::now();
    let child = Command::new(common::bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.expect("stdout"), child.stderr.expect("stderr"));
    let readers = (
        std::thread::spawn(move || {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut s).ok();
            s
        }),
        std::thread::spawn(move || {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut s).ok();
            s
        }),
    );
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped (std's Child was not waited).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    let stdout = String::from_utf8_lossy(&readers.0.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&readers.1.join().unwrap()).into_owned();
    Run {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
        // Linux reports ru_maxrss in KiB.
        peak_rss: usage.ru_maxrss as u64 * 1024,
        elapsed: started.elapsed(),
    }
}

struct Setup {
    dir: tempfile::TempDir,
}

const RULE: &str = "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {name: rule, namespace: ns, labels: {export: \"yes\"}}\nspec: {database: DB, table: T, body: \"T\", interval: 5m}\n";

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("manifests")).unwrap();
        std::fs::create_dir_all(p.join("tables/DB")).unwrap();
        let mut rows = String::from("metric_name:string,v:long,t:datetime,host:string\n");
        for i in 0..100 {
            rows.push_str(&format!(
                "m,{i},2025-06-25T10:00:{:02}Z,h{}\n",
                i % 60,
                i % 3
            ));
        }
        std::fs::write(p.join("tables/DB/T.csv"), rows).unwrap();
        std::fs::write(p.join("manifests/rule.yaml"), RULE).unwrap();
        std::fs::write(
            p.join("kusto-metrics.yaml"),
            "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nguests:\n  cacheDir: cache\nexporters:\n  - name: console\n    stdout: {}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("manifests/good.yaml"),
            "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: good, namespace: ns}\nspec:\n  summaryRuleSelector: {matchLabels: {export: \"yes\"}}\n  exporters: [console]\n  interval: 1m\n  transform: {metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}\n",
        )
        .unwrap();
        Setup { dir }
    }

    fn hostile(&self, behaviour: &str) {
        let module = common::guest_path("test-guest-hostile");
        self.hostile_module(behaviour, &module);
    }

    fn hostile_module(&self, behaviour: &str, module: &Path) {
        std::fs::write(
            self.dir.path().join("manifests/hostile.yaml"),
            format!(
                "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: hostile, namespace: ns}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{export: \"yes\"}}}}\n  exporters: [console]\n  interval: 1m\n  transform:\n    behaviour: \"{behaviour}\"\n    module: {{file: {}}}\n",
                module.display()
            ),
        )
        .unwrap();
        // Each attack starts from nothing exported.
        let _ = std::fs::remove_dir_all(self.dir.path().join("state"));
    }

    fn run(&self) -> Run {
        run_measured(
            &["run", "--once"],
            &self.dir.path().join("kusto-metrics.yaml"),
        )
    }
}

/// Points the good exporter wrote to stdout (OTLP/JSON lines).
fn good_points(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| {
            v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|m| m["name"] == "m")
        .map(|m| m["gauge"]["dataPoints"].as_array().map_or(0, Vec::len))
        .sum()
}

fn longest_line(text: &str) -> usize {
    text.lines().map(str::len).max().unwrap_or(0)
}

#[test]
fn hostile_guests_fail_their_batch_in_bounded_memory_and_the_next_exporter_runs() {
    let setup = Setup::new();
    let baseline = setup.run();
    assert!(baseline.status.success(), "{}", baseline.stderr);
    assert_eq!(good_points(&baseline.stdout), 100);
    println!(
        "baseline (default mapping only): peak RSS {} MiB, {:?}",
        baseline.peak_rss >> 20,
        baseline.elapsed
    );

    let many = setup.dir.path().join("many-instances.wasm");
    std::fs::write(&many, common::instances::many_instances(7, 999)).unwrap();

    // (behaviour, what the error must say)
    let attacks: &[(&str, &str)] = &[
        ("shared-attribute:1048576:10000", "expands to"),
        ("shared-attribute:16777216:200000", "expands to"),
        (
            "aliased-strings:33554432:200000",
            "lifting it out of the guest",
        ),
        (
            "aliased-names:16777216:100000",
            "lifting it out of the guest",
        ),
        (
            "aliased-buckets:1048576:10000",
            "lifting it out of the guest",
        ),
        ("many-instances", "hit its memory limit"),
        ("huge-error:10485760", "rejected batch"),
    ];
    let mut figures = Vec::new();
    for (behaviour, wanted) in attacks {
        if *behaviour == "many-instances" {
            setup.hostile_module("ok", &many);
        } else {
            setup.hostile(behaviour);
        }
        let run = setup.run();
        figures.push((behaviour.to_string(), run.peak_rss, run.elapsed));
        assert!(
            !run.status.success(),
            "{behaviour}: the hostile exporter's run fails"
        );
        assert!(
            run.stderr.contains(wanted),
            "{behaviour}: want {wanted:?} in:\n{}",
            &run.stderr[..run.stderr.len().min(4000)]
        );
        assert!(
            run.stderr.contains("hostile"),
            "{behaviour}: names the exporter"
        );
        assert_eq!(
            good_points(&run.stdout),
            100,
            "{behaviour}: the next exporter still runs"
        );
        assert!(
            run.peak_rss < PEAK_RSS_BOUND,
            "{behaviour}: peak RSS {} MiB over the bound of {} MiB",
            run.peak_rss >> 20,
            PEAK_RSS_BOUND >> 20
        );
        assert!(
            longest_line(&run.stderr) < 16 << 10,
            "{behaviour}: a log line of {} bytes",
            longest_line(&run.stderr)
        );
        assert!(
            run.elapsed < Duration::from_secs(30),
            "{behaviour}: took {:?}",
            run.elapsed
        );
    }

    // Accepted, but what reaches logs stays small: many and long skip
    // reasons, log floods with long lines.
    for behaviour in [
        "skip-reasons:40:1048576",
        "big-log:1048576:100",
        "log-flood:100000",
    ] {
        setup.hostile(behaviour);
        let run = setup.run();
        figures.push((behaviour.to_string(), run.peak_rss, run.elapsed));
        assert!(run.status.success(), "{behaviour}: {}", run.stderr);
        assert!(
            longest_line(&run.stderr) < 16 << 10,
            "{behaviour}: a log line of {} bytes",
            longest_line(&run.stderr)
        );
        assert!(
            run.stderr.len() < 2 << 20,
            "{behaviour}: {} bytes of logs",
            run.stderr.len()
        );
        assert!(
            run.peak_rss < PEAK_RSS_BOUND,
            "{behaviour}: {} MiB",
            run.peak_rss >> 20
        );
        assert_eq!(good_points(&run.stdout), 100, "{behaviour}");
    }

    println!("peak RSS per attack (bound {} MiB):", PEAK_RSS_BOUND >> 20);
    for (behaviour, rss, elapsed) in figures {
        println!("  {behaviour:<36} {:>5} MiB  {elapsed:?}", rss >> 20);
    }
}
