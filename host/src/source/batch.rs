//! Building a column-by-column [`Batch`] from values that arrive row by row.

use super::dictionary::{DictionaryBuilder, Pushed};
use super::values::{self, ValueResult};
use crate::wit::{Batch, BatchContext, Column, ColumnValues, KustoType, TextArena};

/// One column under construction.
pub struct ColumnBuilder {
    name: String,
    ty: KustoType,
    validity: Vec<u8>,
    nulls: usize,
    len: usize,
    data: Data,
}

enum Data {
    Booleans(Vec<u8>),
    Longs(Vec<i64>),
    Reals(Vec<f64>),
    Ticks(Vec<i64>),
    Text {
        data: String,
        offsets: Vec<u32>,
    },
    /// A string column while its values repeat.
    Dictionary(DictionaryBuilder),
}

/// A text column passed 4 GiB, the most a `text-arena` can address.
#[derive(Debug, thiserror::Error)]
#[error("column `{0}` holds more than 4 GiB of text; read smaller windows")]
pub struct ColumnTooLarge(pub String);

impl ColumnBuilder {
    pub fn new(name: impl Into<String>, ty: KustoType) -> Self {
        let data = match ty {
            KustoType::Bool => Data::Booleans(Vec::new()),
            KustoType::Int | KustoType::Long => Data::Longs(Vec::new()),
            KustoType::Real => Data::Reals(Vec::new()),
            KustoType::Datetime | KustoType::Timespan => Data::Ticks(Vec::new()),
            KustoType::String => Data::Dictionary(DictionaryBuilder::default()),
            KustoType::Decimal | KustoType::Guid | KustoType::Dynamic => Data::Text {
                data: String::new(),
                offsets: vec![0],
            },
        };
        ColumnBuilder {
            name: name.into(),
            ty,
            validity: Vec::new(),
            nulls: 0,
            len: 0,
            data,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kusto_type(&self) -> KustoType {
        self.ty
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn mark(&mut self, valid: bool) {
        if self.len.is_multiple_of(8) {
            self.validity.push(0);
        }
        if valid {
            if let Some(last) = self.validity.last_mut() {
                *last |= 1 << (self.len % 8);
            }
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    /// A null of the column's type.
    pub fn push_null(&mut self) {
        self.mark(false);
        match &mut self.data {
            Data::Booleans(v) => v.push(0),
            Data::Longs(v) | Data::Ticks(v) => v.push(0),
            Data::Reals(v) => v.push(0.0),
            Data::Text { data, offsets } => offsets.push(data.len() as u32),
            Data::Dictionary(_) => {
                // Index of "" (added when new): a null names a value too.
                let _ = self.push_dictionary("");
            }
        }
    }

    pub fn push_bool(&mut self, b: bool) {
        self.push_fixed(Raw::Bool(b));
    }

    /// For int, long columns.
    pub fn push_long(&mut self, v: i64) {
        self.push_fixed(Raw::Long(v));
    }

    pub fn push_real(&mut self, v: f64) {
        self.push_fixed(Raw::Real(v));
    }

    /// For datetime (ticks since the Unix epoch) and timespan columns.
    pub fn push_ticks(&mut self, v: i64) {
        self.push_fixed(Raw::Ticks(v));
    }

    /// For decimal, string, guid and dynamic columns.
    pub fn push_text(&mut self, s: &str) -> Result<(), ColumnTooLarge> {
        self.push_raw(Raw::Text(s))
    }

    /// A value given as text, read according to the column's type. An empty
    /// text is a null, except in a string column, where it is "".
    pub fn push_parsed(&mut self, s: &str) -> Result<ValueResult<()>, ColumnTooLarge> {
        if s.is_empty() && self.ty != KustoType::String {
            self.push_null();
            return Ok(Ok(()));
        }
        let raw = match self.ty {
            KustoType::Bool => values::parse_bool(s).map(Raw::Bool),
            KustoType::Int => values::parse_int(s).map(Raw::Long),
            KustoType::Long => values::parse_long(s).map(Raw::Long),
            KustoType::Real => values::parse_real(s).map(Raw::Real),
            KustoType::Datetime => values::parse_datetime(s).map(Raw::Ticks),
            KustoType::Timespan => values::parse_timespan(s).map(Raw::Ticks),
            KustoType::Decimal => values::check_decimal(s).map(Raw::Text),
            KustoType::String | KustoType::Guid | KustoType::Dynamic => Ok(Raw::Text(s)),
        };
        match raw {
            Ok(raw) => self.push_raw(raw).map(Ok),
            Err(why) => Ok(Err(why)),
        }
    }

    /// Pushes a value of the storage kind; a value of the wrong kind is a
    /// bug in the caller and is stored as null.
    #[inline]
    fn push_raw(&mut self, raw: Raw<'_>) -> Result<(), ColumnTooLarge> {
        let stored = match (&mut self.data, raw) {
            (Data::Booleans(v), Raw::Bool(b)) => {
                v.push(u8::from(b));
                true
            }
            (Data::Longs(v), Raw::Long(x)) | (Data::Ticks(v), Raw::Ticks(x)) => {
                v.push(x);
                true
            }
            (Data::Reals(v), Raw::Real(x)) => {
                v.push(x);
                true
            }
            (Data::Dictionary(_), Raw::Text(s)) => {
                self.push_dictionary(s)?;
                true
            }
            (Data::Text { data, offsets }, Raw::Text(s)) => {
                let end = u32::try_from(data.len() + s.len())
                    .map_err(|_| ColumnTooLarge(self.name.clone()))?;
                data.push_str(s);
                offsets.push(end);
                true
            }
            _ => false,
        };
        if stored {
            self.mark(true);
        } else {
            debug_assert!(false, "value of the wrong kind for column {}", self.name);
            self.push_null();
        }
        Ok(())
    }

    /// Stores `s` in the dictionary, or turns the column plain when its
    /// values do not repeat and stores it there.
    fn push_dictionary(&mut self, s: &str) -> Result<(), ColumnTooLarge> {
        let Data::Dictionary(dict) = &mut self.data else {
            return Ok(());
        };
        if let Pushed::Stored = dict.push(s) {
            return Ok(());
        }
        let Data::Dictionary(dict) = std::mem::replace(&mut self.data, Data::Booleans(Vec::new()))
        else {
            return Ok(());
        };
        let (mut data, mut offsets) = dict.into_plain();
        let end =
            u32::try_from(data.len() + s.len()).map_err(|_| ColumnTooLarge(self.name.clone()));
        if let Ok(end) = end {
            data.push_str(s);
            offsets.push(end);
        }
        self.data = Data::Text { data, offsets };
        end.map(drop)
    }

    /// For values that cannot overflow a column (everything but text).
    fn push_fixed(&mut self, raw: Raw<'_>) {
        debug_assert!(!matches!(raw, Raw::Text(_)));
        if self.push_raw(raw).is_err() {
            self.push_null();
        }
    }

    /// Drops the last `n` values (a row that turned out bad half-way).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for row in len..self.len {
            let valid = self
                .validity
                .get(row / 8)
                .is_some_and(|b| b & (1 << (row % 8)) != 0);
            if !valid {
                self.nulls -= 1;
            }
        }
        self.validity.truncate(len.div_ceil(8));
        if !len.is_multiple_of(8)
            && let Some(last) = self.validity.last_mut()
        {
            *last &= (1u8 << (len % 8)) - 1;
        }
        match &mut self.data {
            Data::Booleans(v) => v.truncate(len),
            Data::Longs(v) | Data::Ticks(v) => v.truncate(len),
            Data::Reals(v) => v.truncate(len),
            Data::Text { data, offsets } => {
                offsets.truncate(len + 1);
                data.truncate(offsets[len] as usize);
            }
            Data::Dictionary(dict) => dict.truncate(len),
        }
        self.len = len;
    }

    pub fn finish(self) -> Column {
        let values = match self.data {
            Data::Booleans(v) => ColumnValues::Booleans(v),
            Data::Longs(v) => ColumnValues::Longs(v),
            Data::Reals(v) => ColumnValues::Reals(v),
            Data::Ticks(v) => ColumnValues::Ticks(v),
            Data::Text { data, offsets } => ColumnValues::Text(TextArena { data, offsets }),
            Data::Dictionary(dict) => ColumnValues::Dictionary(dict.finish()),
        };
        Column {
            name: self.name,
            kusto_type: self.ty,
            validity: if self.nulls == 0 {
                Vec::new()
            } else {
                self.validity
            },
            values,
        }
    }
}

enum Raw<'a> {
    Bool(bool),
    Long(i64),
    Real(f64),
    Ticks(i64),
    Text(&'a str),
}

/// All columns of one table under construction.
pub struct BatchBuilder {
    pub columns: Vec<ColumnBuilder>,
}

impl BatchBuilder {
    pub fn new(columns: Vec<ColumnBuilder>) -> Self {
        BatchBuilder { columns }
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, ColumnBuilder::len)
    }

    /// Undoes a partly pushed row so that every column has `rows` values.
    pub fn truncate(&mut self, rows: usize) {
        for c in &mut self.columns {
            c.truncate(rows);
        }
    }

    pub fn finish(self, context: BatchContext) -> Batch {
        let rows = self.rows();
        Batch {
            context,
            row_count: u32::try_from(rows).unwrap_or(u32::MAX),
            columns: self
                .columns
                .into_iter()
                .map(ColumnBuilder::finish)
                .collect(),
        }
    }
}

/// Rows `rows` of `batch` as a batch of their own (a chunk cut in two when
/// a guest fails on it for a limit). Dictionary columns keep their
/// dictionary; validity bits are recomputed.
pub fn slice(batch: &Batch, rows: std::ops::Range<usize>) -> Batch {
    let n = batch.row_count as usize;
    let rows = rows.start.min(n)..rows.end.min(n);
    let len = rows.len();
    let columns = batch
        .columns
        .iter()
        .map(|c| {
            let validity = if c.validity.is_empty() {
                Vec::new()
            } else {
                let mut bits = vec![0u8; len.div_ceil(8)];
                for (i, r) in rows.clone().enumerate() {
                    if c.is_valid(r) {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                bits
            };
            let values = match &c.values {
                ColumnValues::Booleans(v) => ColumnValues::Booleans(part(v, &rows)),
                ColumnValues::Longs(v) => ColumnValues::Longs(part(v, &rows)),
                ColumnValues::Ticks(v) => ColumnValues::Ticks(part(v, &rows)),
                ColumnValues::Reals(v) => ColumnValues::Reals(part(v, &rows)),
                ColumnValues::Text(t) => {
                    let start = t.offsets.get(rows.start).copied().unwrap_or(0);
                    let end = t.offsets.get(rows.end).copied().unwrap_or(start);
                    ColumnValues::Text(TextArena {
                        data: t
                            .data
                            .get(start as usize..end as usize)
                            .unwrap_or_default()
                            .to_string(),
                        offsets: t
                            .offsets
                            .get(rows.start..=rows.end)
                            .unwrap_or_default()
                            .iter()
                            .map(|o| o - start)
                            .collect(),
                    })
                }
                ColumnValues::Dictionary(d) => {
                    ColumnValues::Dictionary(crate::wit::TextDictionary {
                        values: d.values.clone(),
                        indices: part(&d.indices, &rows),
                    })
                }
            };
            Column {
                name: c.name.clone(),
                kusto_type: c.kusto_type,
                validity,
                values,
            }
        })
        .collect();
    Batch {
        context: batch.context.clone(),
        row_count: len as u32,
        columns,
    }
}

fn part<T: Clone>(v: &[T], rows: &std::ops::Range<usize>) -> Vec<T> {
    v.get(rows.clone()).unwrap_or_default().to_vec()
}

/// A context for data that does not come from a SummaryRule (samples).
pub fn sample_context(table: &str) -> BatchContext {
    BatchContext {
        database: "local".to_string(),
        table: table.to_string(),
        rule_name: String::new(),
        rule_namespace: String::new(),
        exporter_name: String::new(),
        window_start: None,
        window_end: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_truncation_keep_validity_in_step() {
        let mut c = ColumnBuilder::new("v", KustoType::Long);
        for i in 0..10 {
            if i % 3 == 0 {
                c.push_null();
            } else {
                c.push_long(i);
            }
        }
        c.truncate(7);
        let col = c.finish();
        assert_eq!(col.len(), 7);
        let valid: Vec<bool> = (0..7).map(|r| col.is_valid(r)).collect();
        assert_eq!(valid, [false, true, true, false, true, true, false]);
    }

    #[test]
    fn text_columns_use_one_arena() {
        let mut c = ColumnBuilder::new("s", KustoType::String);
        c.push_text("ab").unwrap();
        c.push_parsed("").unwrap().unwrap();
        c.push_text("c").unwrap();
        let col = c.finish();
        assert!(col.validity.is_empty(), "an empty string is not a null");
        let rows: Vec<&str> = (0..3).map(|r| col.text_at(r).unwrap()).collect();
        assert_eq!(rows, ["ab", "", "c"]);
        // A string column whose values repeat comes dictionary encoded.
        assert!(matches!(col.values, ColumnValues::Dictionary(_)));
        let mut g = ColumnBuilder::new("g", KustoType::Guid);
        g.push_text("x").unwrap();
        assert!(matches!(g.finish().values, ColumnValues::Text(_)));
    }

    #[test]
    fn parsed_values_follow_the_column_type() {
        let mut c = ColumnBuilder::new("t", KustoType::Datetime);
        assert_eq!(c.push_parsed("1970-01-01T00:00:01Z").unwrap(), Ok(()));
        assert!(c.push_parsed("soon").unwrap().is_err());
        assert_eq!(c.push_parsed("").unwrap(), Ok(()));
        let col = c.finish();
        assert_eq!(col.values, ColumnValues::Ticks(vec![10_000_000, 0]));
        assert!(!col.is_valid(1));
    }
}

/// Puts a batch's rows in a fixed order (by every column, nulls first), so
/// two answers holding the same rows in another order become the same
/// batch: ADX returns rows in no fixed order, and resuming a partly
/// delivered window needs the guest to see the same rows the same way.
pub fn sort_rows(batch: &mut Batch) {
    use std::cmp::Ordering;
    let n = batch.row_count as usize;
    if n < 2 || batch.columns.iter().any(|c| c.len() != n) {
        return;
    }
    let cmp_row = |a: usize, b: usize| -> Ordering {
        for c in &batch.columns {
            let o = match (c.is_valid(a), c.is_valid(b)) {
                (false, false) => Ordering::Equal,
                (false, true) => Ordering::Less,
                (true, false) => Ordering::Greater,
                (true, true) => match &c.values {
                    ColumnValues::Booleans(v) => v[a].cmp(&v[b]),
                    ColumnValues::Longs(v) | ColumnValues::Ticks(v) => v[a].cmp(&v[b]),
                    ColumnValues::Reals(v) => v[a].total_cmp(&v[b]),
                    ColumnValues::Text(t) => t.get(a).cmp(t.get(b)),
                    ColumnValues::Dictionary(d) => d.get(a).cmp(d.get(b)),
                },
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp_row(a, b));
    if order.iter().enumerate().all(|(i, &r)| i == r) {
        return;
    }
    for c in &mut batch.columns {
        let valid: Vec<bool> = order.iter().map(|&r| c.is_valid(r)).collect();
        if !c.validity.is_empty() {
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, v) in valid.iter().enumerate() {
                if *v {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            c.validity = bits;
        }
        c.values = match &c.values {
            ColumnValues::Booleans(v) => {
                ColumnValues::Booleans(order.iter().map(|&r| v[r]).collect())
            }
            ColumnValues::Longs(v) => ColumnValues::Longs(order.iter().map(|&r| v[r]).collect()),
            ColumnValues::Ticks(v) => ColumnValues::Ticks(order.iter().map(|&r| v[r]).collect()),
            ColumnValues::Reals(v) => ColumnValues::Reals(order.iter().map(|&r| v[r]).collect()),
            ColumnValues::Text(t) => {
                let mut data = String::with_capacity(t.data.len());
                let mut offsets = Vec::with_capacity(n + 1);
                offsets.push(0u32);
                for &r in &order {
                    data.push_str(t.get(r));
                    offsets.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
                }
                ColumnValues::Text(TextArena { data, offsets })
            }
            ColumnValues::Dictionary(d) => {
                ColumnValues::Dictionary(canonical_dictionary(d, &order))
            }
        };
    }
}

/// The rows of `d` in `order`, with the values numbered by first
/// appearance, so the same rows give the same dictionary whatever order
/// their values were first seen in.
fn canonical_dictionary(
    d: &crate::wit::TextDictionary,
    order: &[usize],
) -> crate::wit::TextDictionary {
    const NEW: u32 = u32::MAX;
    let mut renumbered = vec![NEW; d.values.offsets.len().saturating_sub(1)];
    let mut data = String::new();
    let mut offsets = vec![0u32];
    let mut indices = Vec::with_capacity(order.len());
    for &r in order {
        let old = d.indices.get(r).copied().unwrap_or(0) as usize;
        let slot = renumbered.get_mut(old);
        let code = match slot {
            Some(code) if *code != NEW => *code,
            _ => {
                let code = (offsets.len() - 1) as u32;
                data.push_str(d.values.get(old));
                offsets.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
                if let Some(slot) = renumbered.get_mut(old) {
                    *slot = code;
                }
                code
            }
        };
        indices.push(code);
    }
    crate::wit::TextDictionary {
        values: TextArena { data, offsets },
        indices,
    }
}

#[cfg(test)]
mod sort_tests {
    use super::*;

    #[test]
    fn slices_hold_exactly_their_rows() {
        let text = "n:long,s:string,g:guid\n1,a,x\n,b,y\n3,a,\n4,c,z\n";
        let b =
            crate::source::csv_table::read("a.csv", text.as_bytes(), sample_context("t")).unwrap();
        let s = slice(&b, 1..3);
        assert_eq!(s.row_count, 2);
        assert!(!s.columns[0].is_valid(0) && s.columns[0].is_valid(1));
        assert_eq!(s.columns[0].values, ColumnValues::Longs(vec![0, 3]));
        assert_eq!(s.columns[1].text_at(0), Some("b"));
        assert_eq!(s.columns[1].text_at(1), Some("a"));
        assert_eq!(s.columns[2].text_at(0), Some("y"));
        assert!(!s.columns[2].is_valid(1));
        let whole: u32 = [slice(&b, 0..1), slice(&b, 1..4)]
            .iter()
            .map(|p| p.row_count)
            .sum();
        assert_eq!(whole, 4);
    }

    #[test]
    fn the_same_rows_in_another_order_sort_the_same() {
        let a = "n:long,s:string,x:real\n2,b,\n1,a,0.5\n,c,1\n1,a,0.25\n";
        let b = "n:long,s:string,x:real\n1,a,0.25\n,c,1\n2,b,\n1,a,0.5\n";
        let mut ba =
            crate::source::csv_table::read("a.csv", a.as_bytes(), sample_context("t")).unwrap();
        let mut bb =
            crate::source::csv_table::read("b.csv", b.as_bytes(), sample_context("t")).unwrap();
        assert_ne!(ba.columns, bb.columns);
        sort_rows(&mut ba);
        sort_rows(&mut bb);
        assert_eq!(ba.columns, bb.columns);
        // Nulls first, then by value, column by column.
        let s = &ba.columns[1];
        assert_eq!(
            (0..4).map(|i| s.text_at(i).unwrap()).collect::<Vec<_>>(),
            ["c", "a", "a", "b"]
        );
        assert!(!ba.columns[0].is_valid(0) && ba.columns[0].is_valid(1));
    }
}
