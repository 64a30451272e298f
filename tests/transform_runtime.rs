//! The Wasm runtime against real guest builds: the default mapping's
//! semantics, and tiny hostile guests that must fail cleanly.

mod common;

use std::time::{Duration, Instant};

use kusto_metrics::source::batch::{BatchBuilder, ColumnBuilder, sample_context};
use kusto_metrics::transform::{Guest, Limits, Runtime, TransformError, builtin};
use kusto_metrics::wit::{AttributeValue, Batch, KustoType, MetricData, NumberValues, Output};

fn runtime(limits: Limits) -> Runtime {
    Runtime::new(None, limits).expect("runtime starts")
}

fn default_guest() -> Guest {
    runtime(Limits::default())
        .load(builtin::COLUMN_MAPPING_NAME, builtin::COLUMN_MAPPING)
        .expect("the embedded guest loads")
}

fn hostile(limits: Limits) -> Guest {
    runtime(limits)
        .load("hostile", &common::guest("test-guest-hostile"))
        .expect("the hostile guest loads")
}

/// One row: name, value, time, region; `None` is a null.
type Row<'a> = (
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

/// A table: columns `name`, `value` (long), `t` (datetime), `region`.
fn table(rows: &[Row<'_>]) -> Batch {
    let mut cols = vec![
        ColumnBuilder::new("name", KustoType::String),
        ColumnBuilder::new("value", KustoType::Long),
        ColumnBuilder::new("t", KustoType::Datetime),
        ColumnBuilder::new("region", KustoType::String),
    ];
    for (name, value, t, region) in rows {
        let [c0, c1, c2, c3] = &mut cols[..] else {
            unreachable!()
        };
        c0.push_parsed(name.unwrap_or("")).unwrap().unwrap();
        match value {
            Some(v) => c1.push_long(*v),
            None => c1.push_null(),
        }
        c2.push_parsed(t.unwrap_or("")).unwrap().unwrap();
        match region {
            Some(r) => c3.push_text(r).unwrap(),
            None => c3.push_null(),
        }
    }
    BatchBuilder::new(cols).finish(sample_context("t"))
}

fn string_attrs(out: &Output, set: u32) -> Vec<(String, String)> {
    let start = if set == 0 {
        0
    } else {
        out.attribute_set_ends[set as usize - 1]
    } as usize;
    let end = out.attribute_set_ends[set as usize] as usize;
    out.attributes[start..end]
        .iter()
        .map(|a| {
            let AttributeValue::Str(v) = a.value else {
                panic!("labels are strings")
            };
            (
                out.strings[a.key as usize].clone(),
                out.strings[v as usize].clone(),
            )
        })
        .collect()
}

#[test]
fn default_guest_groups_by_name_keeps_integers_exact_and_counts_skips() {
    let guest = default_guest();
    let config = r#"{"metricNameColumn":"name","valueColumn":"value","timestampColumn":"t","labelColumns":["region"],"defaultMetricName":"fallback"}"#;
    let requirements = guest.validate(config).expect("valid config");
    let names: Vec<&str> = requirements
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["value", "t", "name", "region"]);

    let big = 9_007_199_254_740_993; // 2^53 + 1: not representable as f64
    let batch = table(&[
        (
            Some("a"),
            Some(big),
            Some("2025-06-25T10:00:00.1234567Z"),
            Some("eu"),
        ),
        (Some("b"), Some(-5), Some("2025-06-25T10:00:00Z"), None),
        (Some("a"), Some(7), Some("2025-06-25T10:01:00Z"), Some("eu")),
        (Some("a"), None, Some("2025-06-25T10:02:00Z"), Some("eu")),
        (Some("a"), Some(1), None, Some("eu")),
        (None, Some(3), Some("2025-06-25T10:03:00Z"), Some("us")),
    ]);
    let out = guest.transform(config, &batch).expect("transform");
    let names: Vec<&str> = out.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "fallback"],
        "one metric per name, in order of first row"
    );

    let MetricData::Gauge(a) = &out.metrics[0].data else {
        panic!("gauge by default")
    };
    assert_eq!(a.values, NumberValues::Ints(vec![big, 7]));
    assert_eq!(
        a.times,
        vec![1_750_845_600_123_456_700, 1_750_845_660_000_000_000]
    );
    assert_eq!(
        a.attribute_sets[0], a.attribute_sets[1],
        "same labels, same set"
    );
    assert_eq!(
        string_attrs(&out, a.attribute_sets[0]),
        [("region".into(), "eu".into())]
    );

    let MetricData::Gauge(b) = &out.metrics[1].data else {
        panic!()
    };
    assert!(
        string_attrs(&out, b.attribute_sets[0]).is_empty(),
        "a null label is left out"
    );

    let skipped: Vec<(&str, u64, u32)> = out
        .skipped
        .iter()
        .map(|s| (out.skip_reason(s), s.count, s.first_row))
        .collect();
    assert_eq!(skipped, [("null-value", 1, 3), ("null-timestamp", 1, 4)]);
}

