//! A test server that speaks Azure Data Explorer's REST protocol: queries
//! (`POST /v2/rest/query`, answered as a v2 frame stream) and management
//! commands (`POST /v1/rest/mgmt`, answered as a v1 table set).
//!
//! It keeps tables in memory, each row with its ingestion time, and runs the
//! small part of KQL the host sends: `declare query_parameters(...)` read
//! from the request's `Parameters` (never from the query text), a table
//! reference, `where` with comparisons, `and` and `between`, `project`,
//! `project-away`, `extend` of a string literal or of
//! `hash_xxhash64(tostring(pack_array(...) | pack_all()))`, `order by`,
//! `getschema`, `take`; and `.show table T policy ingestiontime`. Anything
//! else is answered the way ADX answers a query it cannot run (HTTP 400, a
//! `General_BadRequest` error), so a host sending something new fails
//! loudly here.
//!
//! Answers are written as they are computed, a piece at a time, and only as
//! fast as the client reads them. A table can also be generated row by row
//! ([`KustoServer::create_generated_table`]): millions of rows are served
//! without being held, whole or as JSON (an `order by` keeps one key per
//! row). ADX promises no order without `order by`: generated tables answer
//! in a different order each time, stored ones as they were ingested (or
//! last to first, [`KustoServer::set_reverse_rows`]).
//!
//! Result truncation as ADX does it: without the `notruncation` option a
//! result is cut at 500,000 rows or 64 MB of rows (or `truncationmaxrecords`
//! rows), and the stream ends with a limits error.
//!
//! Faults on demand: a status code (with `Retry-After`), a slow answer, an
//! error at the end of the stream, a limit hit, a stream that breaks off
//! after some rows, progressive frames; and, on demand, a request that
//! sends `truncationmaxrecords` is refused.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Ticks (100 ns) per second, Kusto's datetime unit.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

/// What goes wrong with the next request the server answers.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An HTTP status with an ADX error body and, optionally, `Retry-After`.
    Status {
        status: u16,
        retry_after: Option<String>,
        message: String,
    },
    /// The answer comes only after this long.
    Slow(Duration),
    /// The rows are sent, then the stream ends with `HasErrors` and this
    /// message in `OneApiErrors`.
    ErrorAtEnd(String),
    /// The query fails with ADX's result-set-too-large error (no rows).
    TooLarge,
    /// The answer breaks off (the connection is dropped mid-body) after
    /// this many rows of the primary result.
    BreakAfterRows(usize),
}

/// ADX's default result truncation: rows.
pub const DEFAULT_MAX_RECORDS: u64 = 500_000;
/// ADX's default result truncation: bytes of rows.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Rows of a response gathered into one piece of the body.
const PIECE_BYTES: usize = 64 * 1024;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub database: String,
    pub csl: String,
    /// `properties.Parameters`: name to the literal sent.
    pub parameters: HashMap<String, String>,
    /// `properties.Options`.
    pub options: Value,
    pub request_id: Option<String>,
    pub app: Option<String>,
    pub authorization: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// Primary-result rows answered (0 for errors and commands); while an
    /// answer streams, the rows written so far.
    pub rows: usize,
}

impl Recorded {
    /// A declared datetime parameter's value in ticks.
    pub fn parameter_ticks(&self, name: &str) -> Option<i64> {
        datetime_literal_ticks(self.parameters.get(name)?)
    }
}

/// How long before the server's now [`KustoServer::ingest`] stamps rows.
pub const INGESTED_AGO: i64 = TICKS_PER_SECOND;

/// Row `i` of a generated table, as ADX sends it.
pub type RowFn = Arc<dyn Fn(usize) -> Vec<Value> + Send + Sync>;

#[derive(Clone)]
struct Generated {
    rows: usize,
    /// Every row's ingestion time.
    ingestion: i64,
    row: RowFn,
}

#[derive(Clone)]
struct Table {
    columns: Vec<(String, String)>,
    /// (ingestion time in ticks, the row as ADX sends it).
    rows: Vec<(i64, Vec<Value>)>,
    /// Rows made on demand instead of `rows`.
    generated: Option<Generated>,
    /// `Some(enabled)` when set explicitly; `None`: unset (rows still get
    /// ingestion times, as new ADX tables do).
    ingestion_time_policy: Option<bool>,
}

#[derive(Default)]
struct Inner {
    tables: HashMap<(String, String), Table>,
    faults: VecDeque<Fault>,
    /// Faults for management commands only.
    mgmt_faults: VecDeque<Fault>,
    requests: Vec<Recorded>,
    progressive: bool,
    /// Answer rows last to first (ADX promises no order).
    reverse_rows: bool,
    /// Refuse requests that send `truncationmaxrecords`.
    forbid_truncation_max_records: bool,
    /// A result limit `notruncation` does not lift.
    hard_max_records: Option<u64>,
    /// The server's clock minus the host's, in ticks: `now()` and the
    /// ingestion times of [`KustoServer::ingest`] follow it.
    clock_skew: i64,
    /// Queries answered from generated tables, for their order.
    generated_queries: u64,
    /// When set, requests without `Authorization: Bearer <this>` get 401.
    token: Option<String>,
    /// The managed-identity token endpoint: what it hands out.
    issued: TokenGrant,
    token_requests: Vec<String>,
}

/// What `GET /msi/token` answers (App Service's managed-identity protocol,
/// which azure_identity speaks when `IDENTITY_ENDPOINT` and
/// `IDENTITY_HEADER` are set).
#[derive(Debug, Clone, Default)]
struct TokenGrant {
    token: String,
    lifetime: Duration,
    header: String,
}

