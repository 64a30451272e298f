//! A Kusto v2 response of metric rows (metric name, value, timestamp,
//! three labels; about 116 bytes a row), shared by the benchmarks.
#![allow(dead_code)]

use std::fmt::Write as _;

const METRICS: [&str; 8] = [
    "http_server_request_duration_seconds",
    "http_server_active_requests",
    "process_cpu_seconds_total",
    "kube_pod_container_status_restarts_total",
    "db_client_connections_usage",
    "queue_messages_pending",
    "cache_hit_ratio",
    "ingestion_latency_ms",
];
const REGIONS: [&str; 12] = [
    "westeurope",
    "northeurope",
    "eastus",
    "eastus2",
    "westus2",
    "westus3",
    "centralus",
    "uksouth",
    "swedencentral",
    "japaneast",
    "australiaeast",
    "southeastasia",
];
const ENVIRONMENTS: [&str; 4] = ["production", "staging", "canary", "development"];

/// A response shaped as ADX writes it: one frame per line, the primary
/// result between the query properties and the completion information.
pub fn response(rows: usize) -> String {
    let mut body = String::with_capacity(rows * 128 + 4096);
    body.push_str(r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0","IsFragmented":false,"ErrorReportingPlacement":"EndOfTable"}"#);
    body.push_str("\n,");
    body.push_str(r#"{"FrameType":"DataTable","TableId":0,"TableKind":"QueryProperties","TableName":"@ExtendedProperties","Columns":[{"ColumnName":"TableId","ColumnType":"int"},{"ColumnName":"Key","ColumnType":"string"},{"ColumnName":"Value","ColumnType":"dynamic"}],"Rows":[[1,"Visualization","{\"Visualization\":null,\"Title\":null,\"XColumn\":null}"]]}"#);
    body.push_str("\n,");
    body.push_str(r#"{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"metric_name","ColumnType":"string"},{"ColumnName":"metric_value","ColumnType":"real"},{"ColumnName":"timestamp","ColumnType":"datetime"},{"ColumnName":"ServiceName","ColumnType":"string"},{"ColumnName":"Region","ColumnType":"string"},{"ColumnName":"Environment","ColumnType":"string"}],"Rows":["#);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for row in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if row > 0 {
            body.push(',');
        }
        // One day of points; a quarter of them off the whole second.
        let second = row * 86_400 / rows;
        let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
        let value = (x % 10_000_000) as f64 / 1000.0;
        let _ = write!(
            body,
            "[\"{}\",{value},\"2025-06-25T{h:02}:{m:02}:{s:02}",
            METRICS[(x % 8) as usize]
        );
        if row % 4 == 1 {
            let _ = write!(body, ".{:07}", (x >> 20) % 10_000_000);
        }
        let _ = write!(
            body,
            "Z\",\"checkout-api-{:02}\",\"{}\",\"{}\"]",
            (x >> 8) % 50,
            REGIONS[((x >> 16) % 12) as usize],
            ENVIRONMENTS[((x >> 24) % 4) as usize]
        );
    }
    body.push_str("]}\n,");
    body.push_str(r#"{"FrameType":"DataTable","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":[{"ColumnName":"Timestamp","ColumnType":"datetime"},{"ColumnName":"ClientRequestId","ColumnType":"string"},{"ColumnName":"ActivityId","ColumnType":"guid"},{"ColumnName":"SubActivityId","ColumnType":"guid"},{"ColumnName":"ParentActivityId","ColumnType":"guid"},{"ColumnName":"Level","ColumnType":"int"},{"ColumnName":"LevelName","ColumnType":"string"},{"ColumnName":"StatusCode","ColumnType":"int"},{"ColumnName":"StatusCodeName","ColumnType":"string"},{"ColumnName":"EventType","ColumnType":"int"},{"ColumnName":"EventTypeName","ColumnType":"string"},{"ColumnName":"Payload","ColumnType":"string"}],"Rows":[["2025-06-26T00:00:05.1234567Z","KM.bench;5b1f0a8e-3c0e-4b5e-9a41-0c9f3b7d2e11","0a5c3e7b-6f55-4d4f-8a1e-2b9c7d3e4f50","0a5c3e7b-6f55-4d4f-8a1e-2b9c7d3e4f51","0a5c3e7b-6f55-4d4f-8a1e-2b9c7d3e4f52",4,"Info",0,"S_OK (0)",4,"QueryInfo","{\"Count\":1,\"Text\":\"Query completed successfully\"}"]]}"#);
    body.push_str("\n,");
    body.push_str(r#"{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}"#);
    body.push_str("\n]");
    body
}

/// Serves `body` to every query on `/v2/rest/query`, in pieces of `piece`
/// bytes, from memory, on a thread of its own; the base URL.
pub fn serve(body: axum::body::Bytes, piece: usize) -> String {
    use axum::body::{Body, Bytes};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.set_nonblocking(true).expect("non-blocking");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v2/rest/query",
                axum::routing::post(move |request: Bytes| {
                    let body = body.clone();
                    async move {
                        // The host reads ADX's clock before its windows.
                        if request.windows(11).any(|w| w == b"print now()") {
                            return Body::from(clock_response());
                        }
                        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..body.len())
                            .step_by(piece)
                            .map(|at| Ok(body.slice(at..(at + piece).min(body.len()))))
                            .collect();
                        Body::from_stream(futures::stream::iter(pieces))
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serving");
        });
    });
    url
}

/// The answer to `print now()`: this machine's clock.
fn clock_response() -> String {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    format!(
        r#"[{{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"}},{{"FrameType":"DataTable","TableId":0,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{{"ColumnName":"print_0","ColumnType":"datetime"}}],"Rows":[["{now}"]]}},{{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}}]"#
    )
}