#[test]
fn label_values_render_in_shortest_form() {
    let mut cols = vec![
        ColumnBuilder::new("v", KustoType::Real),
        ColumnBuilder::new("t", KustoType::Datetime),
        ColumnBuilder::new("n", KustoType::Long),
        ColumnBuilder::new("r", KustoType::Real),
        ColumnBuilder::new("d", KustoType::Datetime),
        ColumnBuilder::new("b", KustoType::Bool),
    ];
    for (i, c) in cols.iter_mut().enumerate() {
        let text = [
            "1.5",
            "2025-06-25T10:00:00Z",
            "2456",
            "145.3",
            "2025-06-25T10:15:00.5Z",
            "true",
        ][i];
        c.push_parsed(text).unwrap().unwrap();
    }
    let batch = BatchBuilder::new(cols).finish(sample_context("t"));
    let config = r#"{"defaultMetricName":"m","valueColumn":"v","timestampColumn":"t","labelColumns":["n","r","d","b"]}"#;
    let out = default_guest().transform(config, &batch).unwrap();
    let MetricData::Gauge(p) = &out.metrics[0].data else {
        panic!()
    };
    assert_eq!(p.values, NumberValues::Doubles(vec![1.5]));
    let attrs: Vec<String> = string_attrs(&out, p.attribute_sets[0])
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(attrs, ["2456", "145.3", "2025-06-25T10:15:00.5Z", "true"]);
}

#[test]
fn value_columns_sums_and_prefix() {
    let mut cols = vec![
        ColumnBuilder::new("t", KustoType::Datetime),
        ColumnBuilder::new("requests", KustoType::Long),
        ColumnBuilder::new("errors", KustoType::Decimal),
        ColumnBuilder::new("ratio", KustoType::Real),
    ];
    for row in [
        ["2025-06-25T10:00:00Z", "10", "1.50", "NaN"],
        ["2025-06-25T10:01:00Z", "20", "2", "0.1"],
    ] {
        for (c, v) in cols.iter_mut().zip(row) {
            c.push_parsed(v).unwrap().unwrap();
        }
    }
    let batch = BatchBuilder::new(cols).finish(sample_context("t"));
    let config = r#"{"valueColumns":["requests","errors","ratio"],"metricNamePrefix":"team","timestampColumn":"t","kind":"sum","monotonic":true}"#;
    let out = default_guest().transform(config, &batch).unwrap();
    let names: Vec<&str> = out.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["team_requests", "team_errors", "team_ratio"]);
    let MetricData::Sum(s) = &out.metrics[1].data else {
        panic!("kind: sum")
    };
    assert!(s.monotonic);
    assert_eq!(
        s.points.values,
        NumberValues::Doubles(vec![1.5, 2.0]),
        "decimals become doubles"
    );
    let MetricData::Sum(r) = &out.metrics[2].data else {
        panic!()
    };
    assert_eq!(
        r.points.values,
        NumberValues::Doubles(vec![0.1]),
        "NaN is skipped, never exported"
    );
    assert_eq!(out.skip_reason(&out.skipped[0]), "non-finite-value");
}

