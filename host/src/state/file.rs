//! Progress in local files (local mode): a snapshot (`progress.json`, the
//! versioned layout, replaced atomically) and an append-only log
//! (`progress.log`, one JSON line per commit). A commit appends its line
//! and syncs the log: O(1) whatever the number of jobs, where rewriting the
//! whole file per commit was O(jobs) and made a pass O(jobs²). Commits that
//! arrive together share one write and one sync (group commit). When the
//! log grows past [`COMPACT_AFTER`] lines (and past twice the entries), the
//! snapshot is rewritten and the log emptied. Opening reads the snapshot
//! and replays the log over it; a torn line (a crash or a failed write
//! mid-append) is left out, since its commit had not returned.
//!
//! A commit that would not move the job (same cursor, same partial chunk)
//! writes nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{FILE_NAME, Progress, StateError, StateFile};

/// The log next to the snapshot.
pub(crate) const LOG_NAME: &str = "progress.log";
/// Log lines before the snapshot is rewritten (when there are also more
/// than twice as many lines as entries).
pub const COMPACT_AFTER: usize = 10_000;

type Queued = (u64, String, Progress, bool);

#[derive(Serialize, Deserialize)]
struct LogLine {
    key: String,
    progress: Progress,
}

pub struct FileStore {
    snapshot: PathBuf,
    log_path: PathBuf,
    /// What is durable: only entries whose line was synced.
    entries: Mutex<BTreeMap<String, Progress>>,
    /// Commits waiting for a writer (sequence, key, progress, whether it
    /// must be synced).
    queue: Mutex<Vec<Queued>>,
    /// The one writer at a time, with the log file and its line count.
    writer: Mutex<Writer>,
    /// Sequence numbers handed out, and the highest one known durable.
    issued: AtomicU64,
    durable: AtomicU64,
    /// Log syncs and snapshot writes, for tests and `/metrics`.
    syncs: AtomicU64,
}

struct Writer {
    log: Option<std::fs::File>,
    lines: usize,
    /// A write failed: its bytes may end in a torn line, which the next
    /// write ends first.
    torn: bool,
}

