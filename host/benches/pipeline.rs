//! The whole path through the real binary: `kusto-metrics run --once` on a
//! 1 M-row local table (name, value, timestamp, three string labels of ~50
//! values each), OTLP/HTTP protobuf with gzip to a receiver in this process
//! that reads and discards. Prints rows/s, CPU seconds and peak RSS of the
//! binary, and, measured in the same run, the native limit: the same table
//! through the same reader, the default mapping linked natively and the
//! same encoder and gzip, on one thread.
//!
//! Then the Kusto side: a MetricsExporter's body whose interval answers
//! 1 M rows (a ~116 MB v2 response) and then 4 M rows (~460 MB), served
//! from memory by this process as ADX streams it; the binary reads it as
//! a stream, so its peak RSS should not grow with the window. Its native
//! limit: the same response parsed from memory in chunks, the same mapping,
//! encoder and gzip, one thread.
//!
//! `cargo bench -p kusto-metrics --bench pipeline` (`PIPELINE_ROWS` sets the
//! row count, `PIPELINE_RUNS` the runs of each, `PIPELINE_KUSTO=0` leaves
//! the Kusto side out).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kusto_metrics::export::Resource;
use kusto_metrics::export::deliver::{GZIP_LEVEL, MAX_REQUEST_BYTES};
use kusto_metrics::export::otlp_proto::Encoder;
use kusto_metrics::export::split::split_by_size;
use kusto_metrics::source::batch::sample_context;
use kusto_metrics::source::input::InputFormat;
use kusto_metrics::source::kusto_v2::parse_v2_chunks;
use kusto_metrics::source::local_table::LocalTable;
use kusto_metrics::wit;
use kusto_metrics_guest as g;

#[path = "shared/native.rs"]
mod native;
#[path = "shared/v2_response.rs"]
mod v2_response;
use native::native_batch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONFIG: &str = r#"{"metricNameColumn":"metric_name","valueColumn":"metric_value","timestampColumn":"timestamp","labelColumns":["ServiceName","Region","Environment"]}"#;
const MAX_ROWS_PER_BATCH: usize = 100_000;

fn write_table(path: &std::path::Path, rows: usize) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "metric_name:string,metric_value:real,timestamp:datetime,ServiceName:string,Region:string,Environment:string"
    )
    .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for row in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let secs = 1_750_845_600 + row as u64 % 86_400;
        writeln!(
            f,
            "metric_{},{},2025-06-25T{:02}:{:02}:{:02}Z,service-{:02},region-{:02},environment-{:02}",
            x % 10,
            (x % 10_000) as f64 / 7.0,
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (x >> 8) % 50,
            (x >> 16) % 50,
            (x >> 24) % 50
        )
        .unwrap();
    }
    f.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// An OTLP/HTTP receiver that reads each body and answers 200.