#[test]
fn configuration_errors_name_the_key() {
    let guest = default_guest();
    for (config, field) in [
        (
            r#"{"timestampColumn":"t","defaultMetricName":"m"}"#,
            "valueColumn",
        ),
        (
            r#"{"valueColumn":"v","timestampColumn":"t"}"#,
            "metricNameColumn",
        ),
        (
            r#"{"valueColumn":"v","timestampColumn":"t","defaultMetricName":"m","labelColums":[]}"#,
            "labelColums",
        ),
        (
            r#"{"valueColumn":"v","valueColumns":["w"],"timestampColumn":"t","defaultMetricName":"m"}"#,
            "valueColumns",
        ),
        (
            r#"{"valueColumn":"v","timestampColumn":"t","defaultMetricName":"m","monotonic":true}"#,
            "monotonic",
        ),
    ] {
        match guest.validate(config) {
            Err(TransformError::Config { field: Some(f), .. }) => assert_eq!(f, field, "{config}"),
            other => panic!("{config}: expected a config error at {field}, got {other:?}"),
        }
    }
}

#[test]
fn a_value_column_of_the_wrong_type_is_named() {
    let batch = table(&[(Some("a"), Some(1), Some("2025-06-25T10:00:00Z"), Some("eu"))]);
    let config = r#"{"defaultMetricName":"m","valueColumn":"region","timestampColumn":"t"}"#;
    let err = default_guest().transform(config, &batch).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TransformError::Rejected { .. }), "{text}");
    assert!(text.contains("`region` has type string"), "{text}");
}

