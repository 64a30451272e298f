//! A loaded guest: instantiation prepared once, a fresh store per call, so a
//! guest never carries state from one batch to the next.

use std::sync::Arc;

use wasmtime::{Engine, Store, Trap};

use super::counters;
use super::error::{TransformError, describe};
use super::limits::{
    Limits, MAX_GUEST_ERROR_BYTES, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, cut,
};
use super::output_check::{self, SkipReasons};
use super::sandbox::{GuestState, ResourceLimit};
use super::slots::CallSlots;
use crate::wit::{Batch, Output, Requirements, Transformer, TransformerPre};

/// How wasmtime says that lifting ran out of hostcall fuel (its error type
/// for it is private, so the text is all there is to go by).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";
/// How wasmtime says that a store's instance, memory or table count would
/// pass the limiter's.
const RESOURCE_COUNT_EXCEEDED: &str = "resource limit exceeded";

/// Where a guest's code came from, for logs and status.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    pub size: usize,
    /// True when the compiled form came from the on-disk cache.
    pub from_cache: bool,
}

#[derive(Clone)]
pub struct Guest {
    name: Arc<str>,
    provenance: Provenance,
    engine: Engine,
    pre: TransformerPre<GuestState>,
    limits: Limits,
    /// The distinct skip reasons this guest has reported, kept bounded.
    skip_reasons: Arc<SkipReasons>,
    slots: Arc<CallSlots>,
}

impl Guest {
    pub(super) fn new(
        name: &str,
        provenance: Provenance,
        engine: Engine,
        pre: TransformerPre<GuestState>,
        limits: Limits,
        slots: Arc<CallSlots>,
    ) -> Self {
        Guest {
            name: name.into(),
            provenance,
            engine,
            pre,
            limits,
            skip_reasons: Arc::default(),
            slots,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Checks a configuration (JSON text) and returns the columns it reads.
    pub fn validate(&self, config: &str) -> Result<Requirements, TransformError> {
        let result = self.call("configuration check", |store, instance| {
            instance
                .adx_mon_metrics_transform_transform()
                .call_validate(store, config)
        })?;
        result.map_err(|e| TransformError::Config {
            guest: self.name.to_string(),
            field: e.field.map(|f| guest_text(&f)),
            message: guest_text(&e.message),
        })
    }

    /// Runs the guest on one batch and checks what it returns.
    pub fn transform(&self, config: &str, batch: &Batch) -> Result<Output, TransformError> {
        let label = batch.label();
        let result = self.call(&label, |store, instance| {
            instance
                .adx_mon_metrics_transform_transform()
                .call_transform(store, config, batch)
        })?;
        let mut output = result.map_err(|e| TransformError::Rejected {
            guest: self.name.to_string(),
            batch: label.clone(),
            column: e.column.map(|c| guest_text(&c)),
            row: e.row,
            message: guest_text(&e.message),
        })?;
        output_check::check(&output, &self.limits).map_err(|e| {
            let (guest, batch) = (self.name.to_string(), label);
            match e {
                output_check::Refusal::TooLarge(what) => {
                    TransformError::OutputTooLarge { guest, batch, what }
                }
                output_check::Refusal::Malformed(what) => {
                    TransformError::MalformedOutput { guest, batch, what }
                }
            }
        })?;
        self.skip_reasons.normalize(&mut output);
        Ok(output)
    }

    fn call<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store<GuestState>, &Transformer) -> wasmtime::Result<R>,
    ) -> Result<R, TransformError> {
        let _slot = self.slots.acquire();
        let mut store = Store::new(
            &self.engine,
            GuestState::new(self.name.clone(), &self.limits),
        );
        store.limiter(|state| state.limiter());
        // What lifting the output may allocate on the host, set from our
        // limits rather than left to wasmtime's default.
        store.set_hostcall_fuel(self.limits.max_output_bytes);
        store.set_epoch_deadline(self.limits.deadline_ticks());
        store.epoch_deadline_trap();
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Err(self.failure(e, &store, what, true)),
        };
        f(&mut store, &instance).map_err(|e| self.failure(e, &store, what, false))
    }

    fn failure(
        &self,
        e: wasmtime::Error,
        store: &Store<GuestState>,
        what: &str,
        instantiating: bool,
    ) -> TransformError {
        let guest = self.name.to_string();
        let batch = what.to_string();
        let sandbox_limit = |limit: String| TransformError::SandboxLimit {
            guest: guest.clone(),
            batch: batch.clone(),
            limit,
        };
        match store.data().limit_hit() {
            Some(ResourceLimit::Memory) => {
                return TransformError::OutOfMemory {
                    guest,
                    batch,
                    limit: self.limits.max_memory,
                };
            }
            Some(ResourceLimit::TableElements) => {
                return sandbox_limit(format!("table elements ({MAX_TABLE_ELEMENTS})"));
            }
            None => {}
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return TransformError::Timeout {
                guest,
                batch,
                deadline: self.limits.deadline,
            };
        }
        let reason = describe(&e);
        if reason.contains(HOSTCALL_FUEL_EXHAUSTED) {
            return TransformError::OutputTooLarge {
                guest,
                batch,
                what: format!(
                    "lifting it out of the guest would take more than the limit of {} bytes",
                    self.limits.max_output_bytes
                ),
            };
        }
        if reason.contains(RESOURCE_COUNT_EXCEEDED) {
            return sandbox_limit(format!(
                "core instances ({MAX_INSTANCES}), memories ({MAX_MEMORIES}) or tables ({MAX_TABLES}): {reason}"
            ));
        }
        // A trap's text can carry guest-chosen names (its name section).
        let reason = guest_text(&reason);
        if instantiating {
            TransformError::Instantiate { guest, reason }
        } else {
            TransformError::Trap {
                guest,
                batch,
                trap: reason,
            }
        }
    }
}

/// Guest-chosen text on its way to logs, metrics or status: cut to
/// [`MAX_GUEST_ERROR_BYTES`] and counted when it was cut.
fn guest_text(text: &str) -> String {
    let (text, was_cut) = cut(text, MAX_GUEST_ERROR_BYTES);
    if was_cut {
        counters::text_cut("error");
    }
    text
}
