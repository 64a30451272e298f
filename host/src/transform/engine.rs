//! One wasmtime engine per process, the linker that goes with it, and the
//! epoch ticker that makes deadlines work.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::cache::CompileCache;
use super::error::{TransformError, describe, to_anyhow};
use super::guest::{Guest, Provenance};
use super::limits::{EPOCH_TICK, Limits};
use super::sandbox::{self, GuestState};
use crate::wit::TransformerPre;

/// Compiles and instantiates guests. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<CompileCache>,
    limits: Limits,
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept between runs (`None`
    /// compiles every time).
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(to_anyhow)?;
        // Without the ticker no deadline fires and an endless guest would
        // hold its batch forever: refuse to run guests at all.
        start_epoch_ticker(&engine)
            .map_err(|e| anyhow::anyhow!("cannot start the guest deadline ticker: {e}; refusing to run guests without deadlines"))?;
        let linker = sandbox::linker(&engine).map_err(to_anyhow)?;
        let cache = cache_dir.map(|dir| CompileCache::new(dir, &engine));
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                limits,
            }),
        })
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Loads a guest from its component bytes: checks it, compiles it (or
    /// takes the compiled form from the cache) and prepares instantiation.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Guest, TransformError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let engine = &self.inner.engine;
        let compile = || {
            Component::new(engine, bytes).map_err(|e| TransformError::Compile {
                guest: name.to_string(),
                reason: describe(&e),
            })
        };
        let (component, from_cache) = match &self.inner.cache {
            Some(cache) => cache.load_or_compile(&digest, compile)?,
            None => (compile()?, false),
        };
        sandbox::check_component(engine, name, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(TransformerPre::new)
            .map_err(|e| TransformError::IncompatibleContract {
                guest: name.to_string(),
                reason: describe(&e),
            })?;
        Ok(Guest::new(
            name,
            Provenance {
                digest,
                size: bytes.len(),
                from_cache,
            },
            engine.clone(),
            pre,
            self.inner.limits,
        ))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so deadlines can fire.
/// The thread holds only a weak reference and ends with the engine.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}
