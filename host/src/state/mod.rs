//! Progress that survives restarts: how far each (MetricsExporter,
//! SummaryRule, exporter) has delivered. One JSON file, replaced atomically
//! (temp file, fsync, rename, fsync of the folder), so a crash leaves the old
//! or the new file, never a broken one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Classify, RetryClass};

const FILE_NAME: &str = "progress.json";

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
    /// Requests of its output the receiver accepted.
    pub requests: usize,
    /// Identifies the output (guest digest and configuration): a different
    /// guest or configuration gives other requests, which are sent whole.
    pub output_key: String,
}

/// The file's versioned layout: a future version can read this one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum StateFile {
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
}

impl Classify for StateError {
    fn retry_class(&self) -> RetryClass {
        match self {
            StateError::Io { .. } => RetryClass::Retryable,
            StateError::Corrupt { .. } => RetryClass::Permanent,
        }
    }
}

pub struct ProgressStore {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Progress>>,
}

/// The key of one job's progress.
pub fn job_key(metrics_exporter: &str, rule: &str, exporter: &str) -> String {
    format!("{metrics_exporter}|{rule}|{exporter}")
}

impl ProgressStore {
    /// Opens (creating the folder) and reads the state in `dir`.
    pub fn open(dir: &Path) -> Result<ProgressStore, StateError> {
        let path = dir.join(FILE_NAME);
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(StateFile::V1 { progress }) => progress,
                Err(e) => {
                    return Err(StateError::Corrupt {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(ProgressStore {
            path,
            entries: Mutex::new(entries),
        })
    }

    pub fn get(&self, key: &str) -> Option<Progress> {
        self.lock().get(key).cloned()
    }

    /// Records progress and writes the file before returning.
    pub fn commit(&self, key: &str, mut progress: Progress) -> Result<(), StateError> {
        progress.updated =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut entries = self.lock();
        let previous = entries.insert(key.to_string(), progress);
        if let Err(e) = self.write(&entries) {
            // Memory must not run ahead of disk.
            match previous {
                Some(p) => entries.insert(key.to_string(), p),
                None => entries.remove(key),
            };
            return Err(e);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Progress>> {
        // A panic while holding the lock cannot leave the map half-written
        // (inserts are single operations), so a poisoned lock is still good.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, entries: &BTreeMap<String, Progress>) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let file = StateFile::V1 {
            progress: entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.path).map_err(|e| io(e.error))?;
        // The rename itself must reach the disk too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_survives_a_reopen_and_a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProgressStore::open(dir.path()).unwrap();
        let key = job_key("ns/me", "ns/rule", "sink");
        assert_eq!(store.get(&key), None);
        let p = Progress {
            offset: 42,
            rows: 2,
            fingerprint: "abc".into(),
            window_end: None,
            updated: String::new(),
            partial: None,
        };
        store.commit(&key, p.clone()).unwrap();
        let reopened = ProgressStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&key).map(|p| p.offset), Some(42));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": \"1\""), "{text}");

        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\": \"1\", \"progress\": ",
        )
        .unwrap();
        assert!(matches!(
            ProgressStore::open(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }
}
