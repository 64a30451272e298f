//! `test-transform --expect FILE`: the output compared with an expected
//! OTLP/JSON request, as OTLP means it. Resources, scopes, metrics, data
//! points and attributes are sets in OTLP (a receiver must not depend on
//! their order), so they are matched by identity (a metric by name, a point
//! by its attributes and times, an attribute by key); everything else, bucket
//! counts and bounds included, is compared in order.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Differences listed before the rest are only counted: a wrong guest can
/// differ at every point, and the first few say what is wrong.
pub const MAX_DIFFERENCES_SHOWN: usize = 40;

/// Where the output and the expectation differ, one line each, in the order
/// of a walk through the expected request (then what only the output has).
pub fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut found = Vec::new();
    compare("", None, expected, actual, &mut found);
    found
}

/// The differences as a report: every line under a heading, at most
/// [`MAX_DIFFERENCES_SHOWN`] of them.
pub fn report(expected_name: &str, found: &[String]) -> String {
    let mut text = format!(
        "the output differs from {expected_name} in {} place{} (`-` expected, `+` output):",
        found.len(),
        if found.len() == 1 { "" } else { "s" }
    );
    for line in found.iter().take(MAX_DIFFERENCES_SHOWN) {
        let _ = write!(text, "\n  {line}");
    }
    if found.len() > MAX_DIFFERENCES_SHOWN {
        let _ = write!(
            text,
            "\n  ... and {} more",
            found.len() - MAX_DIFFERENCES_SHOWN
        );
    }
    text
}

/// Arrays whose order OTLP leaves open, by field name.
fn is_set(field: &str) -> bool {
    matches!(
        field,
        "resourceMetrics" | "scopeMetrics" | "metrics" | "dataPoints" | "attributes"
    )
}

fn compare(
    path: &str,
    field: Option<&str>,
    expected: &Value,
    actual: &Value,
    out: &mut Vec<String>,
) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, ev) in e {
                let here = join(path, key);
                match a.get(key) {
                    Some(av) => compare(&here, Some(key), ev, av, out),
                    None => out.push(format!("{here}: - {} + (missing)", short(ev))),
                }
            }
            for (key, av) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                out.push(format!("{}: - (missing) + {}", join(path, key), short(av)));
            }
        }
        (Value::Array(e), Value::Array(a)) if field.is_some_and(is_set) => {
            compare_sets(path, e, a, out);
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), None, ev, av, out);
            }
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: - {} entries + {} entries",
                    e.len(),
                    a.len()
                ));
            }
        }
        (e, a) if same_scalar(e, a) => {}
        (e, a) => out.push(format!("{path}: - {} + {}", short(e), short(a))),
    }
}

/// Elements matched by identity; an identity shared by several elements
/// (which OTLP does not allow, but a guest might write) pairs them in order.
fn compare_sets(path: &str, expected: &[Value], actual: &[Value], out: &mut Vec<String>) {
    let mut by_identity: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for a in actual {
        by_identity.entry(identity(a)).or_default().push(a);
    }
    for e in expected {
        let id = identity(e);
        let here = format!("{path}[{id}]");
        match by_identity.get_mut(&id).filter(|v| !v.is_empty()) {
            Some(candidates) => {
                let a = candidates.remove(0);
                compare(&here, None, e, a, out);
            }
            None => out.push(format!("{here}: - {} + (missing)", short(e))),
        }
    }
    for (id, left) in by_identity {
        for a in left {
            out.push(format!("{path}[{id}]: - (missing) + {}", short(a)));
        }
    }
}

/// What tells an element of a set from the others: a metric's name, a
/// point's attributes and times, an attribute's key, a resource's
/// attributes, a scope's name and version.
fn identity(v: &Value) -> String {
    if let Some(key) = v.get("key").and_then(Value::as_str) {
        return key.to_string();
    }
    if let Some(name) = v.get("name").and_then(Value::as_str) {
        return name.to_string();
    }
    if let Some(resource) = v.get("resource") {
        return attribute_text(resource.get("attributes"));
    }
    if let Some(scope) = v.get("scope") {
        let name = scope.get("name").and_then(Value::as_str).unwrap_or("");
        return match scope.get("version").and_then(Value::as_str) {
            Some(version) if !version.is_empty() => format!("{name} {version}"),
            _ => name.to_string(),
        };
    }
    if v.get("timeUnixNano").is_some() {
        let mut id = attribute_text(v.get("attributes"));
        if let Some(start) = v.get("startTimeUnixNano").map(scalar_text) {
            let _ = write!(id, " from {start}");
        }
        let _ = write!(
            id,
            " at {}",
            v.get("timeUnixNano").map(scalar_text).unwrap_or_default()
        );
        return id;
    }
    short(v)
}

