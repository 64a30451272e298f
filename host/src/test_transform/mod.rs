//! `kusto-metrics test-transform`: sample rows in, one OTLP/JSON request out,
//! compared with an expected one when asked (`expect`).

pub mod expect;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::transform_file::{self, ModuleRef};
use crate::export::{self, Resource};
use crate::source::kusto::table::{TableColumn, check_columns};
use crate::source::{self, batch::sample_context};
use crate::transform::modules::Fetched;
use crate::transform::modules::config::RegistriesConfig;
use crate::transform::modules::oci::Registries;
use crate::transform::modules::store::BlobStore;
use crate::transform::{Guest, Runtime, builtin};
use crate::wit::{Batch, Output};

pub struct Options {
    pub transform: PathBuf,
    pub input: PathBuf,
    /// Overrides the transform's `module`: a `.wasm` file, or
    /// `oci://registry/repository[:tag][@sha256:...]`.
    pub module: Option<String>,
    pub pretty: bool,
    /// An expected OTLP/JSON request to compare the output with.
    pub expect: Option<PathBuf>,
    /// For OCI modules.
    pub registries: RegistriesConfig,
    /// Where pulled modules are kept.
    pub blob_dir: Option<PathBuf>,
    /// The namespace whose access to a cached OCI module counts: a module
    /// pulled for one namespace is used for another only after the registry
    /// has accepted the other's credentials.
    pub namespace: String,
}

/// `--module`: an OCI reference or a file.
pub fn module_arg(text: &str) -> anyhow::Result<ModuleRef> {
    if let Some(r) = text.strip_prefix("oci://") {
        return transform_file::oci_ref(r, None, None, transform_file::PullPolicy::IfNotPresent)
            .map(ModuleRef::Oci)
            .map_err(|e| anyhow::anyhow!("--module: {e}"));
    }
    Ok(ModuleRef::File(PathBuf::from(text)))
}

/// What a run printed and found.
pub struct Ran {
    /// The OTLP/JSON request.
    pub output: String,
    /// Rows read, points written, rows skipped by reason (for stderr).
    pub summary: String,
    /// With `expect`: `None` when the output is what was expected, else a
    /// report of every difference.
    pub mismatch: Option<String>,
}

/// Runs the transform, and compares its output with `expect` when given.
pub fn run(runtime: &Runtime, options: &Options) -> anyhow::Result<Ran> {
    let spec = transform_file::load(&options.transform)?;
    let module = match &options.module {
        Some(text) => Some(module_arg(text)?),
        None => spec.module.clone(),
    };
    let (guest, pulled) = match &module {
        Some(ModuleRef::Oci(r)) => {
            let fetched = pull(r, options)?;
            let name = r
                .reference
                .rsplit('/')
                .next()
                .unwrap_or(&r.reference)
                .to_string();
            let note = format!(
                "module: oci://{} (manifest {}, {})\n",
                r.reference,
                fetched.manifest_digest.clone().unwrap_or_default(),
                if fetched.from_cache {
                    "from the cache"
                } else {
                    "pulled"
                }
            );
            (runtime.load(&name, &fetched.bytes)?, note)
        }
        other => (load_guest(runtime, other.as_ref())?, String::new()),
    };
    let requirements = guest.validate(&spec.config_json)?;
    let table = options
        .input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("input");
    let batch = source::read_file(&options.input, sample_context(table))?;
    // What `run` checks of a table before its first read, so a guest never
    // sees a column of a type it did not declare.
    check_columns(&requirements, &batch_columns(&batch))
        .map_err(|m| anyhow::anyhow!("{}: {m}", options.input.display()))?;
    let transformed = guest.transform(&spec.config_json, &batch)?;
    let json = export::otlp_json::encode_json(
        &Resource::default_host(),
        &transformed,
        &export::whole(&transformed),
    );
    let value: serde_json::Value =
        serde_json::from_str(&json).context("re-reading our own OTLP/JSON")?;
    let mismatch = match &options.expect {
        None => None,
        Some(path) => {
            let expected = read_expected(path)?;
            let found = expect::differences(&expected, &value);
            (!found.is_empty()).then(|| expect::report(&path.display().to_string(), &found))
        }
    };
    let output = if options.pretty {
        serde_json::to_string_pretty(&value)?
    } else {
        json
    };
    let summary = format!("{pulled}{}", summary(&guest, batch.row_count, &transformed));
    Ok(Ran {
        output,
        summary,
        mismatch,
    })
}

fn read_expected(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the expected output {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not JSON (an OTLP/JSON request, as test-transform prints it, is expected)",
            path.display()
        )
    })
}

/// Pulls (or reads from the cache) an OCI module, on a runtime of its own.
fn pull(r: &transform_file::OciRef, options: &Options) -> anyhow::Result<Fetched> {
    let dir = options
        .blob_dir
        .clone()
        .or_else(|| crate::transform::cache::default_cache_dir().map(|d| d.join("modules")))
        .unwrap_or_else(|| std::env::temp_dir().join("kusto-metrics-modules"));
    let registries =
        Registries::new(&options.registries, BlobStore::new(dir)).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to pull the module")?;
    // The reason in brackets is what a MetricsExporter's module status says.
    rt.block_on(registries.fetch(&options.namespace, r, None))
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.reason.as_str()))
}

pub fn load_guest(runtime: &Runtime, module: Option<&ModuleRef>) -> anyhow::Result<Guest> {
    let (name, bytes) = match module {
        None => (
            builtin::COLUMN_MAPPING_NAME.to_string(),
            builtin::COLUMN_MAPPING.to_vec(),
        ),
        Some(ModuleRef::Builtin(name)) => match builtin::lookup(name) {
            Some(bytes) => (name.clone(), bytes.to_vec()),
            None => bail!(
                "unknown builtin module `{name}` (builtin modules: {})",
                builtin::COLUMN_MAPPING_NAME
            ),
        },
        Some(ModuleRef::File(path)) => (guest_name(path), read_module(path)?),
        Some(ModuleRef::ConfigMap { name, .. }) => bail!(
            "transform.module.configMap `{name}` lives in a cluster; try the module here with --module FILE or --module oci://..."
        ),
        Some(ModuleRef::Oci(r)) => {
            bail!("oci://{} is pulled by run(), not load_guest", r.reference)
        }
    };
    Ok(runtime.load(&name, &bytes)?)
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading guest module {}", path.display()))
}

fn guest_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The batch's columns as a table schema, for the check `run` makes.
fn batch_columns(batch: &Batch) -> Vec<TableColumn> {
    batch
        .columns
        .iter()
        .map(|c| TableColumn {
            name: c.name.clone(),
            ty: Some(c.kusto_type),
            spelled: c.kusto_type.name().to_string(),
        })
        .collect()
}

fn summary(guest: &Guest, rows: u32, output: &Output) -> String {
    let p = guest.provenance();
    let mut s = format!(
        "guest: {} ({}, {} bytes, {})\nrows read: {rows}\nmetrics: {}\npoints written: {}\nrows skipped: {}",
        guest.name(),
        p.digest,
        p.size,
        if p.from_cache {
            "compiled form from cache"
        } else {
            "compiled"
        },
        output.metrics.len(),
        output.point_count(),
        output.skipped_count(),
    );
    for skip in &output.skipped {
        let _ = write!(
            s,
            "\n  {}: {} (first at row {}, 0-based)",
            output.skip_reason(skip),
            skip.count,
            skip.first_row
        );
    }
    s.push('\n');
    s
}