#[test]
fn an_endless_guest_is_stopped_at_its_deadline() {
    let limits = Limits {
        deadline: Duration::from_millis(300),
        ..Limits::default()
    };
    let guest = hostile(limits);
    let started = Instant::now();
    let err = guest.transform("\"spin\"", &table(&[])).unwrap_err();
    assert!(matches!(err, TransformError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped near the deadline, not later"
    );
    assert!(
        err.to_string().contains("hostile") && err.to_string().contains("local.t"),
        "names guest and batch: {err}"
    );
    // The host goes on: the same guest serves the next batch.
    assert_eq!(
        guest
            .transform("\"ok\"", &table(&[]))
            .unwrap()
            .metrics
            .len(),
        1
    );
}

#[test]
fn a_memory_hog_hits_its_limit() {
    let guest = hostile(Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    });
    let err = guest.transform("\"hog\"", &table(&[])).unwrap_err();
    assert!(
        matches!(err, TransformError::OutOfMemory { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    assert!(guest.transform("\"ok\"", &table(&[])).is_ok());
}

#[test]
fn a_trap_becomes_an_error() {
    let guest = hostile(Limits::default());
    let err = guest.transform("\"trap\"", &table(&[])).unwrap_err();
    assert!(matches!(err, TransformError::Trap { .. }), "{err}");
    assert!(guest.transform("\"ok\"", &table(&[])).is_ok());
}

#[test]
fn oversized_and_malformed_output_are_refused() {
    let guest = hostile(Limits {
        max_output_points: 1_000,
        ..Limits::default()
    });
    let err = guest.transform("\"oversize\"", &table(&[])).unwrap_err();
    assert!(
        matches!(err, TransformError::OutputTooLarge { .. }),
        "{err}"
    );
    let err = guest.transform("\"malformed\"", &table(&[])).unwrap_err();
    assert!(
        matches!(err, TransformError::MalformedOutput { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("attribute set 7"), "{err}");
}

#[test]
fn guest_rejections_carry_column_and_row() {
    let guest = hostile(Limits::default());
    let err = guest.transform("\"reject\"", &table(&[])).unwrap_err();
    assert!(
        err.to_string()
            .contains("column `metric_value`, row 41, 0-based"),
        "{err}"
    );
    let err = guest.validate("\"bad-config\"").unwrap_err();
    assert!(
        matches!(err, TransformError::Config { field: Some(ref f), .. } if f == "behaviour"),
        "{err}"
    );
}

#[test]
fn a_log_flood_is_capped_and_the_call_succeeds() {
    let out = hostile(Limits::default())
        .transform("\"log-flood\"", &table(&[]))
        .unwrap();
    assert_eq!(out.metrics[0].name, "logged");
}

#[test]
fn a_guest_that_imports_the_clock_is_refused() {
    let err = runtime(Limits::default())
        .load("clock", &common::guest("test-guest-clock"))
        .err()
        .expect("refused");
    assert!(
        matches!(err, TransformError::ForbiddenImport { ref import, .. } if import.starts_with("wasi:clocks/")),
        "{err}"
    );
}

#[test]
fn a_component_for_another_contract_is_refused() {
    let err = runtime(Limits::default())
        .load("other", &common::guest("test-guest-wrong-contract"))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, TransformError::IncompatibleContract { .. }),
        "{text}"
    );
    assert!(
        text.contains("adx-mon:metrics-transform/transform@0.2.0"),
        "{text}"
    );
    assert!(
        text.contains("example:other/greeter@1.0.0"),
        "names what it does export: {text}"
    );
    let err = runtime(Limits::default())
        .load("junk", b"not wasm")
        .err()
        .expect("refused");
    assert!(matches!(err, TransformError::Compile { .. }), "{err}");
}

#[test]
fn a_second_load_uses_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = Runtime::new(Some(dir.path().to_path_buf()), Limits::default())
        .unwrap()
        .load("column-mapping", builtin::COLUMN_MAPPING)
        .unwrap();
    assert!(!first.provenance().from_cache);
    let second = Runtime::new(Some(dir.path().to_path_buf()), Limits::default())
        .unwrap()
        .load("column-mapping", builtin::COLUMN_MAPPING)
        .unwrap();
    assert!(
        second.provenance().from_cache,
        "a second start does not compile again"
    );
    assert_eq!(first.provenance().digest, second.provenance().digest);
    // A corrupted cache entry is compiled again, not trusted.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Runtime::new(Some(dir.path().to_path_buf()), Limits::default())
        .unwrap()
        .load("column-mapping", builtin::COLUMN_MAPPING)
        .unwrap();
    assert!(!third.provenance().from_cache);
    let batch = table(&[(Some("a"), Some(1), Some("2025-06-25T10:00:00Z"), None)]);
    let config = r#"{"metricNameColumn":"name","valueColumn":"value","timestampColumn":"t"}"#;
    assert_eq!(third.transform(config, &batch).unwrap().point_count(), 1);
}

/// A compiled file the cache did not write under that name (here: another
/// guest's, valid machine code for this engine) is never run.
#[test]
fn the_compile_cache_loads_only_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let cache = || Runtime::new(Some(dir.path().to_path_buf()), Limits::default()).unwrap();
    cache()
        .load("column-mapping", builtin::COLUMN_MAPPING)
        .unwrap();
    let hostile_bytes = common::guest("test-guest-hostile");
    cache().load("hostile", &hostile_bytes).unwrap();
    let files = |suffix: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(".cwasm").len(), 2);
    assert_eq!(files(".cwasm.sha256").len(), 2, "a digest beside each");
    // Put the hostile guest's compiled code under the default guest's name.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(builtin::COLUMN_MAPPING))
    };
    let ours = files(".cwasm")
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&digest)
        })
        .unwrap();
    let theirs = files(".cwasm").into_iter().find(|p| *p != ours).unwrap();
    std::fs::copy(&theirs, &ours).unwrap();
    let loaded = cache()
        .load("column-mapping", builtin::COLUMN_MAPPING)
        .unwrap();
    assert!(
        !loaded.provenance().from_cache,
        "the swapped file is compiled again"
    );
    let batch = table(&[(Some("a"), Some(1), Some("2025-06-25T10:00:00Z"), None)]);
    let config = r#"{"metricNameColumn":"name","valueColumn":"value","timestampColumn":"t"}"#;
    let out = loaded.transform(config, &batch).unwrap();
    assert_eq!(out.metrics[0].name, "a", "the default guest's code ran");
}

