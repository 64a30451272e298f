//! A test server that speaks Azure Data Explorer's REST protocol: queries
//! (`POST /v2/rest/query`, answered as a v2 frame stream) and management
//! commands (`POST /v1/rest/mgmt`, answered as a v1 table set).
//!
//! It keeps tables in memory, each row with its ingestion time, and runs the
//! small part of KQL the host sends: `declare query_parameters(...)` read
//! from the request's `Parameters` (never from the query text), a table
//! reference, `where` with comparisons, `and` and `between`, `project`,
//! `extend` of a string literal, `getschema`, `take`; and
//! `.show table T policy ingestiontime`. Anything else is answered the way
//! ADX answers a query it cannot run (HTTP 400, a `General_BadRequest`
//! error), so a host sending something new fails loudly here.
//!
//! Faults on demand: a status code (with `Retry-After`), a slow answer, an
//! error at the end of the stream, a limit hit, progressive frames; and the
//! `truncationmaxrecords` request option is honoured as ADX does (the rows
//! are cut and the stream ends with a limits error).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
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
}

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
    /// Primary-result rows answered (0 for errors and commands).
    pub rows: usize,
}

impl Recorded {
    /// A declared datetime parameter's value in ticks.
    pub fn parameter_ticks(&self, name: &str) -> Option<i64> {
        datetime_literal_ticks(self.parameters.get(name)?)
    }
}

