//! Test guest built for contract 0.1.0 (a frozen copy of its WIT sits
//! beside it). A host on another version must refuse it at load, naming
//! the version it was built for.

wit_bindgen::generate!({ path: "wit", world: "transformer" });

use adx_mon::metrics_transform::types::{Batch, ConfigError, Output, Requirements, TransformError};
use exports::adx_mon::metrics_transform::transform::Guest;

struct Old;

impl Guest for Old {
    fn validate(_config: String) -> Result<Requirements, ConfigError> {
        Ok(Requirements {
            columns: Vec::new(),
        })
    }

    fn transform(_config: String, _batch: Batch) -> Result<Output, TransformError> {
        Ok(Output {
            strings: Vec::new(),
            attributes: Vec::new(),
            attribute_set_ends: Vec::new(),
            metrics: Vec::new(),
            skipped: Vec::new(),
        })
    }
}

export!(Old);
