//! Progress that survives restarts: how far each (MetricsExporter,
//! SummaryRule, exporter) has delivered. In local mode a file ([`file`]); in
//! Kubernetes the MetricsExporter's status ([`status`]), so a replica that
//! takes an exporter over starts where the last one stopped.

pub mod file;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Classify, RetryClass};

pub(crate) const FILE_NAME: &str = "progress.json";

/// Where a job stands: in an append-only local table (`offset`, `rows`,
/// `fingerprint`), or in time for ADX (`windowEnd`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes of the table file consumed (always at a row boundary).
    #[serde(default)]
    pub offset: u64,
    /// Data rows consumed (for row numbers in messages).
    #[serde(default)]
    pub rows: u64,
    /// sha256 of the file's first bytes when `offset` was recorded: a
    /// rewritten file no longer matches and is read again from the start.
    #[serde(default)]
    pub fingerprint: String,
    /// ADX: the end of the last window delivered (RFC 3339, 100 ns), by
    /// ingestion time or, for a MetricsExporter's own body, by window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// RFC 3339 time of the last commit.
    #[serde(default)]
    pub updated: String,
    /// Set when the chunk after `offset` was partly delivered: its first
    /// requests were accepted, a later one failed. The next pass sends only
    /// the rest, so a failure mid-chunk does not duplicate what was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialChunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialChunk {
    /// Where the partly delivered chunk ends: the byte offset in a table
    /// file, or the window's end in ticks for ADX.
    pub end_offset: u64,
    /// ADX: the window's start in ticks, so the next pass reads exactly
    /// the same window again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_offset: Option<u64>,
    /// Requests of its output the receiver accepted.
    pub requests: usize,
    /// Identifies the output (guest digest and configuration): a different
    /// guest or configuration gives other requests, which are sent whole.
    pub output_key: String,
}

/// The file's versioned layout: a future version can read this one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum StateFile {
    #[serde(rename = "1")]
    V1 {
        progress: BTreeMap<String, Progress>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: not a kusto-metrics state file ({message}); move it away to start over (everything is exported again)"
    )]
    Corrupt { path: String, message: String },
    #[error("writing the status of MetricsExporter {exporter}: {source}")]
    Status {
        exporter: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The replica no longer runs the exporter (its lease went elsewhere).
    #[error("MetricsExporter {0} is no longer run by this replica")]
    NotHeld(String),
}

impl Classify for StateError {
    fn retry_class(&self) -> RetryClass {
        match self {
            StateError::Io { .. } => RetryClass::Retryable,
            StateError::Corrupt { .. } | StateError::NotHeld(_) => RetryClass::Permanent,
            StateError::Status { .. } => RetryClass::Retryable,
        }
    }
}

/// The key of one job's progress.
pub fn job_key(metrics_exporter: &str, rule: &str, exporter: &str) -> String {
    format!("{metrics_exporter}|{rule}|{exporter}")
}

/// `(MetricsExporter, rule, exporter)` of a key made by [`job_key`].
pub fn split_job_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, '|');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Where progress is kept.
pub enum ProgressStore {
    File(Arc<file::FileStore>),
    Status(Arc<status::StatusStore>),
}

impl ProgressStore {
    pub fn get(&self, key: &str) -> Option<Progress> {
        match self {
            ProgressStore::File(f) => f.get(key),
            ProgressStore::Status(s) => s.get(key),
        }
    }

    /// Records progress durably before returning: the file written and
    /// synced, or the status accepted by the API server.
    pub async fn commit(&self, key: &str, progress: Progress) -> Result<(), StateError> {
        match self {
            ProgressStore::File(f) => {
                // fsyncs block: keep them off the async threads.
                let (f, key) = (f.clone(), key.to_string());
                tokio::task::spawn_blocking(move || f.commit(&key, progress))
                    .await
                    .map_err(|e| StateError::Io {
                        path: "progress".into(),
                        source: std::io::Error::other(e),
                    })?
            }
            ProgressStore::Status(s) => s.commit(key, progress).await,
        }
    }
}
