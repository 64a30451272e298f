//! One wasmtime engine per process, the linker that goes with it, and the
//! epoch ticker that makes deadlines work.
//!
//! Instances come from wasmtime's pooling allocator: a fresh store per batch
//! otherwise maps, faults in and unmaps its linear memory every call, which
//! measured at ~40% of a 100,000-row call's time in the kernel. Pooled
//! memories are reused with their first pages kept resident (zeroed with
//! `memset` instead of `madvise`). The pool has [`call_slots`] slots; that
//! many guest calls run at once and further ones wait for a slot.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::CompileCache;
use super::error::{TransformError, describe, to_anyhow};
use super::guest::{Guest, Provenance};
use super::limits::{
    EPOCH_TICK, LINEAR_MEMORY_KEEP_RESIDENT, Limits, MAX_INSTANCES, MAX_MEMORIES,
    MAX_TABLE_ELEMENTS, MAX_TABLES,
};
use super::sandbox::{self, GuestState};
use super::slots::CallSlots;
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
    slots: Arc<CallSlots>,
}

/// How wasmtime words a component that exceeds a pool slot's counts.
const POOL_REFUSAL: &str = "in the pooling allocator";

/// Guest calls that run at once: two per core, so a core never waits for a
/// call while another is being set up, within a pool that stays small.
pub fn call_slots() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(4, 64) as u32
}

fn pool(limits: &Limits, slots: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * MAX_INSTANCES as u32)
        .total_memories(slots * MAX_MEMORIES as u32)
        .total_tables(slots * MAX_TABLES as u32)
        .max_core_instances_per_component(MAX_INSTANCES as u32)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        .table_elements(MAX_TABLE_ELEMENTS)
        // One memory may take the whole budget; the limiter keeps their sum
        // within it.
        .max_memory_size(limits.max_memory)
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT.min(limits.max_memory))
        .max_unused_warm_slots(slots);
    pool
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept between runs (`None`
    /// compiles every time).
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> anyhow::Result<Self> {
        let slots = call_slots();
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(&limits, slots)));
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
                slots: Arc::new(CallSlots::new(slots as usize)),
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
            Component::new(engine, bytes).map_err(|e| {
                let reason = describe(&e);
                // The pool refuses a component with more instances, memories
                // or tables than a slot holds before anything runs.
                if reason.contains(POOL_REFUSAL) {
                    TransformError::TooManyResources {
                        guest: name.to_string(),
                        reason,
                    }
                } else {
                    TransformError::Compile {
                        guest: name.to_string(),
                        reason,
                    }
                }
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
            self.inner.slots.clone(),
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
