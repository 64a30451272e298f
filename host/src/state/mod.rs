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

/// Where a job's source stands: what has been delivered and committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cursor {
    /// Nothing delivered yet.
    #[default]
    Start,
    /// An append-only local table, consumed up to a row boundary.
    File(FilePosition),
    /// ADX: the end of the last window delivered, in ticks (100 ns since
    /// the Unix epoch), by ingestion time or, for a MetricsExporter's own
    /// body, by aligned window.
    Window { end: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilePosition {
    /// Bytes of the table file consumed (always at a row boundary).
    pub offset: u64,
    /// Data rows consumed (for row numbers in messages).
    pub rows: u64,
    /// sha256 of the file's first bytes when `offset` was recorded: a
    /// rewritten file no longer matches and is read again from the start.
    pub fingerprint: String,
}

/// One job's progress: its cursor, and how far the chunk after it got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "wire::Progress", into = "wire::Progress")]
pub struct Progress {
    pub cursor: Cursor,
    /// Set when the chunk after the cursor was partly delivered.
    pub partial: Option<PartialChunk>,
    /// RFC 3339 time of the last commit; not part of where the job stands.
    pub updated: String,
}

/// Two progresses are the same when they stand at the same place: when the
/// commit happened does not count, so an idle pass writes nothing.
impl PartialEq for Progress {
    fn eq(&self, other: &Self) -> bool {
        self.cursor == other.cursor && self.partial == other.partial
    }
}

impl Eq for Progress {}

impl Progress {
    pub fn at(cursor: Cursor) -> Progress {
        Progress {
            cursor,
            ..Progress::default()
        }
    }

    /// The file position, when the cursor is in a file.
    pub fn file(&self) -> Option<&FilePosition> {
        match &self.cursor {
            Cursor::File(f) => Some(f),
            _ => None,
        }
    }

    /// The end of the last window delivered, when the cursor is in time.
    pub fn window_end(&self) -> Option<i64> {
        match self.cursor {
            Cursor::Window { end } => Some(end),
            _ => None,
        }
    }
}

/// How far the chunk after a cursor got: its first requests were accepted,
/// a later one failed or the run stopped. The next run sends only the rest,
/// so nothing the receiver accepted is sent again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartialChunk {
    /// Where the chunk ends: its end offset in a table file, or the end of
    /// its window in ticks.
    pub end_offset: u64,
    /// ADX: the window's start in ticks, so the next run reads exactly the
    /// same window again.
    pub start_offset: Option<u64>,
    /// ADX: chunks of the window delivered whole before this one, and the
    /// digest chained over their rows: the window read again must give the
    /// same chunks for them to be skipped.
    pub chunks: u32,
    pub chunks_digest: String,
    /// Requests of the next chunk's output the receiver accepted.
    pub requests: usize,
    /// Identifies that output (guest, configuration, request shape, rows):
    /// a different one gives other requests, which are sent whole.
    pub output_key: String,
}

/// The persisted spelling of progress, the same in the state file and in a
/// MetricsExporter's status (flat fields, RFC 3339 window ends), so files
/// and statuses written before the typed cursor still read.
pub(crate) mod wire {
    use serde::{Deserialize, Serialize};

    use super::{Cursor, FilePosition, PartialChunk};
    use crate::source::kusto::kql::format_ticks;
    use crate::source::values::parse_datetime;

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Progress {
        #[serde(default)]
        pub offset: u64,
        #[serde(default)]
        pub rows: u64,
        #[serde(default)]
        pub fingerprint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub window_end: Option<String>,
        #[serde(default)]
        pub updated: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub partial: Option<Partial>,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Partial {
        pub end_offset: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub start_offset: Option<u64>,
        #[serde(default, skip_serializing_if = "is_zero")]
        pub chunks: u32,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub chunks_digest: String,
        pub requests: usize,
        pub output_key: String,
    }

    fn is_zero(v: &u32) -> bool {
        *v == 0
    }

    impl From<Progress> for super::Progress {
        fn from(w: Progress) -> Self {
            // A window end that does not parse reads as no progress: the
            // window is read again rather than a row lost.
            let cursor = match w.window_end.as_deref().map(parse_datetime) {
                Some(Ok(end)) => Cursor::Window { end },
                Some(Err(reason)) => {
                    tracing::warn!(window_end = ?w.window_end, reason, "stored window end unreadable; reading from the start");
                    Cursor::Start
                }
                None if w.offset > 0 || w.rows > 0 || !w.fingerprint.is_empty() => {
                    Cursor::File(FilePosition {
                        offset: w.offset,
                        rows: w.rows,
                        fingerprint: w.fingerprint,
                    })
                }
                None => Cursor::Start,
            };
            super::Progress {
                cursor,
                partial: w.partial.map(|p| PartialChunk {
                    end_offset: p.end_offset,
                    start_offset: p.start_offset,
                    chunks: p.chunks,
                    chunks_digest: p.chunks_digest,
                    requests: p.requests,
                    output_key: p.output_key,
                }),
                updated: w.updated,
            }
        }
    }

    impl From<super::Progress> for Progress {
        fn from(p: super::Progress) -> Self {
            let mut w = Progress {
                updated: p.updated,
                partial: p.partial.map(|c| Partial {
                    end_offset: c.end_offset,
                    start_offset: c.start_offset,
                    chunks: c.chunks,
                    chunks_digest: c.chunks_digest,
                    requests: c.requests,
                    output_key: c.output_key,
                }),
                ..Progress::default()
            };
            match p.cursor {
                Cursor::Start => {}
                Cursor::File(f) => {
                    w.offset = f.offset;
                    w.rows = f.rows;
                    w.fingerprint = f.fingerprint;
                }
                Cursor::Window { end } => w.window_end = Some(format_ticks(end)),
            }
            w
        }
    }
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

/// Progress a job delivered but could not commit, kept for its next run.
#[derive(Default)]
pub struct PendingCommits(std::sync::Mutex<std::collections::HashMap<String, Progress>>);

impl PendingCommits {
    pub fn put(&self, key: &str, progress: Progress) {
        self.lock().insert(key.to_string(), progress);
    }

    pub fn take(&self, key: &str) -> Option<Progress> {
        self.lock().remove(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Progress>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
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

    /// Records the requests of a chunk accepted so far, cheaply: in a file,
    /// appended without a sync (it survives the process, not the machine);
    /// in the status, written at most every [`status::NOTE_INTERVAL`] per
    /// exporter (else kept for the next write). The chunk's own commit
    /// follows and is durable.
    pub async fn note(&self, key: &str, progress: Progress) -> Result<(), StateError> {
        match self {
            ProgressStore::File(f) => {
                let (f, key) = (f.clone(), key.to_string());
                tokio::task::spawn_blocking(move || f.note(&key, progress))
                    .await
                    .map_err(|e| StateError::Io {
                        path: "progress".into(),
                        source: std::io::Error::other(e),
                    })?
            }
            ProgressStore::Status(s) => s.note(key, progress).await,
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
