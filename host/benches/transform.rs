//! The transform's speed: a 100,000-row batch (name, value, timestamp, three
//! labels) through (a) the default guest in Wasm and (b) the same mapping
//! compiled natively into the host, then both again with OTLP encoding.
//! Prints rows per second and the ratios. Target (contract 0.2, string
//! columns dictionary encoded as the sources send them): Wasm at least 0.6×
//! the native speed and at least 2.5M rows/s on one core.
//!
//! `cargo bench -p kusto-metrics --bench transform`

use std::time::{Duration, Instant};

use kusto_metrics::export::{self, Resource};
use kusto_metrics::source::batch::{BatchBuilder, ColumnBuilder, sample_context};
use kusto_metrics::transform::{Limits, Runtime, builtin};
use kusto_metrics::wit;
use kusto_metrics_guest as g;

#[path = "shared/native.rs"]
mod native;
use native::native_batch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 100_000;
const RUNS: usize = 25;
const CONFIG: &str = r#"{"metricNameColumn":"metric_name","valueColumn":"metric_value","timestampColumn":"timestamp","labelColumns":["ServiceName","Region","Environment"]}"#;

fn batch() -> wit::Batch {
    let mut columns = vec![
        ColumnBuilder::new("metric_name", wit::KustoType::String),
        ColumnBuilder::new("metric_value", wit::KustoType::Real),
        ColumnBuilder::new("timestamp", wit::KustoType::Datetime),
        ColumnBuilder::new("ServiceName", wit::KustoType::String),
        ColumnBuilder::new("Region", wit::KustoType::String),
        ColumnBuilder::new("Environment", wit::KustoType::String),
    ];
    // A cheap deterministic spread of label values (~50 distinct each).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for row in 0..ROWS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let [c0, c1, c2, c3, c4, c5] = &mut columns[..] else {
            unreachable!()
        };
        c0.push_text(&format!("metric_{}", x % 10)).unwrap();
        c1.push_real((x % 10_000) as f64 / 7.0);
        c2.push_ticks(17_508_456_000_000_000 + row as i64 * 600_000_000);
        c3.push_text(&format!("service-{:02}", (x >> 8) % 50))
            .unwrap();
        c4.push_text(&format!("region-{:02}", (x >> 16) % 50))
            .unwrap();
        c5.push_text(&format!("environment-{:02}", (x >> 24) % 50))
            .unwrap();
    }
    BatchBuilder::new(columns).finish(sample_context("bench"))
}

/// Runs `a` and `b` alternately so that both see the same machine load,
/// and keeps each one's fastest run: on a shared machine the minimum is the
/// figure least disturbed by other work.
fn race(
    mut a: impl FnMut() -> usize,
    mut b: impl FnMut() -> usize,
) -> ((Duration, usize), (Duration, usize)) {
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    let (mut points_a, mut points_b) = (a(), b()); // warm-up
    for _ in 0..RUNS {
        let start = Instant::now();
        points_a = a();
        best_a = best_a.min(start.elapsed());
        let start = Instant::now();
        points_b = b();
        best_b = best_b.min(start.elapsed());
    }
    ((best_a, points_a), (best_b, points_b))
}

fn measure(f: impl FnMut() -> usize) -> (Duration, usize) {
    race(f, || 0).0
}

fn rate(d: Duration) -> f64 {
    ROWS as f64 / d.as_secs_f64()
}

fn main() {
    let host_batch = batch();
    let guest_batch = native_batch(&host_batch);
    let runtime = Runtime::new(None, Limits::default()).expect("runtime");
    let guest = runtime
        .load(builtin::COLUMN_MAPPING_NAME, builtin::COLUMN_MAPPING)
        .expect("default guest loads");
    guest.validate(CONFIG).expect("config is valid");
    let resource = Resource::default_host();

    // Alternating, so both see the same load on a shared machine.
    let ((wasm, wasm_points), (native, native_points)) = race(
        || {
            guest
                .transform(CONFIG, &host_batch)
                .expect("wasm transform")
                .point_count()
        },
        || {
            column_mapping::transform(CONFIG, &guest_batch)
                .expect("native transform")
                .metrics
                .iter()
                .map(|m| match &m.data {
                    g::MetricData::Gauge(p) => p.times.len(),
                    _ => 0,
                })
                .sum()
        },
    );
    assert_eq!(wasm_points, ROWS);
    assert_eq!(native_points, ROWS);

    // What crossing the boundary costs by itself: a guest that returns
    // nothing, and one that returns one point per row without looking.
    let hostile_path = std::path::Path::new(env!("KUSTO_METRICS_GUEST_TARGET_DIR"))
        .join("wasm32-wasip2/release/test_guest_hostile.wasm");
    let boundary = std::fs::read(&hostile_path).ok().map(|bytes| {
        let hostile = runtime
            .load("hostile", &bytes)
            .expect("hostile guest loads");
        let (empty, _) = measure(|| {
            hostile
                .transform("\"empty\"", &host_batch)
                .expect("empty")
                .point_count()
        });
        let (echo, _) = measure(|| {
            hostile
                .transform("\"ok\"", &host_batch)
                .expect("ok")
                .point_count()
        });
        (empty, echo)
    });

    let mut buf = Vec::new();
    let (wasm_encode, bytes) = measure(|| {
        let out = guest
            .transform(CONFIG, &host_batch)
            .expect("wasm transform");
        buf.clear();
        let requests = export::split::split_by_size(
            &out,
            &resource,
            10_000,
            export::deliver::MAX_REQUEST_BYTES,
        )
        .expect("fits");
        for slices in requests {
            export::otlp_proto::encode_request(&resource, &out, &slices, &mut buf);
        }
        buf.len()
    });

    println!(
        "transform of {ROWS} rows (name, value, timestamp, 3 labels), fastest of {RUNS} alternating runs, one thread"
    );
    println!(
        "  wasm guest (column-mapping):   {:>10.0} rows/s  ({:?})",
        rate(wasm),
        wasm
    );
    println!(
        "  native (same mapping, linked): {:>10.0} rows/s  ({:?})",
        rate(native),
        native
    );
    println!(
        "  wasm / native speed ratio:     {:>10.2}   (target >= 0.60)",
        rate(wasm) / rate(native)
    );
    println!(
        "  wasm >= 2.5M rows/s:           {:>10}",
        rate(wasm) >= 2_500_000.0
    );
    match boundary {
        Some((empty, echo)) => {
            println!("  boundary: batch in, nothing out:   {empty:?}");
            println!("  boundary: batch in, {ROWS} points out: {echo:?}");
        }
        None => {
            println!("  (boundary figures need the test guests: cargo test --release builds them)")
        }
    }
    println!(
        "  wasm + OTLP protobuf encoding: {:>10.0} rows/s  ({:?}, {} bytes in requests of 10k points)",
        rate(wasm_encode),
        wasm_encode,
        bytes
    );
}
