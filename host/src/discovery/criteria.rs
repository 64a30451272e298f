//! `criteria` and `criteriaExpression`: which hosts run a MetricsExporter,
//! decided against the host's cluster labels (`--cluster-labels
//! region=eastus`), as upstream adx-mon decides it: `criteria` matches when
//! any of its keys has one of its values (keys and values compared without
//! case); `criteriaExpression` is CEL over the labels as string variables;
//! with both, both must pass. Neither: every host.
//!
//! Expressions come from manifests and run on the planning loop, and the
//! `cel` crate counts no cost while it evaluates. So each one is bounded
//! before it ever runs, by the constants below: its length, its nodes (after
//! macro expansion), their depth, the entries of each list or map literal,
//! and comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) inside
//! one another. Every list an expression can build is then at most
//! [`MAX_NODES`] long, and with no comprehension inside another an
//! evaluation takes at most about `MAX_NODES²` steps. Each expression text
//! is compiled and checked once per process, not on every pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr};

/// Longest `criteriaExpression`, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 1024;
/// Most nodes in an expression's syntax tree, after macro expansion
/// (`region == 'eastus' && env != 'dev'` has 7).
pub const MAX_NODES: usize = 128;
/// Deepest nesting of nodes (each `&&` of a chain adds one).
pub const MAX_DEPTH: usize = 32;
/// Most elements of one list literal, or entries of one map literal.
pub const MAX_LITERAL_ENTRIES: usize = 32;
/// Most comprehensions inside one another: 1 lets `l.exists(x, ...)` be
/// used but not nested, which keeps an evaluation linear in its size.
pub const MAX_COMPREHENSION_NESTING: usize = 1;
/// Compiled expressions kept; past this the cache starts over (each
/// distinct text in the manifests is one entry).
const MAX_CACHED_PROGRAMS: usize = 1024;

/// The host's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLabels(pub BTreeMap<String, String>);

impl ClusterLabels {
    /// `key=value[,key=value...]`, as many times as given.
    pub fn parse(specs: &[String]) -> Result<ClusterLabels, String> {
        parse_key_values("--cluster-labels", specs).map(ClusterLabels)
    }
}

/// `key=value[,key=value...]` given to `flag`, as many times as given.
pub fn parse_key_values(flag: &str, specs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut pairs = BTreeMap::new();
    for spec in specs {
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{flag} `{pair}`: write it as key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("{flag} `{pair}`: the key is empty"));
            }
            pairs.insert(k.to_string(), v.trim().to_string());
        }
    }
    Ok(pairs)
}

/// Why an exporter is not for this host, or `Ok` when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriteriaError {
    /// Not an error of the exporter: another host runs it.
    #[error("{0}")]
    NotHere(String),
    /// The expression cannot be used at all.
    #[error("spec.criteriaExpression: {0}")]
    Invalid(String),
    /// The expression is over one of the bounds above.
    #[error("spec.criteriaExpression: {0}")]
    TooComplex(String),
}

impl crate::error::Classify for CriteriaError {
    fn retry_class(&self) -> crate::error::RetryClass {
        crate::error::RetryClass::Permanent
    }
}

/// A compiled expression, or why it cannot run.
type Compiled = Result<Arc<cel::Program>, CriteriaError>;

/// Compiled expressions by their text.
static PROGRAMS: LazyLock<Mutex<HashMap<String, Compiled>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `expr` compiled and checked against the bounds, once per text.
fn compiled(expr: &str) -> Compiled {
    let mut cache = PROGRAMS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.get(expr) {
        return c.clone();
    }
    let c = compile(expr);
    if cache.len() >= MAX_CACHED_PROGRAMS {
        cache.clear();
    }
    cache.insert(expr.to_string(), c.clone());
    c
}

fn compile(expr: &str) -> Compiled {
    if expr.len() > MAX_EXPRESSION_BYTES {
        return Err(CriteriaError::TooComplex(format!(
            "{} bytes long, more than MAX_EXPRESSION_BYTES ({MAX_EXPRESSION_BYTES})",
            expr.len()
        )));
    }
    let program = cel::Program::compile(expr)
        .map_err(|e| CriteriaError::Invalid(format!("`{expr}` does not parse: {e}")))?;
    let mut size = Size::default();
    measure(&program.expression().expr, 1, 0, &mut size)
        .map_err(|limit| CriteriaError::TooComplex(format!("`{expr}`: {limit}")))?;
    Ok(Arc::new(program))
}

