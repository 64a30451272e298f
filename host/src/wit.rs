//! Host-side bindings for `wit/v0.2/transform.wit`, the one source of truth
//! between the host and its guests. The batch and output types here are the
//! types every stage passes along: sources build a [`Batch`], the transform
//! turns it into an [`Output`], exporters encode that.

wasmtime::component::bindgen!({
    path: "../wit/v0.2",
    world: "transformer",
    additional_derives: [PartialEq],
});

pub use adx_mon::metrics_transform::log::Level as LogLevel;
pub use adx_mon::metrics_transform::types::*;

/// The version of the WIT package this host implements: the one place the
/// host names it (the `bindgen!` path above follows the same folder). A test
/// checks it against the `package` line in `wit/` and the Rust SDK.
macro_rules! contract_version {
    () => {
        "0.2.0"
    };
}
pub const CONTRACT_VERSION: &str = contract_version!();
/// The package without a version, as it prefixes import and export names.
pub const PACKAGE: &str = "adx-mon:metrics-transform";
/// The WIT package this host implements.
pub const CONTRACT: &str = concat!("adx-mon:metrics-transform@", contract_version!());
/// The interface every guest must export.
pub const TRANSFORM_EXPORT: &str =
    concat!("adx-mon:metrics-transform/transform@", contract_version!());
/// The folder of the repository that holds this version's WIT.
pub const WIT_DIR: &str = "wit/v0.2";

impl KustoType {
    pub const ALL: [KustoType; 10] = [
        KustoType::Bool,
        KustoType::Int,
        KustoType::Long,
        KustoType::Real,
        KustoType::Decimal,
        KustoType::String,
        KustoType::Datetime,
        KustoType::Timespan,
        KustoType::Guid,
        KustoType::Dynamic,
    ];

    /// Kusto's own spelling (`long`, `datetime`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KustoType::Bool => "bool",
            KustoType::Int => "int",
            KustoType::Long => "long",
            KustoType::Real => "real",
            KustoType::Decimal => "decimal",
            KustoType::String => "string",
            KustoType::Datetime => "datetime",
            KustoType::Timespan => "timespan",
            KustoType::Guid => "guid",
            KustoType::Dynamic => "dynamic",
        }
    }

    /// Parses Kusto's type names and their aliases (`boolean`, `int64`,
    /// `double`, `date`, `time`, `uuid`, ...), case-insensitively, as well as
    /// the .NET names of v1 responses (`System.Int64`, `DateTime`, ...).
    pub fn parse(name: &str) -> Option<KustoType> {
        let lower = name.trim().to_ascii_lowercase();
        let lower = lower.strip_prefix("system.").unwrap_or(&lower);
        Some(match lower {
            "bool" | "boolean" | "sbyte" => KustoType::Bool,
            "int" | "int32" => KustoType::Int,
            "long" | "int64" => KustoType::Long,
            "real" | "double" | "float" => KustoType::Real,
            "decimal" | "data.sqltypes.sqldecimal" => KustoType::Decimal,
            "string" => KustoType::String,
            "datetime" | "date" => KustoType::Datetime,
            "timespan" | "time" => KustoType::Timespan,
            "guid" | "uuid" | "uniqueid" => KustoType::Guid,
            "dynamic" | "object" => KustoType::Dynamic,
            _ => return None,
        })
    }
}

impl std::fmt::Display for KustoType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TextArena {
    pub fn get(&self, row: usize) -> &str {
        let (Some(&start), Some(&end)) = (self.offsets.get(row), self.offsets.get(row + 1)) else {
            return "";
        };
        self.data.get(start as usize..end as usize).unwrap_or("")
    }
}

impl TextDictionary {
    pub fn get(&self, row: usize) -> &str {
        match self.indices.get(row) {
            Some(&i) => self.values.get(i as usize),
            None => "",
        }
    }
}