/// A running server on a free loopback port; stopped on drop.
pub struct KustoServer {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KustoServer {
    pub fn start() -> KustoServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/v2/rest/query", post(query))
            .route("/v1/rest/mgmt", post(management))
            .route("/msi/token", axum::routing::get(msi_token))
            .with_state(inner.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the Kusto test server");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("serving");
            });
        });
        KustoServer {
            addr,
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, the cluster URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates (or replaces) a table, `columns` as `(name, kusto type)`, with
    /// an ingestion-time policy.
    pub fn create_table(&self, database: &str, table: &str, columns: &[(&str, &str)]) {
        let t = Table {
            columns: columns
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            rows: Vec::new(),
            generated: None,
            ingestion_time_policy: Some(true),
        };
        self.lock()
            .tables
            .insert((database.to_string(), table.to_string()), t);
    }

    /// Creates (or replaces) a table of `rows` rows made by `row` when
    /// asked for, all ingested at `ingestion`.
    pub fn create_generated_table(
        &self,
        database: &str,
        table: &str,
        columns: &[(&str, &str)],
        rows: usize,
        ingestion: i64,
        row: RowFn,
    ) {
        let t = Table {
            columns: columns
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            rows: Vec::new(),
            generated: Some(Generated {
                rows,
                ingestion,
                row,
            }),
            ingestion_time_policy: Some(true),
        };
        self.lock()
            .tables
            .insert((database.to_string(), table.to_string()), t);
    }

    /// Refuse (HTTP 400) any query that sends `truncationmaxrecords`.
    pub fn forbid_truncation_max_records(&self, on: bool) {
        self.lock().forbid_truncation_max_records = on;
    }

    /// A result limit that `notruncation` does not lift, as a workload
    /// group's request limits policy that is not relaxable: a query whose
    /// result has more rows fails with ADX's limits error before any row
    /// (the host's queries end in `order by`, so ADX gathers the result
    /// before it sends a row).
    pub fn set_hard_max_records(&self, max: Option<u64>) {
        self.lock().hard_max_records = max;
    }

    /// `Some(enabled)`: set explicitly; `None`: never set.
    pub fn set_ingestion_time_policy(&self, database: &str, table: &str, policy: Option<bool>) {
        let mut inner = self.lock();
        let t = inner
            .tables
            .get_mut(&(database.to_string(), table.to_string()))
            .expect("no such table");
        t.ingestion_time_policy = policy;
    }

    /// Appends rows ingested now.
    /// Appends rows as if ingested [`INGESTED_AGO`] before the server's
    /// now: the host's least settle delay, so a host with that delay reads
    /// them at once, and still after any window it closed before.
    pub fn ingest(&self, database: &str, table: &str, rows: Vec<Vec<Value>>) {
        let at = self.now() - INGESTED_AGO;
        self.ingest_at(database, table, at, rows);
    }

    /// Sets the server's clock `ticks` ahead of the host's (behind when
    /// negative).
    pub fn set_clock_skew(&self, ticks: i64) {
        self.lock().clock_skew = ticks;
    }

    /// The server's clock, in ticks.
    pub fn now(&self) -> i64 {
        now_ticks() + self.lock().clock_skew
    }

    /// Appends rows with the given ingestion time.
    pub fn ingest_at(&self, database: &str, table: &str, ingestion: i64, rows: Vec<Vec<Value>>) {
        let mut inner = self.lock();
        let t = inner
            .tables
            .get_mut(&(database.to_string(), table.to_string()))
            .expect("no such table");
        assert!(t.generated.is_none(), "a generated table takes no rows");
        for row in rows {
            assert_eq!(
                row.len(),
                t.columns.len(),
                "row {row:?} does not fit the table"
            );
            t.rows.push((ingestion, row));
        }
    }

    /// The next query that reads a window (one declaring parameters: not a
    /// schema query or a probe) meets `fault`; several queue up in order.
    pub fn fail_next(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    pub fn fail_next_command(&self, fault: Fault) {
        self.lock().mgmt_faults.push_back(fault);
    }

    /// Answer queries with progressive frames (TableHeader, TableFragment,
    /// TableProgress, TableCompletion) instead of one DataTable.
    pub fn set_progressive(&self, on: bool) {
        self.lock().progressive = on;
    }

    pub fn set_reverse_rows(&self, on: bool) {
        self.lock().reverse_rows = on;
    }

    /// Require `Authorization: Bearer <token>`.
    pub fn require_token(&self, token: Option<&str>) {
        self.lock().token = token.map(str::to_string);
    }

    /// Serve managed-identity tokens at [`Self::msi_endpoint`]: `token`,
    /// valid for `lifetime`, to callers that send `header` as
    /// `X-IDENTITY-HEADER`; queries then need that token.
    pub fn issue_tokens(&self, token: &str, lifetime: Duration, header: &str) {
        let mut g = self.lock();
        g.issued = TokenGrant {
            token: token.to_string(),
            lifetime,
            header: header.to_string(),
        };
        g.token = Some(token.to_string());
    }

    /// `IDENTITY_ENDPOINT` for the host.
    pub fn msi_endpoint(&self) -> String {
        format!("http://{}/msi/token", self.addr)
    }

    /// The `resource` of each token request so far.
    pub fn token_requests(&self) -> Vec<String> {
        self.lock().token_requests.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The queries that read windows: those declaring parameters.
    pub fn window_queries(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v2/rest/query" && r.csl.contains("declare query_parameters"))
            .collect()
    }
}

impl Drop for KustoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn now_ticks() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (d.as_nanos() / 100) as i64
}

/// RFC 3339 with seven fractional digits, as ADX writes datetimes.
pub fn format_ticks(ticks: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs((ticks / TICKS_PER_SECOND) as u64);
    let whole = humantime::format_rfc3339_seconds(at).to_string();
    format!(
        "{}.{:07}Z",
        whole.trim_end_matches('Z'),
        ticks % TICKS_PER_SECOND
    )
}

pub fn parse_ticks(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(text).ok()?;
    let d = at.duration_since(UNIX_EPOCH).ok()?;
    Some((d.as_nanos() / 100) as i64)
}

fn datetime_literal_ticks(literal: &str) -> Option<i64> {
    let inner = literal
        .trim()
        .strip_prefix("datetime(")?
        .strip_suffix(')')?;
    parse_ticks(inner.trim())
}

// ---- HTTP ----------------------------------------------------------------

type Shared = Arc<Mutex<Inner>>;

struct Request {
    database: String,
    csl: String,
    parameters: HashMap<String, String>,
    options: Value,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An ADX error answer: `{"error": {code, message, @message, ...}}`.
fn error_response(status: u16, code: &str, message: &str, retry_after: Option<&str>) -> Response {
    let body = json!({"error": {
        "code": code,
        "message": "Request is invalid and cannot be executed.",
        "@type": "Kusto.Data.Exceptions.KustoBadRequestException",
        "@message": message,
        "@permanent": status < 500 && status != 429,
    }});
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(v) = retry_after {
        r.headers_mut()
            .insert("retry-after", v.parse().expect("a header value"));
    }
    r
}

fn parse_request(body: &[u8]) -> Result<Request, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let database = v["db"].as_str().ok_or("no `db`")?.to_string();
    let csl = v["csl"].as_str().ok_or("no `csl`")?.to_string();
    let props = &v["properties"];
    let parameters = props["Parameters"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Request {
        database,
        csl,
        parameters,
        options: props["Options"].clone(),
    })
}

/// Records the request, checks the token and takes the next fault.
fn admit(
    inner: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    command: bool,
) -> Result<(Request, Option<Fault>, bool, usize), Box<Response>> {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    let parsed = parse_request(body);
    let mut rec = Recorded {
        path: path.to_string(),
        database: String::new(),
        csl: String::new(),
        parameters: HashMap::new(),
        options: Value::Null,
        request_id: header(headers, "x-ms-client-request-id"),
        app: header(headers, "x-ms-app"),
        authorization: header(headers, "authorization"),
        status: 200,
        rows: 0,
    };
    if let Ok(r) = &parsed {
        rec.database = r.database.clone();
        rec.csl = r.csl.clone();
        rec.parameters = r.parameters.clone();
        rec.options = r.options.clone();
    }
    let index = g.requests.len();
    if let Some(token) = &g.token
        && rec.authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        rec.status = 401;
        g.requests.push(rec);
        return Err(Box::new(error_response(
            401,
            "Unauthorized",
            "The token is missing or not valid for this cluster",
            None,
        )));
    }
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            rec.status = 400;
            g.requests.push(rec);
            return Err(Box::new(error_response(
                400,
                "BadRequest_InvalidBody",
                &e,
                None,
            )));
        }
    };
    let fault = if command {
        g.mgmt_faults.pop_front()
    } else if request.csl.contains("declare query_parameters") {
        g.faults.pop_front()
    } else {
        None
    };
    if let Some(Fault::Status { status, .. }) = &fault {
        rec.status = *status;
    }
    let progressive = g.progressive;
    g.requests.push(rec);
    Ok((request, fault, progressive, index))
}

