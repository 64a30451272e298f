//! Typed column readers: a column found and its type checked once per
//! batch (`batch.long("Numerator")?`), then read row by row with nulls as
//! `None`.

use crate::columns::{ColumnExt, Text, ticks_to_unix_nanos};
use crate::{Batch, Column, ColumnValues, KustoType, TextDictionary, TransformError};

impl Batch {
    /// The rows of the batch, 0-based.
    pub fn rows(&self) -> std::ops::Range<usize> {
        0..self.row_count as usize
    }

    /// An `int` or `long` column.
    pub fn long(&self, name: &str) -> Result<LongColumn<'_>, TransformError> {
        let column = self.typed(name, KustoType::INTEGERS)?;
        match &column.values {
            ColumnValues::Longs(values) => Ok(LongColumn { column, values }),
            _ => Err(holds_other(column)),
        }
    }

    /// An `int`, `long` or `real` column, read as `f64`.
    pub fn number(&self, name: &str) -> Result<NumberColumn<'_>, TransformError> {
        let column = self.typed(name, KustoType::NUMBERS)?;
        let values = match &column.values {
            ColumnValues::Longs(v) => Numbers::Longs(v),
            ColumnValues::Reals(v) => Numbers::Reals(v),
            _ => return Err(holds_other(column)),
        };
        Ok(NumberColumn { column, values })
    }

    /// A `datetime` column, read as Unix nanoseconds.
    pub fn datetime(&self, name: &str) -> Result<DatetimeColumn<'_>, TransformError> {
        let column = self.typed(name, &[KustoType::Datetime])?;
        match &column.values {
            ColumnValues::Ticks(ticks) => Ok(DatetimeColumn { column, ticks }),
            _ => Err(holds_other(column)),
        }
    }

    /// A `timespan` column, read in ticks (100 ns).
    pub fn timespan(&self, name: &str) -> Result<TimespanColumn<'_>, TransformError> {
        let column = self.typed(name, &[KustoType::Timespan])?;
        match &column.values {
            ColumnValues::Ticks(ticks) => Ok(TimespanColumn { column, ticks }),
            _ => Err(holds_other(column)),
        }
    }

    /// A `bool` column.
    pub fn boolean(&self, name: &str) -> Result<BoolColumn<'_>, TransformError> {
        let column = self.typed(name, &[KustoType::Bool])?;
        match &column.values {
            ColumnValues::Booleans(values) => Ok(BoolColumn { column, values }),
            _ => Err(holds_other(column)),
        }
    }

    /// A `string`, `guid` or `dynamic` (JSON text) column, plain or
    /// dictionary encoded.
    pub fn string(&self, name: &str) -> Result<StringColumn<'_>, TransformError> {
        let column = self.typed(name, KustoType::TEXT)?;
        match column.text() {
            Some(text) => Ok(StringColumn { column, text }),
            None => Err(holds_other(column)),
        }
    }

    /// A column of any type, read as label text (see [`LabelColumn`]).
    pub fn label(&self, name: &str) -> Result<LabelColumn<'_>, TransformError> {
        Ok(LabelColumn {
            column: self.column(name)?,
        })
    }

    /// Columns of any type, read as label text, each named as its column.
    pub fn labels<I>(&self, names: I) -> Result<Vec<LabelColumn<'_>>, TransformError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        names.into_iter().map(|n| self.label(n.as_ref())).collect()
    }

    fn typed(&self, name: &str, types: &[KustoType]) -> Result<&Column, TransformError> {
        let column = self.column(name)?;
        if types.contains(&column.kusto_type) {
            return Ok(column);
        }
        let wanted: Vec<&str> = types.iter().map(|t| type_name(*t)).collect();
        Err(TransformError::column(
            name,
            format!(
                "column `{name}` is {}, this transform reads {}",
                type_name(column.kusto_type),
                wanted.join(" or ")
            ),
        ))
    }
}

/// Kusto's spelling of a type.
pub fn type_name(t: KustoType) -> &'static str {
    match t {
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

/// A host that sent values of another kind than the column's type says
/// (the WIT ties each type to one case).
fn holds_other(column: &Column) -> TransformError {
    TransformError::column(
        &column.name,
        format!(
            "column `{}` is {} but its values are not of that type",
            column.name,
            type_name(column.kusto_type)
        ),
    )
}

/// An `int` or `long` column.
#[derive(Clone, Copy)]
pub struct LongColumn<'a> {
    column: &'a Column,
    values: &'a [i64],
}

