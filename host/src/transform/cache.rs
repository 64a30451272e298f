//! Compiled components on disk, keyed by the component's content digest and
//! by the engine's compatibility hash, so a second start does not compile.
//!
//! `Component::deserialize` runs the machine code it is given, so only a
//! file this cache wrote may reach it: beside each compiled file sits the
//! SHA-256 of its bytes, written after it, and a file whose bytes do not
//! match (truncated, altered, or put there by something else) is compiled
//! again instead of loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::{TransformError, to_anyhow};

pub struct CompileCache {
    dir: PathBuf,
    engine: Engine,
    /// Changes with the wasmtime version and every engine setting that
    /// affects compiled code.
    engine_key: String,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine: engine.clone(),
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}-{}.cwasm", self.engine_key))
    }

    /// The compiled bytes at `path`, when the digest beside them says this
    /// cache wrote them.
    fn read_verified(path: &Path) -> Option<Vec<u8>> {
        let bytes = std::fs::read(path).ok()?;
        let recorded = std::fs::read_to_string(digest_path(path)).ok()?;
        if recorded.trim() == hex::encode(Sha256::digest(&bytes)) {
            Some(bytes)
        } else {
            tracing::warn!(path = %path.display(), "compiled component in the cache does not match the digest written with it; compiling again");
            None
        }
    }

    /// The cached compiled form, or `compile()` and store the result. A cache
    /// that cannot be read or written is logged and bypassed, never fatal.
    pub fn load_or_compile(
        &self,
        digest: &str,
        compile: impl FnOnce() -> Result<Component, TransformError>,
    ) -> Result<(Component, bool), TransformError> {
        let path = self.path_for(digest);
        // Read into memory rather than map the file: a file changed under a
        // mapping (another process, a disk tool) would crash the host.
        if let Some(bytes) = Self::read_verified(&path) {
            // SAFETY: the bytes match the digest this cache wrote beside the
            // file it wrote; wasmtime checks the header and engine
            // compatibility before using the code.
            match unsafe { Component::deserialize(&self.engine, &bytes) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled component in the cache is unusable; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = compile()?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the compile cache");
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(to_anyhow)?;
        std::fs::create_dir_all(&self.dir)?;
        // The digest goes last: a file without one (a crash between the
        // two) is compiled again, never loaded.
        self.write_atomically(path, &bytes)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        self.write_atomically(&digest_path(path), digest.as_bytes())
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        Ok(())
    }
}

/// Where the digest of a compiled file is kept.
fn digest_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// `$XDG_CACHE_HOME/kusto-metrics/components`, else `~/.cache/...`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kusto-metrics").join("components"))
}
