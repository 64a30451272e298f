//! Reading a window from ADX as a stream: `WindowStream` over HTTP against
//! the Kusto test server (tests/common/kusto_server.rs), which writes its
//! answers as it computes them and generates large tables row by row.
//!
//! The tests take turns (one lock): the memory test measures this process.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::kusto_server::{Fault, KustoServer, now_ticks};
use kusto_metrics::error::{Classify, RetryClass};
use kusto_metrics::source::batch::sample_context;
use kusto_metrics::source::kusto::auth::Identity;
use kusto_metrics::source::kusto::kql::{self, WindowColumn};
use kusto_metrics::source::kusto::{
    KustoClient, KustoConfig, KustoErrorKind, Query, RowChunk, WindowStream,
};
use kusto_metrics::wit::{BatchContext, ColumnValues};
use serde_json::{Value, json};

const DB: &str = "TelemetryDB";

/// One test at a time (each streams a large answer); an async lock, since
/// the turn is held across awaits.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

fn client(server: &KustoServer) -> KustoClient {
    let yaml = format!(
        "endpoints: {{{DB}: \"{}\"}}\nauth: none\ntimeout: 30s\nretry: {{initialInterval: 50ms, maxInterval: 200ms, maxElapsedTime: 5s}}\n",
        server.endpoint()
    );
    let config: KustoConfig = serde_yaml::from_str(&yaml).expect("a Kusto source config");
    KustoClient::new(&config, Identity::none()).expect("a client")
}

/// The window `(ingestion - 1 s, ingestion + 1 s]` of `table`, in the
/// stable order.
fn window(table: &str, ingestion: i64) -> Query {
    let csl = kql::window_query(table, &WindowColumn::IngestionTime, &[]).expect("a query");
    query(csl, ingestion)
}

fn query(csl: String, ingestion: i64) -> Query {
    Query {
        database: DB.to_string(),
        csl,
        parameters: vec![
            (
                kql::FROM.to_string(),
                kql::datetime_literal(ingestion - kql::TICKS_PER_SECOND),
            ),
            (
                kql::TO.to_string(),
                kql::datetime_literal(ingestion + kql::TICKS_PER_SECOND),
            ),
        ],
        max_records: None,
        activity: "Window",
    }
}

fn context(ingestion: i64) -> BatchContext {
    let mut c = sample_context("Metrics");
    c.window_start = Some((ingestion - kql::TICKS_PER_SECOND) * 100);
    c.window_end = Some((ingestion + kql::TICKS_PER_SECOND) * 100);
    c
}

const METRICS: [&str; 4] = [
    "http_server_request_duration_seconds",
    "process_cpu_seconds_total",
    "queue_messages_pending",
    "cache_hit_ratio",
];
const REGIONS: [&str; 6] = [
    "westeurope",
    "northeurope",
    "eastus",
    "westus2",
    "swedencentral",
    "japaneast",
];
const COLUMNS: [(&str, &str); 7] = [
    ("seq", "long"),
    ("metric_name", "string"),
    ("metric_value", "real"),
    ("timestamp", "datetime"),
    ("ServiceName", "string"),
    ("Region", "string"),
    ("Environment", "string"),
];

/// Row `i` of a metrics table, as ADX writes it (about 117 bytes).
fn metric_row(i: usize) -> Vec<Value> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    let second = i % 86_400;
    vec![
        json!(i),
        json!(METRICS[(x % 4) as usize]),
        json!((x % 10_000_000) as f64 / 1000.0),
        json!(format!(
            "2025-06-25T{:02}:{:02}:{:02}.{:07}Z",
            second / 3600,
            second / 60 % 60,
            second % 60,
            (x >> 20) % 10_000_000
        )),
        json!(format!("checkout-api-{:02}", (x >> 8) % 50)),
        json!(REGIONS[((x >> 16) % 6) as usize]),
        json!(["production", "staging", "canary"][((x >> 24) % 3) as usize]),
    ]
}

fn generated(server: &KustoServer, table: &str, rows: usize) -> i64 {
    let ingestion = now_ticks() - 3600 * kql::TICKS_PER_SECOND;
    server.create_generated_table(DB, table, &COLUMNS, rows, ingestion, Arc::new(metric_row));
    ingestion
}

async fn read_all(stream: &mut WindowStream) -> Vec<RowChunk> {
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.unwrap_or_else(|e| panic!("{e}")) {
        chunks.push(chunk);
    }
    chunks
}