#[derive(Debug, Clone)]
struct Table {
    columns: Vec<(String, String)>,
    /// (ingestion time in ticks, the row as ADX sends it).
    rows: Vec<(i64, Vec<Value>)>,
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
            ingestion_time_policy: Some(true),
        };
        self.lock()
            .tables
            .insert((database.to_string(), table.to_string()), t);
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
    pub fn ingest(&self, database: &str, table: &str, rows: Vec<Vec<Value>>) {
        self.ingest_at(database, table, now_ticks(), rows);
    }

    /// Appends rows with the given ingestion time.
    pub fn ingest_at(&self, database: &str, table: &str, ingestion: i64, rows: Vec<Vec<Value>>) {
        let mut inner = self.lock();
        let t = inner
            .tables
            .get_mut(&(database.to_string(), table.to_string()))
            .expect("no such table");
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
    if let Some(Fault::TooLarge) = fault {
        set_outcome(&inner, index, 200, 0);
        return v2_response(&[], &[], false, Some(limit_error(0)));
    }
    let (result, reverse) = {
        let g = inner.lock().unwrap_or_else(|p| p.into_inner());
        (run_query(&g.tables, &request), g.reverse_rows)
    };
    let (columns, mut rows) = match result {
        Ok(r) => r,
        Err(message) => {
            set_outcome(&inner, index, 400, 0);
            return error_response(400, "General_BadRequest", &message, None);
        }
    };
    if reverse {
        rows.reverse();
    }
    let mut end_error = match fault {
        Some(Fault::ErrorAtEnd(m)) => Some(one_api_error("InternalServiceError", &m)),
        _ => None,
    };
    if let Some(max) = request.options["truncationmaxrecords"].as_u64()
        && rows.len() as u64 > max
    {
        rows.truncate(max as usize);
        end_error = Some(limit_error(max));
    }
    set_outcome(&inner, index, 200, rows.len());
    v2_response(&columns, &rows, progressive, end_error)
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

fn limit_error(max: u64) -> Value {
    json!({"error": {
        "code": "LimitsExceeded",
        "message": "Request is invalid and cannot be executed.",
        "@type": "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException",
        "@message": format!("Query execution has exceeded the allowed limits (80DA0003): The results of this query exceed the set limit of {max} records, so not all records were returned (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003, max #records={max}). See https://aka.ms/kustoquerylimits for more information."),
        "@permanent": true,
    }})
}

/// A v2 frame stream, one frame per line as ADX writes it.
fn v2_response(
    columns: &[(String, String)],
    rows: &[Vec<Value>],
    progressive: bool,
    end_error: Option<Value>,
) -> Response {
    let cols: Vec<Value> = columns
        .iter()
        .map(|(n, t)| json!({"ColumnName": n, "ColumnType": t}))
        .collect();
    let mut frames = vec![json!({
        "FrameType": "DataSetHeader",
        "IsProgressive": progressive,
        "Version": "v2.0",
        "IsFragmented": progressive,
        "ErrorReportingPlacement": "EndOfTable",
    })];
    frames.push(json!({
        "FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties",
        "TableName": "@ExtendedProperties",
        "Columns": [{"ColumnName":"TableId","ColumnType":"int"},{"ColumnName":"Key","ColumnType":"string"},{"ColumnName":"Value","ColumnType":"dynamic"}],
        "Rows": [[1, "Visualization", "{\"Visualization\":null}"]],
    }));
    if progressive {
        frames.push(json!({"FrameType": "TableHeader", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult", "Columns": cols}));
        for (i, chunk) in rows.chunks(3).enumerate() {
            frames.push(json!({"FrameType": "TableFragment", "TableFragmentType": "DataAppend", "TableId": 1, "Rows": chunk}));
            frames.push(json!({"FrameType": "TableProgress", "TableId": 1, "TableProgress": ((i + 1) * 3 * 100 / rows.len().max(1)).min(100) as f64}));
        }
        frames.push(json!({"FrameType": "TableCompletion", "TableId": 1, "RowCount": rows.len()}));
    } else {
        frames.push(json!({"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult", "Columns": cols, "Rows": rows}));
    }
    frames.push(json!({
        "FrameType": "DataTable", "TableId": 2, "TableKind": "QueryCompletionInformation",
        "TableName": "QueryCompletionInformation",
        "Columns": [{"ColumnName":"Timestamp","ColumnType":"datetime"},{"ColumnName":"ClientRequestId","ColumnType":"string"},{"ColumnName":"StatusCode","ColumnType":"int"},{"ColumnName":"StatusDescription","ColumnType":"string"}],
        "Rows": [[format_ticks(now_ticks()), "", 0, "Query completed successfully"]],
    }));
    let mut done = json!({"FrameType": "DataSetCompletion", "HasErrors": end_error.is_some(), "Cancelled": false});
    if let Some(e) = end_error {
        done["OneApiErrors"] = json!([e]);
    }
    frames.push(done);
    let mut text = String::from("[");
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            text.push_str("\n,");
        }
        text.push_str(&f.to_string());
    }
    text.push_str("\n]");
    ([("content-type", "application/json; charset=utf-8")], text).into_response()
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

struct Rows {
    columns: Vec<(String, String)>,
    rows: Vec<(i64, Vec<Value>)>,
}

#[allow(clippy::type_complexity)]
fn run_query(
    tables: &HashMap<(String, String), Table>,
    request: &Request,
) -> Result<(Vec<(String, String)>, Vec<Vec<Value>>), String> {
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
    let mut data = Rows {
        columns: table.columns.clone(),
        rows: table.rows.clone(),
    };
    let policy = table.ingestion_time_policy != Some(false);
    for stage in &stages[1..] {
        let (op, arg) = stage.split_once(char::is_whitespace).unwrap_or((stage, ""));
        let arg = arg.trim();
        match op {
            "where" => {
                let terms = split_and(arg);
                let mut kept = Vec::new();
                for (ing, row) in data.rows {
                    let mut all = true;
                    for t in &terms {
                        if !eval_term(t, &data.columns, ing, policy, &row, &params)? {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        kept.push((ing, row));
                    }
                }
                data.rows = kept;
            }
            "project" => {
                let mut idx = Vec::new();
                for name in split_top(arg, ',') {
                    let name = unquote(&name)?;
                    let i = column_index(&data.columns, &name)?;
                    idx.push(i);
                }
                data.columns = idx.iter().map(|&i| data.columns[i].clone()).collect();
                data.rows = data
                    .rows
                    .into_iter()
                    .map(|(ing, row)| (ing, idx.iter().map(|&i| row[i].clone()).collect()))
                    .collect();
            }
            "extend" => {
                let (name, value) = arg
                    .split_once('=')
                    .ok_or_else(|| format!("Syntax error: extend `{arg}`"))?;
                let name = unquote(name.trim())?;
                let value = value.trim();
                let text = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| {
                        format!("the test server extends by string literals only, not `{value}`")
                    })?;
                data.columns.push((name, "string".into()));
                for (_, row) in &mut data.rows {
                    row.push(Value::from(text));
                }
            }
            "count" => {
                let n = data.rows.len();
                data.columns = vec![("Count".into(), "long".into())];
                data.rows = vec![(0, vec![json!(n)])];
            }
            "take" | "limit" => {
                let n: usize = arg
                    .parse()
                    .map_err(|_| format!("Syntax error: take `{arg}`"))?;
                data.rows.truncate(n);
            }
            "getschema" => {
                let cols = std::mem::take(&mut data.columns);
                data.columns = vec![
                    ("ColumnName".into(), "string".into()),
                    ("ColumnOrdinal".into(), "int".into()),
                    ("DataType".into(), "string".into()),
                    ("ColumnType".into(), "string".into()),
                ];
                data.rows = cols
                    .iter()
                    .enumerate()
                    .map(|(i, (n, t))| (0, vec![json!(n), json!(i), json!(clr_type(t)), json!(t)]))
                    .collect();
            }
            other => {
                return Err(format!(
                    "Syntax error: the test server does not run `{other}`"
                ));
            }
        }
    }
    Ok((
        data.columns,
        data.rows.into_iter().map(|(_, r)| r).collect(),
    ))
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
