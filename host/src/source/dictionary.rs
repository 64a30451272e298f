//! String columns dictionary encoded while they are built: each distinct
//! value stored once, one index per row. Label and name columns repeat a
//! few dozen values over millions of rows, and a guest that gets indices
//! resolves a row's labels by array lookups instead of hashing strings
//! (the contract's `text-dictionary`). A column whose values turn out not
//! to repeat is turned back into a plain arena early, so it costs one hash
//! per value for its first rows only.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use crate::wit::{TextArena, TextDictionary};

/// Rows after which a column stays a dictionary only if its values repeat.
const PROBE_ROWS: usize = 1024;
/// A column with more distinct values than this is stored plain.
pub const MAX_DISTINCT: usize = 1 << 16;

pub struct DictionaryBuilder {
    values: String,
    offsets: Vec<u32>,
    indices: Vec<u32>,
    table: HashTable<u32>,
    hasher: FixedState,
}

/// What [`DictionaryBuilder::push`] did.
pub enum Pushed {
    Stored,
    /// The values do not repeat enough (or the arena would pass 4 GiB):
    /// the caller should store the column plain from now on.
    GiveUp,
}

impl Default for DictionaryBuilder {
    fn default() -> Self {
        DictionaryBuilder {
            values: String::new(),
            offsets: vec![0],
            indices: Vec::new(),
            table: HashTable::new(),
            hasher: FixedState::with_seed(0x5eed),
        }
    }
}

impl DictionaryBuilder {
    fn value(&self, index: u32) -> &str {
        let i = index as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&start), Some(&end)) => {
                self.values.get(start as usize..end as usize).unwrap_or("")
            }
            _ => "",
        }
    }

    #[inline]
    pub fn push(&mut self, s: &str) -> Pushed {
        let hash = self.hasher.hash_one(s);
        let found = {
            let (values, offsets) = (&self.values, &self.offsets);
            self.table
                .find(hash, |&i| {
                    let i = i as usize;
                    values.get(offsets[i] as usize..offsets[i + 1] as usize) == Some(s)
                })
                .copied()
        };
        let index = match found {
            Some(i) => i,
            None => {
                let distinct = self.offsets.len() - 1;
                let rows = self.indices.len() + 1;
                let end = self.values.len() + s.len();
                if distinct >= MAX_DISTINCT
                    || (rows > PROBE_ROWS && distinct * 2 > rows)
                    || u32::try_from(end).is_err()
                {
                    return Pushed::GiveUp;
                }
                self.values.push_str(s);
                self.offsets.push(end as u32);
                let index = distinct as u32;
                let (values, offsets, hasher) = (&self.values, &self.offsets, &self.hasher);
                self.table.insert_unique(hash, index, |&i| {
                    let i = i as usize;
                    hasher.hash_one(&values[offsets[i] as usize..offsets[i + 1] as usize])
                });
                index
            }
        };
        self.indices.push(index);
        Pushed::Stored
    }

    pub fn truncate(&mut self, rows: usize) {
        self.indices.truncate(rows);
    }

    /// The rows as a plain arena.
    pub fn into_plain(self) -> (String, Vec<u32>) {
        let mut data = String::new();
        let mut offsets = Vec::with_capacity(self.indices.len() + 1);
        offsets.push(0);
        for &i in &self.indices {
            data.push_str(self.value(i));
            offsets.push(data.len() as u32);
        }
        (data, offsets)
    }

    pub fn finish(mut self) -> TextDictionary {
        if self.offsets.len() == 1 && !self.indices.is_empty() {
            // Only nulls (index 0): every index must name a value.
            self.offsets.push(0);
        }
        TextDictionary {
            values: TextArena {
                data: self.values,
                offsets: self.offsets,
            },
            indices: self.indices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_are_stored_once() {
        let mut d = DictionaryBuilder::default();
        for s in ["a", "b", "a", "", "b", "a"] {
            assert!(matches!(d.push(s), Pushed::Stored));
        }
        let dict = d.finish();
        assert_eq!(dict.values.offsets.len() - 1, 3);
        let rows: Vec<&str> = (0..6).map(|r| dict.get(r)).collect();
        assert_eq!(rows, ["a", "b", "a", "", "b", "a"]);
    }

    #[test]
    fn values_that_do_not_repeat_give_up_after_the_probe() {
        let mut d = DictionaryBuilder::default();
        let mut gave_up_at = None;
        for i in 0..10_000 {
            if let Pushed::GiveUp = d.push(&format!("v{i}")) {
                gave_up_at = Some(i);
                break;
            }
        }
        assert_eq!(gave_up_at, Some(PROBE_ROWS));
        let (data, offsets) = d.into_plain();
        assert_eq!(offsets.len(), PROBE_ROWS + 1);
        assert!(data.starts_with("v0v1v2"));
    }
}
