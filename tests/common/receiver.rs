//! A real OTLP metrics receiver for end-to-end tests: `tests/servers/otlp_receiver.py`
//! (Python `opentelemetry-proto`, `protobuf` and `grpcio`, so it shares no
//! code with our encoder) run as a child process from the virtualenv that
//! `scripts/setup.sh` makes.
//!
//! It records every accepted export request as a line of JSON, which
//! [`Receiver::requests`] and [`Receiver::points`] read back, and takes
//! faults (refusals, partial success, lost answers) on its control port.
//! Only std and serde_json: the control port is spoken to with raw HTTP/1.1.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::root;

/// How long the receiver may take to print its ports (Python imports gRPC).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a control or test request may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The Python virtualenv `scripts/setup.sh` fills: `$KUSTO_METRICS_TEST_VENV`
/// or `<repo>/target/test-venv`.
pub fn venv() -> PathBuf {
    match std::env::var_os("KUSTO_METRICS_TEST_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root().join("target").join("test-venv"),
    }
}

/// A running `otlp_receiver.py`; killed on drop.
pub struct Receiver {
    child: Option<Child>,
    http: u16,
    grpc: u16,
    control: u16,
    /// Temporary folder with the out file and the receiver's stderr log.
    dir: PathBuf,
    out: PathBuf,
    log: PathBuf,
    values_only: bool,
}

impl Receiver {
    /// Starts a receiver on free ports; panics (with its stderr) if it does
    /// not come up.
    pub fn start() -> Receiver {
        Receiver::start_with(false)
    }

    /// A receiver that records only each request's point values
    /// ([`Receiver::values`]), for millions of points.
    pub fn start_values_only() -> Receiver {
        Receiver::start_with(true)
    }

    fn start_with(values_only: bool) -> Receiver {
        let dir = temp_dir();
        let mut receiver = Receiver {
            child: None,
            http: 0,
            grpc: 0,
            control: 0,
            out: dir.join("requests.jsonl"),
            log: dir.join("receiver.log"),
            dir,
            values_only,
        };
        if let Err(e) = receiver.spawn() {
            panic!(
                "the OTLP receiver did not start: {e}\n{}",
                receiver.log_text()
            );
        }
        receiver
    }

    /// `http://127.0.0.1:<port>`, the OTLP/HTTP base (POST `/v1/metrics`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// `http://127.0.0.1:<port>`, the OTLP/gRPC endpoint.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `127.0.0.1:<port>` of OTLP/HTTP, for [`http_request`].
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    /// `127.0.0.1:<port>` of OTLP/gRPC.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }

