//! Property bags to labels: a `dynamic` cell holding a JSON object becomes
//! one label per key, named `prefix + key` with every character outside
//! `[A-Za-z0-9_]` replaced by `_`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::reason;

/// `s` with every character (Unicode scalar) outside `[A-Za-z0-9_]`
/// replaced by `_`: `a.b-c` → `a_b_c`, `é` → `_`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The label name for `key` under an already sanitized `prefix`: a name
/// that would be empty or start with a digit (only with an empty prefix)
/// gets a leading `_`.
pub fn label_name(prefix: &str, key: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + key.len() + 1);
    name.push_str(prefix);
    name.push_str(&sanitize(key));
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// A bag's labels, sorted by name, or the skip reason of its row.
pub type Labels = Result<Vec<(String, String)>, &'static str>;

/// The labels of one property bag (the JSON text of a dynamic cell):
/// strings as themselves, numbers and booleans as their JSON text, objects
/// and arrays as compact JSON text, null values left out. JSON `null` for
/// the whole bag gives no labels. A bag that is not JSON, not an object,
/// gives more than `max_keys` labels or two keys of the same label name
/// (`a.b` and `a_b`, or one key twice) is refused with the reason its row is
/// skipped for.
pub fn labels(text: &str, prefix: &str, max_keys: usize) -> Labels {
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else {
        return Err(reason::DYNAMIC_NOT_JSON);
    };
    match raw.get().as_bytes().first() {
        Some(b'{') => {}
        Some(b'n') => return Ok(Vec::new()),
        _ => return Err(reason::DYNAMIC_NOT_OBJECT),
    }
    let entries = serde_json::from_str::<Entries<'_>>(raw.get())
        .map_err(|_| reason::DYNAMIC_NOT_JSON)?
        .0;
    let mut out = Vec::with_capacity(entries.len().min(max_keys));
    for (key, value) in entries {
        let text = value.get();
        let rendered = match text.as_bytes().first() {
            Some(b'n') => continue,
            Some(b'"') => {
                serde_json::from_str::<String>(text).map_err(|_| reason::DYNAMIC_NOT_JSON)?
            }
            Some(b'{' | b'[') => compact(text),
            _ => text.to_string(),
        };
        if out.len() == max_keys {
            return Err(reason::TOO_MANY_KEYS);
        }
        out.push((label_name(prefix, &key), rendered));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(reason::LABEL_COLLISION);
    }
    Ok(out)
}

/// Valid JSON text without the whitespace between tokens; strings, key
/// order and number digits as written.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

/// An object's entries in order, a key given twice kept twice (a map would
/// keep one silently).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, prefix: &str, max: usize) -> Vec<(String, String)> {
        labels(text, prefix, max).unwrap_or_else(|r| panic!("{text}: {r}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_are_sanitized_values_rendered_and_nulls_dropped() {
        let bag = r#"{"zone": "eu-1", "pod.name": "api-7", "n": 12.50, "ok": true,
                      "nested": {"b": [1, 2], "a": "x y"}, "gone": null, "é": "u"}"#;
        assert_eq!(
            ok(bag, "props_", 32),
            pairs(&[
                ("props__", "u"),
                ("props_n", "12.50"),
                ("props_nested", r#"{"b":[1,2],"a":"x y"}"#),
                ("props_ok", "true"),
                ("props_pod_name", "api-7"),
                ("props_zone", "eu-1"),
            ])
        );
    }

    #[test]
    fn the_same_bag_in_another_order_gives_the_same_labels() {
        assert_eq!(
            ok(r#"{"b":"2","a":"1"}"#, "", 8),
            ok(r#"{"a":"1","b":"2"}"#, "", 8)
        );
    }

    #[test]
    fn an_empty_prefix_keeps_names_valid() {
        assert_eq!(
            ok(r#"{"1st": "a", "": "b", "x": "c"}"#, "", 8),
            pairs(&[("_", "b"), ("_1st", "a"), ("x", "c")])
        );
    }

    #[test]
    fn bad_bags_are_refused_with_their_reason() {
        assert_eq!(labels("{oops", "p_", 8), Err(reason::DYNAMIC_NOT_JSON));
        assert_eq!(labels("plain text", "p_", 8), Err(reason::DYNAMIC_NOT_JSON));
        assert_eq!(labels("[1, 2]", "p_", 8), Err(reason::DYNAMIC_NOT_OBJECT));
        assert_eq!(labels("\"s\"", "p_", 8), Err(reason::DYNAMIC_NOT_OBJECT));
        assert_eq!(labels("7", "p_", 8), Err(reason::DYNAMIC_NOT_OBJECT));
        assert_eq!(labels("null", "p_", 8), Ok(Vec::new()));
        assert_eq!(labels(" {\"a\": 1} ", "p_", 8), Ok(pairs(&[("p_a", "1")])));
        assert_eq!(
            labels(r#"{"a.b": "1", "a_b": "2"}"#, "p_", 8),
            Err(reason::LABEL_COLLISION)
        );
        assert_eq!(
            labels(r#"{"a": "1", "a": "2"}"#, "p_", 8),
            Err(reason::LABEL_COLLISION)
        );
    }

    #[test]
    fn the_key_cap_counts_labels_not_nulls() {
        let bag = r#"{"a": 1, "b": 2, "c": null}"#;
        assert_eq!(ok(bag, "", 2).len(), 2);
        assert_eq!(labels(bag, "", 1), Err(reason::TOO_MANY_KEYS));
    }

    #[test]
    fn compact_keeps_strings_intact() {
        assert_eq!(
            compact(r#"{ "a" : "x \" y" , "b" : [ 1 , 2.0e3 ] }"#),
            r#"{"a":"x \" y","b":[1,2.0e3]}"#
        );
        assert_eq!(compact(r#"["a\\", " b "]"#), r#"["a\\"," b "]"#);
    }
}
