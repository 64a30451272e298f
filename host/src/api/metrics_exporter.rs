//! `MetricsExporter` (adx-mon.azure.com/v1): which SummaryRules to read (or
//! which query to run), how their columns become metrics, and where the
//! metrics go. The CRD in `crds/` is generated from these types.

// kube's derive takes one `printcolumn(...)` per column, which clippy reads
// as the same attribute given twice.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Go-style duration (`30s`, `5m`, `1h30m`), as Kubernetes writes them.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "adx-mon.azure.com",
    version = "v1",
    kind = "MetricsExporter",
    namespaced,
    status = "MetricsExporterStatus",
    derive = "PartialEq",
    shortname = "mexp",
    category = "adx-mon",
    doc = "Turns the rows adx-mon SummaryRules write to Azure Data Explorer into OTLP metrics and sends them to the named exporters.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rulesMatched"),
    printcolumn(
        name = "Last Export",
        type_ = "date",
        json_path = ".status.lastSuccess"
    ),
    printcolumn(name = "Lag", type_ = "string", json_path = ".status.lag"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.summaryRuleSelector) && has(self.body))").message("give either summaryRuleSelector or database and body, not both"),
    validation = Rule::new("has(self.database) == has(self.body)").message("database and body go together")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsExporterSpec {
    /// Which SummaryRules in the exporter's namespace to read, by label. An
    /// empty selector matches every rule in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_rule_selector: Option<LabelSelector>,
    /// With `body`, instead of a selector: the database the query runs in
    /// (upstream adx-mon's MetricsExporter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub database: Option<String>,
    /// KQL run for each window, using `_startTime` and `_endTime`
    /// (declared `datetime` parameters; `_endTime` is one tick, 100 ns,
    /// before the window's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub body: Option<String>,
    /// Names of exporters in the host configuration.
    #[schemars(length(min = 1))]
    pub exporters: Vec<String>,
    /// How often to export, e.g. `1m`. At least the host's `minInterval`
    /// (10s unless its config says otherwise): a shorter interval is
    /// refused with `Ready=False`, reason `IntervalTooShort`.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub interval: String,
    /// How columns become metrics, and which guest module does it. The
    /// keys besides `module` go to the guest as its configuration: those
    /// listed are the default column mapping's; a custom guest defines its
    /// own.
    #[schemars(schema_with = "transform_schema")]
    pub transform: Value,
    /// Runs only on hosts whose `--cluster-labels` have, for any key here,
    /// one of its values (case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub criteria: BTreeMap<String, Vec<String>>,
    /// A CEL expression over the host's cluster labels (as string
    /// variables); with `criteria`, both must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria_expression: Option<String>,
    /// OTLP resource attributes of this exporter's metrics (target_info
    /// labels in Prometheus), added to the host's and the exporter's; a key
    /// the host or the exporter already sets keeps the host's value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub resource_attributes: BTreeMap<String, String>,
}

/// The `transform` block as the schema documents it. Unknown keys are kept
/// (`x-kubernetes-preserve-unknown-fields`): they belong to custom guests.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "only its schema is used")]
struct TransformSchema {
    module: Option<ModuleReference>,
    /// String column holding each row's metric name.
    metric_name_column: Option<String>,
    /// Used when the name column is unset or empty.
    default_metric_name: Option<String>,
    /// Names become `<prefix>_<name>`.
    metric_name_prefix: Option<String>,
    /// The value column: int, long, real or decimal.
    value_column: Option<String>,
    /// Instead of valueColumn: one metric per column.
    value_columns: Option<Vec<String>>,
    /// A datetime column: the point's time.
    timestamp_column: Option<String>,
    /// A datetime column: the point's start time.
    start_timestamp_column: Option<String>,
    /// Columns that become attributes, in this order: a column name, or
    /// `{column, expand: true, prefix, maxKeys}` to turn a dynamic column's
    /// property bag into one label per key.
    #[schemars(length(max = 256), extend("x-kubernetes-validations" = [{
        "rule": LABEL_COLUMN_RULE,
        "message": "each labelColumns entry is a column name or {column: <dynamic column>, expand: true, prefix, maxKeys}",
    }]))]
    label_columns: Option<Vec<LabelColumn>>,
    /// Attributes every point gets (not also a label column).
    constant_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Distinct label names the expanding labelColumns entries may give in
    /// one batch (default 128, at most 2048).
    #[schemars(range(min = 1, max = 2048))]
    max_expanded_labels: Option<i64>,
    description: Option<String>,
    unit: Option<String>,
    kind: Option<MetricKind>,
    /// For sums.
    monotonic: Option<bool>,
    /// For sums.
    temporality: Option<TemporalitySetting>,
}

