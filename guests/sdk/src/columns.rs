//! Reading values out of the column layout of a batch.

use crate::{Batch, Column, ColumnValues, KustoType, TextArena, TextDictionary, TransformError};

/// Kusto's datetime and timespan unit is the tick, 100 ns.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

/// Unix nanoseconds for a datetime in ticks since the Unix epoch, or `None`
/// when it lies before 1970 (OTLP times are unsigned) or past year 2554.
pub fn ticks_to_unix_nanos(ticks: i64) -> Option<u64> {
    u64::try_from(ticks).ok()?.checked_mul(100)
}

impl TextArena {
    /// Value `row`; an out-of-range row or offset reads as "".
    #[inline]
    pub fn get(&self, row: usize) -> &str {
        let (Some(&start), Some(&end)) = (self.offsets.get(row), self.offsets.get(row + 1)) else {
            return "";
        };
        self.data.get(start as usize..end as usize).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TextDictionary {
    /// Row `row`'s value; an out-of-range row or index reads as "".
    #[inline]
    pub fn get(&self, row: usize) -> &str {
        match self.indices.get(row) {
            Some(&i) => self.values.get(i as usize),
            None => "",
        }
    }
}

/// The values of a text column, whichever way the host sent them: one
/// string per row ([`TextArena`]) or each distinct value once with an index
/// per row ([`TextDictionary`]). Read rows with [`Text::get`]; a guest that
/// caches per distinct value can use [`Text::dictionary`].
#[derive(Clone, Copy)]
pub enum Text<'a> {
    Plain(&'a TextArena),
    Dictionary(&'a TextDictionary),
}

impl<'a> Text<'a> {
    /// Row `row`'s value; "" for an out-of-range row (and for nulls, which
    /// [`ColumnExt::is_valid`] tells apart).
    #[inline]
    pub fn get(&self, row: usize) -> &'a str {
        match *self {
            Text::Plain(arena) => arena.get(row),
            Text::Dictionary(dict) => dict.get(row),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Text::Plain(arena) => arena.len(),
            Text::Dictionary(dict) => dict.indices.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The distinct values and one index per row, when the column came
    /// dictionary encoded.
    pub fn dictionary(&self) -> Option<&'a TextDictionary> {
        match *self {
            Text::Dictionary(dict) => Some(dict),
            Text::Plain(_) => None,
        }
    }
}

/// Convenience reads on a column.
pub trait ColumnExt {
    /// False when row `row` is null.
    fn is_valid(&self, row: usize) -> bool;
    /// The values as text, when the column is text-typed.
    fn text(&self) -> Option<Text<'_>>;
    fn longs(&self) -> Option<&[i64]>;
    fn reals(&self) -> Option<&[f64]>;
    fn ticks(&self) -> Option<&[i64]>;
    fn booleans(&self) -> Option<&[u8]>;
    /// Row `row` rendered as text the way labels show it: numbers in their
    /// shortest round-trip form, datetimes as RFC 3339 UTC with a fraction
    /// only when it is not zero, booleans as `true`/`false`. `None` for null.
    fn render(&self, row: usize, out: &mut String) -> bool;
}

impl ColumnExt for Column {
    #[inline]
    fn is_valid(&self, row: usize) -> bool {
        self.validity.is_empty()
            || self
                .validity
                .get(row / 8)
                .is_some_and(|byte| byte & (1 << (row % 8)) != 0)
    }

    fn text(&self) -> Option<Text<'_>> {
        match &self.values {
            ColumnValues::Text(arena) => Some(Text::Plain(arena)),
            ColumnValues::Dictionary(dict) => Some(Text::Dictionary(dict)),
            _ => None,
        }
    }

    fn longs(&self) -> Option<&[i64]> {
        match &self.values {
            ColumnValues::Longs(v) => Some(v),
            _ => None,
        }
    }

    fn reals(&self) -> Option<&[f64]> {
        match &self.values {
            ColumnValues::Reals(v) => Some(v),
            _ => None,
        }
    }

    fn ticks(&self) -> Option<&[i64]> {
        match &self.values {
            ColumnValues::Ticks(v) => Some(v),
            _ => None,
        }
    }

    fn booleans(&self) -> Option<&[u8]> {
        match &self.values {
            ColumnValues::Booleans(v) => Some(v),
            _ => None,
        }
    }

    fn render(&self, row: usize, out: &mut String) -> bool {
        use std::fmt::Write;
        out.clear();
        if !self.is_valid(row) {
            return false;
        }
        match (&self.values, self.kusto_type) {
            (ColumnValues::Text(arena), _) => out.push_str(arena.get(row)),
            (ColumnValues::Dictionary(dict), _) => out.push_str(dict.get(row)),
            (ColumnValues::Longs(v), _) => {
                let _ = write!(out, "{}", v.get(row).copied().unwrap_or_default());
            }
            (ColumnValues::Reals(v), _) => {
                // Rust's Display for f64 is the shortest form that reads back
                // to the same value; it never uses an exponent.
                let _ = write!(out, "{}", v.get(row).copied().unwrap_or_default());
            }
            (ColumnValues::Booleans(v), _) => {
                out.push_str(if v.get(row).copied().unwrap_or_default() != 0 {
                    "true"
                } else {
                    "false"
                })
            }
            (ColumnValues::Ticks(v), KustoType::Timespan) => {
                format_timespan(v.get(row).copied().unwrap_or_default(), out)
            }
            (ColumnValues::Ticks(v), _) => {
                format_datetime(v.get(row).copied().unwrap_or_default(), out)
            }
        }
        true
    }
}

impl Batch {
    /// The column named `name`, or an error that names it and lists the
    /// columns present.
    pub fn column(&self, name: &str) -> Result<&Column, TransformError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            let present: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            TransformError::column(
                name,
                format!(
                    "column `{name}` is not in the table; columns present: {}",
                    present.join(", ")
                ),
            )
        })
    }
}