    /// Every recorded request, oldest first: `{"transport", "encoding",
    /// "gzip", "headers", "request"}`, `request` being the
    /// `ExportMetricsServiceRequest` as OTLP/JSON (camelCase, 64-bit integers
    /// as strings, enums as numbers).
    pub fn requests(&self) -> Vec<Value> {
        let text = match fs::read_to_string(&self.out) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("reading {}: {e}", self.out.display()),
        };
        // A line is complete once its newline is written; skip a torn tail.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => return Vec::new(),
        };
        complete
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a recorded line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Every number data point (gauge and sum) of every recorded request, in
    /// order, each with its metric's name added as `"metric"`.
    pub fn points(&self) -> Vec<Value> {
        let mut points = Vec::new();
        for recorded in self.requests() {
            for resource in array(&recorded["request"]["resourceMetrics"]) {
                for scope in array(&resource["scopeMetrics"]) {
                    for metric in array(&scope["metrics"]) {
                        for kind in ["gauge", "sum"] {
                            for point in array(&metric[kind]["dataPoints"]) {
                                let mut point = point.clone();
                                if let Value::Object(fields) = &mut point {
                                    fields.insert("metric".into(), metric["name"].clone());
                                }
                                points.push(point);
                            }
                        }
                    }
                }
            }
        }
        points
    }

    /// The values of every number point recorded by a values-only
    /// receiver, in order.
    pub fn values(&self) -> Vec<f64> {
        self.requests()
            .iter()
            .flat_map(|r| {
                array(&r["values"])
                    .iter()
                    .filter_map(Value::as_f64)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until at least `n` points are recorded and returns all of them;
    /// panics with what arrived and the receiver's log after `timeout`.
    pub fn wait_for_points(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let points = self.points();
            if points.len() >= n {
                return points;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected at least {n} points within {timeout:?}, got {}: {points:#?}\n{}",
                    points.len(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Every OTLP/HTTP request from now on is recorded at once and
    /// answered `delay` later.
    pub fn slow(&self, delay: Duration) {
        self.control("/slow", json!({"seconds": delay.as_secs_f64()}));
    }

    /// The next `count` export requests (HTTP or gRPC) are refused with HTTP
    /// `status` (gRPC: 503 UNAVAILABLE, 429 RESOURCE_EXHAUSTED, 400
    /// INVALID_ARGUMENT, 500 INTERNAL) and not recorded. `retry_after`
    /// seconds go into `Retry-After` / a gRPC `RetryInfo`.
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        self.control(
            "/fail",
            json!({"count": count, "status": status, "retryAfter": retry_after}),
        );
    }

    /// Lets `after` requests through, then refuses `count` with `status`.
    pub fn fail_after(&self, after: usize, count: usize, status: u16) {
        self.control(
            "/fail",
            json!({"count": count, "status": status, "after": after}),
        );
    }

    /// The next `count` accepted requests are recorded but not answered:
    /// over HTTP the connection is closed, over gRPC the call ends
    /// UNAVAILABLE.
    pub fn accept_then_drop(&self, count: usize) {
        self.control("/accept-then-drop", json!({"count": count}));
    }

    /// The next accepted request is recorded and answered with a
    /// `partial_success` of `rejected` data points and `message`.
    pub fn partial_next(&self, rejected: u64, message: &str) {
        self.control(
            "/partial",
            json!({"rejected": rejected, "message": message}),
        );
    }

    /// Forgets pending faults and zeroes the counters (recorded requests stay).
    pub fn reset_faults(&self) {
        self.control("/reset", json!({}));
    }

    /// `{"accepted", "refused", "malformed", "dropped"}` since start or reset.
    pub fn stats(&self) -> Value {
        let addr = format!("127.0.0.1:{}", self.control);
        let response = http_request(&addr, "GET", "/stats", &[], b"")
            .unwrap_or_else(|e| panic!("GET /stats: {e}\n{}", self.log_text()));
        assert_eq!(response.status, 200, "GET /stats: {}", response.text());
        serde_json::from_slice(&response.body).expect("stats are JSON")
    }

    /// What the receiver wrote to stderr so far.
    pub fn log_text(&self) -> String {
        match fs::read_to_string(&self.log) {
            Ok(text) => format!("--- receiver stderr ({}) ---\n{text}", self.log.display()),
            Err(e) => format!("(no receiver log at {}: {e})", self.log.display()),
        }
    }

    /// Kills the receiver (its recorded requests stay readable).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the receiver again on the same ports, appending to the same
    /// out file (a receiver that was down and comes back). Pending faults
    /// and counters start afresh.
    pub fn restart(&mut self) {
        self.stop();
        // The old sockets are gone once the process is; retry briefly in case
        // the kernel is slow to let go of a port.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!(
                    "the OTLP receiver did not restart: {e}\n{}",
                    self.log_text()
                ),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let python = venv().join("bin").join("python");
        if !python.exists() {
            return Err(format!(
                "no Python virtualenv at {}: run scripts/setup.sh (or set KUSTO_METRICS_TEST_VENV)",
                venv().display()
            ));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("opening {}: {e}", self.log.display()))?;
        let mut child = Command::new(&python)
            .arg(root().join("tests/servers/otlp_receiver.py"))
            .args(["--http-port", &self.http.to_string()])
            .args(["--grpc-port", &self.grpc.to_string()])
            .args(["--control-port", &self.control.to_string()])
            .arg("--out")
            .arg(&self.out)
            .args(self.values_only.then_some("--values-only"))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("running {}: {e}", python.display()))?;

        // The first stdout line carries the ports; read it on a thread so a
        // hung start is a timeout, not a hung test.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            // Drain whatever else comes until the receiver exits.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) | Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("it exited ({status}) before printing its ports"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no ports printed within {START_TIMEOUT:?}"));
            }
        };
        let ports: Value = serde_json::from_str(line.trim()).map_err(|e| {
            let _ = child.kill();
            let _ = child.wait();
            format!("its first line is not JSON ({e}): {line}")
        })?;
        let port = |name: &str| {
            ports[name]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("no {name} port in {line}"))
        };
        let (http, grpc, control) = match (port("http"), port("grpc"), port("control")) {
            (Ok(h), Ok(g), Ok(c)) => (h, g, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        self.child = Some(child);
        (self.http, self.grpc, self.control) = (http, grpc, control);

        let addr: SocketAddr = ([127, 0, 0, 1], http).into();
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("port {http} does not accept connections"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn control(&self, path: &str, body: Value) {
        let addr = format!("127.0.0.1:{}", self.control);
        let body = body.to_string();
        let response = http_request(
            &addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "POST {path} to the receiver's control port: {e}\n{}",
                self.log_text()
            )
        });
        assert_eq!(
            response.status,
            200,
            "POST {path} {body}: {}\n{}",
            response.text(),
            self.log_text()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("receiver files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "kusto-metrics-receiver-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // Make sure the out file exists from the start.
    File::create(dir.join("requests.jsonl")).expect("creating the out file");
    dir
}

/// An HTTP response read by [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`) to
/// `addr` (`host:port`). An error when the server closes the connection
/// without an answer, as `accept_then_drop` makes it.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection without an answer",
        ));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad_response("no end of headers", &raw))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad_response("no status line", &raw))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// POSTs `body` to `/v1/metrics` at `addr` with the given Content-Type.
pub fn post_metrics(addr: &str, content_type: &str, body: &[u8]) -> io::Result<HttpResponse> {
    http_request(
        addr,
        "POST",
        "/v1/metrics",
        &[("Content-Type", content_type)],
        body,
    )
}

fn bad_response(what: &str, raw: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "bad HTTP response ({what}): {}",
            String::from_utf8_lossy(raw)
        ),
    )
}
