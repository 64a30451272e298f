//! Host-side bindings for `wit/transform.wit`, the one source of truth
//! between the host and its guests. The batch and output types here are the
//! types every stage passes along: sources build a [`Batch`], the transform
//! turns it into an [`Output`], exporters encode that.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "transformer",
    additional_derives: [PartialEq],
});

pub use adx_mon::metrics_transform::log::Level as LogLevel;
pub use adx_mon::metrics_transform::types::*;

/// The WIT package this host implements.
pub const CONTRACT: &str = "adx-mon:metrics-transform@0.1.0";
/// The interface every guest must export.
pub const TRANSFORM_EXPORT: &str = "adx-mon:metrics-transform/transform@0.1.0";

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

impl Column {
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