#[test]
fn a_component_built_for_contract_0_1_is_refused_with_its_version() {
    let err = runtime(Limits::default())
        .load("old", &common::guest("test-guest-contract-0-1"))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, TransformError::IncompatibleContract { .. }),
        "{text}"
    );
    assert!(text.contains("built for contract 0.1.0"), "{text}");
    assert!(text.contains("this host runs 0.2.0"), "{text}");
    assert!(text.contains("rebuild"), "{text}");
}

fn expect_too_large(guest: &Guest, behaviour: &str, wanted: &str) {
    let started = Instant::now();
    let err = guest
        .transform(&format!("\"{behaviour}\""), &table(&[]))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TransformError::OutputTooLarge { .. }),
        "{behaviour}: {text}"
    );
    assert!(text.contains(wanted), "{behaviour}: {text}");
    assert!(text.contains("hostile"), "names the guest: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{behaviour} refused within the deadline, took {:?}",
        started.elapsed()
    );
}

#[test]
fn outputs_that_expand_or_alias_are_refused_before_they_are_spent() {
    let guest = hostile(Limits::default());
    // One 1 MiB attribute shared by 10,000 points: 10 GiB once encoded.
    expect_too_large(&guest, "shared-attribute:1048576:10000", "expands to");
    // Strings, names and bucket lists that alias one buffer in the guest.
    expect_too_large(&guest, "aliased-strings:33554432:200000", "lifting it");
    expect_too_large(&guest, "aliased-names:16777216:100000", "lifting it");
    expect_too_large(&guest, "aliased-buckets:1048576:10000", "lifting it");
    assert!(
        guest.transform("\"ok\"", &table(&[])).is_ok(),
        "the guest goes on"
    );
    // A million skip reasons (building them takes the guest more memory
    // than the default allows).
    let roomy = hostile(Limits {
        max_memory: 256 << 20,
        ..Limits::default()
    });
    expect_too_large(&roomy, "skip-reasons:1000000", "skip reasons");
}

#[test]
fn many_core_instances_share_one_memory_budget() {
    // 7 instances, each growing to 62.5 MiB: under 64 MiB each, far over
    // it together.
    let limits = Limits {
        max_memory: 64 << 20,
        ..Limits::default()
    };
    let guest = runtime(limits)
        .load("many", &common::instances::many_instances(7, 999))
        .expect("loads");
    let err = guest.transform("\"ok\"", &table(&[])).unwrap_err();
    assert!(
        matches!(err, TransformError::OutOfMemory { limit, .. } if limit == 64 << 20),
        "{err}"
    );
    // More memories or instances than a component may have: refused at
    // load, before anything runs.
    for (count, pages, limit) in [(20, 0, "maximum of 8"), (100, 0, "maximum of 64")] {
        let err = runtime(Limits::default())
            .load("many", &common::instances::many_instances(count, pages))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            matches!(err, TransformError::TooManyResources { .. }),
            "{text}"
        );
        assert!(text.contains(limit), "{text}");
    }
    // A few instances within both limits run.
    let guest = runtime(Limits::default())
        .load("few", &common::instances::many_instances(3, 16))
        .expect("loads");
    assert!(guest.transform("\"ok\"", &table(&[])).is_ok());
}

#[test]
fn guest_text_is_cut_before_it_reaches_logs_and_status() {
    let guest = hostile(Limits::default());
    let err = guest
        .transform("\"huge-error:10485760\"", &table(&[]))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TransformError::Rejected { .. }),
        "{}",
        &text[..200]
    );
    assert!(text.len() < 4096, "{} bytes", text.len());
    let err = guest
        .validate("\"huge-config-error:10485760\"")
        .unwrap_err();
    assert!(err.to_string().len() < 4096);
    // 40 reasons of 1 MiB each: accepted, cut and folded.
    let out = guest
        .transform("\"skip-reasons:40:1048576\"", &table(&[]))
        .unwrap();
    assert!(out.skipped.len() <= 17, "{} reasons", out.skipped.len());
    assert_eq!(out.skipped_count(), 40, "every skipped row still counted");
    for s in &out.skipped {
        assert!(
            out.skip_reason(s).len() <= 64,
            "{}",
            out.skip_reason(s).len()
        );
    }
    assert_eq!(out.skip_reason(out.skipped.last().unwrap()), "other");
}
