//! The host's batch as the guest SDK's types, for benches that run the
//! default mapping linked natively beside the Wasm guest.
#![allow(dead_code)]

use kusto_metrics::wit;
use kusto_metrics_guest as g;

/// The host's batch as the guest-side types (the native mapping's input).
pub fn native_batch(b: &wit::Batch) -> g::Batch {
    g::Batch {
        context: g::BatchContext {
            database: b.context.database.clone(),
            table: b.context.table.clone(),
            rule_name: b.context.rule_name.clone(),
            rule_namespace: b.context.rule_namespace.clone(),
            exporter_name: b.context.exporter_name.clone(),
            window_start: b.context.window_start,
            window_end: b.context.window_end,
        },
        row_count: b.row_count,
        columns: b
            .columns
            .iter()
            .map(|c| g::Column {
                name: c.name.clone(),
                kusto_type: kusto_type(c.kusto_type),
                validity: c.validity.clone(),
                values: match &c.values {
                    wit::ColumnValues::Booleans(v) => g::ColumnValues::Booleans(v.clone()),
                    wit::ColumnValues::Longs(v) => g::ColumnValues::Longs(v.clone()),
                    wit::ColumnValues::Reals(v) => g::ColumnValues::Reals(v.clone()),
                    wit::ColumnValues::Ticks(v) => g::ColumnValues::Ticks(v.clone()),
                    wit::ColumnValues::Text(t) => g::ColumnValues::Text(g::TextArena {
                        data: t.data.clone(),
                        offsets: t.offsets.clone(),
                    }),
                    wit::ColumnValues::Dictionary(d) => {
                        g::ColumnValues::Dictionary(g::TextDictionary {
                            values: g::TextArena {
                                data: d.values.data.clone(),
                                offsets: d.values.offsets.clone(),
                            },
                            indices: d.indices.clone(),
                        })
                    }
                },
            })
            .collect(),
    }
}

pub fn kusto_type(t: wit::KustoType) -> g::KustoType {
    match t {
        wit::KustoType::Bool => g::KustoType::Bool,
        wit::KustoType::Int => g::KustoType::Int,
        wit::KustoType::Long => g::KustoType::Long,
        wit::KustoType::Real => g::KustoType::Real,
        wit::KustoType::Decimal => g::KustoType::Decimal,
        wit::KustoType::String => g::KustoType::String,
        wit::KustoType::Datetime => g::KustoType::Datetime,
        wit::KustoType::Timespan => g::KustoType::Timespan,
        wit::KustoType::Guid => g::KustoType::Guid,
        wit::KustoType::Dynamic => g::KustoType::Dynamic,
    }
}
