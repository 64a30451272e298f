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
        err.contains("missing.csv: column `v` is missing (the table has w:long, t:datetime)"),
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

#[test]
fn constant_labels_go_on_every_point_and_may_not_repeat_a_label_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = write(
        d,
        "rows.csv",
        "v:long,t:datetime,host:string\n1,2025-06-25T10:00:00Z,a\n2,2025-06-25T10:00:01Z,b\n",
    );
    let transform = write(
        d,
        "t.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  labelColumns: [host]\n  constantLabels: {team: payments, tier: gold}\n",
    );
    let json = stdout_json(&test_transform(&[
        "-t",
        &transform,
        "-i",
        &rows,
        "--compact",
    ]));
    let points = json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(points.len(), 2);
    for p in &points {
        let attrs: Vec<(String, String)> = p["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["key"].as_str().unwrap().to_string(),
                    a["value"]["stringValue"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            attrs.contains(&("team".into(), "payments".into())),
            "{attrs:?}"
        );
        assert!(attrs.contains(&("tier".into(), "gold".into())), "{attrs:?}");
        assert_eq!(attrs.len(), 3, "{attrs:?}");
    }
    let clash = write(
        d,
        "clash.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  labelColumns: [host]\n  constantLabels: {host: x}\n",
    );
    let err = failure(&["-t", &clash, "-i", &rows]);
    assert!(
        err.contains("constantLabels") && err.contains("`host` is also in labelColumns"),
        "{err}"
    );
}

/// The histogram guest as examples/custom-histogram configures it, on CSV rows.
fn histogram_on(dir: &Path, rows: &str) -> Output {
    let module = common::guest_path("histogram-buckets");
    let csv = write(dir, "rows.csv", rows);
    test_transform(&[
        "-t",
        "examples/custom-histogram/transform.yaml",
        "-i",
        &csv,
        "-m",
        module.to_str().unwrap(),
    ])
}

#[test]
fn input_columns_are_checked_against_what_the_guest_declared() {
    let dir = tempfile::tempdir().unwrap();
    // The guest declares its bucket columns `int` or `long`; a `real` one
    // must be refused before the guest sees it, as `run` refuses a table.
    let out = histogram_on(
        dir.path(),
        "Timestamp:datetime,Service:string,le_100:real,le_500:long,inf:long,total_ms:real\n\
         2025-06-25T10:00:00Z,api,1.5,2,3,10\n",
    );
    assert!(!out.status.success(), "a real bucket column was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "rows.csv: column `le_100` is real, the transform accepts int or long (the table has \
             Timestamp:datetime, Service:string, le_100:real, le_500:long, inf:long, total_ms:real)"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no output for refused input");
}

#[test]
fn skipped_rows_are_numbered_from_0_as_the_wit_says() {
    let dir = tempfile::tempdir().unwrap();
    // Rows 0 and 2 are fine; row 1 has no timestamp.
    let out = histogram_on(
        dir.path(),
        "Timestamp:datetime,Service:string,le_100:long,le_500:long,inf:long,total_ms:real\n\
         2025-06-25T10:00:00Z,api,1,2,3,10\n\
         ,api,1,2,3,10\n\
         2025-06-25T10:01:00Z,api,1,2,3,10\n",
    );
    let json = stdout_json(&out);
    let points =
        &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]["dataPoints"];
    assert_eq!(points.as_array().map_or(0, Vec::len), 2);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("rows skipped: 1\n  null-timestamp: 1 (first at row 1, 0-based)"),
        "{summary}"
    );
}

/// The simple example's expected request, changed by `edit`, in a file.
fn simple_expectation(dir: &Path, edit: impl FnOnce(&mut Value)) -> String {
    let mut json = expected("simple");
    edit(&mut json);
    write(dir, "expected.json", &json.to_string())
}

fn simple_with(expect: &str) -> Output {
    test_transform(&[
        "-t",
        "examples/simple/transform.yaml",
        "-i",
        "examples/simple/rows.csv",
        "--expect",
        expect,
    ])
}

#[test]
fn expect_passes_on_the_same_request_in_another_order() {
    let dir = tempfile::tempdir().unwrap();
    let shuffled = simple_expectation(dir.path(), |json| {
        let points =
            json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
                .as_array_mut()
                .unwrap();
        points.reverse();
        for p in points {
            p["attributes"].as_array_mut().unwrap().reverse();
        }
    });
    let out = simple_with(&shuffled);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("the output matches {shuffled}")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "--expect prints no request");
}

