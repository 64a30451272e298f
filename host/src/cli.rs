//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::source::kusto::config::AuthMode;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "kusto-metrics",
    version,
    about = "Azure Data Explorer rows to OTLP metrics"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KUSTO_METRICS_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `kusto_metrics=debug`); RUST_LOG wins.
    #[arg(long, global = true, default_value = "info", env = "KUSTO_METRICS_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export: read SummaryRule output tables, transform, deliver.
    Run(RunArgs),
    /// Run a transform on sample rows and print the OTLP/JSON request.
    TestTransform(TestTransformArgs),
    /// Print the MetricsExporter and SummaryRule CRDs (YAML), as in crds/.
    Crds(CrdsArgs),
    /// Write your own transform guest.
    #[command(subcommand)]
    Guest(GuestCommand),
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// A ready project in a new folder: a ratio transform on the SDK, its
    /// build file, transform.yaml, sample rows, the expected OTLP/JSON,
    /// test.sh and a README with the build, test and push commands.
    New(GuestNewArgs),
}

#[derive(Debug, clap::Args)]
pub struct GuestNewArgs {
    /// The project's (and crate's) name: lowercase letters, digits, `-`, `_`.
    pub name: String,
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: crate::guest_new::Lang,
    /// Where to write it [default: ./NAME]; must be empty or absent.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Take the SDK from this folder (`guests/sdk` of a kusto-metrics
    /// checkout) [default: the checkout this binary was built from].
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Take the SDK from this git repository (the kusto-metrics repository).
    #[arg(long, value_name = "URL")]
    pub sdk_git: Option<String>,
    /// With --sdk-git: the revision (commit, tag) to build against.
    #[arg(long, value_name = "REV", requires = "sdk_git")]
    pub sdk_rev: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this folder instead of printing them.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The host configuration (YAML).
    #[arg(long, short = 'c', env = "KUSTO_METRICS_CONFIG")]
    pub config: PathBuf,
    /// Run every MetricsExporter once for everything not yet exported, wait
    /// for delivery, and exit 0 only if every export succeeded.
    #[arg(long)]
    pub once: bool,
    /// Read this database from this ADX cluster (`DATABASE=URL`, repeatable);
    /// adds to `source.kusto.endpoints`.
    #[arg(long = "kusto-endpoint", value_name = "DATABASE=URL")]
    pub kusto_endpoints: Vec<String>,
    /// How to sign in to ADX: default, workload-identity, managed-identity,
    /// azure-cli, client-secret or none.
    #[arg(long, value_parser = parse_auth)]
    pub kusto_auth: Option<AuthMode>,
    /// How far behind now a window stops, for ingestion to land (e.g. 2m).
    #[arg(long, value_parser = parse_duration)]
    pub settle_delay: Option<Duration>,
    /// This host's labels for MetricsExporter `criteria` and
    /// `criteriaExpression` (`key=value[,key=value]`, repeatable); adds to
    /// the file's `clusterLabels`.
    #[arg(
        long = "cluster-labels",
        value_name = "KEY=VALUE,...",
        env = "KUSTO_METRICS_CLUSTER_LABELS"
    )]
    pub cluster_labels: Vec<String>,
    /// Put before every metric name, joined with `_` (over the file's
    /// `metricNamePrefix`).
    #[arg(long, value_name = "PREFIX")]
    pub metric_name_prefix: Option<String>,
    /// Resource attributes of everything sent (`key=value[,key=value]`,
    /// repeatable), over the file's `resourceAttributes`.
    #[arg(long = "add-resource-attributes", value_name = "KEY=VALUE,...")]
    pub resource_attributes: Vec<String>,
}

fn parse_auth(s: &str) -> Result<AuthMode, String> {
    AuthMode::parse(s)
}

#[derive(Debug, clap::Args)]
pub struct TestTransformArgs {
    /// A YAML/JSON file with a `transform` block or a whole MetricsExporter.
    #[arg(long, short = 't')]
    pub transform: PathBuf,
    /// Rows: a Kusto v2 or v1 JSON response, a `.csv` with `Name:type`
    /// headers, or `.jsonl`.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// A guest to run instead of the transform's `module`: a component
    /// (.wasm) file, or oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST].
    #[arg(long, short = 'm', value_name = "FILE|oci://REF")]
    pub module: Option<String>,
    /// A registry spoken to over plain HTTP (HOST[:PORT], repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Registry credentials (a Docker config.json).
    #[arg(long, env = "KUSTO_METRICS_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// The longest each registry step may take (sign-in, manifest, layer)
    /// [default: 60s, as registries.timeout].
    #[arg(long, value_parser = parse_duration)]
    pub registry_timeout: Option<Duration>,
    /// The namespace the module is fetched for: a cached OCI module that
    /// another namespace pulled is used only once the registry has accepted
    /// this one's credentials for it.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Print one line of JSON instead of indented JSON.
    #[arg(long)]
    pub compact: bool,
    /// Compare the output with this OTLP/JSON request instead of printing
    /// it: resources, scopes, metrics, points and attributes in any order.
    /// Exits non-zero with the differences when they are not the same.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Sandbox and cache settings for guests.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Where compiled guests are cached [default: ~/.cache/kusto-metrics/components].
    #[arg(long, env = "KUSTO_METRICS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile guests every time; keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// Memory a guest may use per batch, in MiB.
    #[arg(long, default_value_t = 64)]
    pub guest_memory_mib: usize,
    /// Time a guest may run per batch (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub guest_deadline: Duration,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration (e.g. 30s, 5m, 1h): {e}"))
}
