//! Pulled blobs and manifests on disk, by digest, shared by every exporter.
//! Written to a temporary file, verified, synced and renamed into place;
//! read back only if its bytes still have its digest (a corrupted entry is
//! removed, and pulled again). Entries no exporter refers to are removed
//! once they have not been used for a while.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::sha256_digest;

/// Unused entries older than this go at the next sweep.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> BlobStore {
        BlobStore { dir }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join("sha256").join(hex))
    }

    /// The bytes with `digest`, if stored and intact.
    pub fn read(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) != digest {
            tracing::warn!(digest, path = %path.display(), "a cached module blob is corrupted; removing it and pulling it again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Used now: the sweep keeps it.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Stores `bytes` under `digest`; refuses bytes that do not match it.
    pub fn write(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path(digest) else {
            return Err(std::io::Error::other(format!(
                "`{digest}` is not a sha256 digest"
            )));
        };
        if sha256_digest(bytes) != digest {
            return Err(std::io::Error::other(format!(
                "the bytes do not have digest {digest}"
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        Ok(())
    }

    /// Removes entries not in `keep` and unused for longer than `older_than`.
    pub fn sweep(&self, keep: &HashSet<String>, older_than: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(self.dir.join("sha256")) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&format!("sha256:{name}")) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > older_than);
            if old && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_the_way_in_and_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().to_path_buf());
        let d = sha256_digest(b"module");
        assert!(store.read(&d).is_none());
        assert!(store.write(&d, b"other").is_err());
        store.write(&d, b"module").unwrap();
        assert_eq!(store.read(&d).as_deref(), Some(&b"module"[..]));
        // Corrupted on disk: gone, so it is pulled again.
        std::fs::write(store.path(&d).unwrap(), b"modulf").unwrap();
        assert!(store.read(&d).is_none());
        assert!(!store.path(&d).unwrap().exists());
        store.write(&d, b"module").unwrap();
        assert_eq!(
            store.sweep(&HashSet::new(), Duration::from_secs(3600)),
            0,
            "recent entries stay"
        );
        assert_eq!(
            store.sweep(&HashSet::from([d.clone()]), Duration::ZERO),
            0,
            "kept entries stay"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.sweep(&HashSet::new(), Duration::from_millis(1)), 1);
        assert!(store.path("sha256:../../etc").is_none());
    }
}
