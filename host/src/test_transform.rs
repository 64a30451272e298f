//! `kusto-metrics test-transform`: sample rows in, one OTLP/JSON request out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::transform_file::{self, ModuleRef};
use crate::export::{self, Resource};
use crate::source::{self, batch::sample_context};
use crate::transform::{Guest, Runtime, builtin};
use crate::wit::Output;

pub struct Options {
    pub transform: PathBuf,
    pub input: PathBuf,
    /// Overrides the transform's `module`.
    pub module: Option<PathBuf>,
    pub pretty: bool,
}

/// Runs the transform and returns (stdout text, stderr summary).
pub fn run(runtime: &Runtime, options: &Options) -> anyhow::Result<(String, String)> {
    let spec = transform_file::load(&options.transform)?;
    let module = match &options.module {
        Some(path) => Some(ModuleRef::File(path.clone())),
        None => spec.module.clone(),
    };
    let guest = load_guest(runtime, module.as_ref())?;
    guest.validate(&spec.config_json)?;
    let table = options
        .input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("input");
    let batch = source::read_file(&options.input, sample_context(table))?;
    let output = guest.transform(&spec.config_json, &batch)?;
    let json =
        export::otlp_json::encode_json(&Resource::default_host(), &output, &export::whole(&output));
    let stdout = if options.pretty {
        let value: serde_json::Value =
            serde_json::from_str(&json).context("re-reading our own OTLP/JSON")?;
        serde_json::to_string_pretty(&value)?
    } else {
        json
    };
    let summary = summary(&guest, batch.row_count, &output);
    Ok((stdout, summary))
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
            "\n  {}: {} (first at row {})",
            skip.reason,
            skip.count,
            u64::from(skip.first_row) + 1
        );
    }
    s.push('\n');
    s
}
