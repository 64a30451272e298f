//! What a guest may touch: logging, and the WASI interfaces that Rust's std
//! links into every wasm32-wasip2 program, backed by a context that grants
//! nothing (no preopened folders, no environment, no arguments, stdio
//! discarded). Anything else a component imports is refused before it runs.

use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::TransformError;
use super::limits::{Limits, MAX_LOG_LINES_PER_CALL, MAX_LOG_MESSAGE_BYTES, MAX_TABLE_ELEMENTS};
use crate::wit::{self, LogLevel};

/// Import names a guest may have, by prefix. std's panic and environment
/// paths pull in the WASI cli and io interfaces; the context behind them is
/// empty, so they give nothing away.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "adx-mon:metrics-transform/log@",
    "adx-mon:metrics-transform/types@",
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
                memory_limit_hit: false,
            },
            log_lines: 0,
        }
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    pub fn memory_limit_hit(&self) -> bool {
        self.limiter.memory_limit_hit
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
            if self.log_lines == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(guest = %self.guest, "guest log limit reached; further lines of this call are dropped");
            }
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut cut = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
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

/// Caps memory and tables, and remembers that the memory cap was the cause
/// when a call fails.
struct GuestLimiter {
    max_memory: usize,
    memory_limit_hit: bool,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_limit_hit = true;
            // An error (not `false`) traps at once instead of letting the
            // guest's allocator turn it into an abort with a vaguer message.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached (asked for {desired})",
                self.max_memory
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
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

/// Refuses a component that imports what the sandbox does not grant, or
/// that does not export our transform interface.
pub fn check_component(
    engine: &Engine,
    guest: &str,
    component: &Component,
) -> Result<(), TransformError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(TransformError::ForbiddenImport {
                guest: guest.to_string(),
                import: name.to_string(),
            });
        }
    }
    if ty.get_export(engine, wit::TRANSFORM_EXPORT).is_none() {
        let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        return Err(TransformError::IncompatibleContract {
            guest: guest.to_string(),
            reason: format!(
                "it does not export `{}` (it exports: {})",
                wit::TRANSFORM_EXPORT,
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        });
    }
    Ok(())
}