fn set_outcome(inner: &Shared, index: usize, status: u16, rows: usize) {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = g.requests.get_mut(index) {
        r.status = status;
        r.rows = rows;
    }
}

async fn apply_fault(fault: &Option<Fault>) -> Option<Response> {
    match fault {
        Some(Fault::Status {
            status,
            retry_after,
            message,
        }) => Some(error_response(
            *status,
            if *status == 429 {
                "TooManyRequests"
            } else {
                "InternalServiceError"
            },
            message,
            retry_after.as_deref(),
        )),
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

async fn query(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, fault, progressive, index) =
        match admit(&inner, "/v2/rest/query", &headers, &body, false) {
            Ok(x) => x,
            Err(r) => return *r,
        };
    if let Some(r) = apply_fault(&fault).await {
        return r;
    }
    let forbidden = inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .forbid_truncation_max_records;
    if forbidden && !request.options["truncationmaxrecords"].is_null() {
        set_outcome(&inner, index, 400, 0);
        return error_response(
            400,
            "General_BadRequest",
            "the request sets truncationmaxrecords: a window read as a stream must not be cut (send notruncation)",
            None,
        );
    }
    if request.csl.trim() == "print now()" {
        let skew = inner.lock().unwrap_or_else(|p| p.into_inner()).clock_skew;
        let now = format_ticks(now_ticks() + skew);
        return stream_answer(
            inner,
            index,
            vec![("print_0".to_string(), "datetime".to_string())],
            Box::new(std::iter::once(Ok(vec![Value::from(now)]))),
            AnswerShape::plain(None),
        );
    }
    if let Some(Fault::TooLarge) = fault {
        return limit_answer(inner, index, 0);
    }
    let prepared = {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        let seed = g.generated_queries;
        g.generated_queries += 1;
        prepare_query(&g.tables, &request, g.reverse_rows, seed)
    };
    let (columns, mut rows) = match prepared {
        Ok(r) => r,
        Err(message) => {
            set_outcome(&inner, index, 400, 0);
            return error_response(400, "General_BadRequest", &message, None);
        }
    };
    let hard = inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .hard_max_records;
    if let Some(max) = hard {
        let all: Vec<_> = rows.collect();
        if all.len() as u64 > max {
            return limit_answer(inner, index, max);
        }
        rows = Box::new(all.into_iter());
    }
    let truncated = request.options["notruncation"].as_bool() != Some(true);
    let shape = AnswerShape {
        progressive,
        end_error: match &fault {
            Some(Fault::ErrorAtEnd(m)) => Some(one_api_error("InternalServiceError", m)),
            _ => None,
        },
        break_after: match &fault {
            Some(Fault::BreakAfterRows(n)) => Some(*n),
            _ => None,
        },
        max_records: truncated.then(|| {
            request.options["truncationmaxrecords"]
                .as_u64()
                .unwrap_or(DEFAULT_MAX_RECORDS)
        }),
        max_bytes: truncated.then_some(DEFAULT_MAX_BYTES),
    };
    stream_answer(inner, index, columns, rows, shape)
}

async fn management(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, fault, _, index) = match admit(&inner, "/v1/rest/mgmt", &headers, &body, true) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(r) = apply_fault(&fault).await {
        return r;
    }
    let g = inner.lock().unwrap_or_else(|p| p.into_inner());
    let csl = request.csl.trim();
    let Some(rest) = csl.strip_prefix(".show table ") else {
        drop(g);
        set_outcome(&inner, index, 400, 0);
        return error_response(
            400,
            "General_BadRequest",
            &format!("Syntax error: the test server does not know the command `{csl}`"),
            None,
        );
    };
    let Some(name) = rest.strip_suffix(" policy ingestiontime") else {
        drop(g);
        set_outcome(&inner, index, 400, 0);
        return error_response(
            400,
            "General_BadRequest",
            &format!("Syntax error: unknown command `{csl}`"),
            None,
        );
    };
    let name = match unquote(name.trim()) {
        Ok(n) => n,
        Err(e) => {
            drop(g);
            set_outcome(&inner, index, 400, 0);
            return error_response(400, "General_BadRequest", &e, None);
        }
    };
    let Some(table) = g.tables.get(&(request.database.clone(), name.clone())) else {
        drop(g);
        set_outcome(&inner, index, 400, 0);
        return error_response(
            400,
            "General_BadRequest",
            &format!("Entity ID '{name}' of kind 'Table' was not found."),
            None,
        );
    };
    let policy = match table.ingestion_time_policy {
        Some(true) => Value::from(r#"{"IsEnabled":true}"#),
        Some(false) => Value::from(r#"{"IsEnabled":false}"#),
        None => Value::Null,
    };
    let body = json!({"Tables": [{
        "TableName": "Table_0",
        "Columns": [
            {"ColumnName": "PolicyName", "DataType": "String", "ColumnType": "string"},
            {"ColumnName": "EntityName", "DataType": "String", "ColumnType": "string"},
            {"ColumnName": "Policy", "DataType": "String", "ColumnType": "string"},
            {"ColumnName": "ChildEntities", "DataType": "String", "ColumnType": "string"},
            {"ColumnName": "EntityType", "DataType": "String", "ColumnType": "string"},
        ],
        "Rows": [["IngestionTimePolicy", format!("[{}].[{name}]", request.database), policy, "", "Table"]],
    }]});
    drop(g);
    set_outcome(&inner, index, 200, 0);
    ([("content-type", "application/json")], body.to_string()).into_response()
}

async fn msi_token(
    State(inner): State<Shared>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    let query = uri.query().unwrap_or_default();
    let resource = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resource="))
        .map(|r| r.replace("%3A", ":").replace("%2F", "/"))
        .unwrap_or_default();
    g.token_requests.push(resource.clone());
    if header(&headers, "x-identity-header").as_deref() != Some(g.issued.header.as_str())
        || g.issued.token.is_empty()
    {
        return (StatusCode::UNAUTHORIZED, "bad X-IDENTITY-HEADER").into_response();
    }
    let expires = SystemTime::now() + g.issued.lifetime;
    let expires_on = expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let body = json!({
        "access_token": g.issued.token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

fn one_api_error(code: &str, message: &str) -> Value {
    json!({"error": {
        "code": code,
        "message": "Query execution has failed.",
        "@type": "Kusto.Data.Exceptions.KustoServicePartialQueryFailureException",
        "@message": message,
        "@permanent": false,
    }})
}

fn size_limit_error(max: u64) -> Value {
    json!({"error": {
        "code": "LimitsExceeded",
        "message": "Request is invalid and cannot be executed.",
        "@type": "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException",
        "@message": format!("Query execution has exceeded the allowed limits (80DA0003): Query result set has exceeded the internal data size limit {max} (E_QUERY_RESULT_SET_TOO_LARGE). See https://aka.ms/kustoquerylimits for more information."),
        "@permanent": true,
    }})
}

fn limit_error(max: u64) -> Value {
    json!({"error": {
        "code": "LimitsExceeded",
        "message": "Request is invalid and cannot be executed.",
        "@type": "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException",
        "@message": format!("Query execution has exceeded the allowed limits (80DA0003): The results of this query exceed the set limit of {max} records, so not all records were returned (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003, max #records={max}). See https://aka.ms/kustoquerylimits for more information."),
        "@permanent": true,
    }})
}

/// How an answer is written.
struct AnswerShape {
    progressive: bool,
    /// Sent in `OneApiErrors` at the end, with `HasErrors`.
    end_error: Option<Value>,
    /// The connection is dropped after this many rows.
    break_after: Option<usize>,
    /// ADX's result truncation: over this, the rows stop and the answer
    /// ends with a limits error.
    max_records: Option<u64>,
    max_bytes: Option<u64>,
}

impl AnswerShape {
    /// All rows, then `end_error` if any: no fault, no truncation.
    fn plain(end_error: Option<Value>) -> AnswerShape {
        AnswerShape {
            progressive: false,
            end_error,
            break_after: None,
            max_records: None,
            max_bytes: None,
        }
    }
}

/// ADX's limits error before any row (`max` records allowed).
fn limit_answer(inner: Shared, index: usize, max: u64) -> Response {
    stream_answer(
        inner,
        index,
        Vec::new(),
        Box::new(std::iter::empty()),
        AnswerShape::plain(Some(limit_error(max))),
    )
}

/// Rows as they are computed; an error stops them (the answer then ends
/// with it, as ADX reports a failure found while the rows stream).
type RowIter = Box<dyn Iterator<Item = Result<Vec<Value>, String>> + Send>;

/// A v2 frame stream, one frame per line as ADX writes it, written by a
/// thread of its own a piece at a time, as fast as the client reads.
fn stream_answer(
    inner: Shared,
    index: usize,
    columns: Vec<(String, String)>,
    rows: RowIter,
    shape: AnswerShape,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    std::thread::spawn(move || {
        let mut out = Pieces {
            tx,
            text: String::with_capacity(PIECE_BYTES + 4096),
        };
        write_answer(&inner, index, &columns, rows, shape, &mut out);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    (
        [("content-type", "application/json; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The body being written, in pieces.
struct Pieces {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    text: String,
}

impl Pieces {
    /// False when the client is gone.
    fn flush(&mut self) -> bool {
        if self.text.is_empty() {
            return true;
        }
        let piece = Bytes::from(std::mem::take(&mut self.text).into_bytes());
        self.tx.blocking_send(Ok(piece)).is_ok()
    }

    fn push(&mut self, text: &str) -> bool {
        self.text.push_str(text);
        self.text.len() < PIECE_BYTES || self.flush()
    }

    /// Breaks the body off: the connection is dropped mid-answer.
    fn break_off(&mut self) {
        if self.flush() {
            let _ = self.tx.blocking_send(Err(std::io::Error::other(
                "the test server breaks the answer off",
            )));
        }
    }
}

fn write_answer(
    inner: &Shared,
    index: usize,
    columns: &[(String, String)],
    rows: RowIter,
    shape: AnswerShape,
    out: &mut Pieces,
) {
    let cols: Vec<Value> = columns
        .iter()
        .map(|(n, t)| json!({"ColumnName": n, "ColumnType": t}))
        .collect();
    let header = json!({
        "FrameType": "DataSetHeader",
        "IsProgressive": shape.progressive,
        "Version": "v2.0",
        "IsFragmented": shape.progressive,
        "ErrorReportingPlacement": "EndOfTable",
    });
    let properties = json!({
        "FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties",
        "TableName": "@ExtendedProperties",
        "Columns": [{"ColumnName":"TableId","ColumnType":"int"},{"ColumnName":"Key","ColumnType":"string"},{"ColumnName":"Value","ColumnType":"dynamic"}],
        "Rows": [[1, "Visualization", "{\"Visualization\":null}"]],
    });
    let primary = if shape.progressive {
        json!({"FrameType": "TableHeader", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult", "Columns": cols})
    } else {
        json!({"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult", "Columns": cols})
    };
    let mut head = format!("[{header}\n,{properties}\n,");
    if shape.progressive {
        head.push_str(&primary.to_string());
    } else {
        // The frame's `Rows` stays open for the rows that follow.
        let text = primary.to_string();
        head.push_str(&text[..text.len() - 1]);
        head.push_str(",\"Rows\":[");
    }
    if !out.push(&head) {
        return;
    }
    let mut end_error = shape.end_error;
    let (mut count, mut bytes, mut in_fragment) = (0usize, 0u64, 0usize);
    let fragment = "\n,{\"FrameType\":\"TableFragment\",\"TableFragmentType\":\"DataAppend\",\"TableId\":1,\"Rows\":[";
    for row in rows {
        if shape.break_after == Some(count) {
            break;
        }
        let row = match row {
            Ok(row) => row,
            Err(message) => {
                end_error = Some(one_api_error("General_BadRequest", &message));
                break;
            }
        };
        if shape.max_records.is_some_and(|max| count as u64 >= max) {
            end_error = Some(limit_error(count as u64));
            break;
        }
        let text = Value::Array(row).to_string();
        if let Some(max) = shape.max_bytes
            && bytes + text.len() as u64 > max
        {
            end_error = Some(size_limit_error(max));
            break;
        }
        bytes += text.len() as u64;
        let separator = match (shape.progressive, in_fragment, count) {
            (true, 0, _) => fragment,
            (_, _, 0) => "",
            _ => ",",
        };
        out.text.push_str(separator);
        let mut fits = out.push(&text);
        count += 1;
        if shape.progressive {
            in_fragment += 1;
            if in_fragment == 3 {
                in_fragment = 0;
                let progress =
                    json!({"FrameType": "TableProgress", "TableId": 1, "TableProgress": 50.0});
                fits = out.push(&format!("]}}\n,{progress}"));
            }
        }
        if out.text.is_empty() {
            // A piece went out: the rows written so far are on record.
            set_outcome(inner, index, 200, count);
        }
        if !fits {
            return;
        }
    }
    if shape.break_after.is_some_and(|n| count >= n) {
        set_outcome(inner, index, 200, count);
        out.break_off();
        return;
    }
    let mut tail = String::new();
    if shape.progressive {
        if in_fragment > 0 {
            tail.push_str("]}");
        }
        let done = json!({"FrameType": "TableCompletion", "TableId": 1, "RowCount": count});
        tail.push_str(&format!("\n,{done}"));
    } else {
        tail.push_str("]}");
    }
    let information = json!({
        "FrameType": "DataTable", "TableId": 2, "TableKind": "QueryCompletionInformation",
        "TableName": "QueryCompletionInformation",
        "Columns": [{"ColumnName":"Timestamp","ColumnType":"datetime"},{"ColumnName":"ClientRequestId","ColumnType":"string"},{"ColumnName":"StatusCode","ColumnType":"int"},{"ColumnName":"StatusDescription","ColumnType":"string"}],
        "Rows": [[format_ticks(now_ticks()), "", 0, "Query completed successfully"]],
    });
    let mut done = json!({"FrameType": "DataSetCompletion", "HasErrors": end_error.is_some(), "Cancelled": false});
    if let Some(e) = end_error {
        done["OneApiErrors"] = json!([e]);
    }
    tail.push_str(&format!("\n,{information}\n,{done}\n]"));
    set_outcome(inner, index, 200, count);
    if out.push(&tail) {
        out.flush();
    }
}

// ---- the KQL subset -----------------------------------------------------------

/// A value in a comparison.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Scalar {
    Ticks(i64),
    Number(f64),
    Text(String),
    Null,
}

fn unquote(name: &str) -> Result<String, String> {
    if let Some(inner) = name.strip_prefix("['").and_then(|n| n.strip_suffix("']")) {
        if inner.contains('\'') {
            return Err(format!("Syntax error: bad quoted name {name}"));
        }
        return Ok(inner.to_string());
    }
    if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(name.to_string());
    }
    Err(format!("Syntax error: `{name}` is not a name"))
}

/// Splits `text` at `sep` outside quotes, brackets and parentheses.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut current) = (0i32, None::<char>, String::new());
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// `declare query_parameters(a:datetime, b:datetime);` at the start: the
/// declared names with their values from the request, and the rest.
fn declared(
    csl: &str,
    sent: &HashMap<String, String>,
) -> Result<(HashMap<String, Scalar>, String), String> {
    let csl = csl.trim_start();
    let Some(rest) = csl.strip_prefix("declare query_parameters(") else {
        return Ok((HashMap::new(), csl.to_string()));
    };
    let close = rest.find(')').ok_or("Syntax error: declare without `)`")?;
    let (list, after) = rest.split_at(close);
    let after = after[1..]
        .trim_start()
        .strip_prefix(';')
        .ok_or("Syntax error: declare must end with `;`")?;
    let mut values = HashMap::new();
    for item in list.split(',') {
        let (name, ty) = item
            .split_once(':')
            .ok_or_else(|| format!("Syntax error: parameter `{item}` has no type"))?;
        let (name, ty) = (name.trim(), ty.trim());
        let literal = sent.get(name).ok_or_else(|| {
            format!(
                "Semantic error: query parameter '{name}' was declared but no value was supplied"
            )
        })?;
        let value = match ty {
            "datetime" => Scalar::Ticks(datetime_literal_ticks(literal).ok_or_else(|| {
                format!("parameter '{name}': `{literal}` is not a datetime literal")
            })?),
            // ADX takes a string parameter's value as it is, unquoted.
            "string" => Scalar::Text(literal.clone()),
            other => {
                return Err(format!(
                    "the test server does not take parameters of type {other}"
                ));
            }
        };
        values.insert(name.to_string(), value);
    }
    Ok((values, after.to_string()))
}

/// A query's operators after the table, checked against the columns each
/// one sees.
struct Plan {
    steps: Vec<Step>,
    /// The columns of the result.
    columns: Vec<(String, String)>,
}

struct Step {
    stage: Stage,
    /// The columns the stage sees.
    columns: Vec<(String, String)>,
}

enum Stage {
    Where(Vec<String>),
    /// `project` and `project-away`: the columns kept, in order.
    Project(Vec<usize>),
    Extend(Added),
    OrderBy {
        column: usize,
        descending: bool,
    },
    Count,
    Take(usize),
    GetSchema,
}

enum Added {
    Text(String),
    /// `hash_xxhash64(tostring(pack_array(...)))`, or of `pack_all()`
    /// (`None`).
    Hash(Option<Vec<usize>>),
}

impl Stage {
    /// Whether the stage needs all rows at once.
    fn whole(&self) -> bool {
        matches!(self, Stage::Count | Stage::Take(_) | Stage::GetSchema)
    }
}

impl Plan {
    fn new(mut columns: Vec<(String, String)>, stages: &[String]) -> Result<Plan, String> {
        let mut steps = Vec::new();
        for stage in stages {
            let (op, arg) = stage.split_once(char::is_whitespace).unwrap_or((stage, ""));
            let arg = arg.trim();
            let before = columns.clone();
            let stage = match op {
                "where" => Stage::Where(split_and(arg)),
                "project" => {
                    let mut idx = Vec::new();
                    for name in split_top(arg, ',') {
                        idx.push(column_index(&columns, &unquote(&name)?)?);
                    }
                    columns = idx.iter().map(|&i| columns[i].clone()).collect();
                    Stage::Project(idx)
                }
                "project-away" => {
                    let mut away = Vec::new();
                    for name in split_top(arg, ',') {
                        away.push(column_index(&columns, &unquote(&name)?)?);
                    }
                    let kept: Vec<usize> =
                        (0..columns.len()).filter(|i| !away.contains(i)).collect();
                    columns = kept.iter().map(|&i| columns[i].clone()).collect();
                    Stage::Project(kept)
                }
                "extend" => {
                    let (name, value) = arg
                        .split_once('=')
                        .ok_or_else(|| format!("Syntax error: extend `{arg}`"))?;
                    let name = unquote(name.trim())?;
                    let (added, ty) = extension(&columns, value.trim())?;
                    columns.push((name, ty.to_string()));
                    Stage::Extend(added)
                }
                "order" | "sort" => {
                    let by = arg
                        .strip_prefix("by ")
                        .ok_or_else(|| format!("Syntax error: {op} `{arg}`"))?
                        .trim();
                    let (name, direction) = by.split_once(' ').unwrap_or((by, "desc"));
                    let descending = match direction.trim() {
                        "asc" => false,
                        "desc" => true,
                        other => {
                            return Err(format!(
                                "the test server orders by one column, asc or desc, not `{other}`"
                            ));
                        }
                    };
                    Stage::OrderBy {
                        column: column_index(&columns, &unquote(name.trim())?)?,
                        descending,
                    }
                }
                "count" => {
                    columns = vec![("Count".into(), "long".into())];
                    Stage::Count
                }
                "take" | "limit" => Stage::Take(
                    arg.parse()
                        .map_err(|_| format!("Syntax error: take `{arg}`"))?,
                ),
                "getschema" => {
                    columns = vec![
                        ("ColumnName".into(), "string".into()),
                        ("ColumnOrdinal".into(), "int".into()),
                        ("DataType".into(), "string".into()),
                        ("ColumnType".into(), "string".into()),
                    ];
                    Stage::GetSchema
                }
                other => {
                    return Err(format!(
                        "Syntax error: the test server does not run `{other}`"
                    ));
                }
            };
            steps.push(Step {
                stage,
                columns: before,
            });
        }
        Ok(Plan { steps, columns })
    }
}

/// What `extend` adds, and its type.
fn extension(columns: &[(String, String)], value: &str) -> Result<(Added, &'static str), String> {
    if let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return Ok((Added::Text(text.to_string()), "string"));
    }
    let packed = value
        .strip_prefix("hash_xxhash64(tostring(")
        .and_then(|v| v.strip_suffix("))"))
        .ok_or_else(|| {
            format!("the test server extends by string literals and hash_xxhash64(tostring(pack_array(...) or pack_all())) only, not `{value}`")
        })?;
    if packed == "pack_all()" {
        return Ok((Added::Hash(None), "long"));
    }
    let list = packed
        .strip_prefix("pack_array(")
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| {
            format!("the test server packs with pack_array or pack_all, not `{packed}`")
        })?;
    let mut idx = Vec::new();
    for name in split_top(list, ',') {
        idx.push(column_index(columns, &unquote(&name)?)?);
    }
    Ok((Added::Hash(Some(idx)), "long"))
}

/// A stable 64-bit hash of a row's text (std's SipHash with its fixed
/// keys), standing in for ADX's xxhash64: only the order it gives matters.
fn text_hash(text: &str) -> i64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(text.as_bytes());
    h.finish() as i64
}

/// Runs a plan on rows, one at a time where the stages allow.
struct Eval {
    plan: Plan,
    params: HashMap<String, Scalar>,
    /// Ingestion times are kept.
    policy: bool,
}

impl Eval {
    /// A stage that looks at one row at a time.
    fn row_step(
        &self,
        step: &Step,
        ingestion: i64,
        mut row: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, String> {
        match &step.stage {
            Stage::Where(terms) => {
                for t in terms {
                    if !eval_term(t, &step.columns, ingestion, self.policy, &row, &self.params)? {
                        return Ok(None);
                    }
                }
                Ok(Some(row))
            }
            Stage::Project(idx) => Ok(Some(idx.iter().map(|&i| row[i].clone()).collect())),
            Stage::Extend(Added::Text(text)) => {
                row.push(Value::from(text.as_str()));
                Ok(Some(row))
            }
            Stage::Extend(Added::Hash(idx)) => {
                let text = match idx {
                    Some(idx) => {
                        Value::Array(idx.iter().map(|&i| row[i].clone()).collect()).to_string()
                    }
                    None => {
                        let bag: serde_json::Map<String, Value> = step
                            .columns
                            .iter()
                            .zip(&row)
                            .map(|((n, _), v)| (n.clone(), v.clone()))
                            .collect();
                        Value::Object(bag).to_string()
                    }
                };
                row.push(json!(text_hash(&text)));
                Ok(Some(row))
            }
            Stage::OrderBy { .. } => Ok(Some(row)),
            Stage::Count | Stage::Take(_) | Stage::GetSchema => {
                Err("the test server cannot run this stage row by row".to_string())
            }
        }
    }

    /// `steps` on one row, `None` when it is filtered out.
    fn row_steps(
        &self,
        steps: &[Step],
        ingestion: i64,
        row: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, String> {
        let mut row = Some(row);
        for step in steps {
            let Some(r) = row.take() else { break };
            row = self.row_step(step, ingestion, r)?;
        }
        Ok(row)
    }

    /// All rows at once: for stored tables, and for stages that need them.
    fn materialize(&self, mut rows: Vec<(i64, Vec<Value>)>) -> Result<Vec<Vec<Value>>, String> {
        for step in &self.plan.steps {
            match &step.stage {
                Stage::OrderBy { column, descending } => {
                    let ty = step.columns[*column].1.clone();
                    let key = |row: &[Value]| scalar(&ty, &row[*column]);
                    let mut keyed: Vec<(Scalar, (i64, Vec<Value>))> =
                        rows.into_iter().map(|r| (key(&r.1), r)).collect();
                    keyed.sort_by(|a, b| compare(&a.0, &b.0, *descending));
                    rows = keyed.into_iter().map(|(_, r)| r).collect();
                }
                Stage::Count => rows = vec![(0, vec![json!(rows.len())])],
                Stage::Take(n) => rows.truncate(*n),
                Stage::GetSchema => {
                    rows = step
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (n, t))| {
                            (0, vec![json!(n), json!(i), json!(clr_type(t)), json!(t)])
                        })
                        .collect();
                }
                _ => {
                    let mut kept = Vec::with_capacity(rows.len());
                    for (ing, row) in rows {
                        if let Some(row) = self.row_step(step, ing, row)? {
                            kept.push((ing, row));
                        }
                    }
                    rows = kept;
                }
            }
        }
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }
}

/// Kusto's order: nulls first ascending, last descending; ties keep their
/// order.
fn compare(a: &Scalar, b: &Scalar, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let ascending = match (a, b) {
        (Scalar::Null, Scalar::Null) => Ordering::Equal,
        (Scalar::Null, _) => Ordering::Less,
        (_, Scalar::Null) => Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    };
    if descending {
        ascending.reverse()
    } else {
        ascending
    }
}

/// A stored value of a column of type `ty`, for comparisons.
fn scalar(ty: &str, v: &Value) -> Scalar {
    match (ty, v) {
        (_, Value::Null) => Scalar::Null,
        ("datetime", Value::String(s)) => parse_ticks(s).map_or(Scalar::Null, Scalar::Ticks),
        (_, Value::Number(n)) => Scalar::Number(n.as_f64().unwrap_or(f64::NAN)),
        (_, Value::String(s)) => Scalar::Text(s.clone()),
        (_, other) => Scalar::Text(other.to_string()),
    }
}

/// Row `i` of `0..n` in a different order for each `seed`: `a·i + b mod n`
/// with `a` prime to `n`.
fn shuffled(n: usize, seed: u64) -> impl Fn(usize) -> usize + Send + 'static {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let n = n.max(1);
    let mut a = (n / 2 + 1 + (seed as usize).wrapping_mul(7919)) % n;
    while a == 0 || gcd(a, n) != 1 {
        a = (a + 1) % n;
        if n == 1 {
            a = 1;
            break;
        }
    }
    let b = (seed as usize).wrapping_mul(104_729) % n;
    move |i| (a.wrapping_mul(i) % n + b) % n
}

/// The table a query reads and its rows as they are computed.
fn prepare_query(
    tables: &HashMap<(String, String), Table>,
    request: &Request,
    reverse: bool,
    seed: u64,
) -> Result<(Vec<(String, String)>, RowIter), String> {
    let (params, body) = declared(&request.csl, &request.parameters)?;
    let body = body.trim().trim_end_matches(';');
    let stages = split_top(body, '|');
    let source = unquote(&stages[0])?;
    let table = tables
        .get(&(request.database.clone(), source.clone()))
        .ok_or_else(|| {
            format!(
                "Semantic error: '{source}' could not be resolved as a table in database '{}'",
                request.database
            )
        })?;
    let eval = Eval {
        plan: Plan::new(table.columns.clone(), &stages[1..])?,
        params,
        policy: table.ingestion_time_policy != Some(false),
    };
    let columns = eval.plan.columns.clone();
    let Some(generated) = table.generated.clone() else {
        let mut rows = table.rows.clone();
        if reverse {
            rows.reverse();
        }
        let rows = eval.materialize(rows)?;
        return Ok((columns, Box::new(rows.into_iter().map(Ok))));
    };
    let Generated {
        rows: n,
        ingestion,
        row: make,
    } = generated;
    let order = shuffled(n, seed);
    if eval.plan.steps.iter().any(|s| s.stage.whole()) {
        let rows = (0..n).map(|i| (ingestion, make(order(i)))).collect();
        let rows = eval.materialize(rows)?;
        return Ok((columns, Box::new(rows.into_iter().map(Ok))));
    }
    let eval = Arc::new(eval);
    let sort_at = eval
        .plan
        .steps
        .iter()
        .position(|s| matches!(s.stage, Stage::OrderBy { .. }));
    let Some(k) = sort_at else {
        let rows = (0..n).filter_map(move |i| {
            eval.row_steps(&eval.plan.steps, ingestion, make(order(i)))
                .transpose()
        });
        return Ok((columns, Box::new(rows)));
    };
    // The sort keeps one key per row, then makes each row again in order;
    // it runs on the writer's thread, when the first row is asked for.
    let rows = std::iter::once(()).flat_map(move |()| -> RowIter {
        let Stage::OrderBy { column, descending } = eval.plan.steps[k].stage else {
            return Box::new(std::iter::empty());
        };
        let mut keys: Vec<(i64, u32)> = Vec::new();
        for i in 0..n {
            let source = order(i);
            match eval.row_steps(&eval.plan.steps[..k], ingestion, make(source)) {
                Ok(Some(row)) => match row[column].as_i64() {
                    Some(key) => keys.push((key, source as u32)),
                    None => {
                        return Box::new(std::iter::once(Err(
                            "the test server orders generated tables by long columns only"
                                .to_string(),
                        )));
                    }
                },
                Ok(None) => {}
                Err(e) => return Box::new(std::iter::once(Err(e))),
            }
        }
        keys.sort_unstable();
        if descending {
            keys.reverse();
        }
        let (eval, make) = (eval.clone(), make.clone());
        Box::new(keys.into_iter().filter_map(move |(_, source)| {
            let row = make(source as usize);
            eval.row_steps(&eval.plan.steps, ingestion, row).transpose()
        }))
    });
    Ok((columns, Box::new(rows)))
}

fn clr_type(kusto: &str) -> &'static str {
    match kusto {
        "bool" => "System.SByte",
        "datetime" => "System.DateTime",
        "dynamic" => "System.Object",
        "guid" => "System.Guid",
        "int" => "System.Int32",
        "long" => "System.Int64",
        "real" => "System.Double",
        "string" => "System.String",
        "timespan" => "System.TimeSpan",
        "decimal" => "System.Data.SqlTypes.SqlDecimal",
        _ => "System.Object",
    }
}

fn column_index(columns: &[(String, String)], name: &str) -> Result<usize, String> {
    columns.iter().position(|(n, _)| n == name).ok_or_else(|| {
        format!("Semantic error: failed to resolve scalar expression named '{name}'")
    })
}

fn split_and(cond: &str) -> Vec<String> {
    // `and` outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0i32, String::new());
    let words: Vec<&str> = cond.split(' ').collect();
    for w in words {
        depth += w.matches('(').count() as i32 - w.matches(')').count() as i32;
        if w == "and" && depth == 0 {
            parts.push(std::mem::take(&mut current).trim().to_string());
            continue;
        }
        current.push_str(w);
        current.push(' ');
    }
    parts.push(current.trim().to_string());
    parts
}

fn eval_term(
    term: &str,
    columns: &[(String, String)],
    ingestion: i64,
    policy: bool,
    row: &[Value],
    params: &HashMap<String, Scalar>,
) -> Result<bool, String> {
    if let Some(inner) = term
        .strip_prefix("isnotnull(")
        .and_then(|t| t.strip_suffix(')'))
    {
        return Ok(operand(inner.trim(), columns, ingestion, policy, row, params)? != Scalar::Null);
    }
    if let Some((left, range)) = term.split_once(" between ") {
        let range = range
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("Syntax error: between `{range}`"))?;
        let (lo, hi) = range
            .split_once("..")
            .ok_or_else(|| format!("Syntax error: between `{range}`"))?;
        let v = operand(left.trim(), columns, ingestion, policy, row, params)?;
        let lo = operand(lo.trim(), columns, ingestion, policy, row, params)?;
        let hi = operand(hi.trim(), columns, ingestion, policy, row, params)?;
        return Ok(v != Scalar::Null && v >= lo && v <= hi);
    }
    for op in ["<=", ">=", "==", "<", ">"] {
        if let Some((l, r)) = term.split_once(&format!(" {op} ")) {
            let l = operand(l.trim(), columns, ingestion, policy, row, params)?;
            let r = operand(r.trim(), columns, ingestion, policy, row, params)?;
            if l == Scalar::Null || r == Scalar::Null {
                return Ok(false);
            }
            return Ok(match op {
                "<=" => l <= r,
                ">=" => l >= r,
                "==" => l == r,
                "<" => l < r,
                _ => l > r,
            });
        }
    }
    Err(format!(
        "Syntax error: the test server cannot evaluate `{term}`"
    ))
}

fn operand(
    text: &str,
    columns: &[(String, String)],
    ingestion: i64,
    policy: bool,
    row: &[Value],
    params: &HashMap<String, Scalar>,
) -> Result<Scalar, String> {
    if text == "ingestion_time()" {
        return Ok(if policy {
            Scalar::Ticks(ingestion)
        } else {
            Scalar::Null
        });
    }
    if let Some(v) = params.get(text) {
        return Ok(v.clone());
    }
    if let Some(t) = datetime_literal_ticks(text) {
        // A literal pasted into the query: allowed by KQL, but the host must
        // not do it, so the tests can tell.
        return Err(format!(
            "the host pasted a datetime literal `{t}` into the query text"
        ));
    }
    let name = unquote(text)?;
    let i = column_index(columns, &name)?;
    Ok(match (&columns[i].1[..], &row[i]) {
        (_, Value::Null) => Scalar::Null,
        ("datetime", Value::String(s)) => {
            Scalar::Ticks(parse_ticks(s).ok_or_else(|| format!("bad datetime {s}"))?)
        }
        (_, Value::Number(n)) => Scalar::Number(n.as_f64().unwrap_or(f64::NAN)),
        (_, Value::String(s)) => Scalar::Text(s.clone()),
        (_, other) => Scalar::Text(other.to_string()),
    })
}