/// What [`measure`] has counted so far.
#[derive(Default)]
struct Size {
    nodes: usize,
}

/// Walks the tree, failing at the first bound passed. The walk itself
/// stops at [`MAX_DEPTH`], so it never recurses deeper than that.
fn measure(expr: &Expr, depth: usize, nesting: usize, size: &mut Size) -> Result<(), String> {
    size.nodes += 1;
    if size.nodes > MAX_NODES {
        return Err(format!("more than MAX_NODES ({MAX_NODES}) nodes"));
    }
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than MAX_DEPTH ({MAX_DEPTH})"));
    }
    let next = depth + 1;
    let entries = |n: usize, what: &str| {
        if n > MAX_LITERAL_ENTRIES {
            Err(format!(
                "a {what} literal with {n} entries, more than MAX_LITERAL_ENTRIES ({MAX_LITERAL_ENTRIES})"
            ))
        } else {
            Ok(())
        }
    };
    match expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                measure(&target.expr, next, nesting, size)?;
            }
            for a in &call.args {
                measure(&a.expr, next, nesting, size)?;
            }
        }
        Expr::Comprehension(c) => {
            let nesting = nesting + 1;
            if nesting > MAX_COMPREHENSION_NESTING {
                return Err(format!(
                    "comprehensions (all, exists, exists_one, map, filter) nested more than MAX_COMPREHENSION_NESTING ({MAX_COMPREHENSION_NESTING}) deep"
                ));
            }
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                measure(&part.expr, next, nesting, size)?;
            }
        }
        Expr::List(list) => {
            entries(list.elements.len(), "list")?;
            for e in &list.elements {
                measure(&e.expr, next, nesting, size)?;
            }
        }
        Expr::Map(map) => {
            entries(map.entries.len(), "map")?;
            for e in &map.entries {
                measure_entry(&e.expr, next, nesting, size)?;
            }
        }
        Expr::Struct(st) => {
            entries(st.entries.len(), "message")?;
            for e in &st.entries {
                measure_entry(&e.expr, next, nesting, size)?;
            }
        }
        Expr::Select(select) => measure(&select.operand.expr, next, nesting, size)?,
    }
    Ok(())
}

fn measure_entry(
    entry: &EntryExpr,
    depth: usize,
    nesting: usize,
    size: &mut Size,
) -> Result<(), String> {
    match entry {
        EntryExpr::StructField(f) => measure(&f.value.expr, depth, nesting, size),
        EntryExpr::MapEntry(m) => {
            measure(&m.key.expr, depth, nesting, size)?;
            measure(&m.value.expr, depth, nesting, size)
        }
    }
}

pub fn check(
    criteria: &BTreeMap<String, Vec<String>>,
    expression: Option<&str>,
    labels: &ClusterLabels,
) -> Result<(), CriteriaError> {
    if !criteria.is_empty() {
        let hit = criteria.iter().any(|(key, values)| {
            labels
                .0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .is_some_and(|(_, v)| values.iter().any(|want| want.eq_ignore_ascii_case(v)))
        });
        if !hit {
            return Err(CriteriaError::NotHere(format!(
                "criteria {} do not match this host's cluster labels {}",
                show_criteria(criteria),
                show_labels(labels)
            )));
        }
    }
    if let Some(expr) = expression.map(str::trim).filter(|e| !e.is_empty()) {
        let program = compiled(expr)?;
        let mut context = cel::Context::default();
        for (k, v) in &labels.0 {
            context.add_variable_from_value(k.clone(), cel::Value::String(v.clone().into()));
        }
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                return Err(CriteriaError::NotHere(format!(
                    "criteriaExpression `{expr}` is false for this host's cluster labels {}",
                    show_labels(labels)
                )));
            }
            Ok(other) => {
                return Err(CriteriaError::Invalid(format!(
                    "`{expr}` gives {other:?}, not a bool"
                )));
            }
            // A label the expression names but this host lacks: another
            // host may have it.
            Err(e) => {
                return Err(CriteriaError::NotHere(format!(
                    "criteriaExpression `{expr}` cannot be evaluated with this host's cluster labels {}: {e}",
                    show_labels(labels)
                )));
            }
        }
    }
    Ok(())
}