/// `{key=value, ...}`, keys sorted, for identities.
fn attribute_text(attributes: Option<&Value>) -> String {
    let mut pairs: Vec<String> = attributes
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|a| {
                    let key = a.get("key").and_then(Value::as_str).unwrap_or("");
                    let value = a
                        .get("value")
                        .and_then(Value::as_object)
                        .and_then(|o| o.values().next())
                        .map(scalar_text)
                        .unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    format!("{{{}}}", pairs.join(", "))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numbers are equal when their values are (`1` and `1.0`); OTLP/JSON
/// writes 64-bit integers as strings, which are compared as written.
fn same_scalar(e: &Value, a: &Value) -> bool {
    match (e, a) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        _ => e == a,
    }
}

/// A value on one line, cut when long.
fn short(v: &Value) -> String {
    const MAX: usize = 160;
    let text = v.to_string();
    if text.len() <= MAX {
        return text;
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(service: &str, time: &str, value: f64) -> Value {
        json!({
            "attributes": [
                {"key": "service", "value": {"stringValue": service}},
                {"key": "tier", "value": {"stringValue": "gold"}},
            ],
            "timeUnixNano": time,
            "asDouble": value,
        })
    }

    fn request(points: Vec<Value>, metrics_after: Vec<Value>) -> Value {
        let mut metrics =
            vec![json!({"name": "ratio", "unit": "1", "gauge": {"dataPoints": points}})];
        metrics.extend(metrics_after);
        json!({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]},
            "scopeMetrics": [{"scope": {"name": "s", "version": "v1"}, "metrics": metrics}],
        }]})
    }

    #[test]
    fn sets_match_in_any_order() {
        let a = request(
            vec![point("api", "1", 0.5), point("web", "1", 0.25)],
            vec![json!({"name": "other", "gauge": {"dataPoints": []}})],
        );
        let mut b = a.clone();
        let metrics = b["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
            .as_array_mut()
            .unwrap();
        metrics.reverse();
        let points = metrics[1]["gauge"]["dataPoints"].as_array_mut().unwrap();
        points.reverse();
        points[0]["attributes"].as_array_mut().unwrap().reverse();
        assert_eq!(differences(&a, &b), Vec::<String>::new());
    }

    #[test]
    fn a_changed_value_is_named_by_metric_and_point() {
        let expected = request(
            vec![point("api", "1", 0.5), point("web", "1", 0.25)],
            vec![],
        );
        let actual = request(vec![point("web", "1", 0.3), point("api", "1", 0.5)], vec![]);
        assert_eq!(
            differences(&expected, &actual),
            [
                "resourceMetrics[{service.name=x}].scopeMetrics[s v1].metrics[ratio].gauge.dataPoints[{service=web, tier=gold} at 1].asDouble: - 0.25 + 0.3"
            ]
        );
    }

    #[test]
    fn missing_and_extra_elements_are_listed() {
        let expected = request(vec![point("api", "1", 0.5)], vec![]);
        let actual = request(
            vec![point("api", "2", 0.5)],
            vec![json!({"name": "extra", "gauge": {"dataPoints": []}})],
        );
        let found = differences(&expected, &actual);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].ends_with(
            "dataPoints[{service=api, tier=gold} at 1]: - {\"attributes\":[{\"key\":\"service\",\"value\":{\"stringValue\":\"api\"}},{\"key\":\"tier\",\"value\":{\"stringValue\":\"gold\"}}],\"timeUnixNano\":\"1\",\"asDouble\":0.5} + (missing)"
        ), "{}", found[0]);
        assert!(found[1].contains("dataPoints[{service=api, tier=gold} at 2]: - (missing) + {"));
        assert!(found[2].contains("metrics[extra]: - (missing) + {\"name\":\"extra\""));
    }

    #[test]
    fn ordered_lists_and_numbers() {
        let e = json!({"bucketCounts": ["1", "2"], "explicitBounds": [100, 500], "count": "3"});
        let same =
            json!({"bucketCounts": ["1", "2"], "explicitBounds": [100.0, 500.0], "count": "3"});
        assert!(differences(&e, &same).is_empty());
        let swapped = json!({"bucketCounts": ["2", "1"], "explicitBounds": [100.0, 500.0, 900.0], "count": "3"});
        assert_eq!(
            differences(&e, &swapped),
            [
                "bucketCounts[0]: - \"1\" + \"2\"",
                "bucketCounts[1]: - \"2\" + \"1\"",
                "explicitBounds: - 2 entries + 3 entries",
            ]
        );
    }

    #[test]
    fn the_report_counts_and_cuts() {
        let found: Vec<String> = (0..MAX_DIFFERENCES_SHOWN + 3)
            .map(|i| format!("d{i}"))
            .collect();
        let text = report("expected.json", &found);
        let heading = format!(
            "the output differs from expected.json in {} places",
            MAX_DIFFERENCES_SHOWN + 3
        );
        assert!(text.starts_with(&heading), "{text}");
        assert!(text.ends_with("\n  ... and 3 more"));
        assert_eq!(text.lines().count(), MAX_DIFFERENCES_SHOWN + 2);
    }
}
