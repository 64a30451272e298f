//! Guests compiled into the binary.

/// The spec's column mapping (guests/column-mapping), built by build.rs.
pub const COLUMN_MAPPING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/column_mapping.wasm"));

/// The name `module: {builtin: ...}` uses for it.
pub const COLUMN_MAPPING_NAME: &str = "column-mapping";

/// The bytes of a builtin guest by name.
pub fn lookup(name: &str) -> Option<&'static [u8]> {
    (name == COLUMN_MAPPING_NAME).then_some(COLUMN_MAPPING)
}