impl Column {
    /// Row `row` of a text column, plain or dictionary encoded ("" past the
    /// end); `None` for a column that is not text.
    pub fn text_at(&self, row: usize) -> Option<&str> {
        match &self.values {
            ColumnValues::Text(t) => Some(t.get(row)),
            ColumnValues::Dictionary(d) => Some(d.get(row)),
            _ => None,
        }
    }

    pub fn is_valid(&self, row: usize) -> bool {
        self.validity.is_empty()
            || self
                .validity
                .get(row / 8)
                .is_some_and(|b| b & (1 << (row % 8)) != 0)
    }

    pub fn len(&self) -> usize {
        match &self.values {
            ColumnValues::Booleans(v) => v.len(),
            ColumnValues::Longs(v) => v.len(),
            ColumnValues::Reals(v) => v.len(),
            ColumnValues::Ticks(v) => v.len(),
            ColumnValues::Text(t) => t.offsets.len().saturating_sub(1),
            ColumnValues::Dictionary(d) => d.indices.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Batch {
    /// A short name for messages: `db.table (rule ns/name, N rows)`.
    pub fn label(&self) -> String {
        let c = &self.context;
        let rule = if c.rule_name.is_empty() {
            String::new()
        } else {
            format!("rule {}/{}, ", c.rule_namespace, c.rule_name)
        };
        format!("{}.{} ({rule}{} rows)", c.database, c.table, self.row_count)
    }
}

impl Output {
    /// Data points over all metrics.
    pub fn point_count(&self) -> usize {
        self.metrics.iter().map(|m| m.data.point_count()).sum()
    }

    /// Rows skipped over all reasons.
    pub fn skipped_count(&self) -> u64 {
        self.skipped.iter().map(|s| s.count).sum()
    }

    /// The reason of a skip count, from the string table ("" when it names
    /// no string; the host's output check refuses that).
    pub fn skip_reason(&self, skip: &SkipCount) -> &str {
        self.strings
            .get(skip.reason as usize)
            .map_or("", String::as_str)
    }
}

impl MetricData {
    pub fn point_count(&self) -> usize {
        match self {
            MetricData::Gauge(p) => p.times.len(),
            MetricData::Sum(s) => s.points.times.len(),
            MetricData::Histogram(h) => h.points.len(),
        }
    }
}

impl NumberValues {
    pub fn len(&self) -> usize {
        match self {
            NumberValues::Ints(v) => v.len(),
            NumberValues::Doubles(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version is named once here, once in the WIT file and once in the
    /// Rust SDK; they must agree.
    #[test]
    fn the_contract_version_is_one_everywhere() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ sits in the repository");
        let wit = std::fs::read_to_string(root.join(WIT_DIR).join("transform.wit"))
            .expect("the WIT file is where WIT_DIR says");
        let package = wit
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .expect("a package line");
        assert_eq!(package.trim_end_matches(';'), CONTRACT);
        assert_eq!(CONTRACT, format!("{PACKAGE}@{CONTRACT_VERSION}"));
        assert_eq!(
            TRANSFORM_EXPORT,
            format!("{PACKAGE}/transform@{CONTRACT_VERSION}")
        );
        assert!(WIT_DIR.ends_with(&format!(
            "v{}",
            CONTRACT_VERSION.rsplit_once('.').map_or("", |(major_minor, _)| major_minor)
        )));
        assert_eq!(kusto_metrics_guest::CONTRACT_VERSION, CONTRACT_VERSION);
    }

    /// The Rust SDK carries its own copy of the WIT, so that it works as a
    /// git dependency on its own; the copy must be the contract itself.
    #[test]
    fn the_sdk_carries_the_contract_unchanged() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ sits in the repository");
        let read = |path: &str| {
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        assert!(
            read(&format!("{WIT_DIR}/transform.wit")) == read("guests/sdk/wit/transform.wit"),
            "guests/sdk/wit/transform.wit differs from {WIT_DIR}/transform.wit: copy it over (cp {WIT_DIR}/transform.wit guests/sdk/wit/)"
        );
    }
}
