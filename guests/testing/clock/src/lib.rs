//! Test guest: reads the wall clock, which the sandbox does not grant. The
//! host must refuse it at load time.

use kusto_metrics_guest::{Batch, ConfigError, Output, Requirements, TransformError};

struct Clock;

impl kusto_metrics_guest::Guest for Clock {
    fn validate(_config: String) -> Result<Requirements, ConfigError> {
        Ok(Requirements {
            columns: Vec::new(),
            event_time_column: None,
        })
    }

    fn transform(_config: String, _batch: Batch) -> Result<Output, TransformError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Err(TransformError::column("clock", format!("it is {now}")))
    }
}

kusto_metrics_guest::export!(Clock);
