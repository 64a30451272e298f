//! `kusto-metrics run` in Kubernetes mode, end to end: the real binary and
//! the real kube client against the in-memory API server
//! (tests/servers/kube_apiserver.py), local tables as the source and a real
//! OTLP receiver as the destination.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kube::{KubeApi, condition};
use common::receiver::Receiver;
use serde_json::{Value, json};

const NS: &str = "monitoring";
const LEASES: &str = "kusto-metrics";
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    dir: tempfile::TempDir,
    api: KubeApi,
    receiver: Receiver,
}

/// A running host; killed on drop.
struct Host {
    child: Child,
    log: PathBuf,
}

impl Host {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the host did not stop\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Setup {
    fn new() -> Setup {
        Self::new_with("")
    }

    /// `extra` goes at the top level of the host config.
    fn new_with(extra: &str) -> Setup {
        let api = KubeApi::start();
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
        let config = format!(
            "{extra}source:\n  local:\n    tables: tables\nreloadInterval: 200ms\nminInterval: 100ms\nguests:\n  cacheDir: cache\nkubernetes:\n  leaseNamespace: {LEASES}\n  leaseDuration: 4s\n  renewInterval: 1s\nexporters:\n  - name: sink\n    otlp:\n      endpoint: {}\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 3s}}\n",
            receiver.http_endpoint()
        );
        std::fs::write(dir.path().join("kusto-metrics.yaml"), config).unwrap();
        Setup { dir, api, receiver }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Appends rows `v` (long) for metric `m` to `tables/DB/<table>.csv`.
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
                "m,{v},2025-06-25T10:{:02}:{:02}Z,h",
                (v / 60) % 60,
                v % 60
            )
            .unwrap();
        }
    }

    fn spawn(&self, identity: &str, args: &[&str]) -> Host {
        let log = self.path(&format!("host-{identity}.log"));
        let child = Command::new(common::bin())
            .args(["run", "--config"])
            .arg(self.path("kusto-metrics.yaml"))
            .args(args)
            .env("KUBECONFIG", self.api.kubeconfig())
            .env("POD_NAME", identity)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Host { child, log }
    }

    fn rule(&self, name: &str, team: &str, table: &str) {
        self.api.create(
            "summaryrules",
            &format!(
                "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: {name}, namespace: {NS}, labels: {{team: {team}}}}}\nspec: {{database: DB, table: {table}, body: \"T\", interval: 5m}}\n"
            ),
        );
    }

    fn exporter(&self, name: &str, selector: &str, extra: &str) {
        self.api.create(
            "metricsexporters",
            &format!(
                "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  summaryRuleSelector: {selector}\n  exporters: [sink]\n  interval: 1s\n  transform: {{metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}}\n{extra}"
            ),
        );
    }

    fn values(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .receiver
            .points()
            .iter()
            .map(|p| p["asInt"].as_str().unwrap().parse().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Waits until the receiver holds exactly `want` (sorted), then checks
    /// nothing more arrives for a while.
    fn expect_values(&self, want: &[i64], host: &Host) {
        let deadline = Instant::now() + WAIT;
        while self.values() != want {
            assert!(
                Instant::now() < deadline,
                "wanted {want:?}, got {:?}\n--- host ---\n{}",
                self.values(),
                host.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            self.values(),
            want,
            "nothing more, nothing twice\n{}",
            host.log_text()
        );
    }
}

#[test]
fn discovery_follows_labels_new_rules_and_deletions() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.rule("r2", "b", "T2");
    s.exporter("e1", "{matchLabels: {team: a}}", "");
    s.append("T1", [1, 2]);
    s.append("T2", [10]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[1, 2], &host);
    // A label change joins a rule to the exporter.
    s.api.label("summaryrules", NS, "r2", json!({"team": "a"}));
    s.expect_values(&[1, 2, 10], &host);
    // A new matching rule is picked up without touching the exporter.
    s.append("T3", [20]);
    s.rule("r3", "a", "T3");
    s.expect_values(&[1, 2, 10, 20], &host);
    // After the watch history is gone (410 on reconnect), changes still
    // arrive: the reflector lists again.
    s.api.expire_watches();
    s.api.label("summaryrules", NS, "r1", json!({"team": "c"}));
    std::thread::sleep(Duration::from_millis(1500));
    s.append("T1", [3]);
    s.append("T2", [11]);
    s.expect_values(&[1, 2, 10, 11, 20], &host);
    // A deleted exporter stops.
    s.api.delete("metricsexporters", NS, "e1");
    std::thread::sleep(Duration::from_millis(1500));
    s.append("T2", [12]);
    s.expect_values(&[1, 2, 10, 11, 20], &host);
    assert!(
        s.api.log_text().contains("410") || s.api.log_text().contains("Expired"),
        "the watch saw 410 Gone"
    );
}

#[test]
fn status_shows_progress_conditions_and_problems() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.rule("sick", "s", "T9");
    s.exporter("good", "{matchLabels: {team: a}}", "");
    s.exporter("lonely", "{matchLabels: {team: nobody}}", "");
    s.exporter("sickly", "{matchLabels: {team: s}}", "");
    s.api.create(
        "metricsexporters",
        &format!("apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: broken, namespace: {NS}}}\nspec:\n  exporters: [nowhere]\n  interval: 1s\n  transform: {{valueColumn: v, timestampColumn: t}}\n"),
    );
    s.api.set_status(
        "summaryrules",
        NS,
        "sick",
        json!({"conditions": [{"type": "summaryrule.adx-mon.azure.com", "status": "False", "reason": "Failed", "message": "query failed", "lastTransitionTime": "2025-06-25T10:00:00Z"}]}),
    );
    s.append("T1", [1, 2, 3]);
    s.append("T9", [9]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[1, 2, 3, 9], &host);
    let good = s.api.wait_for("metricsexporters", NS, "good", WAIT, |v| {
        v["status"]["rules"][0]["offset"].as_i64().unwrap_or(0) > 0
            && condition(v, "Exporting").is_some()
    });
    let status = &good["status"];
    assert_eq!(status["observedGeneration"], good["metadata"]["generation"]);
    assert_eq!(condition(&good, "Ready").unwrap()["status"], "True");
    assert_eq!(
        condition(&good, "RulesDiscovered").unwrap()["status"],
        "True"
    );
    assert_eq!(
        condition(&good, "Exporting").unwrap()["reason"],
        "ExportSucceeded"
    );
    assert_eq!(condition(&good, "Degraded").unwrap()["status"], "False");
    assert_eq!(status["rulesMatched"], 1);
    assert_eq!(status["holder"], "a");
    assert_eq!(status["pointsSent"], 3);
    assert!(
        status["lastSuccess"].is_string() && status["lag"].is_string(),
        "{status:#}"
    );
    let rule = &status["rules"][0];
    assert_eq!(
        (
            rule["rule"].as_str(),
            rule["exporter"].as_str(),
            rule["rows"].as_i64()
        ),
        (Some("monitoring/r1"), Some("sink"), Some(3))
    );
    // The printer columns read these paths.
    let crd: Value = serde_yaml::from_str(&kusto_metrics::api::crds::all()[0].1).unwrap();
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["jsonPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            ".status.conditions[?(@.type==\"Ready\")].status",
            ".status.rulesMatched",
            ".status.lastSuccess",
            ".status.lag",
            ".metadata.creationTimestamp"
        ]
    );

    let lonely = s.api.wait_for("metricsexporters", NS, "lonely", WAIT, |v| {
        condition(v, "RulesDiscovered").is_some()
    });
    let c = condition(&lonely, "RulesDiscovered").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("NoMatchingRules"))
    );
    let sickly = s.api.wait_for("metricsexporters", NS, "sickly", WAIT, |v| {
        condition(v, "Degraded").is_some()
    });
    let c = condition(&sickly, "Degraded").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("RulesNotReady"))
    );
    assert!(c["message"].as_str().unwrap().contains("monitoring/sick"));
    let broken = s.api.wait_for("metricsexporters", NS, "broken", WAIT, |v| {
        condition(v, "Ready").is_some()
    });
    let c = condition(&broken, "Ready").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("`nowhere` is not defined"),
        "{c}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let events = s.api.events(NS);
        if events
            .iter()
            .any(|e| e["reason"] == "InvalidSpec" && e.to_string().contains("broken"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no InvalidSpec event: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A spec change: the status follows the new generation.
    s.api.patch(
        "metricsexporters",
        NS,
        "good",
        json!({"spec": {"interval": "2s"}}),
    );
    let good = s.api.wait_for("metricsexporters", NS, "good", WAIT, |v| {
        v["metadata"]["generation"] == 2 && v["status"]["observedGeneration"] == 2
    });
    assert_eq!(condition(&good, "Ready").unwrap()["observedGeneration"], 2);
    drop(host);
}

#[test]
fn criteria_pick_the_hosts_that_run_an_exporter() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.rule("r2", "b", "T2");
    s.exporter(
        "west",
        "{matchLabels: {team: a}}",
        "  criteria: {region: [westus]}\n",
    );
    s.exporter(
        "east",
        "{matchLabels: {team: b}}",
        "  criteriaExpression: \"region == 'eastus' && env != 'dev'\"\n",
    );
    // criteria compare without case (CEL compares exactly).
    s.rule("r3", "c", "T3");
    s.exporter(
        "anycase",
        "{matchLabels: {team: c}}",
        "  criteria: {Region: [EASTUS, westus]}\n",
    );
    s.append("T1", [1]);
    s.append("T2", [2]);
    s.append("T3", [3]);
    let host = s.spawn("a", &["--cluster-labels", "region=eastus,env=prod"]);
    s.expect_values(&[2, 3], &host);
    let west = s.api.get("metricsexporters", NS, "west").unwrap();
    assert!(
        west["status"].is_null() || west["status"]["holder"].is_null(),
        "not this host's: {west:#}"
    );
    let leases: Vec<String> = s
        .api
        .leases(LEASES)
        .iter()
        .map(|l| l["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        leases.contains(&"kusto-metrics-monitoring.east".to_string()),
        "{leases:?}"
    );
    assert!(
        !leases.contains(&"kusto-metrics-monitoring.west".to_string()),
        "{leases:?}"
    );
}

/// Which replica holds each exporter Lease.
fn holders(api: &KubeApi) -> BTreeMap<String, String> {
    api.leases(LEASES)
        .iter()
        .filter(|l| {
            l["metadata"]["labels"]["app.kubernetes.io/component"] == "kusto-metrics-exporter"
        })
        .filter_map(|l| {
            Some((
                l["metadata"]["annotations"]["kusto-metrics.adx-mon.azure.com/metrics-exporter"]
                    .as_str()?
                    .to_string(),
                l["spec"]["holderIdentity"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn two_replicas_share_the_exporters_and_one_takes_over_when_the_other_dies() {
    let s = Setup::new();
    let n = 6;
    for i in 0..n {
        s.rule(&format!("r{i}"), &format!("t{i}"), &format!("T{i}"));
        s.exporter(
            &format!("e{i}"),
            &format!("{{matchLabels: {{team: t{i}}}}}"),
            "",
        );
        s.append(&format!("T{i}"), [i * 100 + 1, i * 100 + 2]);
    }
    let mut a = s.spawn("a", &[]);
    let b = s.spawn("b", &[]);
    let mut want: Vec<i64> = (0..n).flat_map(|i| [i * 100 + 1, i * 100 + 2]).collect();
    want.sort();
    s.expect_values(&want, &a);
    // Both run some: the work is spread.
    let deadline = Instant::now() + WAIT;
    let spread = loop {
        let h = holders(&s.api);
        let by_a = h.values().filter(|v| *v == "a").count();
        if h.len() == n as usize && by_a > 0 && by_a < n as usize {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "not spread: {h:?}\n--- a ---\n{}\n--- b ---\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every exporter's progress is written before the kill.
    for i in 0..n {
        s.api
            .wait_for("metricsexporters", NS, &format!("e{i}"), WAIT, |v| {
                v["status"]["rules"][0]["rows"] == 2
            });
    }
    a.kill();
    let killed_at = Instant::now();
    for i in 0..n {
        s.append(&format!("T{i}"), [i * 100 + 3]);
    }
    want.extend((0..n).map(|i| i * 100 + 3));
    want.sort();
    s.expect_values(&want, &b);
    let taken = killed_at.elapsed();
    let h = holders(&s.api);
    assert!(
        h.values().all(|v| v == "b"),
        "b holds every exporter: {h:?} (was {spread:?})"
    );
    assert!(taken < Duration::from_secs(12), "taken over in {taken:?}");
    for i in 0..n {
        let e = s.api.get("metricsexporters", NS, &format!("e{i}")).unwrap();
        assert_eq!(e["status"]["holder"], "b");
    }
}

#[test]
fn a_replica_joining_mid_run_gets_exporters_handed_over_and_nothing_is_sent_twice() {
    let s = Setup::new();
    // Requests of 50 points, chunks of 100 rows, and a receiver that has
    // the points at once but answers 1.9 s later: a handover always finds
    // requests in flight.
    let config = std::fs::read_to_string(s.path("kusto-metrics.yaml")).unwrap();
    let config = config
        .replace(
            "      timeout: 2s\n",
            "      timeout: 10s\n      maxPointsPerRequest: 50\n",
        )
        .replace(
            "  cacheDir: cache\n",
            "  cacheDir: cache\n  maxRowsPerBatch: 100\n",
        );
    std::fs::write(s.path("kusto-metrics.yaml"), config).unwrap();
    s.receiver.slow(Duration::from_millis(1900));
    let n = 6;
    let rows = 300;
    for i in 0..n {
        s.rule(&format!("r{i}"), &format!("t{i}"), &format!("T{i}"));
        s.exporter(
            &format!("e{i}"),
            &format!("{{matchLabels: {{team: t{i}}}}}"),
            "",
        );
        s.append(&format!("T{i}"), (0..rows).map(|r| i * 1000 + r));
    }
    let a = s.spawn("a", &[]);
    // A holds everything and its runs are waiting for the receiver.
    let deadline = Instant::now() + WAIT;
    while !(holders(&s.api).len() == n as usize && s.receiver.points().len() >= 50) {
        assert!(
            Instant::now() < deadline,
            "a never started\n{}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = s.spawn("b", &[]);
    let mut want: Vec<i64> = (0..n)
        .flat_map(|i| (0..rows).map(move |r| i * 1000 + r))
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.values().len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} points\n--- a ---\n{}\n--- b ---\n{}",
            s.values().len(),
            want.len(),
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let got = s.values();
    let mut once = got.clone();
    once.dedup();
    assert_eq!(once, want, "every row arrived");
    assert_eq!(
        got.len(),
        want.len(),
        "nothing twice ({} repeated)\n--- a ---\n{}\n--- b ---\n{}",
        got.len() - want.len(),
        a.log_text(),
        b.log_text()
    );
    let h = holders(&s.api);
    assert!(
        h.values().any(|v| v == "b"),
        "b took some exporters over: {h:?}"
    );
    assert!(
        a.log_text().contains("handing the exporter over"),
        "{}",
        a.log_text()
    );
}

#[test]
fn a_commit_refused_by_the_api_server_is_retried_and_nothing_is_sent_again() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.exporter("e1", "{matchLabels: {team: a}}", "");
    s.append("T1", [1, 2]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[1, 2], &host);
    s.api.wait_for("metricsexporters", NS, "e1", WAIT, |v| {
        v["status"]["rules"][0]["rows"] == 2
    });
    // The next status writes fail: the commit after the next delivery
    // fails a few times.
    s.api
        .fail_status_writes("metricsexporters", NS, "e1", 6, 500);
    s.append("T1", [3, 4]);
    s.expect_values(&[1, 2, 3, 4], &host);
    let deadline = Instant::now() + Duration::from_secs(40);
    while s
        .api
        .get("metricsexporters", NS, "e1")
        .is_none_or(|v| v["status"]["rules"][0]["rows"] != 4)
    {
        assert!(
            Instant::now() < deadline,
            "the progress never landed\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.expect_values(&[1, 2, 3, 4], &host);
    assert!(
        s.api
            .status_writes_answered("metricsexporters", NS, "e1", 500)
            >= 6,
        "the writes were refused"
    );
    assert!(
        host.log_text().contains("cannot commit progress; retrying")
            && !host.log_text().contains("export run failed"),
        "{}",
        host.log_text()
    );
}

#[test]
fn a_restarted_replica_continues_from_the_status() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.exporter("e1", "{matchLabels: {team: a}}", "");
    s.append("T1", [1, 2]);
    let mut host = s.spawn("a", &[]);
    s.expect_values(&[1, 2], &host);
    s.api.wait_for("metricsexporters", NS, "e1", WAIT, |v| {
        v["status"]["rules"][0]["rows"] == 2
    });
    host.terminate();
    // A clean stop gives the lease up at once.
    let h = holders(&s.api);
    assert!(h.is_empty() || h.values().all(|v| v.is_empty()), "{h:?}");
    s.append("T1", [3]);
    assert!(
        !s.path("state").exists(),
        "no state folder in Kubernetes mode"
    );
    let host = s.spawn("a2", &[]);
    s.expect_values(&[1, 2, 3], &host);
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn configmap_modules_run_and_a_broken_update_keeps_the_last_good_one() {
    let s = Setup::new();
    let wasm = std::fs::read(common::guest_path("column-mapping")).unwrap();
    let digest = sha256_hex(&wasm);
    s.api.create_core(
        "configmaps",
        NS,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "guests", "namespace": NS},
            "binaryData": {"mapping.wasm": b64(&wasm)},
        }),
    );
    s.rule("r1", "a", "T1");
    s.rule("r2", "b", "T2");
    s.exporter("pinned", "{matchLabels: {team: a}}", "");
    s.api.patch("metricsexporters", NS, "pinned", json!({"spec": {"transform": {"module": {"configMap": {"name": "guests", "key": "mapping.wasm", "sha256": digest}}}}}));
    s.exporter("missing", "{matchLabels: {team: b}}", "");
    s.api.patch("metricsexporters", NS, "missing", json!({"spec": {"transform": {"module": {"configMap": {"name": "guests", "key": "nope.wasm"}}}}}));
    s.append("T1", [1, 2]);
    s.append("T2", [50]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[1, 2], &host);
    let pinned = s.api.wait_for("metricsexporters", NS, "pinned", WAIT, |v| {
        v["status"]["module"].is_object()
    });
    let module = &pinned["status"]["module"];
    assert_eq!(module["source"], "configMap guests key mapping.wasm");
    assert_eq!(module["layerDigest"], format!("sha256:{digest}"));
    assert_eq!(module["size"], wasm.len());
    assert_eq!(condition(&pinned, "ModuleReady").unwrap()["status"], "True");
    // Never a good module: it does not run, and says why.
    let missing = s
        .api
        .wait_for("metricsexporters", NS, "missing", WAIT, |v| {
            condition(v, "ModuleReady").is_some()
        });
    let ready = condition(&missing, "Ready").unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ModuleNotReady"))
    );
    let m = condition(&missing, "ModuleReady").unwrap();
    assert_eq!(
        (m["status"].as_str(), m["reason"].as_str()),
        (Some("False"), Some("PullFailed"))
    );
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("no binaryData key `nope.wasm` (it has: mapping.wasm)"),
        "{m}"
    );
    // The ConfigMap changes to bytes that do not match the pin: refused,
    // and the last good module keeps exporting.
    s.api.patch_core(
        "configmaps",
        NS,
        "guests",
        json!({"binaryData": {"mapping.wasm": b64(b"not a module")}}),
    );
    let pinned = s.api.wait_for("metricsexporters", NS, "pinned", WAIT, |v| {
        condition(v, "ModuleReady").is_some_and(|c| c["status"] == "False")
    });
    let m = condition(&pinned, "ModuleReady").unwrap();
    assert_eq!(m["reason"], "DigestMismatch");
    assert!(
        m["message"]
            .as_str()
            .unwrap()
            .contains("still running the last good module"),
        "{m}"
    );
    assert_eq!(condition(&pinned, "Ready").unwrap()["status"], "True");
    s.append("T1", [3]);
    s.expect_values(&[1, 2, 3], &host);
}

#[test]
fn an_oci_module_with_a_pull_secret_runs_in_the_cluster() {
    let registry = common::registry::Registry::start_with(Some(("team", "pw")));
    let pushed = registry.push(
        "team/mapping",
        "1.0",
        &common::guest_path("column-mapping"),
        &[],
    );
    let s = Setup::new_with(&format!(
        "registries:\n  insecure: [\"{}\"]\n",
        registry.host()
    ));
    let config = format!(
        r#"{{"auths": {{"{}": {{"username": "team", "password": "pw"}}}}}}"#,
        registry.host()
    );
    s.api.create_core(
        "secrets",
        NS,
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry-creds", "namespace": NS},
            "data": {".dockerconfigjson": b64(config.as_bytes())},
        }),
    );
    s.rule("r1", "a", "T1");
    s.exporter("oci", "{matchLabels: {team: a}}", "");
    s.api.patch(
        "metricsexporters",
        NS,
        "oci",
        json!({"spec": {"transform": {"module": {"oci": {
            "ref": format!("{}/team/mapping:1.0", registry.host()),
            "digest": pushed.manifest_digest,
            "pullSecretRef": {"name": "registry-creds"},
        }}}}}),
    );
    s.append("T1", [7]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[7], &host);
    let me = s.api.wait_for("metricsexporters", NS, "oci", WAIT, |v| {
        v["status"]["module"].is_object()
    });
    assert_eq!(
        me["status"]["module"]["manifestDigest"],
        pushed.manifest_digest.as_str()
    );
    assert_eq!(
        me["status"]["module"]["layerDigest"],
        pushed.layer_digest.as_str()
    );
    assert!(!me.to_string().contains("pw\""), "no secret in the status");
    assert!(!host.log_text().contains("\"pw\""), "no secret in the log");
}

#[test]
fn another_namespace_gets_neither_the_cached_module_nor_the_pull_secret_of_this_one() {
    let registry = common::registry::Registry::start_with(Some(("team", "pw")));
    let one = registry.push(
        "team/private",
        "1.0",
        &common::guest_path("column-mapping"),
        &[],
    );
    let two = registry.push(
        "team/private",
        "2.0",
        &common::guest_path("histogram-buckets"),
        &[],
    );
    let s = Setup::new_with(&format!(
        "registries:\n  insecure: [\"{}\"]\n",
        registry.host()
    ));
    let config = format!(
        r#"{{"auths": {{"{}": {{"username": "team", "password": "pw"}}}}}}"#,
        registry.host()
    );
    s.api.create_core(
        "secrets",
        NS,
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry-creds", "namespace": NS},
            "data": {".dockerconfigjson": b64(config.as_bytes())},
        }),
    );
    let module = |digest: &str, secret: bool| {
        let mut oci = json!({"ref": format!("{}/team/private", registry.host()), "digest": digest});
        if secret {
            oci["pullSecretRef"] = json!({"name": "registry-creds"});
        }
        json!({"spec": {"transform": {"module": {"oci": oci}}}})
    };
    s.rule("r1", "a", "T1");
    s.exporter("owner", "{matchLabels: {team: a}}", "");
    s.api.patch(
        "metricsexporters",
        NS,
        "owner",
        module(&one.manifest_digest, true),
    );
    s.append("T1", [7]);
    let host = s.spawn("a", &[]);
    // The owner pulled it: it is in the cache, and this host's registry
    // sessions have signed in with the owner's secret.
    s.expect_values(&[7], &host);
    // Another namespace, no pull secret: the cached digest, and another
    // digest of the same private repository.
    const OTHER: &str = "team-b";
    s.api.create(
        "summaryrules",
        &format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: r2, namespace: {OTHER}, labels: {{team: b}}}}\nspec: {{database: DB, table: T2, body: \"T\", interval: 5m}}\n"
        ),
    );
    s.append("T2", [100]);
    for (name, digest) in [
        ("cached", &one.manifest_digest),
        ("uncached", &two.manifest_digest),
    ] {
        s.api.create(
            "metricsexporters",
            &format!(
                "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: {name}, namespace: {OTHER}}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{team: b}}}}\n  exporters: [sink]\n  interval: 1s\n  transform: {{metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}}\n"
            ),
        );
        s.api
            .patch("metricsexporters", OTHER, name, module(digest, false));
    }
    for name in ["cached", "uncached"] {
        let me = s.api.wait_for("metricsexporters", OTHER, name, WAIT, |v| {
            condition(v, "ModuleReady").is_some()
        });
        let m = condition(&me, "ModuleReady").unwrap();
        assert_eq!(
            (m["status"].as_str(), m["reason"].as_str()),
            (Some("False"), Some("Unauthorized")),
            "{name}: {m}\n{}",
            host.log_text()
        );
        assert!(
            m["message"]
                .as_str()
                .unwrap()
                .contains("refused anonymous access"),
            "{name}: {m}"
        );
        assert_eq!(condition(&me, "Ready").unwrap()["reason"], "ModuleNotReady");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.values(), [7], "team-b's rows never went out");
}

#[test]
fn tenancy_and_manifest_limits_show_in_status_and_an_unfit_rule_blocks_no_other() {
    let port = common::prometheus::free_port();
    let s = Setup::new_with(&format!(
        "server: {{listen: 127.0.0.1:{port}}}\ntenancy:\n  namespaces:\n    {NS}: {{databases: [db]}}\n"
    ));
    s.rule("r1", "a", "T1");
    // adx-mon's CRD may hold what our type does not take: this one is
    // skipped, and the rules beside it are used.
    s.api.create(
        "summaryrules",
        &format!("apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: odd, namespace: {NS}, labels: {{team: a}}}}\nspec: {{database: 42, table: [T1], interval: 5m}}\n"),
    );
    s.exporter("good", "{matchLabels: {team: a}}", "");
    // Team B's rule and exporter: team-b has no entry in the policy.
    s.api.create(
        "summaryrules",
        "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {name: rb, namespace: team-b, labels: {team: b}}\nspec: {database: DB, table: T2, body: \"T\", interval: 5m}\n",
    );
    s.api.create(
        "metricsexporters",
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: nosy, namespace: team-b}\nspec:\n  summaryRuleSelector: {matchLabels: {team: b}}\n  exporters: [sink]\n  interval: 1s\n  transform: {metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}\n",
    );
    s.exporter("hasty", "{matchLabels: {team: a}}", "");
    s.api.patch(
        "metricsexporters",
        NS,
        "hasty",
        json!({"spec": {"interval": "10ms"}}),
    );
    s.exporter(
        "clever",
        "{matchLabels: {team: a}}",
        "  criteriaExpression: \"[1, 2].exists(x, [3, 4].exists(y, x < y))\"\n",
    );
    s.append("T1", [1, 2]);
    s.append("T2", [50]);
    let host = s.spawn("a", &[]);
    // Only `good` exports: the others never ran, team B's rows never left.
    s.expect_values(&[1, 2], &host);
    let ready = |name: &str, ns: &str| {
        let v = s.api.wait_for("metricsexporters", ns, name, WAIT, |v| {
            condition(v, "Ready").is_some()
        });
        let c = condition(&v, "Ready").unwrap().clone();
        (
            c["status"].as_str().unwrap().to_string(),
            c["reason"].as_str().unwrap().to_string(),
            c["message"].as_str().unwrap().to_string(),
        )
    };
    let (status, reason, message) = ready("nosy", "team-b");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "DatabaseNotAllowed")
    );
    assert!(
        message.contains("SummaryRule team-b/rb: namespace `team-b` may not read database `DB` (tenancy.namespaces has no entry `team-b` and no `*` entry)"),
        "{message}"
    );
    let (status, reason, message) = ready("hasty", NS);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "IntervalTooShort")
    );
    assert!(
        message.contains("spec.interval: `10ms` is shorter than this host's minInterval (100ms"),
        "{message}"
    );
    let (status, reason, message) = ready("clever", NS);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CriteriaExpressionTooComplex")
    );
    assert!(
        message.contains("MAX_COMPREHENSION_NESTING (1)"),
        "{message}"
    );
    assert_eq!(ready("good", NS).0, "True");
    let events = s.api.events("team-b");
    assert!(
        events.iter().any(|e| e["reason"] == "DatabaseNotAllowed"),
        "a Warning Event: {events:?}"
    );
    let log = host.log_text();
    assert!(
        log.contains("SummaryRule skipped")
            && log.contains("monitoring/odd")
            && log.contains("spec.database: invalid type: integer `42`, expected a string"),
        "{log}"
    );
    let own =
        common::receiver::http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[], b"")
            .unwrap()
            .text();
    assert!(
        own.contains("kusto_metrics_summaryrules_skipped 1"),
        "{own}"
    );
}