fn start_receiver() -> (String, Arc<AtomicU64>) {
    use axum::routing::post;
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/metrics",
                post(move |body: axum::body::Bytes| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(body.len() as u64, Ordering::Relaxed);
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{addr}"), bytes)
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    peak_rss: u64,
}

fn run_binary(dir: &std::path::Path) -> Measured {
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_kusto-metrics"))
        .args(["run", "--once", "--config"])
        .arg(dir.join("kusto-metrics.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Not wait4's ru_maxrss: a child spawned from this process reports
    // this process's high-water mark when it is larger (Linux records the
    // old address space's at exec), and this process holds the response it
    // serves. VmHWM is the child's own; polled until it exits.
    let hwm = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            else {
                break;
            };
            peak = peak.max(kb * 1024);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our child, not reaped yet (std's Child is never waited).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    assert_eq!(status, 0, "the run failed");
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Measured {
        wall: started.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss: hwm.join().unwrap_or(0),
    }
}

/// The same table through the same reader, the native mapping, the same
/// encoder and gzip level, one thread: what one core can do.
fn native_limit(path: &std::path::Path) -> (Duration, usize, usize) {
    let started = Instant::now();
    let mut table = LocalTable::open(
        path,
        InputFormat::Csv,
        None,
        None,
        MAX_ROWS_PER_BATCH,
        sample_context("bench"),
    )
    .unwrap();
    let mut native = Native::new();
    while let Some(chunk) = table.next_chunk().unwrap() {
        native.add(&chunk.batch);
    }
    (started.elapsed(), native.rows, native.compressed)
}

/// The same response parsed from memory in chunks, then as for a table.
fn native_limit_kusto(body: &[u8]) -> (Duration, usize, usize) {
    let started = Instant::now();
    let mut native = Native::new();
    let mut sink = |batch: wit::Batch, _bad: Vec<_>| {
        native.add(&batch);
        true
    };
    parse_v2_chunks(
        "bench",
        body,
        &sample_context("bench"),
        MAX_ROWS_PER_BATCH,
        &mut sink,
    )
    .unwrap();
    (started.elapsed(), native.rows, native.compressed)
}

/// The native mapping, the encoder and gzip, one batch at a time.
struct Native {
    resource: Resource,
    rows: usize,
    compressed: usize,
    buf: Vec<u8>,
}

impl Native {
    fn new() -> Native {
        Native {
            resource: Resource::default_host(),
            rows: 0,
            compressed: 0,
            buf: Vec::new(),
        }
    }

    fn add(&mut self, batch: &wit::Batch) {
        self.rows += batch.row_count as usize;
        let batch = native_batch(batch);
        let out = column_mapping::transform(CONFIG, &batch).unwrap();
        let out = to_host_output(out);
        let requests = split_by_size(&out, &self.resource, 10_000, MAX_REQUEST_BYTES).unwrap();
        let mut encoder = Encoder::new(&self.resource, &out);
        for slices in requests {
            self.buf.clear();
            encoder.encode(&slices, &mut self.buf);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), GZIP_LEVEL);
            gz.write_all(&self.buf).unwrap();
            self.compressed += gz.finish().unwrap().len();
        }
    }
}

fn main() {
    let rows: usize = std::env::var("PIPELINE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("PIPELINE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tables/DB")).unwrap();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    let table = dir.path().join("tables/DB/T.csv");
    let table_bytes = write_table(&table, rows);
    let (endpoint, received) = start_receiver();
    std::fs::write(
        dir.path().join("kusto-metrics.yaml"),
        format!(
            "manifests: manifests\nsource:\n  local:\n    tables: tables\nstate: state\nguests:\n  cacheDir: cache\n  maxRowsPerBatch: {MAX_ROWS_PER_BATCH}\nexporters:\n  - name: sink\n    otlp:\n      endpoint: {endpoint}\n      compression: gzip\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("manifests/all.yaml"),
        format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {{name: r, namespace: ns, labels: {{bench: \"yes\"}}}}\nspec: {{database: DB, table: T, body: \"T\", interval: 5m}}\n---\napiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: e, namespace: ns}}\nspec:\n  summaryRuleSelector: {{matchLabels: {{bench: \"yes\"}}}}\n  exporters: [sink]\n  interval: 1m\n  transform: {CONFIG}\n"
        ),
    )
    .unwrap();

    // Warm-up: the compile cache and the page cache.
    run_binary(dir.path());
    let mut best: Option<Measured> = None;
    let mut native_best = Duration::MAX;
    let mut native_bytes = 0;
    for _ in 0..runs {
        let m = run_binary(dir.path());
        if best.as_ref().is_none_or(|b| m.wall < b.wall) {
            best = Some(m);
        }
        let (d, n, bytes) = native_limit(&table);
        assert_eq!(n, rows);
        native_best = native_best.min(d);
        native_bytes = bytes;
    }
    let best = best.unwrap();
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let received = received.load(Ordering::Relaxed) / (runs as u64 + 1);
    println!(
        "pipeline: {rows} rows ({:.0} MB CSV), local table -> default guest (Wasm) -> OTLP/HTTP protobuf gzip-1 -> discarding receiver; best of {runs} runs",
        table_bytes as f64 / 1e6
    );
    println!(
        "  kusto-metrics run --once:   {:>10.0} rows/s  (wall {:?}, CPU {:?} = {:.2} cores, peak RSS {} MiB, {} MB received)",
        rate(best.wall),
        best.wall,
        best.cpu,
        best.cpu.as_secs_f64() / best.wall.as_secs_f64(),
        best.peak_rss >> 20,
        received / 1_000_000
    );
    println!(
        "  native limit, one thread:   {:>10.0} rows/s  ({:?}; same reader, native mapping, same encoder and gzip; {} MB)",
        rate(native_best),
        native_best,
        native_bytes / 1_000_000
    );
    println!(
        "  binary / native:            {:>10.2}   (target >= 0.50; binary >= 1.0 M rows/s: {})",
        rate(best.wall) / rate(native_best),
        rate(best.wall) >= 1_000_000.0
    );
    if std::env::var("PIPELINE_KUSTO").as_deref() != Ok("0") {
        for window_rows in [rows, rows * 4] {
            kusto_body(&endpoint, window_rows, runs);
        }
    }
}

/// A body window of `rows` rows through the binary, and its native limit.
fn kusto_body(receiver: &str, rows: usize, runs: usize) {
    let body = axum::body::Bytes::from(v2_response::response(rows));
    let url = v2_response::serve(body.clone(), 64 * 1024);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    std::fs::write(
        dir.path().join("kusto-metrics.yaml"),
        format!(
            "manifests: manifests\nsource:\n  kusto:\n    endpoints: {{DB: {url}}}\n    auth: none\nstate: state\nguests:\n  cacheDir: cache\n  maxRowsPerBatch: {MAX_ROWS_PER_BATCH}\nexporters:\n  - name: sink\n    otlp:\n      endpoint: {receiver}\n      compression: gzip\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("manifests/me.yaml"),
        format!(
            "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {{name: e, namespace: ns}}\nspec:\n  database: DB\n  body: \"T | where timestamp between (_startTime .. _endTime)\"\n  exporters: [sink]\n  interval: 1m\n  transform: {CONFIG}\n"
        ),
    )
    .unwrap();
    run_binary(dir.path());
    let mut best: Option<Measured> = None;
    let mut native_best = Duration::MAX;
    for _ in 0..runs {
        let m = run_binary(dir.path());
        if best.as_ref().is_none_or(|b| m.wall < b.wall) {
            best = Some(m);
        }
        let (d, n, _) = native_limit_kusto(&body);
        assert_eq!(n, rows);
        native_best = native_best.min(d);
    }
    let best = best.unwrap();
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "pipeline: a Kusto body window of {rows} rows ({:.0} MB v2 response, streamed from memory) -> default guest (Wasm) -> OTLP/HTTP protobuf gzip-1; best of {runs} runs",
        body.len() as f64 / 1e6
    );
    println!(
        "  kusto-metrics run --once:   {:>10.0} rows/s  (wall {:?}, CPU {:?} = {:.2} cores, peak RSS {} MiB)",
        rate(best.wall),
        best.wall,
        best.cpu,
        best.cpu.as_secs_f64() / best.wall.as_secs_f64(),
        best.peak_rss >> 20,
    );
    println!(
        "  native limit, one thread:   {:>10.0} rows/s  ({:?}; v2 parser from memory, native mapping, same encoder and gzip)",
        rate(native_best),
        native_best
    );
    println!(
        "  binary / native:            {:>10.2}   (target >= 0.50; >= 0.8 M rows/s: {}; peak RSS < 250 MB: {})",
        rate(best.wall) / rate(native_best),
        rate(best.wall) >= 800_000.0,
        best.peak_rss < 250_000_000
    );
}

/// The native mapping's output as the host's type (what the encoder takes).
fn to_host_output(o: g::Output) -> wit::Output {
    wit::Output {
        strings: o.strings,
        attributes: o
            .attributes
            .into_iter()
            .map(|a| wit::Attribute {
                key: a.key,
                value: match a.value {
                    g::AttributeValue::Str(s) => wit::AttributeValue::Str(s),
                    g::AttributeValue::Int(i) => wit::AttributeValue::Int(i),
                    g::AttributeValue::Double(d) => wit::AttributeValue::Double(d),
                    g::AttributeValue::Boolean(b) => wit::AttributeValue::Boolean(b),
                },
            })
            .collect(),
        attribute_set_ends: o.attribute_set_ends,
        metrics: o
            .metrics
            .into_iter()
            .map(|m| wit::Metric {
                name: m.name,
                description: m.description,
                unit: m.unit,
                data: match m.data {
                    g::MetricData::Gauge(p) => wit::MetricData::Gauge(points(p)),
                    g::MetricData::Sum(s) => wit::MetricData::Sum(wit::SumData {
                        points: points(s.points),
                        monotonic: s.monotonic,
                        temporality: match s.temporality {
                            g::Temporality::Delta => wit::Temporality::Delta,
                            g::Temporality::Cumulative => wit::Temporality::Cumulative,
                        },
                    }),
                    g::MetricData::Histogram(_) => unreachable!("the mapping writes no histograms"),
                },
            })
            .collect(),
        skipped: Vec::new(),
    }
}

fn points(p: g::NumberPoints) -> wit::NumberPoints {
    wit::NumberPoints {
        attribute_sets: p.attribute_sets,
        start_times: p.start_times,
        times: p.times,
        values: match p.values {
            g::NumberValues::Ints(v) => wit::NumberValues::Ints(v),
            g::NumberValues::Doubles(v) => wit::NumberValues::Doubles(v),
        },
    }
}
