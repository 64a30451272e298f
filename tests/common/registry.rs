//! A real OCI registry for the module tests: Debian's `docker-registry`
//! (distribution 2.8, installed by `scripts/setup.sh`) on a free loopback
//! port with its storage in a temporary folder, optionally behind htpasswd
//! basic auth; artifacts are pushed with the `oras` Python client
//! (`tests/servers/oci_push.py`), not with the code under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prometheus::free_port;
use super::receiver::{http_request, venv};
use super::root;

pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a push wrote, as the registry serves it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub size: u64,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// With htpasswd basic auth for `user`:`password`.
    pub fn start_with(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils; scripts/setup.sh installs it)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                file.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = Registry {
            child: None,
            port,
            dir,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian's package; scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_request(&self.host(), "GET", "/v2/", &[], b"").is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not come up\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes `wasm` as `repo:tag` in the Wasm artifact layout (`extra`:
    /// more oci_push.py flags, to make bad artifacts).
    pub fn push(&self, repo: &str, tag: &str, wasm: &Path, extra: &[&str]) -> Pushed {
        let mut c = Command::new(venv().join("bin").join("python"));
        c.arg(root().join("tests/servers/oci_push.py"))
            .args([
                "--registry",
                &self.host(),
                "--repo",
                repo,
                "--tag",
                tag,
                "--insecure",
                "--wasm",
            ])
            .arg(wasm)
            .args(extra);
        if let Some((u, p)) = &self.auth {
            c.args(["--username", u, "--password", p]);
        }
        let out = c.output().expect("running oci_push.py");
        assert!(
            out.status.success(),
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("oci_push.py prints JSON");
        Pushed {
            manifest_digest: v["manifestDigest"].as_str().unwrap().to_string(),
            layer_digest: v["layerDigest"].as_str().unwrap().to_string(),
            size: v["size"].as_u64().unwrap(),
        }
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Changes one byte of a stored blob (same length, other digest). In a
    /// manifest, a hex digit of a digest it holds, so it stays JSON the
    /// registry can serve.
    pub fn corrupt(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let at = match bytes.windows(7).position(|w| w == b"sha256:") {
            Some(i) if bytes.first() == Some(&b'{') => i + 7,
            _ => bytes.len() - 1,
        };
        bytes[at] = if bytes[at] == b'0' {
            b'1'
        } else if bytes.first() == Some(&b'{') {
            b'0'
        } else {
            bytes[at] ^ 1
        };
        std::fs::write(&path, bytes).unwrap();
    }

    /// A Docker config.json granting this registry's credentials.
    pub fn docker_config(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        let (u, p) = self.auth.clone().unwrap_or_default();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let path = dir.join("docker-config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                self.host()
            ),
        )
        .unwrap();
        path
    }
}