#[test]
fn a_configmap_where_the_host_has_no_role_names_the_namespace_and_the_permission() {
    let s = Setup::new();
    s.api.forbid("configmaps", NS);
    s.rule("r1", "a", "T1");
    s.exporter("cm", "{matchLabels: {team: a}}", "");
    s.api.patch(
        "metricsexporters",
        NS,
        "cm",
        json!({"spec": {"transform": {"module": {"configMap": {"name": "guests", "key": "mapping.wasm"}}}}}),
    );
    s.append("T1", [1]);
    let host = s.spawn("a", &[]);
    let me = s.api.wait_for("metricsexporters", NS, "cm", WAIT, |v| {
        condition(v, "ModuleReady").is_some()
    });
    let m = condition(&me, "ModuleReady").unwrap();
    assert_eq!(
        (m["status"].as_str(), m["reason"].as_str()),
        (Some("False"), Some("Unauthorized"))
    );
    let message = m["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "no permission to get configmaps in namespace {NS}"
        )) && message.contains("deploy/components/watch-namespace")
            && message.contains(&format!(
                "cannot get resource \"configmaps\" in API group \"\" in the namespace \"{NS}\""
            )),
        "{message}"
    );
    assert_eq!(condition(&me, "Ready").unwrap()["reason"], "ModuleNotReady");
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.values().is_empty(), "{}", host.log_text());
}