#[test]
fn expect_fails_with_each_difference_named() {
    let dir = tempfile::tempdir().unwrap();
    let changed = simple_expectation(dir.path(), |json| {
        let points =
            &mut json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"];
        points[2]["asDouble"] = serde_json::json!(121.5);
        points.as_array_mut().unwrap().remove(0);
    });
    let out = simple_with(&changed);
    assert_eq!(out.status.code(), Some(1), "a mismatch exits 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let metric = "resourceMetrics[{service.name=adx-mon-metrics-exporter, service.version=0.1.0}]\
                  .scopeMetrics[adx-mon.azure.com/metrics-exporter v1]\
                  .metrics[service_response_time_avg].gauge";
    assert!(
        stderr.contains(&format!(
            "error: the output differs from {changed} in 2 places (`-` expected, `+` output):\n  \
             {metric}.dataPoints[{{Region=eu-west-1, ServiceName=checkout}} at 1640995200000000000].asDouble: - 121.5 + 120.0\n  \
             {metric}.dataPoints[{{Region=us-east-1, ServiceName=api-gateway}} at 1640995200000000000]: - (missing) + {{\"attributes\""
        )),
        "{stderr}"
    );

    let not_json = write(dir.path(), "not.json", "resourceMetrics: []");
    let out = simple_with(&not_json);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{not_json}: not JSON")),
        "{stderr}"
    );
}

/// A point's attributes as (key, string value), in order.
fn attributes(point: &Value) -> Vec<(String, String)> {
    point["attributes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["value"]["stringValue"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn dynamic_labels_example_expands_the_property_bag() {
    let out = test_transform(&[
        "-t",
        "examples/dynamic-labels/metricsexporter.yaml",
        "-i",
        "examples/dynamic-labels/rows.jsonl",
    ]);
    let json = stdout_json(&out);
    assert_eq!(json, expected("dynamic-labels"));
    let points = json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
        .as_array()
        .unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    // Keys sanitized under the prefix and sorted by name, nested values as
    // compact JSON text, numbers and booleans as their JSON text, the null
    // `owner` left out; the plain label first, as listed.
    assert_eq!(
        attributes(&points[0]),
        pairs(&[
            ("ServiceName", "checkout"),
            ("props_build", r#"{"sha":"ab12","dirty":false}"#),
            ("props_canary", "true"),
            ("props_pod_name", "checkout-7f9"),
            ("props_zone", "eu-west-1a"),
        ])
    );
    // The same keys written in another order come out in the same order.
    assert_eq!(
        attributes(&points[1]),
        pairs(&[
            ("ServiceName", "checkout"),
            ("props_pod_name", "checkout-2c4"),
            ("props_replicas", "3"),
            ("props_zone", "eu-west-1b"),
        ])
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("rows skipped: 1\n  dynamic-not-object: 1 (first at row 2, 0-based)"),
        "{summary}"
    );
}

/// `rows` (JSON Lines) through the default transform with `labels`.
fn expand_on(dir: &Path, labels: &str, extra: &str, rows: &str) -> Output {
    let transform = write(
        dir,
        "t.yaml",
        &format!(
            "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  labelColumns: {labels}\n{extra}"
        ),
    );
    let input = write(dir, "rows.jsonl", rows);
    test_transform(&["-t", &transform, "-i", &input, "--compact"])
}

#[test]
fn expanded_labels_are_capped_per_row_and_per_batch_and_collisions_skip_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"a": 1, "b": 2}"#,         // 0: names a, b
        r#"{"a": 1, "b": 2, "c": 3}"#, // 1: 3 labels, maxKeys 2
        r#"{"c": "x", "gone": null}"#, // 2: name c: 3 names now
        r#"{"d": 1}"#,                 // 3: a 4th name, over maxExpandedLabels
        r#"{"c": 6, "a": 5}"#,         // 4: names already seen
        r#"[1, 2]"#,                   // 5: not an object
        r#"{"x.y": 1, "x_y": 2}"#,     // 6: both are label x_y
        r#"{"host": "z"}"#,            // 7: the label column's name
        r#"{"team": "q"}"#,            // 8: a constant label's name
        r#"null"#,                     // 9: no bag: the plain labels only
    ];
    let mut text = String::new();
    for (i, bag) in rows.iter().enumerate() {
        text.push_str(&format!(
            "{{\"v\": {i}, \"t\": \"2025-06-25T10:00:{i:02}Z\", \"host\": \"h\", \"P\": {bag}}}\n"
        ));
    }
    // A string in a dynamic column arrives as its text, which is not JSON.
    text.push_str(r#"{"v": 10, "t": "2025-06-25T10:00:10Z", "host": "h", "P": "plain text"}"#);
    text.push('\n');
    let out = expand_on(
        dir.path(),
        "[host, {column: P, expand: true, maxKeys: 2}]",
        "  constantLabels: {team: t}\n  maxExpandedLabels: 3\n",
        &text,
    );
    let json = stdout_json(&out);
    let points = json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
        .as_array()
        .unwrap();
    let by_value: Vec<(String, Vec<(String, String)>)> = points
        .iter()
        .map(|p| (p["asInt"].as_str().unwrap().to_string(), attributes(p)))
        .collect();
    let labels = |list: &[(&str, &str)]| pairs(list);
    assert_eq!(
        by_value,
        [
            (
                "0".to_string(),
                labels(&[("host", "h"), ("a", "1"), ("b", "2"), ("team", "t")])
            ),
            (
                "2".to_string(),
                labels(&[("host", "h"), ("c", "x"), ("team", "t")])
            ),
            (
                "4".to_string(),
                labels(&[("host", "h"), ("a", "5"), ("c", "6"), ("team", "t")])
            ),
            ("9".to_string(), labels(&[("host", "h"), ("team", "t")])),
        ]
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    for line in [
        "rows skipped: 7\n",
        "  too-many-keys: 1 (first at row 1, 0-based)",
        "  too-many-label-names: 1 (first at row 3, 0-based)",
        "  dynamic-not-object: 1 (first at row 5, 0-based)",
        "  label-collision: 3 (first at row 6, 0-based)",
        "  dynamic-not-json: 1 (first at row 10, 0-based)",
    ] {
        assert!(summary.contains(line), "{line:?} not in:\n{summary}");
    }
}

#[test]
fn two_bags_giving_one_name_skip_the_row_and_a_prefix_keeps_them_apart() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "{\"v\": 1, \"t\": \"2025-06-25T10:00:00Z\", \"P\": {\"k\": \"1\"}, \"Q\": {\"p_k\": \"2\"}}\n\
                {\"v\": 2, \"t\": \"2025-06-25T10:00:01Z\", \"P\": {\"k\": \"1\"}, \"Q\": {\"other\": \"2\"}}\n";
    let out = expand_on(
        dir.path(),
        "[{column: P, expand: true, prefix: p_}, {column: Q, expand: true}]",
        "",
        rows,
    );
    let json = stdout_json(&out);
    let points =
        &json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"];
    assert_eq!(points.as_array().map_or(0, Vec::len), 1, "{points}");
    assert_eq!(
        attributes(&points[0]),
        pairs(&[("p_k", "1"), ("other", "2")])
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("label-collision: 1 (first at row 0, 0-based)"),
        "{summary}"
    );
}

