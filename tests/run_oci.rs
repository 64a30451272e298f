//! Guest modules from a real OCI registry (Debian's docker-registry),
//! pushed with a real client (oras), through `test-transform --module
//! oci://...` and `kusto-metrics run`: pinned and tagged pulls, every
//! refusal (wrong digest, altered blobs, wrong media types, too large,
//! unauthorized, wrong contract), a registry that is down with and without
//! a cached module, and a module swapped while `run` runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::registry::{BadRegistry, Misbehaviour, Registry};
use serde_json::Value;

fn guest(name: &str) -> PathBuf {
    common::guest_path(name)
}

/// `test-transform` of the spec's simple example with `module`, and a
/// fresh or given cache.
fn try_module(module: &str, cache: &Path, extra: &[&str]) -> Output {
    let root = common::root();
    Command::new(common::bin())
        .args(["test-transform", "--compact", "--cache-dir"])
        .arg(cache)
        .arg("--transform")
        .arg(root.join("examples/simple/transform.yaml"))
        .arg("--input")
        .arg(root.join("examples/simple/rows.csv"))
        .args(["--module", module])
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn expected_simple() -> Value {
    let text =
        std::fs::read_to_string(common::root().join("examples/simple/expected-otlp.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ok_output(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status,
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).expect("OTLP/JSON on stdout")
}

#[test]
fn a_module_pinned_by_digest_or_named_by_tag_is_pulled_verified_and_cached() {
    let registry = Registry::start();
    let pushed = registry.push("team/column-mapping", "1.0", &guest("column-mapping"), &[]);
    let cache = tempfile::tempdir().unwrap();
    let host = registry.host();
    let insecure = ["--insecure-registry", host.as_str()];
    let pinned = format!(
        "oci://{host}/team/column-mapping@{}",
        pushed.manifest_digest
    );
    let out = try_module(&pinned, cache.path(), &insecure);
    assert_eq!(ok_output(&out), expected_simple());
    let err = stderr(&out);
    assert!(
        err.contains(&pushed.manifest_digest) && err.contains("pulled"),
        "{err}"
    );
    // Again: from the cache, with the registry down.
    let mut registry = registry;
    registry.stop();
    let out = try_module(&pinned, cache.path(), &insecure);
    assert_eq!(
        ok_output(&out),
        expected_simple(),
        "runs without the network"
    );
    assert!(stderr(&out).contains("from the cache"), "{}", stderr(&out));
    // Down and nothing cached: refused, clearly.
    let fresh = tempfile::tempdir().unwrap();
    let out = try_module(&pinned, fresh.path(), &insecure);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("guest module oci://")
            && stderr(&out).to_lowercase().contains("connect"),
        "{}",
        stderr(&out)
    );
    registry.restart();
    // By tag: resolved to the same manifest.
    let out = try_module(
        &format!("oci://{host}/team/column-mapping:1.0"),
        fresh.path(),
        &insecure,
    );
    assert_eq!(ok_output(&out), expected_simple());
    assert!(
        stderr(&out).contains(&pushed.manifest_digest),
        "{}",
        stderr(&out)
    );
}

#[test]
fn what_cannot_be_verified_never_runs() {
    let registry = Registry::start();
    let host = registry.host();
    let insecure = ["--insecure-registry", host.as_str()];
    let good = registry.push("team/cm", "1.0", &guest("column-mapping"), &[]);
    let cache = tempfile::tempdir().unwrap();
    let refused = |module: String, words: &[&str]| {
        let out = try_module(&module, tempfile::tempdir().unwrap().path(), &insecure);
        assert!(!out.status.success(), "{module} ran");
        let err = stderr(&out);
        for w in words {
            assert!(err.contains(w), "`{w}` not in: {err}");
        }
        assert!(out.stdout.is_empty());
    };
    // A digest the registry does not have.
    refused(
        format!("oci://{host}/team/cm@sha256:{}", "0".repeat(64)),
        &["guest module", "team/cm"],
    );
    let out = try_module(
        &format!("oci://{host}/team/cm@{}", good.manifest_digest),
        cache.path(),
        &insecure,
    );
    assert!(out.status.success(), "the good one runs: {}", stderr(&out));
    // Wrong media types and layouts, named.
    let octet = registry.push(
        "team/octet",
        "1",
        &guest("column-mapping"),
        &["--layer-media-type", "application/octet-stream"],
    );
    refused(
        format!("oci://{host}/team/octet@{}", octet.manifest_digest),
        &[
            "application/octet-stream",
            "exactly one `application/wasm` layer",
        ],
    );
    let image = registry.push(
        "team/image",
        "1",
        &guest("column-mapping"),
        &[
            "--config-media-type",
            "application/vnd.oci.image.config.v1+json",
        ],
    );
    refused(
        format!("oci://{host}/team/image@{}", image.manifest_digest),
        &["application/vnd.oci.image.config.v1+json"],
    );
    let extra = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(extra.path(), b"more").unwrap();
    let two = registry.push(
        "team/two",
        "1",
        &guest("column-mapping"),
        &[
            "--extra-layer",
            &format!("{}:application/wasm", extra.path().display()),
        ],
    );
    refused(
        format!("oci://{host}/team/two@{}", two.manifest_digest),
        &["2 layer(s)"],
    );
    // A component built for another contract.
    let wrong = registry.push("team/wrong", "1", &guest("test-guest-wrong-contract"), &[]);
    refused(
        format!("oci://{host}/team/wrong@{}", wrong.manifest_digest),
        &["adx-mon:metrics-transform"],
    );
    // A layer altered in the registry's storage: its digest no longer fits.
    let altered = registry.push("team/altered", "1", &guest("histogram-buckets"), &[]);
    registry.corrupt(&altered.layer_digest);
    refused(
        format!("oci://{host}/team/altered@{}", altered.manifest_digest),
        &["digest", &altered.layer_digest, "refusing them"],
    );
    // A manifest altered in storage: not the pinned one.
    let man = registry.push("team/manifest", "1", &guest("test-guest-clock"), &[]);
    registry.corrupt(&man.manifest_digest);
    refused(
        format!("oci://{host}/team/manifest@{}", man.manifest_digest),
        &["pinned", &man.manifest_digest],
    );
}

#[test]
fn credentials_come_from_a_docker_config_and_their_absence_is_named() {
    let registry = Registry::start_with(Some(("team", "s3cret")));
    let pushed = registry.push("team/cm", "1.0", &guest("column-mapping"), &[]);
    let host = registry.host();
    let module = format!("oci://{host}/team/cm@{}", pushed.manifest_digest);
    let cache = tempfile::tempdir().unwrap();
    let out = try_module(&module, cache.path(), &["--insecure-registry", &host]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("guest module")
            && (err.contains("401") || err.to_lowercase().contains("auth")),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = registry.docker_config(dir.path());
    let out = try_module(
        &module,
        cache.path(),
        &[
            "--insecure-registry",
            &host,
            "--docker-config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(ok_output(&out), expected_simple());
    assert!(!stderr(&out).contains("s3cret"), "no secret in the output");
}

#[test]
fn a_cached_private_module_serves_another_namespace_only_after_the_registry_accepts_it() {
    let mut registry = Registry::start_with(Some(("team", "s3cret")));
    let pushed = registry.push("team-a/private", "1.0", &guest("column-mapping"), &[]);
    let host = registry.host();
    let module = format!("oci://{host}/team-a/private@{}", pushed.manifest_digest);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = registry.docker_config(dir.path());
    let as_namespace = |ns: &str, credentials: bool| {
        let mut extra = vec!["--insecure-registry", host.as_str(), "--namespace", ns];
        if credentials {
            extra.extend(["--docker-config", config.to_str().unwrap()]);
        }
        try_module(&module, cache.path(), &extra)
    };
    let out = as_namespace("team-a", true);
    assert_eq!(ok_output(&out), expected_simple());
    assert!(stderr(&out).contains("pulled"), "{}", stderr(&out));
    // From here on the registry's copy of the layer is broken: a module
    // that runs came from the cache, not from a new download.
    registry.corrupt(&pushed.layer_digest);

    // Another namespace names the digest without credentials: refused,
    // although the bytes sit in the cache.
    let out = as_namespace("team-b", false);
    assert!(!out.status.success(), "team-b ran team-a's private module");
    let err = stderr(&out);
    assert!(
        err.contains("[Unauthorized]")
            && err.contains("refused anonymous access")
            && err.contains("401"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    // With its own credentials: the registry says yes, and the cached copy
    // runs without downloading anything.
    let out = as_namespace("team-b", true);
    assert_eq!(ok_output(&out), expected_simple());
    assert!(stderr(&out).contains("from the cache"), "{}", stderr(&out));
    // Checked once: with the registry down, both namespaces run it from
    // the cache; a third, never checked, does not.
    registry.stop();
    for ns in ["team-a", "team-b"] {
        let out = as_namespace(ns, false);
        assert_eq!(ok_output(&out), expected_simple(), "{ns}");
    }
    let out = as_namespace("team-c", false);
    assert!(!out.status.success(), "team-c was never checked");
    assert!(stderr(&out).contains("[PullFailed]"), "{}", stderr(&out));
}

#[test]
fn a_registry_that_only_claims_a_cached_digest_gets_nothing_from_the_cache() {
    let registry = Registry::start();
    let pushed = registry.push("team-a/mapping", "1.0", &guest("column-mapping"), &[]);
    let cache = tempfile::tempdir().unwrap();
    let host = registry.host();
    let out = try_module(
        &format!("oci://{host}/team-a/mapping@{}", pushed.manifest_digest),
        cache.path(),
        &["--insecure-registry", &host],
    );
    assert_eq!(ok_output(&out), expected_simple());
    // Another registry says it holds that digest, and serves other bytes.
    let liar = BadRegistry::start(Misbehaviour::ClaimsEverything);
    let out = try_module(
        &format!(
            "oci://{}/team-b/mapping@{}",
            liar.host(),
            pushed.manifest_digest
        ),
        cache.path(),
        &["--insecure-registry", &liar.host(), "--namespace", "team-b"],
    );
    assert!(!out.status.success(), "the cached module served a liar");
    let err = stderr(&out);
    assert!(
        err.contains("[DigestMismatch]") && err.contains(&pushed.manifest_digest),
        "{err}"
    );
}

#[test]
fn a_manifest_over_the_cap_is_refused_without_reading_it_whole() {
    for how in [Misbehaviour::HugeDeclared, Misbehaviour::HugeStreamed] {
        let bad = BadRegistry::start(how);
        let started = Instant::now();
        let out = try_module(
            &format!("oci://{}/team/huge@sha256:{}", bad.host(), "0".repeat(64)),
            tempfile::tempdir().unwrap().path(),
            &["--insecure-registry", &bad.host()],
        );
        assert!(!out.status.success(), "{how:?}");
        let err = stderr(&out);
        assert!(
            err.contains("[TooLarge]") && err.contains("4194304-byte cap"),
            "{how:?}: the error says the cap\n{err}"
        );
        let sent = bad.manifest_bytes_sent(1, Duration::from_secs(20));
        assert!(
            sent < 64 << 20,
            "{how:?}: the registry could write {sent} of 1 GiB: the host kept reading"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "{how:?}");
    }
}

#[test]
fn a_registry_that_trickles_its_manifest_times_out_as_pull_failed() {
    let bad = BadRegistry::start(Misbehaviour::Trickle {
        every: Duration::from_millis(200),
    });
    let d = Deployment::new(&bad.host(), "  timeout: 2s\n");
    d.manifests(
        &format!(
            "{{oci: {{ref: \"{}/team/slow@sha256:{}\"}}}}",
            bad.host(),
            "0".repeat(64)
        ),
        GAUGE,
    );
    d.rows(GAUGE_HEADER, &["m,1,2025-06-25T10:00:00Z,h"]);
    let started = Instant::now();
    let out = d.run_once();
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("PullFailed") && err.contains("did not finish within 2s (registries.timeout)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let sent = bad.manifest_bytes_sent(1, Duration::from_secs(10));
    assert!(
        (1..1000).contains(&sent),
        "the manifest had begun to arrive and was cut off: {sent} bytes"
    );
    assert!(d.receiver.points().is_empty());
}

/// A local-mode deployment reading one table, with an OCI module.
struct Deployment {
    dir: tempfile::TempDir,
    receiver: Receiver,
}

impl Deployment {
    fn new(registry_host: &str, registries_extra: &str) -> Deployment {
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
        std::fs::write(
            dir.path().join("kusto-metrics.yaml"),
            format!(
                "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nreloadInterval: 200ms\nminInterval: 100ms\nguests:\n  cacheDir: cache\nregistries:\n  insecure: [\"{}\"]\n{registries_extra}exporters:\n  - name: sink\n    otlp:\n      endpoint: {}\n      timeout: 2s\n      retry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 3s}}\n",
                registry_host,
                receiver.http_endpoint()
            ),
        )
        .unwrap();
        Deployment { dir, receiver }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn manifests(&self, module: &str, transform: &str) {
        std::fs::write(
            self.path("manifests/all.yaml"),
            format!(
                "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: r, labels: {{a: b}}}}\nspec: {{database: DB, table: T, body: \"T\", interval: 5m}}\n---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: e}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{a: b}}}}\n  exporters: [sink]\n  interval: 1s\n  transform:\n    module: {module}\n{transform}"
            ),
        )
        .unwrap();
    }

    fn rows(&self, header: &str, rows: &[&str]) {
        use std::io::Write;
        let path = self.path("tables/DB/T.csv");
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
}

const GAUGE: &str = "    metricNameColumn: metric_name\n    valueColumn: v\n    timestampColumn: t\n    labelColumns: [host]\n";
const GAUGE_HEADER: &str = "metric_name:string,v:long,t:datetime,host:string";
const HISTOGRAM: &str = "    metricName: latency\n    timestampColumn: t\n    buckets: [{column: le_100, upperBound: 100}, {column: inf}]\n    labelColumns: [host]\n";

#[test]
fn run_refuses_a_module_over_the_size_limit_and_never_falls_back_to_the_builtin() {
    let registry = Registry::start();
    let pushed = registry.push("team/cm", "1.0", &guest("column-mapping"), &[]);
    let d = Deployment::new(&registry.host(), "  maxModuleSize: 1KiB\n");
    d.manifests(
        &format!(
            "{{oci: {{ref: \"{}/team/cm:1.0\", digest: \"{}\"}}}}",
            registry.host(),
            pushed.manifest_digest
        ),
        GAUGE,
    );
    d.rows(GAUGE_HEADER, &["m,1,2025-06-25T10:00:00Z,h"]);
    let out = d.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("over maxModuleSize") && err.contains("TooLarge"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.receiver.points().is_empty(),
        "nothing ran: not the builtin either"
    );
}

#[test]
fn a_module_swapped_while_running_is_used_from_the_next_run_and_progress_is_kept() {
    let mut registry = Registry::start();
    let mapping = registry.push("team/mapping", "1.0", &guest("column-mapping"), &[]);
    let histogram = registry.push("team/histogram", "1.0", &guest("histogram-buckets"), &[]);
    let d = Deployment::new(&registry.host(), "");
    let host = registry.host();
    d.manifests(
        &format!(
            "{{oci: {{ref: \"{host}/team/mapping@{}\"}}}}",
            mapping.manifest_digest
        ),
        GAUGE,
    );
    d.rows(
        GAUGE_HEADER,
        &["m,1,2025-06-25T10:00:00Z,h", "m,2,2025-06-25T10:00:01Z,h"],
    );
    let log = d.path("host.log");
    let mut child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(d.path("kusto-metrics.yaml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    d.receiver.wait_for_points(2, Duration::from_secs(20));
    // The registry goes away: the pinned, cached module keeps running.
    registry.stop();
    d.rows(GAUGE_HEADER, &["m,3,2025-06-25T10:00:02Z,h"]);
    d.receiver.wait_for_points(3, Duration::from_secs(20));
    registry.restart();
    // Swap to the histogram guest (its own configuration), then give it a
    // table of its shape.
    d.manifests(
        &format!(
            "{{oci: {{ref: \"{host}/team/histogram@{}\"}}}}",
            histogram.manifest_digest
        ),
        HISTOGRAM,
    );
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        d.path("tables/DB/T.csv"),
        "le_100:long,inf:long,t:datetime,host:string\n5,1,2025-06-25T10:05:00Z,h\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let histograms = loop {
        let found: Vec<Value> = d
            .receiver
            .requests()
            .iter()
            .flat_map(|r| {
                r["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|m| m["histogram"].is_object())
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no histogram arrived\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(histograms[0]["name"], "latency");
    assert_eq!(histograms[0]["histogram"]["dataPoints"][0]["count"], "6");
    assert_eq!(
        d.receiver.points().len(),
        3,
        "the gauge rows were not sent again"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&histogram.layer_digest),
        "the new guest is named in the log: {text}"
    );
}

#[test]
fn the_ship_your_own_transform_example_runs() {
    let port = common::prometheus::free_port();
    let out = Command::new("bash")
        .arg(common::root().join("examples/custom-guest-oci/run.sh"))
        .env("PORT", port.to_string())
        .env("KUSTO_METRICS", common::bin())
        .env("GUEST", guest("histogram-buckets"))
        .env("PYTHON", common::receiver::venv().join("bin/python"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("pushed 127.0.0.1") && err.contains("sha256:"),
        "{err}"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("OTLP/JSON lines"))
        .collect();
    let metric = &lines[0]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0];
    assert_eq!(metric["name"], "request_duration_ms");
    assert_eq!(
        metric["histogram"]["dataPoints"].as_array().unwrap().len(),
        3
    );
}
