//! Sample input files: which format a file is, and reading it.

use std::path::Path;

use super::error::InputError;
use super::{csv_table, jsonl, kusto_json};
use crate::wit::{Batch, BatchContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// The JSON array of frames that `/v2/rest/query` returns.
    KustoV2,
    /// `{"Tables": [...]}` as `/v1/rest/query` returns.
    KustoV1,
    /// CSV with a `Name:type` header.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl InputFormat {
    /// By extension (`.csv`, `.jsonl`/`.ndjson`), else by the first
    /// non-blank byte: `[` is a v2 response, `{` with a `Tables` key a v1
    /// response, another `{` JSON Lines.
    pub fn detect(path: &Path, bytes: &[u8]) -> Option<InputFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => return Some(InputFormat::Csv),
            Some("jsonl" | "ndjson") => return Some(InputFormat::JsonLines),
            _ => {}
        }
        let first = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
        match bytes[first] {
            b'[' => Some(InputFormat::KustoV2),
            b'{' => {
                let head = &bytes[first..bytes.len().min(first + 4096)];
                let is_v1 = head.windows(8).any(|w| w == b"\"Tables\"");
                Some(if is_v1 {
                    InputFormat::KustoV1
                } else {
                    InputFormat::JsonLines
                })
            }
            _ => None,
        }
    }
}

pub fn read_file(path: &Path, context: BatchContext) -> Result<Batch, InputError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InputError::Io {
        path: origin.clone(),
        source,
    })?;
    let format = InputFormat::detect(path, &bytes).ok_or_else(|| {
        InputError::format(
            &origin,
            "unknown input format: expected a Kusto v2 or v1 JSON response, a .csv file with a `Name:type` header, or .jsonl",
        )
    })?;
    read_bytes(&origin, &bytes, format, context)
}

pub fn read_bytes(
    origin: &str,
    bytes: &[u8],
    format: InputFormat,
    context: BatchContext,
) -> Result<Batch, InputError> {
    match format {
        InputFormat::KustoV2 => kusto_json::read_v2(origin, bytes, context),
        InputFormat::KustoV1 => kusto_json::read_v1(origin, bytes, context),
        InputFormat::Csv => csv_table::read(origin, bytes, context),
        InputFormat::JsonLines => jsonl::read(origin, bytes, context),
    }
}