fn seqs(chunk: &RowChunk) -> &[i64] {
    match &chunk.batch.columns[0].values {
        ColumnValues::Longs(v) => v,
        other => panic!("seq holds {other:?}"),
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Far less than the answer (117 MB), and less than its rows as columns
/// (about 40 MB) plus the test server's sort keys (16 MB, in this process
/// too): measured at 28 MB.
const MAX_GROWTH: u64 = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_stream_in_chunks_in_bounded_memory() {
    let _turn = serial().await;
    const ROWS: usize = 1_000_000;
    const MAX_ROWS: usize = 100_000;
    let server = KustoServer::start();
    server.forbid_truncation_max_records(true);
    let ingestion = generated(&server, "Metrics", ROWS);
    let client = client(&server);

    // Pages freed since start stay counted; the high-water mark starts over.
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let before = status_kib("VmRSS:") << 10;
    let mut stream = WindowStream::open(
        &client,
        &window("Metrics", ingestion),
        context(ingestion),
        MAX_ROWS,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = vec![false; ROWS];
    let mut chunks = 0;
    let mut previous_last = None;
    while let Some(chunk) = stream.next_chunk().await.unwrap_or_else(|e| panic!("{e}")) {
        assert_eq!(chunk.index, chunks);
        assert_eq!(chunk.batch.row_count as usize, MAX_ROWS, "chunk {chunks}");
        assert!(chunk.bad_rows.is_empty());
        assert_eq!(chunk.batch.columns.len(), COLUMNS.len());
        assert_eq!(chunk.batch.context, context(ingestion));
        for &s in seqs(&chunk) {
            let s = s as usize;
            assert!(!seen[s], "row {s} twice");
            seen[s] = true;
        }
        previous_last = seqs(&chunk).last().copied();
        chunks += 1;
    }
    let peak = status_kib("VmHWM:") << 10;
    let received = stream.bytes_received();
    assert!(previous_last.is_some());
    assert_eq!(chunks, ROWS / MAX_ROWS);
    assert!(seen.iter().all(|s| *s), "every row once");
    assert!(received > 110_000_000, "the answer is {received} bytes");
    let growth = peak.saturating_sub(before);
    println!(
        "streamed {ROWS} rows, {:.1} MB, in {chunks} chunks: peak RSS growth {:.1} MB",
        received as f64 / 1e6,
        growth as f64 / 1e6
    );
    assert!(
        growth < MAX_GROWTH,
        "peak RSS grew by {growth} bytes while streaming a {received}-byte answer"
    );
    let sent = &server.window_queries()[0];
    assert_eq!(sent.options["notruncation"], true);
    assert!(sent.options.get("truncationmaxrecords").is_none());
    assert_eq!(
        sent.rows, ROWS,
        "the server's cut at 500,000 rows is lifted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_window_read_twice_gives_the_same_chunks() {
    let _turn = serial().await;
    let server = KustoServer::start();
    // A generated table answers in another order each time.
    let ingestion = generated(&server, "Metrics", 50_000);
    let client = client(&server);
    let read = |q: Query| {
        let client = &client;
        async move {
            let mut s = WindowStream::open(client, &q, context(ingestion), 7_000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            read_all(&mut s).await
        }
    };
    let first = read(window("Metrics", ingestion)).await;
    let second = read(window("Metrics", ingestion)).await;
    assert_eq!(first.len(), 8);
    let digests = |c: &[RowChunk]| c.iter().map(|c| c.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&first), digests(&second));
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.batch.columns, b.batch.columns);
    }
    let distinct: HashSet<_> = digests(&first).into_iter().collect();
    assert_eq!(distinct.len(), 8);
    // Without the order, the same query gives other chunks.
    let unordered = "declare query_parameters(_from:datetime, _to:datetime);\n['Metrics']\n| where ingestion_time() > _from and ingestion_time() <= _to";
    let a = read(query(unordered.to_string(), ingestion)).await;
    let b = read(query(unordered.to_string(), ingestion)).await;
    assert_ne!(digests(&a), digests(&b));

    // A stored table answered first to last, then last to first.
    server.create_table(DB, "Small", &[("n", "long"), ("s", "string")]);
    let rows: Vec<Vec<Value>> = (0..10)
        .map(|i| vec![json!(i), json!(format!("r{}", i % 3))])
        .collect();
    server.ingest_at(DB, "Small", ingestion, rows);
    let one = read(window("Small", ingestion)).await;
    server.set_reverse_rows(true);
    let other = read(window("Small", ingestion)).await;
    assert_eq!(digests(&one), digests(&other));
    assert_eq!(one.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_at_the_end_fails_the_window_after_earlier_chunks() {
    let _turn = serial().await;
    let server = KustoServer::start();
    let ingestion = now_ticks() - 3600 * kql::TICKS_PER_SECOND;
    server.create_table(DB, "Small", &[("n", "long")]);
    server.ingest_at(
        DB,
        "Small",
        ingestion,
        (0..10).map(|i| vec![json!(i)]).collect(),
    );
    let client = client(&server);
    server.fail_next(Fault::ErrorAtEnd(
        "the query ran out of memory on a node".into(),
    ));
    let mut stream =
        WindowStream::open(&client, &window("Small", ingestion), context(ingestion), 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = 0;
    let error = loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => rows += chunk.batch.row_count,
            Ok(None) => panic!("the window ended without its error"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        rows, 9,
        "three full chunks went out; the rest waits for the end"
    );
    let text = error.to_string();
    assert!(text.contains("ran out of memory"), "{text}");
    assert!(text.contains(stream.request_id()), "{text}");
    let start = kql::format_ticks(ingestion - kql::TICKS_PER_SECOND);
    assert!(text.contains(&start), "the window is named: {text}");
    assert!(matches!(error.kind, KustoErrorKind::Response(_)), "{text}");
    assert!(
        stream
            .next_chunk()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    server.fail_next(Fault::TooLarge);
    let mut stream =
        WindowStream::open(&client, &window("Small", ingestion), context(ingestion), 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let e = stream.next_chunk().await.expect_err("a limit hit");
    assert!(e.is_too_large(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_in_the_middle_is_a_retryable_window_failure() {
    let _turn = serial().await;
    let server = KustoServer::start();
    let ingestion = generated(&server, "Metrics", 100_000);
    let client = client(&server);
    server.fail_next(Fault::BreakAfterRows(25_000));
    let mut stream = WindowStream::open(
        &client,
        &window("Metrics", ingestion),
        context(ingestion),
        10_000,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut chunks = 0;
    let error = loop {
        match stream.next_chunk().await {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("a broken answer ended as if complete"),
            Err(e) => break e,
        }
    };
    assert_eq!(chunks, 2, "the chunks before the break went out");
    assert!(matches!(error.kind, KustoErrorKind::Network(_)), "{error}");
    assert_eq!(error.retry_class(), RetryClass::Retryable, "{error}");
    assert!(error.to_string().contains("broke off"), "{error}");
    // Read again, the window comes whole.
    let mut again = WindowStream::open(
        &client,
        &window("Metrics", ingestion),
        context(ingestion),
        10_000,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read_all(&mut again).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_back_the_answer() {
    let _turn = serial().await;
    const ROWS: usize = 1_000_000;
    let server = KustoServer::start();
    let ingestion = generated(&server, "Metrics", ROWS);
    let client = client(&server);
    // No order: the server writes rows from the first one on.
    let csl = "declare query_parameters(_from:datetime, _to:datetime);\n['Metrics']\n| where ingestion_time() > _from and ingestion_time() <= _to";
    let mut stream = WindowStream::open(
        &client,
        &query(csl.into(), ingestion),
        context(ingestion),
        10_000,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let first = stream.next_chunk().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.map(|c| c.batch.row_count), Some(10_000));
    // Unread, the server would write all rows in well under this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = server.requests().last().map_or(0, |r| r.rows);
    println!("with one chunk taken, the server has written {written} rows");
    assert!(
        written < ROWS / 3,
        "{written} of {ROWS} rows written while the consumer took one chunk"
    );
    // Dropped, the read stops, and so does the server.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = server.requests().last().map_or(0, |r| r.rows);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.requests().last().map_or(0, |r| r.rows), stopped);
    assert!(stopped < ROWS, "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_the_body_are_retried() {
    let _turn = serial().await;
    let server = KustoServer::start();
    let ingestion = generated(&server, "Metrics", 1_000);
    let client = client(&server);
    server.fail_next(Fault::Status {
        status: 503,
        retry_after: None,
        message: "busy".into(),
    });
    let mut stream = WindowStream::open(
        &client,
        &window("Metrics", ingestion),
        context(ingestion),
        400,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let chunks = read_all(&mut stream).await;
    let rows: u32 = chunks.iter().map(|c| c.batch.row_count).sum();
    assert_eq!((chunks.len(), rows), (3, 1_000));
    let statuses: Vec<u16> = server.window_queries().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
}
