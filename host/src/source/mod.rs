//! Where rows come from, and the column-by-column batch they become.
//!
//! - [`chunk`]: what every source yields to the job loop: chunks of rows
//!   with the progress to commit after them.
//! - [`batch`]: builds a [`crate::wit::Batch`] from values arriving row by row.
//! - [`values`]: Kusto scalars spelled as text (datetime, timespan, ...).
//! - [`kusto`]: Azure Data Explorer: the REST client, auth, query windows.
//! - [`kusto_v2`]: Kusto REST v2 responses read straight into columns.
//! - [`input`]: sample files for `test-transform` and local tables: Kusto v2
//!   and v1 responses, typed CSV, JSON Lines.

pub mod batch;
pub mod chunk;
mod csv_table;
pub mod dictionary;
pub mod error;
pub mod input;
pub mod json_values;
mod jsonl;
pub mod kusto;
pub mod kusto_json;
pub mod kusto_v2;
pub mod local_table;
pub mod values;

pub use error::InputError;
pub use input::{InputFormat, read_bytes, read_file};
