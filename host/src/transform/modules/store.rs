//! Pulled blobs and manifests on disk, by digest, shared by every exporter.
//! Written to a temporary file, verified, synced and renamed into place;
//! read back only if its bytes still have its digest (a corrupted entry is
//! removed, and pulled again). Entries no exporter refers to are removed
//! once they have not been used for a while.
//!
//! A digest is no secret (it shows in a MetricsExporter's status), so bytes
//! are not handed out by digest alone. Two kinds of records sit beside them:
//! - origin (repository, digest): the bytes were downloaded from that
//!   repository and verified there. A cached blob serves a reference only
//!   to the repository it came from: a registry that merely claims to have
//!   a digest gets nothing from another repository's download.
//! - access (namespace, repository, digest): that namespace's credentials
//!   (or anonymous access) were accepted by the registry for the manifest.
//!   Without it, a cached module is used only after the registry has said
//!   yes to the namespace ([`super::oci`] asks); with it, no network.

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

    fn record_path(&self, kind: &str, key: &str) -> PathBuf {
        let name = sha256_digest(key.as_bytes());
        let hex = name.trim_start_matches("sha256:");
        self.dir.join(kind).join(hex)
    }

    fn has_record(&self, kind: &str, key: &str) -> bool {
        let path = self.record_path(kind, key);
        // The key is in the file: a hash collision cannot grant anything.
        let found = std::fs::read_to_string(&path).is_ok_and(|text| text == key);
        if found && let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        found
    }

    fn write_record(&self, kind: &str, key: &str) -> std::io::Result<()> {
        let path = self.record_path(kind, key);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(key.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    fn origin_key(repository: &str, digest: &str) -> String {
        format!("{repository}\n{digest}\n")
    }

    fn access_key(namespace: &str, repository: &str, digest: &str) -> String {
        format!("{namespace}\n{repository}\n{digest}\n")
    }

    /// Whether `digest` was downloaded from `repository` (`registry/path`).
    pub fn has_origin(&self, repository: &str, digest: &str) -> bool {
        self.has_record("origin", &Self::origin_key(repository, digest))
    }

    pub fn record_origin(&self, repository: &str, digest: &str) -> std::io::Result<()> {
        self.write_record("origin", &Self::origin_key(repository, digest))
    }

    /// Whether the registry accepted `namespace`'s credentials (or anonymous
    /// access) for `digest` in `repository`.
    pub fn has_access(&self, namespace: &str, repository: &str, digest: &str) -> bool {
        self.has_record("access", &Self::access_key(namespace, repository, digest))
    }

    pub fn record_access(
        &self,
        namespace: &str,
        repository: &str,
        digest: &str,
    ) -> std::io::Result<()> {
        self.write_record("access", &Self::access_key(namespace, repository, digest))
    }

    /// Removes entries not in `keep` and unused for longer than `older_than`,
    /// and records unused for as long (a record of a module still run is
    /// touched by every run). Returns how many blobs went.
    pub fn sweep(&self, keep: &HashSet<String>, older_than: Duration) -> usize {
        let now = SystemTime::now();
        let is_old = |e: &std::fs::DirEntry| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > older_than)
        };
        for kind in ["origin", "access"] {
            for e in std::fs::read_dir(self.dir.join(kind))
                .into_iter()
                .flatten()
                .flatten()
            {
                if is_old(&e) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join("sha256")) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.contains(&format!("sha256:{name}")) {
                continue;
            }
            if is_old(&e) && std::fs::remove_file(e.path()).is_ok() {
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

    #[test]
    fn records_are_per_repository_and_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().to_path_buf());
        let d = sha256_digest(b"module");
        let repo = "registry.example/team-a/mapping";
        assert!(!store.has_origin(repo, &d));
        store.record_origin(repo, &d).unwrap();
        assert!(store.has_origin(repo, &d));
        assert!(!store.has_origin("evil.example/team-a/mapping", &d));
        store.record_access("team-a", repo, &d).unwrap();
        assert!(store.has_access("team-a", repo, &d));
        assert!(!store.has_access("team-b", repo, &d));
        assert!(!store.has_access("team-a", "registry.example/team-b/x", &d));
        std::thread::sleep(Duration::from_millis(20));
        store.sweep(&HashSet::new(), Duration::from_millis(1));
        assert!(
            !store.has_access("team-a", repo, &d),
            "old records are swept"
        );
        assert!(!store.has_origin(repo, &d));
    }
}