/// What the API server checks of a `labelColumns` entry; the guest checks
/// the rest (`prefix`, `maxKeys`, unknown keys) naming the entry.
const LABEL_COLUMN_RULE: &str = "self.all(c, type(c) == string || (type(c) == map && has(c.column) && type(c.column) == string && has(c.expand) && c.expand == true))";

/// One `labelColumns` entry: a column name, or an expanding entry. Either
/// form is a valid item, so the item schema has no `type` (Kubernetes
/// allows none under `x-kubernetes-preserve-unknown-fields`, and no types
/// inside `anyOf`); [`LABEL_COLUMN_RULE`] tells the forms apart.
#[allow(dead_code, reason = "only its schema is used")]
enum LabelColumn {
    Name(String),
    Expand {
        column: String,
        expand: bool,
        prefix: Option<String>,
        max_keys: Option<i64>,
    },
}

impl JsonSchema for LabelColumn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LabelColumn".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A column name (its value is the label), or {column, expand: true, prefix, maxKeys}: each key of the dynamic column's JSON object becomes the label prefix+key (characters outside [A-Za-z0-9_] replaced by _), at most maxKeys (default 32, at most 256) per row.",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "only its schema is used")]
enum MetricKind {
    Gauge,
    Sum,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "only its schema is used")]
enum TemporalitySetting {
    Cumulative,
    Delta,
}

fn transform_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<TransformSchema>();
    schema.insert(
        "x-kubernetes-preserve-unknown-fields".into(),
        Value::Bool(true),
    );
    schema.insert("type".into(), Value::from("object"));
    schema
}

/// Which guest runs the transform: exactly one of these. Without `module`,
/// the builtin default.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ModuleReference {
    /// A guest embedded in the binary.
    Builtin(BuiltinModule),
    /// A `.wasm` file, relative to the manifest: local mode only.
    File(String),
    /// A `binaryData` entry of a ConfigMap in the exporter's namespace (at
    /// most 1 MiB, the ConfigMap limit).
    ConfigMap(ConfigMapModule),
    /// An OCI artifact as `wkg oci push` writes it.
    Oci(OciModule),
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinModule {
    #[serde(rename = "column-mapping")]
    ColumnMapping,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapModule {
    pub name: String,
    pub key: String,
    /// The expected sha256 of the module, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OciModule {
    /// `registry/repository:tag` or `registry/repository@sha256:...`.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1))]
    pub reference: String,
    /// The manifest digest (`sha256:...`), as `wkg oci push` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the exporter's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<SecretName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretName {
    pub name: String,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    #[default]
    IfNotPresent,
    Always,
}

/// What the replica running the exporter reports.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsExporterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `RulesDiscovered`, `Exporting`, `Degraded`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// SummaryRules the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_matched: Option<i64>,
    /// Progress per (rule, exporter): where the next read starts.
    #[serde(default)]
    pub rules: Vec<RuleProgress>,
    /// When a run last delivered everything (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Now minus the newest point delivered, at the last run (`1m30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// Totals since the running replica took the exporter.
    #[serde(default)]
    pub rows_read: i64,
    #[serde(default)]
    pub points_sent: i64,
    #[serde(default)]
    pub rows_skipped: i64,
    /// The last failure, cut to a few hundred characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The replica running the exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The fencing token of `holder`: its exporter Lease's
    /// `leaseTransitions` when it took the Lease. A replica holding an
    /// older token writes nothing here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
    /// The guest module that runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleStatus>,
}

/// What runs: where it came from and its digests.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    /// `builtin column-mapping`, `file ...`, `configMap name key k`, `oci://...`.
    pub source: String,
    /// The OCI manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// `sha256:` of the component (the OCI layer digest).
    pub layer_digest: String,
    pub size: i64,
    /// When it was fetched (RFC 3339).
    pub pulled_at: String,
    /// e.g. a tag without a digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Where one (rule, exporter) stands. For ADX, `windowEnd`; for local
/// tables, the byte offset, row count and file fingerprint.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuleProgress {
    /// `namespace/name` of the SummaryRule, or `<exporter>#body`.
    pub rule: String,
    /// The exporter's name in the host configuration.
    pub exporter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// A partly delivered chunk: `endOffset`, `requests` accepted,
    /// `outputKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialProgress>,
    /// When progress last moved (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated: String,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartialProgress {
    pub end_offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offset: Option<i64>,
    /// ADX: chunks of the window delivered whole, and their chained digest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunks_digest: String,
    pub requests: i64,
    pub output_key: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Conditions as a list keyed by `type`, so server-side apply merges them.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), Value::from("map"));
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        Value::from(vec!["type"]),
    );
    schema
}
