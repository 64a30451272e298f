//! The manifests in `deploy/` (no cluster here, so their content is
//! checked): everything the kustomization names exists, the Deployment is
//! what the issue asks (two replicas, probes, limits, non-root, read-only
//! root), RBAC is the least that works, and the shipped host config loads.

mod common;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every object the kustomization at `dir` pulls in (recursively, its
/// components too).
fn kustomize(dir: &Path) -> Vec<Value> {
    let k = docs(&dir.join("kustomization.yaml")).remove(0);
    let mut out = Vec::new();
    let none = Vec::new();
    let components = k["components"].as_array().unwrap_or(&none);
    for r in k["resources"].as_array().unwrap().iter().chain(components) {
        let path = dir.join(r.as_str().unwrap());
        assert!(
            path.exists(),
            "{} names {} which does not exist",
            dir.display(),
            path.display()
        );
        if path.is_dir() {
            out.extend(kustomize(&path));
        } else {
            out.extend(docs(&path));
        }
    }
    out
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_base_installs_everything_the_host_needs() {
    let objects = kustomize(&common::root().join("deploy"));
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for k in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&k), "no {k}: {kinds:?}");
    }
    let crds: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        [
            "metricsexporters.adx-mon.azure.com",
            "summaryrules.adx-mon.azure.com"
        ]
    );

    let d = find(&objects, "Deployment", "kusto-metrics");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kusto-metrics");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for r in ["requests", "limits"] {
        assert!(
            c["resources"][r]["cpu"].is_string() && c["resources"][r]["memory"].is_string(),
            "{r}"
        );
    }
    let sc = &c["securityContext"];
    assert_eq!(
        (
            sc["readOnlyRootFilesystem"].as_bool(),
            sc["allowPrivilegeEscalation"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        ["POD_NAME", "POD_NAMESPACE"],
        "identity and lease namespace come from the pod"
    );

    let svc = find(&objects, "Service", "kusto-metrics");
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/path"],
        "/metrics"
    );
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "kusto-metrics")["spec"]["minAvailable"],
        1
    );
}

#[test]
fn rbac_is_the_least_that_works() {
    let objects = kustomize(&common::root().join("deploy"));
    let rules = |kind: &str, name: &str| -> Vec<(String, String, Vec<String>)> {
        let mut out = Vec::new();
        for r in find(&objects, kind, name)["rules"].as_array().unwrap() {
            for g in r["apiGroups"].as_array().unwrap() {
                for res in r["resources"].as_array().unwrap() {
                    let mut verbs: Vec<String> = r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect();
                    verbs.sort();
                    out.push((
                        g.as_str().unwrap().to_string(),
                        res.as_str().unwrap().to_string(),
                        verbs,
                    ));
                }
            }
        }
        out.sort();
        out
    };
    let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules("ClusterRole", "kusto-metrics"),
        vec![
            (
                "adx-mon.azure.com".into(),
                "metricsexporters".into(),
                v(&["get", "list", "watch"])
            ),
            (
                "adx-mon.azure.com".into(),
                "metricsexporters/status".into(),
                v(&["get", "patch"])
            ),
            (
                "adx-mon.azure.com".into(),
                "summaryrules".into(),
                v(&["get", "list", "watch"])
            ),
            (
                "events.k8s.io".into(),
                "events".into(),
                v(&["create", "patch"])
            ),
        ]
    );
    assert_eq!(
        rules("Role", "kusto-metrics-leases"),
        vec![(
            "coordination.k8s.io".into(),
            "leases".into(),
            v(&[
                "create", "delete", "get", "list", "patch", "update", "watch"
            ])
        )]
    );
    let text = std::fs::read_to_string(common::root().join("deploy/base/rbac.yaml")).unwrap();
    assert!(!text.contains("\"*\""), "no wildcards");
    assert_eq!(
        namespaces_reading_secrets(&objects),
        Vec::<String>::new(),
        "the base reads no Secret or ConfigMap anywhere"
    );
}