/// RFC 3339 UTC, e.g. `2025-06-25T10:15:00Z`, `2025-06-25T10:15:00.5Z`.
fn format_datetime(ticks: i64, out: &mut String) {
    use std::fmt::Write;
    let secs = ticks.div_euclid(TICKS_PER_SECOND);
    let frac = ticks.rem_euclid(TICKS_PER_SECOND);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    );
    push_fraction(frac, out);
    out.push('Z');
}

/// Kusto's timespan text, `[-][d.]hh:mm:ss[.fffffff]`.
fn format_timespan(ticks: i64, out: &mut String) {
    use std::fmt::Write;
    if ticks < 0 {
        out.push('-');
    }
    let abs = ticks.unsigned_abs();
    let frac = (abs % TICKS_PER_SECOND as u64) as i64;
    let secs = abs / TICKS_PER_SECOND as u64;
    let days = secs / 86_400;
    if days > 0 {
        let _ = write!(out, "{days}.");
    }
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    );
    push_fraction(frac, out);
}

/// `.fffffff` without trailing zeros; nothing for zero.
fn push_fraction(frac: i64, out: &mut String) {
    use std::fmt::Write;
    if frac != 0 {
        let mut digits = format!("{frac:07}");
        while digits.ends_with('0') {
            digits.pop();
        }
        let _ = write!(out, ".{digits}");
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(ticks: i64) -> String {
        let mut s = String::new();
        format_datetime(ticks, &mut s);
        s
    }

    #[test]
    fn datetimes_render_as_rfc3339() {
        assert_eq!(dt(0), "1970-01-01T00:00:00Z");
        // 2025-06-25T10:15:00Z
        assert_eq!(dt(1_750_846_500 * TICKS_PER_SECOND), "2025-06-25T10:15:00Z");
        assert_eq!(
            dt(1_750_846_500 * TICKS_PER_SECOND + 5_000_000),
            "2025-06-25T10:15:00.5Z"
        );
        assert_eq!(dt(-1), "1969-12-31T23:59:59.9999999Z");
        assert_eq!(dt(951_782_400 * TICKS_PER_SECOND), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn timespans_render_like_kusto() {
        let ts = |t| {
            let mut s = String::new();
            format_timespan(t, &mut s);
            s
        };
        assert_eq!(ts(5 * 60 * TICKS_PER_SECOND), "00:05:00");
        assert_eq!(
            ts(-(86_400 + 1) * TICKS_PER_SECOND - 1),
            "-1.00:00:01.0000001"
        );
    }

    #[test]
    fn nanos_refuse_pre_epoch() {
        assert_eq!(ticks_to_unix_nanos(-1), None);
        assert_eq!(ticks_to_unix_nanos(3), Some(300));
    }
}
