//! The in-memory Kubernetes API server (`tests/servers/kube_apiserver.py`)
//! as a child process, a kubeconfig pointing at it, and plain-HTTP helpers
//! to create and change objects through its API as `kubectl` would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::receiver::{http_request, venv};
use super::root;

pub const API: &str = "/apis/adx-mon.azure.com/v1";

pub struct KubeApi {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("a log file");
        let python = venv().join("bin").join("python");
        let mut child = Command::new(&python)
            .arg(root().join("tests/servers/kube_apiserver.py"))
            .args(["--port", "0", "--bookmark-interval", "0.5"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (scripts/setup.sh makes it): {e}",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's first line");
        let port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .unwrap_or_else(|| panic!("the API server printed {line:?}")) as u16;
        let api = KubeApi { child, port, dir };
        std::fs::write(
            api.kubeconfig(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: default}}\ncurrent-context: test\n"
            ),
        )
        .expect("writing the kubeconfig");
        api
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One request; the answer's status and JSON body.
    pub fn call(&self, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let headers = [
            ("Content-Type", content_type),
            ("Accept", "application/json"),
        ];
        let r = http_request(&self.addr(), method, path, &headers, &bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    fn path(api_base: &str, plural: &str, ns: &str, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{api_base}/namespaces/{ns}/{plural}/{n}"),
            None => format!("{api_base}/namespaces/{ns}/{plural}"),
        }
    }

    /// Creates an object of ours (`metricsexporters`, `summaryrules`) from YAML.
    pub fn create(&self, plural: &str, yaml: &str) -> Value {
        let obj: Value = serde_yaml::from_str(yaml).expect("YAML");
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let (status, v) = self.call(
            "POST",
            &Self::path(API, plural, &ns, None),
            "application/json",
            &obj,
        );
        assert_eq!(status, 201, "creating {plural}: {v}");
        v
    }

    /// Creates a core object (`configmaps`, `secrets`) from JSON.
    pub fn create_core(&self, plural: &str, ns: &str, obj: Value) -> Value {
        let (status, v) = self.call(
            "POST",
            &Self::path("/api/v1", plural, ns, None),
            "application/json",
            &obj,
        );
        assert_eq!(status, 201, "creating {plural}: {v}");
        v
    }

    /// A merge patch of a core object.
    pub fn patch_core(&self, plural: &str, ns: &str, name: &str, patch: Value) {
        let (status, v) = self.call(
            "PATCH",
            &Self::path("/api/v1", plural, ns, Some(name)),
            "application/merge-patch+json",
            &patch,
        );
        assert_eq!(status, 200, "patching {name}: {v}");
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let (status, v) = self.call(
            "GET",
            &Self::path(API, plural, ns, Some(name)),
            "application/json",
            &Value::Null,
        );
        (status == 200).then_some(v)
    }

    /// Sets labels (a merge patch, as `kubectl label --overwrite` sends).
    pub fn label(&self, plural: &str, ns: &str, name: &str, labels: Value) {
        let (status, v) = self.call(
            "PATCH",
            &Self::path(API, plural, ns, Some(name)),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": labels}}),
        );
        assert_eq!(status, 200, "labelling {name}: {v}");
    }

    /// A merge patch of the main resource (spec, metadata).
    pub fn patch(&self, plural: &str, ns: &str, name: &str, patch: Value) {
        let (status, v) = self.call(
            "PATCH",
            &Self::path(API, plural, ns, Some(name)),
            "application/merge-patch+json",
            &patch,
        );
        assert_eq!(status, 200, "patching {name}: {v}");
    }

    /// Sets the status, as adx-mon does for its SummaryRules.
    pub fn set_status(&self, plural: &str, ns: &str, name: &str, status: Value) {
        let (code, v) = self.call(
            "PATCH",
            &format!("{}/status", Self::path(API, plural, ns, Some(name))),
            "application/merge-patch+json",
            &json!({"status": status}),
        );
        assert_eq!(code, 200, "status of {name}: {v}");
    }

    pub fn delete(&self, plural: &str, ns: &str, name: &str) {
        let (status, v) = self.call(
            "DELETE",
            &Self::path(API, plural, ns, Some(name)),
            "application/json",
            &Value::Null,
        );
        assert_eq!(status, 200, "deleting {name}: {v}");
    }

    /// Every Lease in `ns`.
    pub fn leases(&self, ns: &str) -> Vec<Value> {
        let (_, v) = self.call(
            "GET",
            &Self::path("/apis/coordination.k8s.io/v1", "leases", ns, None),
            "application/json",
            &Value::Null,
        );
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Events in `ns`, from both event APIs.
    pub fn events(&self, ns: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for base in ["/apis/events.k8s.io/v1", "/api/v1"] {
            let (_, v) = self.call(
                "GET",
                &Self::path(base, "events", ns, None),
                "application/json",
                &Value::Null,
            );
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
        }
        out
    }

    /// From now on, every request for `resource` (a plural) in `ns` gets
    /// 403 Forbidden, as when no Role grants it there.
    pub fn forbid(&self, resource: &str, ns: &str) {
        let (status, v) = self.call(
            "POST",
            "/_test/forbid",
            "application/json",
            &json!({"resource": resource, "namespace": ns}),
        );
        assert_eq!(status, 200, "forbidding {resource} in {ns}: {v}");
    }

    /// The next `count` writes (PUT or PATCH, apply included) of the status
    /// of `plural` `ns/name` answer `code` (429, 409, 500 or 503) and are
    /// not applied; `count` 0 clears it. A failed commit in one call:
    /// `fail_status_writes("metricsexporters", NS, "e1", 3, 429)`.
    pub fn fail_status_writes(&self, plural: &str, ns: &str, name: &str, count: u32, code: u16) {
        let (status, v) = self.call(
            "POST",
            "/_test/fail-writes",
            "application/json",
            &json!({"resource": plural, "namespace": ns, "name": name,
                    "subresource": "status", "count": count, "code": code}),
        );
        assert_eq!(status, 200, "failing status writes of {name}: {v}");
    }

    /// From now on every request for `resource` (a plural; watches
    /// excepted) waits `seconds` before it is served; 0 clears it.
    pub fn delay(&self, resource: &str, seconds: f64) {
        let (status, v) = self.call(
            "POST",
            "/_test/delay",
            "application/json",
            &json!({"resource": resource, "seconds": seconds}),
        );
        assert_eq!(status, 200, "delaying {resource}: {v}");
    }

    /// Creates a Lease in `ns` (a JSON object without apiVersion/kind).
    pub fn create_lease(&self, ns: &str, lease: Value) -> Value {
        let mut obj = lease;
        obj["apiVersion"] = json!("coordination.k8s.io/v1");
        obj["kind"] = json!("Lease");
        let (status, v) = self.call(
            "POST",
            &Self::path("/apis/coordination.k8s.io/v1", "leases", ns, None),
            "application/json",
            &obj,
        );
        assert_eq!(status, 201, "creating a lease: {v}");
        v
    }

    /// How many status writes (PATCH or PUT of `.../status`) of `plural`
    /// `ns/name` the server answered with `code`, from its request log.
    pub fn status_writes_answered(&self, plural: &str, ns: &str, name: &str, code: u16) -> usize {
        let path = format!("{}/status", Self::path(API, plural, ns, Some(name)));
        let (_, log) = self.call("GET", "/_test/requests", "application/json", &Value::Null);
        log.as_array()
            .map(|l| {
                l.iter()
                    .filter(|r| {
                        r["path"] == path.as_str()
                            && (r["method"] == "PATCH" || r["method"] == "PUT")
                            && r["status"] == code
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Drops the watch history and ends every watch: clients reconnect from
    /// a version the server no longer has and must get `410 Gone`.
    pub fn expire_watches(&self) {
        self.call("POST", "/_test/compact", "application/json", &json!({}));
        self.call(
            "POST",
            "/_test/close-watches",
            "application/json",
            &json!({}),
        );
    }

    /// Waits until `check` holds for the object, returning it.
    pub fn wait_for(
        &self,
        plural: &str,
        ns: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get(plural, ns, name).unwrap_or(Value::Null);
            if check(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{plural} {ns}/{name} never got there: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The condition `type_` of a status, if any.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}
