//! Guests by content: a MetricsExporter's module is looked up by the digest
//! of its bytes, so an edited `file` module is picked up at the next run
//! and an unchanged one is never compiled twice.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::config::transform_file::ModuleRef;
use crate::transform::{Guest, Runtime, TransformError, builtin};

pub struct GuestCache {
    runtime: Runtime,
    by_digest: Mutex<HashMap<[u8; 32], Guest>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestLoadError {
    #[error("unknown builtin module `{0}` (builtin modules: column-mapping)")]
    UnknownBuiltin(String),
    #[error("reading guest module {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] TransformError),
}

impl GuestCache {
    pub fn new(runtime: Runtime) -> Self {
        GuestCache {
            runtime,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// Blocking: may compile. Call from a blocking thread.
    pub fn get(&self, module: Option<&ModuleRef>) -> Result<Guest, GuestLoadError> {
        let (name, bytes): (String, std::borrow::Cow<'static, [u8]>) = match module {
            None => (
                builtin::COLUMN_MAPPING_NAME.to_string(),
                builtin::COLUMN_MAPPING.into(),
            ),
            Some(ModuleRef::Builtin(name)) => match builtin::lookup(name) {
                Some(bytes) => (name.clone(), bytes.into()),
                None => return Err(GuestLoadError::UnknownBuiltin(name.clone())),
            },
            Some(ModuleRef::File(path)) => {
                let bytes = std::fs::read(path).map_err(|source| GuestLoadError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                (name, bytes.into())
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        // Held while loading, so exporters starting together compile a
        // module once rather than each on its own.
        let mut guests = self.lock();
        if let Some(guest) = guests.get(&digest) {
            return Ok(guest.clone());
        }
        let guest = self.runtime.load(&name, &bytes)?;
        tracing::info!(guest = %name, digest = %guest.provenance().digest, from_cache = guest.provenance().from_cache, "guest loaded");
        guests.insert(digest, guest.clone());
        Ok(guest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Guest>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }
}