#[test]
fn bad_expanding_entries_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = "{\"v\": 1, \"t\": \"2025-06-25T10:00:00Z\", \"host\": \"h\", \"P\": {\"k\": 1}}\n";
    for (labels, wanted) in [
        (
            "[host, {column: P, expand: true, prefx: p_}]",
            "labelColumns[1] has an unknown key `prefx`",
        ),
        (
            "[host, {column: P}]",
            "labelColumns[1] needs `expand: true`",
        ),
        (
            "[host, {column: P, expand: true, maxKeys: 1000}]",
            "labelColumns[1]: maxKeys is 1000; it must be a whole number from 1 to 256",
        ),
        (
            "[host, {column: P, expand: true, prefix: 9p}]",
            "labelColumns[1]: prefix `9p` starts with a digit",
        ),
    ] {
        let out = expand_on(d, labels, "", rows);
        assert!(!out.status.success(), "{labels} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(wanted), "{labels}: {err}");
    }
    // The guest declares the column `dynamic`: a string column is refused
    // before the guest sees it.
    let transform = write(
        d,
        "t.yaml",
        "transform:\n  defaultMetricName: m\n  valueColumn: v\n  timestampColumn: t\n  labelColumns: [{column: P, expand: true}]\n",
    );
    let csv = write(
        d,
        "rows.csv",
        "v:long,t:datetime,P:string\n1,2025-06-25T10:00:00Z,x\n",
    );
    let err = failure(&["-t", &transform, "-i", &csv]);
    assert!(
        err.contains("column `P` is string, the transform accepts dynamic"),
        "{err}"
    );
}
