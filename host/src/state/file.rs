//! Progress in a local file (local mode): one versioned JSON file,
//! replaced atomically (temp file, fsync, rename, fsync of the folder), so a
//! crash leaves the old or the new file, never a broken one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{FILE_NAME, Progress, StateError, StateFile};

pub struct FileStore {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Progress>>,
}

impl FileStore {
    /// Opens (creating the folder) and reads the state in `dir`.
    pub fn open(dir: &Path) -> Result<FileStore, StateError> {
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
        Ok(FileStore {
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
    use crate::state::job_key;

    #[test]
    fn progress_survives_a_reopen_and_a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
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
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&key).map(|p| p.offset), Some(42));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": \"1\""), "{text}");

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
}
