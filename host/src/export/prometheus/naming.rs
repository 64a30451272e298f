//! OpenTelemetry names to Prometheus names, as the OpenTelemetry
//! specification's "Prometheus and OpenMetrics compatibility" says: invalid
//! characters become `_`, runs of `_` become one, the unit becomes a suffix
//! (`ms` → `_milliseconds`, `By` → `_bytes`, `1` → `_ratio` on gauges,
//! `{request}` dropped, `m/s` → `_meters_per_second`) and monotonic sums end
//! in `_total`.

/// What kind of Prometheus family a metric becomes: it decides the suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyType {
    Gauge,
    Counter,
    Histogram,
}

impl FamilyType {
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyType::Gauge => "gauge",
            FamilyType::Counter => "counter",
            FamilyType::Histogram => "histogram",
        }
    }
}

/// Metric name characters outside `[a-zA-Z0-9_:]` become `_`, runs of `_`
/// one `_`, and a leading digit gets a `_` in front.
pub fn sanitize_metric_name(name: &str) -> String {
    sanitize(
        name,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == ':',
        "_",
    )
}

/// Label names: `[a-zA-Z0-9_]`, runs of `_` collapsed (so a `__` prefix,
/// reserved for Prometheus itself, cannot come through), a leading digit
/// prefixed with `key_` as the Collector does.
pub fn sanitize_label_name(key: &str) -> String {
    sanitize(key, |c| c.is_ascii_alphanumeric() || c == '_', "key_")
}

fn sanitize(text: &str, valid: impl Fn(char) -> bool, digit_prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        let c = if valid(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.is_empty() {
        return "_".to_string();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, digit_prefix);
    }
    out
}

/// The Prometheus unit word for a UCUM unit as OpenTelemetry writes it, or
/// `None` for none (empty, only annotations like `{request}`).
pub fn unit_word(unit: &str, family: FamilyType) -> Option<String> {
    // Annotations in braces count nothing: "a count of foo is unitless".
    let mut bare = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let bare = bare.trim();
    if bare.is_empty() {
        return None;
    }
    if bare == "1" {
        // A ratio only makes sense of a gauge; a counter of "1" is a count.
        return (family == FamilyType::Gauge).then(|| "ratio".to_string());
    }
    let word = match bare.split_once('/') {
        Some((num, den)) => {
            let num = main_unit(num.trim());
            let den = per_unit(den.trim());
            match (num.is_empty(), den.is_empty()) {
                (true, true) => String::new(),
                (false, true) => num,
                (true, false) => format!("per_{den}"),
                (false, false) => format!("{num}_per_{den}"),
            }
        }
        None => main_unit(bare),
    };
    let word = sanitize(&word, |c| c.is_ascii_alphanumeric() || c == '_', "");
    let word = word.trim_matches('_').to_string();
    (!word.is_empty()).then_some(word)
}

fn main_unit(unit: &str) -> String {
    let word = match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        other => other,
    };
    word.to_string()
}

fn per_unit(unit: &str) -> String {
    let word = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    };
    word.to_string()
}

/// The family name of a metric: sanitized, with its unit suffix and, for
/// counters, `_total` (both only when `add_suffixes`). A histogram's series
/// add `_bucket`, `_sum` and `_count` to it.
pub fn family_name(name: &str, unit: &str, family: FamilyType, add_suffixes: bool) -> String {
    let mut base = sanitize_metric_name(name);
    if !add_suffixes {
        return base;
    }
    let had_total = family == FamilyType::Counter && base.ends_with("_total");
    if had_total {
        base.truncate(base.len() - "_total".len());
    }
    if let Some(word) = unit_word(unit, family) {
        let tokens: Vec<&str> = base.split('_').collect();
        let unit_tokens: Vec<&str> = word.split('_').collect();
        let present = tokens
            .windows(unit_tokens.len())
            .any(|w| w == unit_tokens.as_slice());
        if !present {
            base.push('_');
            base.push_str(&word);
        }
    }
    if family == FamilyType::Counter {
        base.push_str("_total");
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use FamilyType::*;

    #[test]
    fn names_are_sanitized_as_the_specification_says() {
        assert_eq!(
            sanitize_metric_name("http.server.duration"),
            "http_server_duration"
        );
        assert_eq!(sanitize_metric_name("a..b--c"), "a_b_c");
        assert_eq!(sanitize_metric_name("ns:rate5m"), "ns:rate5m");
        assert_eq!(sanitize_metric_name("5xx.count"), "_5xx_count");
        assert_eq!(sanitize_metric_name("Größe"), "Gr_e");
        assert_eq!(sanitize_label_name("service.name"), "service_name");
        assert_eq!(sanitize_label_name("__meta"), "_meta");
        assert_eq!(sanitize_label_name("2fa"), "key_2fa");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name(""), "_");
    }

    #[test]
    fn units_become_suffixes() {
        assert_eq!(
            family_name("http.server.duration", "ms", Histogram, true),
            "http_server_duration_milliseconds"
        );
        assert_eq!(family_name("fs.usage", "By", Gauge, true), "fs_usage_bytes");
        assert_eq!(
            family_name("net.dropped", "{packets}", Counter, true),
            "net_dropped_total"
        );
        assert_eq!(
            family_name("cpu.utilization", "1", Gauge, true),
            "cpu_utilization_ratio"
        );
        assert_eq!(family_name("events", "1", Counter, true), "events_total");
        assert_eq!(
            family_name("speed", "m/s", Gauge, true),
            "speed_meters_per_second"
        );
        assert_eq!(family_name("tx", "{tx}/s", Gauge, true), "tx_per_second");
        assert_eq!(
            family_name("widgets", "packets", Gauge, true),
            "widgets_packets"
        );
        // Already there: not added twice; `_total` stays last.
        assert_eq!(
            family_name("latency_seconds", "s", Gauge, true),
            "latency_seconds"
        );
        assert_eq!(
            family_name("requests_total", "", Counter, true),
            "requests_total"
        );
        assert_eq!(
            family_name("busy_total", "s", Counter, true),
            "busy_seconds_total"
        );
        assert_eq!(family_name("requests", "", Counter, true), "requests_total");
        // Off.
        assert_eq!(family_name("requests", "s", Counter, false), "requests");
    }
}
