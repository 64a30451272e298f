//! Kusto scalar values as text: datetimes, timespans, booleans, numbers.
//! Used by every input that carries values as text (CSV, JSON strings).

/// Kusto's datetime and timespan unit: 100 ns.
pub const TICKS_PER_SECOND: i64 = 10_000_000;
const TICKS_PER_DAY: i64 = 86_400 * TICKS_PER_SECOND;

/// Why a text value could not be read as its column's type.
pub type ValueResult<T> = Result<T, &'static str>;

/// ISO 8601 / RFC 3339 datetime to ticks since the Unix epoch, exactly.
///
/// Accepts `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.f...]]` with `T` or a space,
/// and an optional `Z` or `±HH:MM` offset (no offset means UTC, as in Kusto).
/// Fractions beyond 7 digits (100 ns) are cut, as Kusto does.
pub fn parse_datetime(s: &str) -> ValueResult<i64> {
    let b = s.trim().as_bytes();
    let num = |from: usize, len: usize| -> ValueResult<i64> {
        let digits = b.get(from..from + len).ok_or("too short for a datetime")?;
        digits.iter().try_fold(0i64, |acc, &d| {
            if d.is_ascii_digit() {
                Ok(acc * 10 + i64::from(d - b'0'))
            } else {
                Err("not a datetime (expected e.g. 2025-06-25T10:15:00Z)")
            }
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err("not a datetime (expected e.g. 2025-06-25T10:15:00Z)");
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("date out of range");
    }
    let mut ticks = days_from_civil(year, month, day) * TICKS_PER_DAY;
    let mut i = 10;
    if i < b.len() && (b[i] == b'T' || b[i] == b't' || b[i] == b' ') {
        let (hh, mm) = (num(i + 1, 2)?, num(i + 4, 2)?);
        if b.get(i + 3) != Some(&b':') {
            return Err("not a datetime (expected HH:MM after the date)");
        }
        i += 6;
        let mut ss = 0;
        if b.get(i) == Some(&b':') {
            ss = num(i + 1, 2)?;
            i += 3;
        }
        if hh > 23 || mm > 59 || ss > 60 {
            return Err("time of day out of range");
        }
        ticks += (hh * 3600 + mm * 60 + ss) * TICKS_PER_SECOND;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let (frac, used) = fraction_ticks(&b[i..]);
            if used == 0 {
                return Err("no digits after the decimal point");
            }
            ticks += frac;
            i += used;
        }
    }
    match b.get(i) {
        None => {}
        Some(b'Z' | b'z') if i + 1 == b.len() => {}
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let offset = (num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60) * TICKS_PER_SECOND;
            ticks += if sign == b'+' { -offset } else { offset };
        }
        _ => return Err("unexpected text after the datetime"),
    }
    Ok(ticks)
}

/// Up to 7 fraction digits as ticks; further digits are consumed and cut.
fn fraction_ticks(b: &[u8]) -> (i64, usize) {
    let mut ticks = 0i64;
    let mut used = 0;
    while used < b.len() && b[used].is_ascii_digit() {
        if used < 7 {
            ticks = ticks * 10 + i64::from(b[used] - b'0');
        }
        used += 1;
    }
    for _ in used..7 {
        ticks *= 10;
    }
    (ticks, used)
}

/// Kusto's timespan text `[-][d.]hh:mm:ss[.fffffff]` to ticks.
pub fn parse_timespan(s: &str) -> ValueResult<i64> {
    const WRONG: &str = "not a timespan (expected [-][d.]hh:mm:ss[.fffffff])";
    let s = s.trim();
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (days, clock) = match rest.split_once(':') {
        Some((head, _)) => match head.split_once('.') {
            Some((d, _)) => (d.parse::<i64>().map_err(|_| WRONG)?, &rest[d.len() + 1..]),
            None => (0, rest),
        },
        None => return Err(WRONG),
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return Err(WRONG);
    };
    let field = |t: &str, max: i64| -> ValueResult<i64> {
        let v = t.parse::<i64>().map_err(|_| WRONG)?;
        if (0..=max).contains(&v) {
            Ok(v)
        } else {
            Err(WRONG)
        }
    };
    let mut ticks = days
        .checked_mul(TICKS_PER_DAY)
        .ok_or("timespan out of range")?
        + (field(h, 23)? * 3600 + field(m, 59)? * 60 + field(sec, 59)?) * TICKS_PER_SECOND;
    if let Some(f) = frac {
        let (t, used) = fraction_ticks(f.as_bytes());
        if used == 0 || used != f.len() {
            return Err(WRONG);
        }
        ticks += t;
    }
    Ok(if negative { -ticks } else { ticks })
}

