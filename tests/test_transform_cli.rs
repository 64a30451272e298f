//! `kusto-metrics test-transform` as a user runs it: the spec's examples
//! under examples/ reproduce their expected OTLP/JSON, and bad input fails
//! with a message naming what is at fault.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn test_transform(args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("test-transform")
        .args(args)
        .arg("--no-cache")
        .current_dir(common::root())
        .output()
        .expect("the binary runs")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn expected(example: &str) -> Value {
    let path = common::root()
        .join("examples")
        .join(example)
        .join("expected-otlp.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn simple_example_from_csv() {
    let out = test_transform(&[
        "-t",
        "examples/simple/transform.yaml",
        "-i",
        "examples/simple/rows.csv",
    ]);
    assert_eq!(stdout_json(&out), expected("simple"));
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("rows read: 3") && summary.contains("points written: 3"),
        "{summary}"
    );
}

#[test]
fn complex_example_from_a_kusto_v2_response() {
    let out = test_transform(&[
        "-t",
        "examples/complex/transform.yaml",
        "-i",
        "examples/complex/response-v2.json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json, expected("complex"));
    let point =
        &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0];
    // 2022-01-01T10:00:00Z, computed, not copied from the spec.
    assert_eq!(point["timeUnixNano"], "1641031200000000000");
    assert_eq!(point["attributes"][2]["value"]["stringValue"], "1974");
}

#[test]
fn complete_otlp_example_from_a_manifest_and_a_v1_response() {
    let out = test_transform(&[
        "-t",
        "examples/complete-otlp/metricsexporter.yaml",
        "-i",
        "examples/complete-otlp/response-v1.json",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json, expected("complete-otlp"));
    let rm = &json["resourceMetrics"][0];
    assert_eq!(
        rm["resource"]["attributes"][0]["value"]["stringValue"],
        "adx-mon-metrics-exporter"
    );
    assert_eq!(
        rm["scopeMetrics"][0]["scope"]["name"],
        "adx-mon.azure.com/metrics-exporter"
    );
    let metric = &rm["scopeMetrics"][0]["metrics"][0];
    assert_eq!(metric["unit"], "1");
    let point = &metric["gauge"]["dataPoints"][0];
    // 2025-06-25T10:00:00Z: the spec's example says 1719403200..., which is a day in 2024.
    assert_eq!(point["timeUnixNano"], "1750845600000000000");
    assert_eq!(point["asDouble"], 0.987);
    let attrs: Vec<(&str, &str)> = point["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap(),
                a["value"]["stringValue"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attrs,
        [
            ("LocationId", "datacenter-west"),
            ("CustomerResourceId", "customer-abc123"),
            ("ServiceTier", "Premium"),
            ("Numerator", "2456"),
            ("Denominator", "2489"),
            ("EndTimeUTC", "2025-06-25T10:15:00Z"),
            ("AvgLatency", "145.3"),
        ]
    );
}

#[test]
fn custom_histogram_guest_from_json_lines() {
    let module = common::guest_path("histogram-buckets");
    let out = test_transform(&[
        "-t",
        "examples/custom-histogram/transform.yaml",
        "-i",
        "examples/custom-histogram/rows.jsonl",
        "-m",
        module.to_str().unwrap(),
    ]);
    let json = stdout_json(&out);
    let metric = &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0];
    assert_eq!(metric["name"], "request_duration_ms");
    let hist = &metric["histogram"];
    assert_eq!(hist["aggregationTemporality"], 1, "delta");
    let p = &hist["dataPoints"][0];
    assert_eq!(p["count"], "152");
    assert_eq!(p["sum"], 15230.5);
    assert_eq!(p["bucketCounts"], serde_json::json!(["120", "30", "2"]));
    assert_eq!(p["explicitBounds"], serde_json::json!([100.0, 500.0]));
    assert_eq!(hist["dataPoints"].as_array().unwrap().len(), 3);
}

fn failure(args: &[&str]) -> String {
    let out = test_transform(args);
    assert!(!out.status.success(), "expected a failure for {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn bad_input_names_what_is_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let transform = write(
        d,
        "t.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n",
    );

    let csv = write(
        d,
        "rows.csv",
        "v:long,t:datetime\n1,2025-06-25T10:00:00Z\n2,yesterday\n",
    );
    let err = failure(&["-t", &transform, "-i", &csv]);
    assert!(
        err.contains("row 2, column `t` (datetime)") && err.contains("\"yesterday\""),
        "{err}"
    );

    let untyped = write(d, "untyped.csv", "v,t\n1,2025-06-25T10:00:00Z\n");
    let err = failure(&["-t", &transform, "-i", &untyped]);
    assert!(err.contains("header `v` has no type"), "{err}");

    let missing = write(
        d,
        "missing.csv",
        "w:long,t:datetime\n1,2025-06-25T10:00:00Z\n",
    );
    let err = failure(&["-t", &transform, "-i", &missing]);
    assert!(
        err.contains("column `v` is not in the table; columns present: w, t"),
        "{err}"
    );

    let typo = write(
        d,
        "typo.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  lableColumns: [x]\n",
    );
    let err = failure(&["-t", &typo, "-i", &csv]);
    assert!(err.contains("at `lableColumns`"), "{err}");

    let failed = write(
        d,
        "failed.json",
        r#"[{"FrameType":"DataSetHeader"},{"FrameType":"DataSetCompletion","HasErrors":true,"OneApiErrors":[{"error":{"code":"LimitsExceeded","message":"Query result set has exceeded the internal record count limit"}}]}]"#,
    );
    let err = failure(&["-t", &transform, "-i", &failed]);
    assert!(
        err.contains("LimitsExceeded: Query result set has exceeded"),
        "{err}"
    );

    let not_wasm = write(d, "bad.wasm", "hello");
    let err = failure(&["-t", &transform, "-i", &csv, "-m", &not_wasm]);
    assert!(
        err.contains("guest `bad.wasm`: not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn jsonl_types_are_inferred() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let transform = write(
        d,
        "t.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  labelColumns: [flag, n]\n",
    );
    let rows = write(
        d,
        "rows.jsonl",
        "{\"v\": 9007199254740993, \"t\": \"2025-06-25T10:00:00Z\", \"flag\": true, \"n\": 1.5}\n\n{\"v\": 2, \"t\": \"2025-06-25T10:00:01Z\", \"flag\": false}\n",
    );
    let json = stdout_json(&test_transform(&[
        "-t",
        &transform,
        "-i",
        &rows,
        "--compact",
    ]));
    let points =
        &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"];
    assert_eq!(
        points[0]["asInt"], "9007199254740993",
        "integers stay exact"
    );
    assert_eq!(points[0]["attributes"][0]["value"]["stringValue"], "true");
    assert_eq!(points[0]["attributes"][1]["value"]["stringValue"], "1.5");
    assert_eq!(
        points[1]["attributes"].as_array().map_or(0, Vec::len),
        1,
        "a missing key is a null, left out"
    );
}
