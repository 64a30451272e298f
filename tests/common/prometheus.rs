//! A real Prometheus server for end-to-end tests: Debian's `prometheus`
//! package (installed by `scripts/setup.sh`), started on a free loopback
//! port with a temporary data folder, and asked through its HTTP query API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::receiver::http_request;

/// Prometheus starts its TSDB and web server in well under this.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary: `$PROMETHEUS` or `prometheus` on the PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// What Prometheus should do.
pub enum Mode {
    /// Take remote write at `/api/v1/write`; scrape nothing.
    RemoteWrite,
    /// Scrape `http://target/path` every second, with the bearer token in
    /// `bearer_file` when given (Prometheus' `authorization` block).
    Scrape {
        target: String,
        path: String,
        bearer_file: Option<PathBuf>,
    },
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Prometheus {
    pub fn start(mode: Mode) -> Prometheus {
        Self::start_on(free_port(), mode)
    }

    pub fn start_on(port: u16, mode: Mode) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = match &mode {
            Mode::RemoteWrite => "global: {scrape_interval: 1s}\nscrape_configs: []\n".to_string(),
            Mode::Scrape {
                target,
                path,
                bearer_file,
            } => format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: kusto-metrics\n    metrics_path: {path}\n    scrape_interval: 1s\n    scrape_timeout: 1s\n{}    static_configs:\n      - targets: [\"{target}\"]\n",
                bearer_file.as_ref().map_or_else(String::new, |f| format!(
                    "    authorization: {{type: Bearer, credentials_file: {}}}\n",
                    f.display()
                ))
            ),
        };
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let mut args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // No console templates or UI assets needed.
            "--log.level=warn".to_string(),
        ];
        if matches!(mode, Mode::RemoteWrite) {
            args.push("--web.enable-remote-write-receiver".to_string());
        }
        let mut p = Prometheus {
            child: None,
            port,
            dir,
            args,
        };
        p.spawn();
        p
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("a log file");
        let child = Command::new(binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({e}); scripts/setup.sh installs Debian's prometheus package",
                    binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = http_request(&self.addr(), "GET", "/-/ready", &[], b"")
                && r.status == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("Prometheus did not become ready\n{}", self.log_text());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("Prometheus exited with {status}\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr())
    }

    pub fn log_text(&self) -> String {
        format!(
            "--- prometheus log ---\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after [`Prometheus::stop`], on the same port with
    /// the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /api/v1/query?query=Q&time=T` (T in seconds): the `data.result`
    /// array.
    pub fn query(&self, promql: &str, time_s: f64) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}&time={time_s:.3}", encode(promql));
        let r = http_request(&self.addr(), "GET", &path, &[], b"")
            .unwrap_or_else(|e| panic!("querying Prometheus: {e}\n{}", self.log_text()));
        let body = if r.header("transfer-encoding") == Some("chunked") {
            dechunk(&r.body)
        } else {
            r.body.clone()
        };
        let v: Value = serde_json::from_slice(&body).expect("a JSON answer");
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The raw samples of every series matching `selector` within
    /// `range_s` seconds before `time_s`: `(labels, [(ms, value)])`, sorted
    /// by labels.
    pub fn samples(
        &self,
        selector: &str,
        range_s: u64,
        time_s: f64,
    ) -> Vec<(Value, Vec<(i64, f64)>)> {
        let mut out: Vec<(Value, Vec<(i64, f64)>)> = self
            .query(&format!("{selector}[{range_s}s]"), time_s)
            .into_iter()
            .map(|series| {
                let values = series["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|pair| {
                        let t = pair[0].as_f64().expect("a time");
                        let v: f64 = pair[1]
                            .as_str()
                            .expect("a value")
                            .parse()
                            .expect("a number");
                        ((t * 1000.0).round() as i64, v)
                    })
                    .collect();
                (series["metric"].clone(), values)
            })
            .collect();
        out.sort_by_key(|(labels, _)| labels.to_string());
        out
    }

    /// Waits until `selector` has at least `n` series with samples in the
    /// range, and returns them.
    pub fn wait_for_series(
        &self,
        selector: &str,
        n: usize,
        range_s: u64,
        time_s: f64,
        timeout: Duration,
    ) -> Vec<(Value, Vec<(i64, f64)>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.samples(selector, range_s, time_s);
            if found.len() >= n {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {n} series for {selector} within {timeout:?}, got {found:#?}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A chunked HTTP/1.1 body, joined (Go sends larger answers chunked).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = raw.get(start + size + 2..).unwrap_or_default();
    }
}

/// Percent-encoding for a query string value.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