fn show_criteria(criteria: &BTreeMap<String, Vec<String>>) -> String {
    let parts: Vec<String> = criteria
        .iter()
        .map(|(k, v)| format!("{k} in [{}]", v.join(", ")))
        .collect();
    parts.join(" or ")
}

fn show_labels(labels: &ClusterLabels) -> String {
    if labels.0.is_empty() {
        return "(none)".to_string();
    }
    let parts: Vec<String> = labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(spec: &str) -> ClusterLabels {
        ClusterLabels::parse(&[spec.to_string()]).unwrap()
    }

    fn criteria(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn criteria_match_any_key_without_case() {
        let here = labels("region=EastUS,env=prod");
        assert!(check(&criteria(&[]), None, &here).is_ok());
        assert!(check(&criteria(&[("region", &["eastus", "westus"])]), None, &here).is_ok());
        assert!(
            check(
                &criteria(&[("Region", &["westus"]), ("ENV", &["PROD"])]),
                None,
                &here
            )
            .is_ok()
        );
        let e = check(&criteria(&[("region", &["westus"])]), None, &here).unwrap_err();
        assert!(matches!(e, CriteriaError::NotHere(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "criteria region in [westus] do not match this host's cluster labels env=prod,region=EastUS"
        );
    }

    #[test]
    fn expressions_are_cel_over_the_labels() {
        let here = labels("region=eastus,env=prod");
        assert!(
            check(
                &criteria(&[]),
                Some("region == 'eastus' && env != 'dev'"),
                &here
            )
            .is_ok()
        );
        assert!(matches!(
            check(&criteria(&[]), Some("region == 'westus'"), &here),
            Err(CriteriaError::NotHere(_))
        ));
        // Both given: both must pass.
        assert!(matches!(
            check(
                &criteria(&[("region", &["eastus"])]),
                Some("env == 'dev'"),
                &here
            ),
            Err(CriteriaError::NotHere(_))
        ));
        assert!(matches!(
            check(&criteria(&[]), Some("region =="), &here),
            Err(CriteriaError::Invalid(_))
        ));
        assert!(matches!(
            check(&criteria(&[]), Some("'x'"), &here),
            Err(CriteriaError::Invalid(_))
        ));
        // A label this host does not have.
        assert!(matches!(
            check(&criteria(&[]), Some("zone == 'a'"), &here),
            Err(CriteriaError::NotHere(_))
        ));
    }

    #[test]
    fn expressions_over_a_bound_are_refused_naming_it() {
        let here = labels("region=eastus");
        let too_complex = |expr: &str| match check(&criteria(&[]), Some(expr), &here) {
            Err(CriteriaError::TooComplex(m)) => m,
            other => panic!("{expr}: {other:?}"),
        };
        let long = format!("region == '{}'", "x".repeat(MAX_EXPRESSION_BYTES));
        assert!(too_complex(&long).contains("MAX_EXPRESSION_BYTES (1024)"));
        let chain = vec!["region == 'eastus'"; 40].join(" && ");
        assert!(
            too_complex(&chain).contains("MAX_"),
            "{}",
            too_complex(&chain)
        );
        let list = (0..MAX_LITERAL_ENTRIES + 1)
            .map(|i| format!("'r{i}'"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(too_complex(&format!("region in [{list}]")).contains("MAX_LITERAL_ENTRIES (32)"));
        let nested = "[1, 2].exists(x, [3, 4].exists(y, x < y))";
        assert!(too_complex(nested).contains("MAX_COMPREHENSION_NESTING (1)"));
        let nodes = vec!["(region == 'a' || region == 'b')"; 20].join(" || ");
        assert!(
            too_complex(&nodes).contains("MAX_NODES (128)"),
            "{}",
            too_complex(&nodes)
        );
        // Within the bounds: a list literal and one comprehension.
        assert!(
            check(
                &criteria(&[]),
                Some("['westus', 'eastus'].exists(r, r == region) && region in ['eastus']"),
                &here
            )
            .is_ok()
        );
    }

    #[test]
    fn an_expression_is_compiled_once() {
        let expr = "region == 'compiled-once'";
        let first = compiled(expr).unwrap();
        let again = compiled(expr).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn labels_parse_from_the_command_line() {
        assert_eq!(labels("a=1, b = 2").0.len(), 2);
        assert!(ClusterLabels::parse(&["a".into()]).is_err());
        assert!(ClusterLabels::parse(&["=1".into()]).is_err());
    }
}
