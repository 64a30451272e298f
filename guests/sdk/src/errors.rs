//! Building the contract's error records, and turning one into the other.

use crate::{ConfigError, TransformError};

impl ConfigError {
    /// A configuration refused as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            field: None,
            message: message.into(),
        }
    }

    /// A configuration refused for its key `field` (e.g. `valueColumn`,
    /// `buckets[1].upperBound`).
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl TransformError {
    /// A batch refused as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        TransformError {
            column: None,
            row: None,
            message: message.into(),
        }
    }

    /// A batch refused for its column `column`.
    pub fn column(column: &str, message: impl Into<String>) -> Self {
        TransformError {
            column: Some(column.to_string()),
            row: None,
            message: message.into(),
        }
    }

    /// A batch refused for row `row` (0-based) of column `column`. Prefer
    /// skipping a bad row ([`crate::Out::skip`]) to refusing its batch.
    pub fn at(column: &str, row: usize, message: impl Into<String>) -> Self {
        TransformError {
            column: Some(column.to_string()),
            row: u32::try_from(row).ok(),
            message: message.into(),
        }
    }
}

/// A configuration that fails in `transform` (the host calls `validate`
/// first, so this means it changed in between): the key stays in the text.
impl From<ConfigError> for TransformError {
    fn from(e: ConfigError) -> Self {
        let message = match e.field {
            Some(field) => format!("configuration at `{field}`: {}", e.message),
            None => format!("configuration: {}", e.message),
        };
        TransformError::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_keeps_its_key_as_a_transform_error() {
        let e: TransformError = ConfigError::field("buckets", "list one").into();
        assert_eq!(e.message, "configuration at `buckets`: list one");
        assert_eq!(e.column, None);
        assert_eq!(TransformError::at("c", 3, "x").row, Some(3));
    }
}
