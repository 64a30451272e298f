//! Limits on every guest call, enforced in [`super::sandbox`] and
//! [`super::guest`]. A guest that crosses one fails its batch with a typed
//! error; the host goes on.

use std::time::Duration;

/// Linear memory a guest may grow to, per call.
pub const DEFAULT_MAX_MEMORY: usize = 64 << 20;
/// Wall time a guest may run on one batch (enforced by epoch interruption).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Data points one batch may turn into.
pub const DEFAULT_MAX_OUTPUT_POINTS: usize = 5_000_000;
/// Bytes of strings (string table, names, descriptions) in one output.
pub const DEFAULT_MAX_OUTPUT_STRING_BYTES: usize = 64 << 20;
/// How often the engine's epoch advances: the deadline's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Table elements (function references) a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Log lines a guest may write per call; more are counted, not written.
pub const MAX_LOG_LINES_PER_CALL: usize = 100;
/// A longer guest log message is cut to this many bytes.
pub const MAX_LOG_MESSAGE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_memory: usize,
    pub deadline: Duration,
    pub max_output_points: usize,
    pub max_output_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: DEFAULT_MAX_MEMORY,
            deadline: DEFAULT_DEADLINE,
            max_output_points: DEFAULT_MAX_OUTPUT_POINTS,
            max_output_string_bytes: DEFAULT_MAX_OUTPUT_STRING_BYTES,
        }
    }
}

impl Limits {
    /// Epoch ticks for the deadline, plus one for the tick already under way.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos().max(1);
        (self.deadline.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}
