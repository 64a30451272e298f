//! One window of 1,000,000 rows (a ~116 MB v2 response) read from a Kusto
//! endpoint over HTTP, (a) as a stream (`WindowStream`, chunks of 100,000
//! rows, each dropped once counted, as the job loop hands them on) and (b)
//! whole, as the job read windows before (the body read into memory, then
//! `parse_v2_skipping_bad_rows`; (c) adds the `sort_rows` that followed).
//! Prints rows per second and the peak resident growth of each, and the
//! parser alone on the response in memory: from a `&str` (whole) and from
//! a reader (streamed).
//!
//! The response is built once and served from memory by this process, in
//! 64 KiB pieces; each read runs in a child process (this binary again,
//! `--child CASE URL`) that resets its high-water mark
//! (`/proc/self/clear_refs`) and reports `VmHWM` minus its resident size
//! before the query, so the served response is not counted, nor one
//! case's freed-but-kept pages in another's.
//!
//! `cargo bench -p kusto-metrics --bench kusto_stream`

use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use kusto_metrics::source::batch::{sample_context, sort_rows};
use kusto_metrics::source::kusto::auth::Identity;
use kusto_metrics::source::kusto::{KustoClient, KustoConfig, Query, WindowStream};
use kusto_metrics::source::kusto_v2::{
    Parsed, parse_v2, parse_v2_chunks, parse_v2_skipping_bad_rows,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/v2_response.rs"]
mod v2_response;

const ROWS: usize = 1_000_000;
const MAX_ROWS: usize = 100_000;
const RUNS: usize = 3;
const PIECE: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Stream,
    Whole,
    WholeSorted,
}

impl Case {
    fn arg(self) -> &'static str {
        match self {
            Case::Stream => "stream",
            Case::Whole => "whole",
            Case::WholeSorted => "whole-sorted",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Stream => "(a) WindowStream, 100k-row chunks",
            Case::Whole => "(b) whole body, then parse",
            Case::WholeSorted => "(c) whole body, parse, sort_rows",
        }
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// In the child: one read of the window; prints rows, seconds and peak
/// resident growth in bytes.
fn child(case: Case, url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let yaml = format!("endpoints: {{Bench: \"{url}\"}}\nauth: none\ntimeout: 60s\n");
    let config: KustoConfig = serde_yaml::from_str(&yaml).expect("config");
    let client = KustoClient::new(&config, Identity::none()).expect("client");
    let query = Query {
        database: "Bench".into(),
        csl: "Bench".into(),
        parameters: Vec::new(),
        max_records: None,
        activity: "Bench",
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let rows = runtime.block_on(async {
        match case {
            Case::Stream => {
                let mut stream =
                    WindowStream::open(&client, &query, sample_context("bench"), MAX_ROWS)
                        .await
                        .expect("the stream opens");
                let mut rows = 0usize;
                while let Some(chunk) = stream.next_chunk().await.expect("a chunk") {
                    rows += chunk.batch.row_count as usize;
                }
                rows
            }
            Case::Whole | Case::WholeSorted => {
                let answer = client.query(&query).await.expect("the answer");
                let (mut batch, _) = tokio::task::spawn_blocking(move || {
                    parse_v2_skipping_bad_rows("bench", &answer.body, sample_context("bench"))
                })
                .await
                .expect("the parse ran")
                .expect("the parse");
                if case == Case::WholeSorted {
                    sort_rows(&mut batch);
                }
                batch.row_count as usize
            }
        }
    });
    let took = start.elapsed();
    let peak = status_kib("VmHWM:");
    println!(
        "{rows} {} {}",
        took.as_secs_f64(),
        peak.saturating_sub(before) * 1024
    );
}

fn run_child(case: Case, url: &str) -> Option<(usize, f64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .args(["--child", case.arg(), url])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut w = text.split_whitespace();
    Some((
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    ))
}

fn serve(body: Bytes) -> String {
    v2_response::serve(body, PIECE)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let case = match args.get(i + 1).map(String::as_str) {
            Some("stream") => Case::Stream,
            Some("whole") => Case::Whole,
            _ => Case::WholeSorted,
        };
        child(case, args.get(i + 2).map_or("", String::as_str));
        return;
    }

    let text = v2_response::response(ROWS);
    let size = text.len() as f64;
    let mb = |b: f64| b / 1e6;
    println!(
        "kusto_stream: {ROWS} rows, response {:.1} MB, chunks of {MAX_ROWS} rows, median of {RUNS} runs",
        mb(size)
    );

    // The parser alone, the response in memory.
    let time = |f: &dyn Fn() -> usize| {
        median(
            (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    assert_eq!(f(), ROWS);
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let whole = time(&|| {
        parse_v2("bench", &text, sample_context("bench"))
            .map(|b| b.row_count as usize)
            .unwrap_or(0)
    });
    let chunked = time(&|| {
        let mut rows = 0;
        let mut sink = |b: kusto_metrics::wit::Batch, _| {
            rows += b.row_count as usize;
            true
        };
        let ended = parse_v2_chunks(
            "bench",
            text.as_bytes(),
            &sample_context("bench"),
            MAX_ROWS,
            &mut sink,
        );
        assert_eq!(ended.ok(), Some(Parsed::Complete));
        rows
    });
    for (label, secs) in [
        ("parser: parse_v2 from &str", whole),
        ("parser: parse_v2_chunks from a reader", chunked),
    ] {
        println!(
            "{label:<40} {:.2} M rows/s ({:.0} ms, {:.0} MB/s)",
            ROWS as f64 / secs / 1e6,
            secs * 1e3,
            mb(size) / secs
        );
    }

    let url = serve(Bytes::from(text.into_bytes()));
    std::thread::sleep(Duration::from_millis(100));
    for case in [Case::Stream, Case::Whole, Case::WholeSorted] {
        let runs: Vec<(usize, f64, u64)> =
            (0..RUNS).filter_map(|_| run_child(case, &url)).collect();
        if runs.len() < RUNS || runs.iter().any(|r| r.0 != ROWS) {
            println!("{:<40} failed: {runs:?}", case.label());
            continue;
        }
        let secs = median(runs.iter().map(|r| r.1).collect());
        let growth = runs.iter().map(|r| r.2).max().unwrap_or(0) as f64;
        println!(
            "{:<40} {:.2} M rows/s ({:.0} ms); peak RSS growth {:.1} MB = {:.2}x the response",
            case.label(),
            ROWS as f64 / secs / 1e6,
            secs * 1e3,
            mb(growth),
            growth / size
        );
    }
}
