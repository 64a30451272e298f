//! A loaded guest: instantiation prepared once, a fresh store per call, so a
//! guest never carries state from one batch to the next.

use std::sync::Arc;

use wasmtime::{Engine, Store, Trap};

use super::error::{TransformError, describe};
use super::limits::Limits;
use super::sandbox::GuestState;
use crate::wit::{Batch, MetricData, Output, Requirements, Transformer, TransformerPre};

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
}

impl Guest {
    pub(super) fn new(
        name: &str,
        provenance: Provenance,
        engine: Engine,
        pre: TransformerPre<GuestState>,
        limits: Limits,
    ) -> Self {
        Guest {
            name: name.into(),
            provenance,
            engine,
            pre,
            limits,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// The same guest with other limits (tests, per-exporter overrides).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
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
            field: e.field,
            message: e.message,
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
        let output = result.map_err(|e| TransformError::Rejected {
            guest: self.name.to_string(),
            batch: label.clone(),
            column: e.column,
            row: e.row,
            message: e.message,
        })?;
        check_output(&output, &self.limits).map_err(|(too_large, what)| {
            let (guest, batch) = (self.name.to_string(), label);
            if too_large {
                TransformError::OutputTooLarge { guest, batch, what }
            } else {
                TransformError::MalformedOutput { guest, batch, what }
            }
        })?;
        Ok(output)
    }

    fn call<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store<GuestState>, &Transformer) -> wasmtime::Result<R>,
    ) -> Result<R, TransformError> {
        let mut store = Store::new(
            &self.engine,
            GuestState::new(self.name.clone(), &self.limits),
        );
        store.limiter(|state| state.limiter());
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
        if store.data().memory_limit_hit() {
            return TransformError::OutOfMemory {
                guest,
                batch,
                limit: self.limits.max_memory,
            };
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return TransformError::Timeout {
                guest,
                batch,
                deadline: self.limits.deadline,
            };
        }
        let reason = describe(&e);
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

/// Checks that every index in the output points where it should and that
/// the output stays within the limits. `Err((too_large, what))`.
fn check_output(out: &Output, limits: &Limits) -> Result<(), (bool, String)> {
    let strings = out.strings.len();
    let sets = out.attribute_set_ends.len();
    let mut string_bytes: usize = out.strings.iter().map(String::len).sum();
    let mut previous_end = 0u32;
    for (i, &end) in out.attribute_set_ends.iter().enumerate() {
        if end < previous_end || end as usize > out.attributes.len() {
            return Err((
                false,
                format!(
                    "attribute set {i} ends at {end}, outside 0..={}",
                    out.attributes.len()
                ),
            ));
        }
        previous_end = end;
    }
    for (i, a) in out.attributes.iter().enumerate() {
        let value_index = match a.value {
            crate::wit::AttributeValue::Str(s) => Some(s),
            _ => None,
        };
        if a.key as usize >= strings || value_index.is_some_and(|s| s as usize >= strings) {
            return Err((
                false,
                format!("attribute {i} refers to a string past the {strings} in the table"),
            ));
        }
    }
    let mut points = 0usize;
    for m in &out.metrics {
        string_bytes += m.name.len() + m.description.len() + m.unit.len();
        if m.name.is_empty() {
            return Err((false, "a metric has an empty name".to_string()));
        }
        let bad_set = |set: u32| set as usize >= sets;
        match &m.data {
            MetricData::Gauge(p) | MetricData::Sum(crate::wit::SumData { points: p, .. }) => {
                let n = p.times.len();
                if p.attribute_sets.len() != n
                    || p.values.len() != n
                    || !(p.start_times.is_empty() || p.start_times.len() == n)
                {
                    return Err((
                        false,
                        format!(
                            "metric `{}`: point lists differ in length (times {n}, attribute sets {}, values {}, start times {})",
                            m.name,
                            p.attribute_sets.len(),
                            p.values.len(),
                            p.start_times.len()
                        ),
                    ));
                }
                if let Some(set) = p.attribute_sets.iter().find(|s| bad_set(**s)) {
                    return Err((
                        false,
                        format!(
                            "metric `{}` refers to attribute set {set} of {sets}",
                            m.name
                        ),
                    ));
                }
                points += n;
            }
            MetricData::Histogram(h) => {
                for p in &h.points {
                    if bad_set(p.attribute_set) {
                        return Err((
                            false,
                            format!(
                                "metric `{}` refers to attribute set {} of {sets}",
                                m.name, p.attribute_set
                            ),
                        ));
                    }
                    if !(p.bucket_counts.is_empty() && p.explicit_bounds.is_empty())
                        && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                    {
                        return Err((
                            false,
                            format!(
                                "metric `{}`: a histogram point has {} bucket counts for {} bounds (want bounds + 1)",
                                m.name,
                                p.bucket_counts.len(),
                                p.explicit_bounds.len()
                            ),
                        ));
                    }
                }
                points += h.points.len();
            }
        }
    }
    if points > limits.max_output_points {
        return Err((
            true,
            format!(
                "{points} data points, more than the limit of {}",
                limits.max_output_points
            ),
        ));
    }
    if string_bytes > limits.max_output_string_bytes {
        return Err((
            true,
            format!(
                "{string_bytes} bytes of strings, more than the limit of {}",
                limits.max_output_string_bytes
            ),
        ));
    }
    Ok(())
}