impl<'a> LongColumn<'a> {
    /// Row `row`'s value; `None` for a null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<i64> {
        self.column
            .is_valid(row)
            .then(|| self.values.get(row).copied())
            .flatten()
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

#[derive(Clone, Copy)]
enum Numbers<'a> {
    Longs(&'a [i64]),
    Reals(&'a [f64]),
}

/// An `int`, `long` or `real` column.
#[derive(Clone, Copy)]
pub struct NumberColumn<'a> {
    column: &'a Column,
    values: Numbers<'a>,
}

impl<'a> NumberColumn<'a> {
    /// Row `row`'s value as `f64` (integers above 2^53 round); `None` for a
    /// null. NaN and infinities of a `real` column come through as they are.
    #[inline]
    pub fn get(&self, row: usize) -> Option<f64> {
        if !self.column.is_valid(row) {
            return None;
        }
        match self.values {
            Numbers::Longs(v) => v.get(row).map(|x| *x as f64),
            Numbers::Reals(v) => v.get(row).copied(),
        }
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

/// A `datetime` column.
#[derive(Clone, Copy)]
pub struct DatetimeColumn<'a> {
    column: &'a Column,
    ticks: &'a [i64],
}

impl<'a> DatetimeColumn<'a> {
    /// Row `row`'s time in Unix nanoseconds, what points carry; `None` for
    /// a null and for a time OTLP cannot carry (before 1970).
    #[inline]
    pub fn get(&self, row: usize) -> Option<u64> {
        self.ticks(row).and_then(ticks_to_unix_nanos)
    }

    /// Row `row` in ticks (100 ns) since 1970; `None` for a null.
    #[inline]
    pub fn ticks(&self, row: usize) -> Option<i64> {
        self.column
            .is_valid(row)
            .then(|| self.ticks.get(row).copied())
            .flatten()
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

/// A `timespan` column.
#[derive(Clone, Copy)]
pub struct TimespanColumn<'a> {
    column: &'a Column,
    ticks: &'a [i64],
}

impl<'a> TimespanColumn<'a> {
    /// Row `row` in ticks (100 ns); `None` for a null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<i64> {
        self.column
            .is_valid(row)
            .then(|| self.ticks.get(row).copied())
            .flatten()
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

/// A `bool` column.
#[derive(Clone, Copy)]
pub struct BoolColumn<'a> {
    column: &'a Column,
    values: &'a [u8],
}

impl<'a> BoolColumn<'a> {
    /// Row `row`'s value; `None` for a null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<bool> {
        self.column
            .is_valid(row)
            .then(|| self.values.get(row).map(|b| *b != 0))
            .flatten()
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

/// A text column, plain or dictionary encoded.
#[derive(Clone, Copy)]
pub struct StringColumn<'a> {
    column: &'a Column,
    text: Text<'a>,
}

impl<'a> StringColumn<'a> {
    /// Row `row`'s value; `None` for a null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<&'a str> {
        self.column.is_valid(row).then(|| self.text.get(row))
    }

    /// The distinct values and one index per row, when the column came
    /// dictionary encoded (for a guest that works once per distinct value).
    pub fn dictionary(&self) -> Option<&'a TextDictionary> {
        self.text.dictionary()
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}

/// A column of any type, rendered the way labels show values: numbers in
/// their shortest round-trip form, datetimes as RFC 3339 UTC, booleans as
/// `true`/`false`, text as it is.
#[derive(Clone, Copy)]
pub struct LabelColumn<'a> {
    column: &'a Column,
}

impl<'a> LabelColumn<'a> {
    /// Renders row `row` into `out` (cleared first); false for a null.
    #[inline]
    pub fn render(&self, row: usize, out: &mut String) -> bool {
        self.column.render(row, out)
    }

    pub fn name(&self) -> &'a str {
        &self.column.name
    }

    pub fn column(&self) -> &'a Column {
        self.column
    }
}
