//! The CRDs in `crds/` are what the Rust types generate, and every example
//! manifest passes their schemas: the OpenAPI schema (checked with the
//! `jsonschema` crate) and the CEL rules (`x-kubernetes-validations`,
//! evaluated with the `cel` crate) that the API server would apply.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn crd_files() -> Vec<(String, String)> {
    kusto_metrics::api::crds::all()
        .into_iter()
        .map(|(name, yaml)| (name.to_string(), yaml))
        .collect()
}

#[test]
fn crds_folder_matches_the_rust_types() {
    let dir = common::root().join("crds");
    for (name, generated) in crd_files() {
        let path = dir.join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is out of date: run `cargo run --release -- crds` and split it, or `scripts/gen-crds.sh`",
            path.display()
        );
    }
    let extra: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".yaml")
                && n != "kustomization.yaml"
                && !crd_files().iter().any(|(c, _)| c == n)
        })
        .collect();
    assert!(
        extra.is_empty(),
        "crds/ holds files no type generates: {extra:?}"
    );
}

/// The `openAPIV3Schema` of the CRD for `kind`.
fn schema(kind: &str) -> Value {
    for (_, yaml) in crd_files() {
        let crd: Value = serde_yaml::from_str(&yaml).unwrap();
        if crd["spec"]["names"]["kind"] == kind {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("no CRD for {kind}");
}

/// Every CEL rule in the schema with the JSON pointer of what `self` is.
fn rules(schema: &Value, at: &str, out: &mut Vec<(String, String, String)>) {
    if let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            out.push((
                at.to_string(),
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules(v, &format!("{at}/{k}"), out);
        }
    }
}

/// What the API server would say about `doc`, or nothing.
fn problems(doc: &Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let schema = schema(kind);
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    // `metadata` is checked by the API server itself, not by the CRD.
    let mut body = doc.clone();
    body.as_object_mut().unwrap().remove("metadata");
    let mut found: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let mut cel_rules = Vec::new();
    rules(&schema, "", &mut cel_rules);
    for (at, rule, message) in cel_rules {
        let Some(target) = body.pointer(&at) else {
            continue;
        };
        let program = cel::Program::compile(&rule).unwrap_or_else(|e| panic!("rule {rule}: {e}"));
        let mut context = cel::Context::default();
        context.add_variable_from_value("self", cel::to_value(target).unwrap());
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            other => found.push(format!("{at}: {message} ({rule} gave {other:?})")),
        }
    }
    found
}

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            manifests(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_manifest_passes_the_schemas() {
    let mut files = Vec::new();
    manifests(&common::root().join("examples"), &mut files);
    manifests(&common::root().join("deploy"), &mut files);
    // The generated CRDs list exactly their files for kustomize.
    let k: Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::root().join("crds/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let generated: Vec<String> = crd_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, generated);
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = Value::deserialize(doc) else {
                continue;
            };
            if !matches!(
                value["kind"].as_str(),
                Some("MetricsExporter" | "SummaryRule")
            ) {
                continue;
            }
            let found = problems(&value);
            assert!(found.is_empty(), "{}: {found:#?}", file.display());
            checked += 1;
        }
    }
    assert!(checked >= 9, "only {checked} manifests found");
}

use serde::Deserialize;

#[test]
fn the_schemas_refuse_what_the_api_server_should() {
    let base: Value = serde_yaml::from_str(
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: x}\nspec:\n  exporters: [a]\n  interval: 1m\n  transform: {valueColumn: v, myGuestSetting: 3}\n",
    )
    .unwrap();
    assert!(problems(&base).is_empty(), "{:?}", problems(&base));
    let with = |pointer: &str, v: Value| {
        let mut d = base.clone();
        *d.pointer_mut(pointer).unwrap() = v;
        problems(&d)
    };
    assert!(
        !with("/spec/interval", Value::from("5 minutes")).is_empty(),
        "interval pattern"
    );
    assert!(
        !with("/spec/exporters", serde_json::json!([])).is_empty(),
        "at least one exporter"
    );
    let mut both = base.clone();
    both["spec"]["summaryRuleSelector"] = serde_json::json!({"matchLabels": {"a": "b"}});
    both["spec"]["database"] = Value::from("Db");
    both["spec"]["body"] = Value::from("T");
    assert!(
        problems(&both).iter().any(|p| p.contains("not both")),
        "{:?}",
        problems(&both)
    );
    let mut half = base.clone();
    half["spec"]["database"] = Value::from("Db");
    assert!(problems(&half).iter().any(|p| p.contains("go together")));
    let mut module = base.clone();
    module["spec"]["transform"]["module"] =
        serde_json::json!({"builtin": "column-mapping", "file": "x.wasm"});
    assert!(!problems(&module).is_empty(), "one module source only");
    module["spec"]["transform"]["module"] =
        serde_json::json!({"oci": {"ref": "r/x:1", "digest": "sha256:abc"}});
    assert!(!problems(&module).is_empty(), "a digest is 64 hex digits");
    let labels = |v: Value| {
        with(
            "/spec/transform",
            serde_json::json!({"valueColumn": "v", "labelColumns": v}),
        )
    };
    let both = serde_json::json!(["host", {"column": "Properties", "expand": true, "prefix": "p_", "maxKeys": 8}]);
    let found = labels(both);
    assert!(found.is_empty(), "{found:?}");
    for bad in [
        serde_json::json!([3]),
        serde_json::json!([{"column": "Properties"}]),
        serde_json::json!([{"column": "Properties", "expand": false}]),
        serde_json::json!([{"expand": true}]),
    ] {
        let found = labels(bad.clone());
        assert!(
            found
                .iter()
                .any(|p| p.contains("each labelColumns entry is a column name")),
            "{bad}: {found:?}"
        );
    }
    let rule: Value = serde_yaml::from_str(
        "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {name: r}\nspec: {database: D, table: T, interval: 5m}\n",
    )
    .unwrap();
    assert!(
        problems(&rule).iter().any(|p| p.contains("body")),
        "{:?}",
        problems(&rule)
    );
}

#[test]
fn the_interval_says_what_floor_the_host_applies() {
    let s = schema("MetricsExporter");
    let interval = &s["properties"]["spec"]["properties"]["interval"];
    let description = interval["description"].as_str().unwrap();
    let floor =
        humantime::format_duration(kusto_metrics::config::host_config::DEFAULT_MIN_INTERVAL)
            .to_string();
    assert!(
        description.contains("minInterval")
            && description.contains(&format!("({floor} unless"))
            && description.contains("IntervalTooShort"),
        "{description}"
    );
}