impl FileStore {
    /// Opens (creating the folder) and reads the state in `dir`.
    pub fn open(dir: &Path) -> Result<FileStore, StateError> {
        let snapshot = dir.join(FILE_NAME);
        let log_path = dir.join(LOG_NAME);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StateError::Io {
                path: path.clone(),
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = match std::fs::read(&snapshot) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(StateFile::V1 { progress }) => progress,
                Err(e) => {
                    return Err(StateError::Corrupt {
                        path: snapshot.display().to_string(),
                        message: e.to_string(),
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&snapshot)(e)),
        };
        let mut lines = 0;
        match std::fs::File::open(&log_path) {
            Ok(file) => {
                let mut reader = std::io::BufReader::new(file);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = reader.read_line(&mut line).map_err(io(&log_path))?;
                    if n == 0 {
                        break;
                    }
                    if !line.ends_with('\n') {
                        tracing::warn!(path = %log_path.display(), "the last progress line was cut short (a crash while writing it); leaving it out");
                        break;
                    }
                    lines += 1;
                    match serde_json::from_str::<LogLine>(line.trim_start_matches('\n')) {
                        Ok(l) => {
                            entries.insert(l.key, l.progress);
                        }
                        // Only a write that failed half-way leaves such a
                        // line, and its commit returned an error.
                        Err(e) if line.trim().is_empty() => drop(e),
                        Err(e) => {
                            tracing::warn!(path = %log_path.display(), line = lines, error = %e, "skipping a progress line a failed write left behind");
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&log_path)(e)),
        }
        Ok(FileStore {
            snapshot,
            log_path,
            entries: Mutex::new(entries),
            queue: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer {
                log: None,
                lines,
                torn: false,
            }),
            issued: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        })
    }

    pub fn get(&self, key: &str) -> Option<Progress> {
        lock(&self.entries).get(key).cloned()
    }

    /// Syncs so far (log appends and snapshot rewrites).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Records progress durably before returning; nothing is written when
    /// the job has not moved.
    pub fn commit(&self, key: &str, progress: Progress) -> Result<(), StateError> {
        self.write(key, progress, true)
    }

    /// Like [`Self::commit`], without the sync: the line reaches the page
    /// cache, so it survives the process being killed, not the machine
    /// going down (then the last synced commit holds). For the requests of
    /// a chunk accepted so far, where a sync per request would cost more
    /// than the request.
    pub fn note(&self, key: &str, progress: Progress) -> Result<(), StateError> {
        self.write(key, progress, false)
    }

    fn write(&self, key: &str, mut progress: Progress, sync: bool) -> Result<(), StateError> {
        if lock(&self.entries).get(key) == Some(&progress) {
            return Ok(());
        }
        progress.updated =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let seq = {
            let mut queue = lock(&self.queue);
            let seq = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            queue.push((seq, key.to_string(), progress, sync));
            seq
        };
        let mut writer = lock(&self.writer);
        if self.durable.load(Ordering::SeqCst) >= seq {
            // Another commit's write took this one along.
            return Ok(());
        }
        let batch = std::mem::take(&mut *lock(&self.queue));
        let Some(last) = batch.last().map(|(s, _, _, _)| *s) else {
            return Ok(());
        };
        if let Err(e) = self.append(&mut writer, &batch) {
            // Put the others back for the next writer; this commit fails.
            let mut queue = lock(&self.queue);
            let mut rest: Vec<_> = batch.into_iter().filter(|(s, _, _, _)| *s != seq).collect();
            rest.append(&mut queue);
            *queue = rest;
            return Err(e);
        }
        {
            let mut entries = lock(&self.entries);
            for (_, key, progress, _) in batch {
                entries.insert(key, progress);
            }
        }
        self.durable.store(last, Ordering::SeqCst);
        let entries = lock(&self.entries).len();
        if writer.lines > COMPACT_AFTER
            && writer.lines > 2 * entries
            && let Err(e) = self.compact(&mut writer)
        {
            // The log still holds everything; compaction waits.
            tracing::warn!(error = %e, "cannot rewrite the progress snapshot; the log keeps growing until it can");
        }
        Ok(())
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StateError {
        let path = path.display().to_string();
        move |source| StateError::Io {
            path: path.clone(),
            source,
        }
    }

    fn append(&self, writer: &mut Writer, batch: &[Queued]) -> Result<(), StateError> {
        let io = self.io(&self.log_path);
        let mut text = Vec::new();
        if writer.torn {
            text.push(b'\n');
        }
        for (_, key, progress, _) in batch {
            serde_json::to_writer(
                &mut text,
                &LogLine {
                    key: key.clone(),
                    progress: progress.clone(),
                },
            )
            .map_err(|e| io(std::io::Error::other(e)))?;
            text.push(b'\n');
        }
        if writer.log.is_none() {
            let existed = self.log_path.exists();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .map_err(&io)?;
            if !existed {
                sync_dir(&self.log_path).map_err(&io)?;
            }
            writer.log = Some(file);
        }
        let Some(log) = writer.log.as_mut() else {
            return Ok(());
        };
        let sync = batch.iter().any(|(_, _, _, sync)| *sync);
        let written = log
            .write_all(&text)
            .and_then(|()| if sync { log.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // The next write starts on a fresh handle; a torn line this one
            // may have left is what the reader skips.
            writer.log = None;
            writer.torn = true;
            return Err(io(e));
        }
        writer.torn = false;
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        writer.lines += batch.len();
        Ok(())
    }

    /// The snapshot rewritten from memory, then the log emptied. A crash
    /// in between replays an old log over the new snapshot, which gives the
    /// same entries.
    fn compact(&self, writer: &mut Writer) -> Result<(), StateError> {
        let io = self.io(&self.snapshot);
        let file = StateFile::V1 {
            progress: lock(&self.entries).clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = self.snapshot.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(&io)?;
        tmp.write_all(&bytes).map_err(&io)?;
        tmp.as_file().sync_all().map_err(&io)?;
        tmp.persist(&self.snapshot).map_err(|e| io(e.error))?;
        sync_dir(&self.snapshot).map_err(&io)?;
        let log = std::fs::File::create(&self.log_path).map_err(self.io(&self.log_path))?;
        log.sync_all().map_err(self.io(&self.log_path))?;
        writer.log = None;
        writer.lines = 0;
        writer.torn = false;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A rename or a new file must reach the disk too.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the data half-written
    // (updates are single operations), so a poisoned lock is still good.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Cursor, FilePosition, job_key};

    fn at(offset: u64) -> Progress {
        Progress::at(Cursor::File(FilePosition {
            offset,
            rows: offset / 10,
            fingerprint: "abc".into(),
        }))
    }

    #[test]
    fn progress_survives_a_reopen_and_a_corrupt_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = job_key("ns/me", "ns/rule", "sink");
        assert_eq!(store.get(&key), None);
        store.commit(&key, at(42)).unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&key), Some(at(42)));

        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\": \"1\", \"progress\": ",
        )
        .unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_idle_commit_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.commit("k", at(10)).unwrap();
        let syncs = store.syncs();
        let log = dir.path().join(LOG_NAME);
        let before = std::fs::metadata(&log).unwrap().len();
        for _ in 0..100 {
            store.commit("k", at(10)).unwrap();
        }
        assert_eq!(store.syncs(), syncs, "no sync for a job that did not move");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
    }

    #[test]
    fn the_log_is_compacted_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for i in 1..=(COMPACT_AFTER as u64 + 5) {
            store.commit("k", at(i)).unwrap();
        }
        let log_len = std::fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
        assert!(log_len < 4096, "the log was emptied: {log_len} bytes");
        let snapshot = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(snapshot.contains("\"version\": \"1\""), "{snapshot}");
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("k"), Some(at(COMPACT_AFTER as u64 + 5)));
    }

    #[test]
    fn a_torn_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.commit("k", at(1)).unwrap();
        store.commit("k", at(2)).unwrap();
        drop(store);
        let log = dir.path().join(LOG_NAME);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"key\":\"k\",\"progress\":{\"off").unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("k"), Some(at(2)));
    }

    #[test]
    fn concurrent_commits_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FileStore::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 1..=50u64 {
                        store.commit(&format!("job{t}"), at(i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(store.syncs() <= 400, "{} syncs", store.syncs());
        let reopened = FileStore::open(dir.path()).unwrap();
        for t in 0..8 {
            assert_eq!(reopened.get(&format!("job{t}")), Some(at(50)));
        }
    }
}
