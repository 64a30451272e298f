//! Building [`Requirements`]: what a configuration reads from a table.

use crate::{ColumnRequirement, KustoType, Requirements};

impl KustoType {
    /// `int` and `long`: what [`crate::Batch::long`] reads.
    pub const INTEGERS: &'static [KustoType] = &[KustoType::Int, KustoType::Long];
    /// `int`, `long` and `real`: what [`crate::Batch::number`] reads.
    pub const NUMBERS: &'static [KustoType] = &[KustoType::Int, KustoType::Long, KustoType::Real];
    /// `string`, `guid` and `dynamic` (as JSON text): what
    /// [`crate::Batch::string`] reads.
    pub const TEXT: &'static [KustoType] =
        &[KustoType::String, KustoType::Guid, KustoType::Dynamic];
    /// Any type: what [`crate::Batch::label`] reads.
    pub const ANY: &'static [KustoType] = &[];
}

// wit-bindgen generates the type, so its derives are not ours to add.
#[allow(clippy::derivable_impls)]
impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            columns: Vec::new(),
            event_time_column: None,
        }
    }
}

impl Requirements {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads column `name`, which must have one of `types` (an empty list
    /// accepts any type, as [`KustoType::ANY`]). A column listed twice keeps
    /// the types both lists accept.
    pub fn column(mut self, name: &str, types: &[KustoType]) -> Self {
        match self.columns.iter_mut().find(|c| c.name == name) {
            Some(c) if c.types.is_empty() => c.types = types.to_vec(),
            Some(c) if !types.is_empty() => c.types.retain(|t| types.contains(t)),
            Some(_) => {}
            None => self.columns.push(ColumnRequirement {
                name: name.to_string(),
                types: types.to_vec(),
            }),
        }
        self
    }

    /// Reads each of `names` (a list, or an `Option` of one), of one of
    /// `types`.
    pub fn columns<I>(mut self, names: I, types: &[KustoType]) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        for name in names {
            self = self.column(name.as_ref(), types);
        }
        self
    }

    /// Reads the `datetime` column `name` as each row's event time: the
    /// host reads a table that keeps no ingestion times by it.
    pub fn event_time(mut self, name: &str) -> Self {
        self = self.column(name, &[KustoType::Datetime]);
        self.event_time_column = Some(name.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_listed_twice_keep_what_both_accept() {
        let r = Requirements::new()
            .column("n", KustoType::NUMBERS)
            .column("n", KustoType::INTEGERS)
            .column("l", KustoType::ANY)
            .column("l", KustoType::TEXT)
            .columns(Some("o".to_string()), KustoType::INTEGERS)
            .columns(None::<&str>, KustoType::INTEGERS)
            .event_time("t");
        let types = |name: &str| {
            r.columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.types.clone())
        };
        assert_eq!(types("n"), Some(KustoType::INTEGERS.to_vec()));
        assert_eq!(types("l"), Some(KustoType::TEXT.to_vec()));
        assert_eq!(types("t"), Some(vec![KustoType::Datetime]));
        assert_eq!(r.event_time_column.as_deref(), Some("t"));
        assert_eq!(types("o"), Some(KustoType::INTEGERS.to_vec()));
        assert_eq!(r.columns.len(), 4);
    }
}