pub fn parse_bool(s: &str) -> ValueResult<bool> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("true") || t == "1" => Ok(true),
        t if t.eq_ignore_ascii_case("false") || t == "0" => Ok(false),
        _ => Err("not a bool (expected true or false)"),
    }
}

pub fn parse_long(s: &str) -> ValueResult<i64> {
    s.trim().parse::<i64>().map_err(|_| "not a 64-bit integer")
}

pub fn parse_int(s: &str) -> ValueResult<i64> {
    s.trim()
        .parse::<i32>()
        .map(i64::from)
        .map_err(|_| "not a 32-bit integer")
}

/// A real, including Kusto's spellings of the non-finite values.
pub fn parse_real(s: &str) -> ValueResult<f64> {
    let t = s.trim();
    match t {
        "NaN" | "nan" => Ok(f64::NAN),
        "Infinity" | "+Infinity" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => t.parse::<f64>().map_err(|_| "not a real number"),
    }
}

/// A decimal keeps its exact text; only its shape is checked here.
pub fn check_decimal(s: &str) -> ValueResult<&str> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (digits, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) || !exp_ok {
        return Err("not a decimal number");
    }
    Ok(t)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's days-from-civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_exact_ticks() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_datetime("2025-06-25T10:15:00Z"),
            Ok(1_750_846_500 * TICKS_PER_SECOND)
        );
        assert_eq!(
            parse_datetime("2025-06-25T10:15:00.1234567Z"),
            Ok(1_750_846_500 * TICKS_PER_SECOND + 1_234_567)
        );
        assert_eq!(
            parse_datetime("2025-06-25T10:15:00.123456789Z"),
            Ok(1_750_846_500 * TICKS_PER_SECOND + 1_234_567)
        );
        assert_eq!(
            parse_datetime("2025-06-25 12:15:00+02:00"),
            Ok(1_750_846_500 * TICKS_PER_SECOND)
        );
        assert_eq!(
            parse_datetime("2025-06-25"),
            Ok(1_750_809_600 * TICKS_PER_SECOND)
        );
        assert_eq!(parse_datetime("1969-12-31T23:59:59.9999999Z"), Ok(-1));
        assert!(parse_datetime("2025-02-29T00:00:00Z").is_err());
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2025-06-25T10:15:00Zjunk").is_err());
    }

    #[test]
    fn timespans_parse_like_kusto() {
        assert_eq!(parse_timespan("00:05:00"), Ok(300 * TICKS_PER_SECOND));
        assert_eq!(
            parse_timespan("-1.00:00:01.0000001"),
            Ok(-(86_401 * TICKS_PER_SECOND + 1))
        );
        assert_eq!(
            parse_timespan("2.03:04:05.5"),
            Ok((2 * 86_400 + 3 * 3600 + 4 * 60 + 5) * TICKS_PER_SECOND + 5_000_000)
        );
        assert!(parse_timespan("5m").is_err());
        assert!(parse_timespan("00:61:00").is_err());
    }

    #[test]
    fn reals_and_decimals() {
        assert!(parse_real("NaN").unwrap().is_nan());
        assert_eq!(parse_real("-Infinity"), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_real("145.3"), Ok(145.3));
        assert_eq!(
            check_decimal("12345678901234567890.123"),
            Ok("12345678901234567890.123")
        );
        assert!(check_decimal("1.2.3").is_err());
        assert_eq!(check_decimal("1E+28"), Ok("1E+28"));
        assert!(check_decimal("1E").is_err());
        assert!(check_decimal("").is_err());
        assert_eq!(parse_long("9007199254740993"), Ok(9_007_199_254_740_993));
        assert!(parse_int("3000000000").is_err());
    }
}