/// The resources of every rule of every ClusterRole.
fn cluster_wide_resources(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Namespaces where a Role lets the host's ServiceAccount get both
/// ConfigMaps and Secrets, bound to it by a RoleBinding there.
fn namespaces_reading_secrets(objects: &[Value]) -> Vec<String> {
    let cluster = cluster_wide_resources(objects);
    assert!(
        !cluster
            .iter()
            .any(|r| r == "secrets" || r == "configmaps" || r == "*"),
        "no ClusterRole grants secrets or configmaps: {cluster:?}"
    );
    let mut out = Vec::new();
    for role in objects.iter().filter(|o| o["kind"] == "Role") {
        let grants = |res: &str| {
            role["rules"].as_array().unwrap().iter().any(|r| {
                r["apiGroups"] == json!([""])
                    && r["resources"].as_array().unwrap().iter().any(|x| x == res)
                    && r["verbs"] == json!(["get"])
            })
        };
        if !(grants("configmaps") && grants("secrets")) {
            continue;
        }
        let ns = role["metadata"]["namespace"].as_str().unwrap();
        let bound = objects.iter().any(|b| {
            b["kind"] == "RoleBinding"
                && b["metadata"]["namespace"] == ns
                && b["roleRef"]["name"] == role["metadata"]["name"]
                && b["roleRef"]["kind"] == "Role"
                && b["subjects"].as_array().unwrap().iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == "kusto-metrics"
                        && s["namespace"] == "kusto-metrics"
                })
        });
        assert!(
            bound,
            "Role {ns}/{} is bound to the host",
            role["metadata"]["name"]
        );
        out.push(ns.to_string());
    }
    out.sort();
    out
}

/// The host config an overlay writes over the base's ConfigMap.
fn patched_host_config(kustomization: &Value) -> String {
    let patch = kustomization["patches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"]["kind"] == "ConfigMap")
        .expect("a ConfigMap patch");
    let ops: Vec<Value> = serde_yaml::from_str(patch["patch"].as_str().unwrap()).unwrap();
    ops[0]["value"].as_str().unwrap().to_string()
}

#[test]
fn the_watch_namespace_example_grants_secrets_only_where_the_host_watches() {
    let dir = common::root().join("examples/kubernetes/watch-namespace");
    let objects = kustomize(&dir);
    assert_eq!(namespaces_reading_secrets(&objects), ["team-a"]);
    let role = objects
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "team-a")
        .unwrap();
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]}]),
        "get only: no list, no watch"
    );
    let text = patched_host_config(&docs(&dir.join("kustomization.yaml")).remove(0));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kusto-metrics.yaml");
    std::fs::write(&path, text).unwrap();
    let c = kusto_metrics::config::HostConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let watched = &c.kubernetes.as_ref().unwrap().namespaces;
    assert_eq!(
        watched,
        &namespaces_reading_secrets(&objects),
        "a Role in every watched namespace, and only there"
    );
    let tenancy = c.tenancy.as_ref().expect("a tenancy policy");
    assert!(tenancy.allows("team-a", "TelemetryDB") && !tenancy.allows("team-b", "TelemetryDB"));
}

#[test]
fn the_shipped_host_configs_load() {
    let root = common::root();
    let mut configs = vec![
        docs(&root.join("deploy/base/configmap.yaml")).remove(0)["data"]["kusto-metrics.yaml"]
            .clone(),
    ];
    let overlay =
        docs(&root.join("deploy/overlays/workload-identity/kustomization.yaml")).remove(0);
    let patch: Vec<Value> =
        serde_yaml::from_str(overlay["patches"][2]["patch"].as_str().unwrap()).unwrap();
    configs.push(patch[0]["value"].clone());
    for text in configs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kusto-metrics.yaml");
        std::fs::write(&path, text.as_str().unwrap()).unwrap();
        let c = kusto_metrics::config::HostConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.kubernetes.is_some() && c.manifests.is_none(),
            "watches the API"
        );
        assert!(c.kusto().is_some(), "reads ADX");
        assert!(c.listen.is_some(), "serves /metrics for the probes");
    }
    // The Dockerfile builds the binary the Deployment runs, as non-root.
    let docker = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(
        docker.contains("rustup target add wasm32-wasip2") && docker.contains("USER 65532"),
        "{docker}"
    );
}