#[test]
fn run_once_is_refused_in_kubernetes_mode() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.exporter("e1", "{matchLabels: {team: a}}", "");
    s.append("T1", [1, 2]);
    let mut host = s.spawn("a", &["--once"]);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "run --once kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = host.log_text();
    assert_eq!(status.code(), Some(1), "refused: {status:?}\n{log}");
    assert!(
        log.contains("`run --once` does not run in Kubernetes mode")
            && log.contains("kusto-metrics.yaml"),
        "the error says why and names the config: {log}"
    );
    assert!(s.api.leases(LEASES).is_empty(), "no Lease taken");
    assert!(s.values().is_empty(), "nothing exported");
}

/// The fencing token a MetricsExporter's status names.
fn fencing_token(api: &KubeApi, name: &str) -> Option<i64> {
    api.get("metricsexporters", NS, name)?["status"]["fencingToken"].as_i64()
}

#[test]
fn a_status_write_from_a_stale_holder_is_refused() {
    let s = Setup::new();
    s.rule("r1", "a", "T1");
    s.exporter("e1", "{matchLabels: {team: a}}", "");
    s.append("T1", [1, 2]);
    let host = s.spawn("a", &[]);
    s.expect_values(&[1, 2], &host);
    let before = s.api.wait_for("metricsexporters", NS, "e1", WAIT, |v| {
        v["status"]["rules"][0]["rows"] == 2 && v["status"]["holder"] == "a"
    });
    let token = before["status"]["fencingToken"]
        .as_i64()
        .expect("the status carries the holder's fencing token");
    // Another replica took the exporter with a newer token and wrote its
    // claim; replica a has not noticed yet (its Lease is left alone, so it
    // goes on running and tries to commit).
    s.api.set_status(
        "metricsexporters",
        NS,
        "e1",
        json!({"holder": "z", "fencingToken": token + 1}),
    );
    s.api.call(
        "POST",
        "/_test/reset-requests",
        "application/json",
        &json!({}),
    );
    s.append("T1", [3]);
    let deadline = Instant::now() + WAIT;
    while !host.log_text().contains("refused a status write") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a try a few more intervals: none of its writes lands.
    std::thread::sleep(Duration::from_secs(3));
    let after = s.api.get("metricsexporters", NS, "e1").unwrap();
    assert_eq!(after["status"]["holder"], "z", "{after:#}");
    assert_eq!(fencing_token(&s.api, "e1"), Some(token + 1));
    assert_eq!(
        after["status"]["rules"][0]["rows"], 2,
        "the newer holder's progress stands: {after:#}"
    );
    let conflicts = s
        .api
        .status_writes_answered("metricsexporters", NS, "e1", 409);
    let applied = s
        .api
        .status_writes_answered("metricsexporters", NS, "e1", 200);
    assert!(
        conflicts >= 1 && applied == 0,
        "the API server refused the stale write ({conflicts} conflicts) and took none ({applied})"
    );
    println!("stale holder: {conflicts} status writes conflicted, 0 applied");
}

