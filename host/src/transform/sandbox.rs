//! What a guest may touch: logging, and the WASI interfaces that Rust's std
//! links into every wasm32-wasip2 program, backed by a context that grants
//! nothing (no preopened folders, no environment, no arguments, stdio
//! discarded). Anything else a component imports is refused before it runs.

use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::counters::{self, COUNTERS};
use super::error::TransformError;
use super::limits::{
    Limits, MAX_INSTANCES, MAX_LOG_LINES_PER_CALL, MAX_LOG_MESSAGE_BYTES, MAX_MEMORIES,
    MAX_TABLE_ELEMENTS, MAX_TABLES, TABLE_ELEMENT_BYTES, cut,
};
use crate::wit::{self, LogLevel};

/// Import names a guest may have, by prefix (besides our own `log` and
/// `types` at this host's contract version). std's panic and environment
/// paths pull in the WASI cli and io interfaces; the context behind them is
/// empty, so they give nothing away.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "wasi:cli/environment@",
    "wasi:cli/exit@",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:cli/terminal-input@",
    "wasi:cli/terminal-output@",
    "wasi:cli/terminal-stdin@",
    "wasi:cli/terminal-stdout@",
    "wasi:cli/terminal-stderr@",
    "wasi:io/error@",
    "wasi:io/streams@",
    "wasi:io/poll@",
];

/// Per-call state of one guest instance.
pub struct GuestState {
    guest: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    log_lines: usize,
}

impl GuestState {
    pub fn new(guest: Arc<str>, limits: &Limits) -> Self {
        GuestState {
            guest,
            // The builder's defaults: no args, no env, no preopens, stdin
            // empty, stdout/stderr discarded, no sockets allowed.
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limiter: GuestLimiter {
                max_memory: limits.max_memory,
                ..GuestLimiter::default()
            },
            log_lines: 0,
        }
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Which limit of the store's resources a failed call ran into.
    pub fn limit_hit(&self) -> Option<ResourceLimit> {
        self.limiter.hit
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::adx_mon::metrics_transform::log::Host for GuestState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            COUNTERS.log_lines_dropped.inc();
            if self.log_lines == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(guest = %self.guest, "guest log limit reached; further lines of this call are dropped");
            }
            return;
        }
        let (message, was_cut) = cut(&message, MAX_LOG_MESSAGE_BYTES);
        if was_cut {
            counters::text_cut("log");
        }
        let guest = &*self.guest;
        match level {
            LogLevel::Trace => tracing::trace!(guest, "{message}"),
            LogLevel::Debug => tracing::debug!(guest, "{message}"),
            LogLevel::Info => tracing::info!(guest, "{message}"),
            LogLevel::Warn => tracing::warn!(guest, "{message}"),
            LogLevel::Error => tracing::error!(guest, "{message}"),
        }
    }
}

impl wit::adx_mon::metrics_transform::types::Host for GuestState {}

/// A limit on a store's resources that a call ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceLimit {
    /// Linear memories and tables together, in bytes.
    Memory,
    TableElements,
}

/// Caps the store as a whole: the bytes of every linear memory and table
/// together (a component may hold many core instances, each with its own
/// memory), and how many instances, memories and tables it creates (those
/// counts wasmtime enforces itself, from [`ResourceLimiter::instances`] and
/// its siblings). Records which byte or element limit a failed call hit.
#[derive(Default)]
struct GuestLimiter {
    max_memory: usize,
    /// Bytes of every memory and table of the store.
    used: usize,
    table_elements: usize,
    /// Growth allowed but not yet known to have happened: taken back when
    /// wasmtime reports that it failed.
    pending_memory: usize,
    pending_elements: usize,
    hit: Option<ResourceLimit>,
}

impl GuestLimiter {
    fn refuse(&mut self, limit: ResourceLimit, message: String) -> wasmtime::Result<bool> {
        self.hit = Some(limit);
        // An error (not `false`) traps at once instead of letting the
        // guest's allocator turn it into an abort with a vaguer message.
        Err(wasmtime::Error::msg(message))
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used.saturating_add(growth);
        if total > self.max_memory {
            return self.refuse(
                ResourceLimit::Memory,
                format!(
                    "memory limit of {} bytes reached: the guest's memories and tables would hold {total}",
                    self.max_memory
                ),
            );
        }
        self.used = total;
        self.pending_memory = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used = self.used.saturating_sub(self.pending_memory);
        self.pending_memory = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let elements = self.table_elements.saturating_add(growth);
        if elements > MAX_TABLE_ELEMENTS {
            return self.refuse(
                ResourceLimit::TableElements,
                format!(
                    "table limit of {MAX_TABLE_ELEMENTS} elements reached (asked for {elements})"
                ),
            );
        }
        let bytes = growth.saturating_mul(TABLE_ELEMENT_BYTES);
        let total = self.used.saturating_add(bytes);
        if total > self.max_memory {
            return self.refuse(
                ResourceLimit::Memory,
                format!(
                    "memory limit of {} bytes reached: the guest's memories and tables would hold {total}",
                    self.max_memory
                ),
            );
        }
        self.used = total;
        self.table_elements = elements;
        self.pending_elements = growth;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements = self.table_elements.saturating_sub(self.pending_elements);
        self.used = self
            .used
            .saturating_sub(self.pending_elements.saturating_mul(TABLE_ELEMENT_BYTES));
        self.pending_elements = 0;
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// The linker every guest is instantiated against.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wit::Transformer::add_to_linker::<GuestState, wasmtime::component::HasSelf<GuestState>>(
        &mut linker,
        |state| state,
    )?;
    Ok(linker)
}

/// Refuses a component built for another version of the contract (naming
/// it), one that does not export our transform interface, or one that
/// imports what the sandbox does not grant.
pub fn check_component(
    engine: &Engine,
    guest: &str,
    component: &Component,
) -> Result<(), TransformError> {
    let ty = component.component_type();
    if ty.get_export(engine, wit::TRANSFORM_EXPORT).is_none() {
        let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        let prefix = format!("{}/transform@", wit::PACKAGE);
        let reason = match exports.iter().find_map(|e| e.strip_prefix(&prefix)) {
            Some(version) => format!(
                "it was built for contract {version} and this host runs {}: rebuild it \
                 against wit/v{} (the Rust SDK kusto-metrics-guest {}), see docs/custom-guest.md",
                wit::CONTRACT_VERSION,
                major_minor(wit::CONTRACT_VERSION),
                major_minor(wit::CONTRACT_VERSION),
            ),
            None => format!(
                "it does not export `{}` (it exports: {})",
                wit::TRANSFORM_EXPORT,
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        };
        return Err(TransformError::IncompatibleContract {
            guest: guest.to_string(),
            reason,
        });
    }
    let own = [
        format!("{}/log@{}", wit::PACKAGE, wit::CONTRACT_VERSION),
        format!("{}/types@{}", wit::PACKAGE, wit::CONTRACT_VERSION),
    ];
    for (name, _) in ty.imports(engine) {
        let allowed = own.iter().any(|o| o == name)
            || ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p));
        if !allowed {
            return Err(TransformError::ForbiddenImport {
                guest: guest.to_string(),
                import: name.to_string(),
            });
        }
    }
    Ok(())
}

/// `0.2` of `0.2.0`.
fn major_minor(version: &str) -> &str {
    version.rsplit_once('.').map_or(version, |(head, _)| head)
}