/// kustomize refuses a kustomization that pulls in a folder containing
/// itself ("cycle detected"): overlays and examples build on deploy/base.
#[test]
fn no_kustomization_includes_a_folder_that_contains_it() {
    let root = common::root();
    let mut dirs = vec![root.join("deploy"), root.join("examples")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let here = path.parent().unwrap().canonicalize().unwrap();
                let k = docs(&path).remove(0);
                let none = Vec::new();
                let components = k["components"].as_array().unwrap_or(&none);
                for r in k["resources"]
                    .as_array()
                    .unwrap_or(&none)
                    .iter()
                    .chain(components)
                {
                    let target = here.join(r.as_str().unwrap());
                    if target.is_dir() {
                        let target = target.canonicalize().unwrap();
                        assert!(
                            !here.starts_with(&target),
                            "{} includes {}, a folder that contains it",
                            path.display(),
                            target.display()
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "found {checked} kustomizations");
}

/// A replica stopping at SIGTERM drains its runs for
/// `kubernetes.shutdownGrace`, stops what still runs after its request in
/// flight (`STOP_NOW_BOUND`), then gives its Leases up (bounded by
/// `RELEASE_TIMEOUT`): the Deployment's grace period must cover both, for
/// every shipped host config, or the kubelet kills the pod before its
/// Leases are released.
#[test]
fn the_pod_grace_period_covers_the_drain_and_the_lease_release() {
    use kusto_metrics::config::kubernetes::RELEASE_TIMEOUT;
    use kusto_metrics::schedule::runner::STOP_NOW_BOUND;
    let root = common::root();
    let base = kustomize(&root.join("deploy"));
    let deployment = find(&base, "Deployment", "kusto-metrics");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect(
            "terminationGracePeriodSeconds is set explicitly (the default, 30 s, is too short)",
        );
    let mut configs = vec![(
        "deploy/base".to_string(),
        docs(&root.join("deploy/base/configmap.yaml")).remove(0)["data"]["kusto-metrics.yaml"]
            .as_str()
            .unwrap()
            .to_string(),
    )];
    for dir in [
        "deploy/overlays/workload-identity",
        "examples/kubernetes/watch-namespace",
    ] {
        let objects = kustomize(&root.join(dir));
        let d = find(&objects, "Deployment", "kusto-metrics");
        assert_eq!(
            d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], grace,
            "{dir} keeps the base's grace period"
        );
        let k = docs(&root.join(dir).join("kustomization.yaml")).remove(0);
        configs.push((dir.to_string(), patched_host_config(&k)));
    }
    for (dir, text) in configs {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kusto-metrics.yaml");
        std::fs::write(&path, text).unwrap();
        let c = kusto_metrics::config::HostConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let k = c.kubernetes.as_ref().expect("a kubernetes section");
        let budget = k.shutdown_budget();
        assert_eq!(budget, k.shutdown_grace + STOP_NOW_BOUND + RELEASE_TIMEOUT);
        assert!(
            Duration::from_secs(grace) > budget,
            "{dir}: terminationGracePeriodSeconds {grace} must exceed shutdownGrace {:?} + stop {STOP_NOW_BOUND:?} + release {RELEASE_TIMEOUT:?}",
            k.shutdown_grace
        );
        println!("{dir}: grace period {grace}s > shutdown budget {budget:?}");
    }
}
