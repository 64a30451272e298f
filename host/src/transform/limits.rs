//! Limits on every guest call, enforced in [`super::sandbox`] (memory,
//! instances, tables, logs), [`super::guest`] (deadline, lifting) and
//! [`super::output_check`] (what the output may cost). A guest that crosses
//! one fails its batch with a typed error naming the guest and the limit;
//! the host goes on.
//!
//! # What one call can cost the host
//!
//! Host memory for one guest call is bounded by construction:
//!
//! ```text
//! linear memories + tables of the store       ≤ max_memory        (summed, not per memory)
//! + the lifted output (strings, lists)         ≤ max_output_bytes  (wasmtime's hostcall fuel)
//! + per-call bookkeeping                       ≤ a few KiB per instance × MAX_INSTANCES
//! ```
//!
//! and what the output can cost afterwards is refused before it is spent:
//! encoding writes one request (≤ the exporter's request size limit) at a
//! time and [`Limits::max_encoded_bytes`] caps the expanded size of the
//! whole output (every point with its attribute set, as the encoders write
//! it), so a small output that expands (one large attribute shared by many
//! points) is refused instead of encoded. With the defaults: 64 MiB +
//! 256 MiB + under 1 MiB per call, and at most 256 MiB sent per batch.

use std::time::Duration;

/// Linear memory and tables a guest may hold, summed over every memory and
/// table of its store, per call.
pub const DEFAULT_MAX_MEMORY: usize = 64 << 20;
/// Wall time a guest may run on one batch (enforced by epoch interruption).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Data points one batch may turn into.
pub const DEFAULT_MAX_OUTPUT_POINTS: usize = 5_000_000;
/// Bytes of strings (string table, names, descriptions, units) in one
/// output.
pub const DEFAULT_MAX_OUTPUT_STRING_BYTES: usize = 64 << 20;
/// Bytes the host may allocate lifting one output out of the guest: every
/// string's bytes and every list element at its host size. Set as wasmtime's
/// hostcall fuel; 5 M gauge points lift to about 140 MB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 256 << 20;
/// Bytes one output may expand to when encoded: every point with its
/// attributes, as OTLP protobuf writes it (and as Prometheus series repeat
/// labels per bucket). A typical point encodes to about 120 bytes, so this
/// holds about 2 M of them: 20 per row of the default 100,000-row batch.
pub const DEFAULT_MAX_ENCODED_BYTES: usize = 256 << 20;
/// Attribute sets in one output.
pub const MAX_OUTPUT_ATTRIBUTE_SETS: usize = 5_000_000;
/// Metrics (distinct names) in one output.
pub const MAX_OUTPUT_METRICS: usize = 100_000;
/// Skip reasons in one output; guests use a handful.
pub const MAX_OUTPUT_SKIP_REASONS: usize = 256;
/// Bucket bounds one histogram point may have (OTLP collectors commonly
/// refuse more than a few hundred).
pub const MAX_HISTOGRAM_BUCKETS: usize = 4096;
/// Core instances one component may create per call. A component built
/// from Rust or JavaScript has fewer than 20 (its module and the adapter
/// shims).
pub const MAX_INSTANCES: usize = 64;
/// Linear memories per component per call.
pub const MAX_MEMORIES: usize = 8;
/// Tables per component per call.
pub const MAX_TABLES: usize = 64;
/// Table elements (function references) summed over every table of a
/// store; each also counts against the memory limit at its host size.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Host bytes one table element is counted as against the memory limit.
pub const TABLE_ELEMENT_BYTES: usize = 16;
/// Bytes of each pooled linear memory kept resident between calls (zeroed
/// in place rather than given back and faulted in again): the default guest
/// touches about 20 MiB on a default 100,000-row batch, and 16 MiB left a
/// third of a call in page faults. Costs up to this much RSS per call slot.
pub const LINEAR_MEMORY_KEEP_RESIDENT: usize = 32 << 20;
/// How often the engine's epoch advances: the deadline's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Log lines a guest may write per call; more are counted, not written.
pub const MAX_LOG_LINES_PER_CALL: usize = 100;
/// A longer guest log message is cut to this many bytes.
pub const MAX_LOG_MESSAGE_BYTES: usize = 4096;
/// A longer guest error message (or column or field name in one) is cut to
/// this many bytes before it reaches logs, metrics or status.
pub const MAX_GUEST_ERROR_BYTES: usize = 1024;
/// A longer skip reason is cut to this many bytes.
pub const MAX_SKIP_REASON_BYTES: usize = 64;
/// Distinct skip reasons the host keeps per guest for its counters and
/// logs; later ones are counted as [`OTHER_SKIP_REASON`].
pub const MAX_SKIP_REASONS_PER_GUEST: usize = 16;
/// What reasons past [`MAX_SKIP_REASONS_PER_GUEST`] are counted as.
pub const OTHER_SKIP_REASON: &str = "other";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_memory: usize,
    pub deadline: Duration,
    pub max_output_points: usize,
    pub max_output_string_bytes: usize,
    pub max_output_bytes: usize,
    pub max_encoded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: DEFAULT_MAX_MEMORY,
            deadline: DEFAULT_DEADLINE,
            max_output_points: DEFAULT_MAX_OUTPUT_POINTS,
            max_output_string_bytes: DEFAULT_MAX_OUTPUT_STRING_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_encoded_bytes: DEFAULT_MAX_ENCODED_BYTES,
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

/// `text` cut to at most `max` bytes on a character boundary, with `...`
/// added when it was cut; `true` when it was.
pub fn cut(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (format!("{}...", &text[..end]), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("abc", 3), ("abc".to_string(), false));
        assert_eq!(cut("abcd", 3), ("abc...".to_string(), true));
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(cut("aé", 2), ("a...".to_string(), true));
    }
}
