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

/// How a [`BadRegistry`] answers a manifest request.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// A 1000-byte manifest, one byte every `every`.
    Trickle { every: Duration },
    /// Declares a 1 GiB manifest (`Content-Length`) and streams it.
    HugeDeclared,
    /// Streams a 1 GiB manifest without declaring its length.
    HugeStreamed,
    /// Says yes to every HEAD, serves `{}` for every GET: a registry that
    /// claims to hold any digest.
    ClaimsEverything,
}

/// A registry that misbehaves, on a loopback port: `/v2/` answers 200 (no
/// sign-in), manifests as [`Misbehaviour`] says. Counts the manifest bytes
/// it managed to write.
pub struct BadRegistry {
    port: u16,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    finished: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const HUGE: usize = 1 << 30;

impl BadRegistry {
    pub fn start(how: Misbehaviour) -> BadRegistry {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (s, f) = (sent.clone(), finished.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, f) = (s.clone(), f.clone());
                std::thread::spawn(move || serve_bad(conn, how, &s, &f));
            }
        });
        BadRegistry {
            port,
            sent,
            finished,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Manifest bytes written, once every manifest answer begun has ended
    /// (the client hung up or all was sent); waits up to `within`.
    pub fn manifest_bytes_sent(&self, answers: usize, within: Duration) -> usize {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + within;
        while self.finished.load(Ordering::SeqCst) < answers {
            assert!(
                Instant::now() < deadline,
                "the manifest answers did not end: the client kept reading"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.sent.load(Ordering::SeqCst)
    }
}

fn serve_bad(
    mut conn: std::net::TcpStream,
    how: Misbehaviour,
    sent: &std::sync::atomic::AtomicUsize,
    finished: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let mut reader = BufReader::new(conn.try_clone().expect("clone the socket"));
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // Headers, up to the blank line; requests here have no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        if !path.contains("/manifests/") {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            );
            continue;
        }
        let media = "application/vnd.oci.image.manifest.v1+json";
        let write_body = |conn: &mut std::net::TcpStream, chunk: &[u8], total: usize, pause| {
            let mut written = 0;
            while written < total {
                let n = chunk.len().min(total - written);
                if conn.write_all(&chunk[..n]).is_err() {
                    break;
                }
                written += n;
                sent.fetch_add(n, Ordering::SeqCst);
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
            }
            finished.fetch_add(1, Ordering::SeqCst);
        };
        match how {
            Misbehaviour::ClaimsEverything => {
                let body: &[u8] = if method == "HEAD" { b"" } else { b"{}" };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {media}\r\ncontent-length: 2\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            }
            Misbehaviour::Trickle { every } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {media}\r\ncontent-length: 1000\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                write_body(&mut conn, b" ", 1000, Some(every));
                return;
            }
            Misbehaviour::HugeDeclared => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {media}\r\ncontent-length: {HUGE}\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                write_body(&mut conn, &[b' '; 64 * 1024], HUGE, None);
                return;
            }
            Misbehaviour::HugeStreamed => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {media}\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                write_body(&mut conn, &[b' '; 64 * 1024], HUGE, None);
                return;
            }
        }
    }
}
