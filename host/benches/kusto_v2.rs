//! Reading a Kusto v2 response of 1,000,000 rows (metric name, value,
//! timestamp, three labels) with (a) the streaming parser into columns and
//! (b) `serde_json::from_str::<Value>` of the same text, the yardstick.
//! Prints rows per second, the ratio, the response size, and the peak memory
//! of each. Targets (issue 5): faster than the yardstick, and peak memory
//! (the response text included) under three times the response size.
//!
//! Peak memory is the growth of the resident set while parsing, measured in
//! a child process per case (this binary again, with `--peak CASE`), so one
//! case's freed-but-kept pages cannot hide another's: the child builds the
//! response, resets the high-water mark (`/proc/self/clear_refs`), parses,
//! and reports `VmHWM` minus the resident size before parsing.
//!
//! `cargo bench -p kusto-metrics --bench kusto_v2`

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use kusto_metrics::source::batch::sample_context;
use kusto_metrics::source::kusto_v2::parse_v2;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: usize = 1_000_000;
const RUNS: usize = 5;

#[path = "shared/v2_response.rs"]
mod v2_response;
use v2_response::response;

#[derive(Clone, Copy)]
enum Case {
    Parser,
    Yardstick,
}

impl Case {
    fn arg(self) -> &'static str {
        match self {
            Case::Parser => "parser",
            Case::Yardstick => "value",
        }
    }

    /// Parses once; returns the time taken, dropping the result after it.
    fn run(self, body: &str) -> Duration {
        match self {
            Case::Parser => {
                let start = Instant::now();
                let batch = parse_v2("bench", body, sample_context("bench"));
                let took = start.elapsed();
                match batch {
                    Ok(b) => assert_eq!(b.row_count as usize, ROWS),
                    Err(e) => panic!("the parser failed: {e}"),
                }
                took
            }
            Case::Yardstick => {
                let start = Instant::now();
                let value = serde_json::from_str::<serde_json::Value>(black_box(body));
                let took = start.elapsed();
                match value {
                    Ok(v) => assert_eq!(v.as_array().map(Vec::len), Some(5)),
                    Err(e) => panic!("the yardstick failed: {e}"),
                }
                took
            }
        }
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// In the child: one parse, and its peak resident growth in bytes.
fn peak_child(case: Case) {
    let body = response(ROWS);
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmRSS:").unwrap_or(0);
    case.run(&body);
    let peak = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{} {}",
        peak.saturating_sub(before) * 1024,
        if reset { "reset" } else { "no-reset" }
    );
}

/// Runs the child for `case`; its peak growth in bytes and whether the
/// high-water mark could be reset before parsing.
fn peak_of(case: Case) -> Option<(u64, bool)> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .args(["--peak", case.arg()])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut words = text.split_whitespace();
    let bytes = words.next()?.parse().ok()?;
    Some((bytes, words.next() == Some("reset")))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak") {
        let case = match args.get(i + 1).map(String::as_str) {
            Some("parser") => Case::Parser,
            _ => Case::Yardstick,
        };
        peak_child(case);
        return;
    }

    let body = response(ROWS);
    let size = body.len() as f64;
    let mb = |b: f64| b / 1e6;
    println!(
        "kusto_v2: {ROWS} rows, response {:.1} MB ({:.0} bytes/row), median of {RUNS} runs",
        mb(size),
        size / ROWS as f64
    );
    let mut rates = Vec::new();
    for (case, label) in [
        (Case::Parser, "(a) parse_v2 into columns"),
        (Case::Yardstick, "(b) serde_json::Value (yardstick)"),
    ] {
        case.run(&body);
        let took = median((0..RUNS).map(|_| case.run(&body)).collect());
        let rate = ROWS as f64 / took.as_secs_f64();
        rates.push(rate);
        let memory = match peak_of(case) {
            Some((growth, reset)) => {
                let peak = size + growth as f64;
                format!(
                    "peak memory {:.1} MB = response {:.1} MB + {:.1} MB parsing = {:.2}x the response{}",
                    mb(peak),
                    mb(size),
                    mb(growth as f64),
                    peak / size,
                    if reset {
                        ""
                    } else {
                        " (high-water mark not resettable: includes building the response)"
                    }
                )
            }
            None => "peak memory: not measured (child process failed)".to_string(),
        };
        println!(
            "{label:<34} {:.2} M rows/s ({:.1} ms, {:.0} MB/s); {memory}",
            rate / 1e6,
            took.as_secs_f64() * 1e3,
            mb(size) / took.as_secs_f64()
        );
    }
    println!(
        "ratio parse_v2 / yardstick: {:.2}x (target: above 1x; peak memory under 3x the response)",
        rates[0] / rates[1]
    );
}