#[test]
fn a_dead_replicas_exporters_are_taken_over_within_one_and_a_half_lease_durations() {
    const LEASE: Duration = Duration::from_secs(4);
    let s = Setup::new();
    let n = 6;
    for i in 0..n {
        s.rule(&format!("r{i}"), &format!("t{i}"), &format!("T{i}"));
        s.exporter(
            &format!("e{i}"),
            &format!("{{matchLabels: {{team: t{i}}}}}"),
            "",
        );
        s.append(&format!("T{i}"), [i * 100 + 1]);
    }
    let mut a = s.spawn("a", &[]);
    let b = s.spawn("b", &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        let h = holders(&s.api);
        let by_a = h.values().filter(|v| *v == "a").count();
        if h.len() == n as usize && by_a > 0 && by_a < n as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not spread: {h:?}\n--- a ---\n{}\n--- b ---\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a renew for a while, so b has seen its Leases being renewed.
    std::thread::sleep(Duration::from_secs(2));
    a.kill();
    let killed = Instant::now();
    let taken = loop {
        let h = holders(&s.api);
        if h.len() == n as usize && h.values().all(|v| v == "b") {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < LEASE * 4,
            "b never took everything over: {h:?}\n--- b ---\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "takeover after SIGKILL: {taken:?} ({:.2} lease durations of {LEASE:?})",
        taken.as_secs_f64() / LEASE.as_secs_f64()
    );
    assert!(
        taken < LEASE * 3 / 2,
        "taken over in {taken:?}, more than 1.5 lease durations\n--- b ---\n{}",
        b.log_text()
    );
}

#[test]
fn renewals_keep_up_with_a_slow_api_server_and_dead_members_are_deleted() {
    let s = Setup::new();
    let n = 24;
    for i in 0..n {
        s.rule(&format!("r{i}"), &format!("t{i}"), &format!("T{i}"));
        s.exporter(
            &format!("e{i}"),
            &format!("{{matchLabels: {{team: t{i}}}}}"),
            "",
        );
    }
    // A replica that died long ago left its membership Lease behind.
    let ghost = s.api.create_lease(
        LEASES,
        json!({"metadata": {"name": "kusto-metrics-member-ghost",
                            "labels": {"app.kubernetes.io/component": "kusto-metrics-member"}},
               "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 4}}),
    );
    assert_eq!(ghost["spec"]["holderIdentity"], "ghost");
    let host = s.spawn("a", &[]);
    // The ghost counts as a member until its Lease is seen stale, so a
    // takes half first, then all.
    let deadline = Instant::now() + WAIT;
    while holders(&s.api).values().filter(|v| *v == "a").count() < n {
        assert!(
            Instant::now() < deadline,
            "a never held every exporter: {:?}\n{}",
            holders(&s.api),
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each Lease request now takes 150 ms: 24 renewals one after the other
    // (a GET and a PUT each, 7.2 s) would let 2.6 s claims lapse.
    s.api.delay("leases", 0.15);
    let versions = |api: &KubeApi| -> BTreeMap<String, String> {
        api.leases(LEASES)
            .iter()
            .filter(|l| {
                l["metadata"]["labels"]["app.kubernetes.io/component"] == "kusto-metrics-exporter"
            })
            .map(|l| {
                (
                    l["metadata"]["name"].as_str().unwrap().to_string(),
                    l["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    let first = versions(&s.api);
    std::thread::sleep(Duration::from_secs(8));
    let later = versions(&s.api);
    s.api.delay("leases", 0.0);
    let log = host.log_text();
    assert!(
        !log.contains("lease expired before it could be renewed")
            && !log.contains("lease taken by another replica"),
        "no claim lapsed\n{log}"
    );
    assert!(
        first
            .iter()
            .all(|(k, v)| later.get(k).is_some_and(|l| l != v)),
        "every Lease was renewed while the server was slow"
    );
    let h = holders(&s.api);
    assert!(
        h.len() == n && h.values().all(|v| v == "a"),
        "a still holds everything: {h:?}"
    );
    // 3 lease durations unchanged: the ghost's membership Lease is gone,
    // a's own stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = s
            .api
            .leases(LEASES)
            .iter()
            .filter_map(|l| l["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if !names.iter().any(|n| n == "kusto-metrics-member-ghost") {
            assert!(
                names.iter().any(|n| n == "kusto-metrics-member-a"),
                "{names:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead member's Lease stays: {names:?}\n{}",
            host.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(host.log_text().contains("deleted the membership lease"));
}
