//! SummaryRules indexed by namespace and label, so that finding the rules a
//! selector matches looks at the rules carrying its most selective label
//! rather than at every rule: planning costs about the exporters times
//! their candidate sets, not exporters times rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::selector::{CompiledSelector, Required};
use crate::api::{MetaExt, SummaryRule};

/// Positions in [`NamespaceRules::rules`], ascending.
type Postings = Vec<u32>;

#[derive(Default)]
struct KeyPostings<'c> {
    /// Every rule with the key, whatever its value.
    any: Postings,
    by_value: HashMap<&'c str, Postings>,
}

#[derive(Default)]
struct NamespaceRules<'c> {
    /// In key order, as the catalog holds them.
    rules: Vec<(&'c String, &'c SummaryRule)>,
    by_key: HashMap<&'c str, KeyPostings<'c>>,
}

/// The rules of one catalog, borrowed from it.
pub struct RuleIndex<'c> {
    namespaces: HashMap<&'c str, NamespaceRules<'c>>,
}

impl<'c> RuleIndex<'c> {
    pub fn new(rules: &'c BTreeMap<String, Arc<SummaryRule>>) -> RuleIndex<'c> {
        let mut namespaces: HashMap<&'c str, NamespaceRules<'c>> = HashMap::new();
        for (key, rule) in rules {
            let ns = namespaces.entry(rule.metadata.ns()).or_default();
            // More rules than u32 positions cannot be held in memory anyway.
            let at = u32::try_from(ns.rules.len()).unwrap_or(u32::MAX);
            ns.rules.push((key, rule));
            for (k, v) in rule.metadata.label_map() {
                let postings = ns.by_key.entry(k.as_str()).or_default();
                postings.any.push(at);
                postings.by_value.entry(v.as_str()).or_default().push(at);
            }
        }
        RuleIndex { namespaces }
    }

    /// The rules in `namespace` that `selector` matches, in key order.
    pub fn matching(
        &self,
        namespace: &str,
        selector: &CompiledSelector,
    ) -> Vec<(&'c String, &'c SummaryRule)> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let pick = |at: &u32| {
            let (key, rule) = ns.rules[*at as usize];
            selector
                .matches(rule.metadata.label_map())
                .then_some((key, rule))
        };
        match ns.candidates(selector.required()) {
            None => ns
                .rules
                .iter()
                .filter(|(_, rule)| selector.matches(rule.metadata.label_map()))
                .copied()
                .collect(),
            Some(Candidates::One(postings)) => postings.iter().filter_map(pick).collect(),
            Some(Candidates::Union(mut positions)) => {
                positions.sort_unstable();
                positions.dedup();
                positions.iter().filter_map(pick).collect()
            }
        }
    }
}

/// The smallest set of rules every match must be in.
enum Candidates<'a> {
    One(&'a [u32]),
    /// `In` over several values: their postings together, unsorted.
    Union(Vec<u32>),
}

const NONE: &[u32] = &[];

impl<'c> NamespaceRules<'c> {
    /// `None` when no term narrows the search: every rule is a candidate.
    fn candidates(&self, required: &[Required]) -> Option<Candidates<'_>> {
        let mut best: Option<(usize, &Required)> = None;
        for term in required {
            let size = match term {
                Required::Label(k, v) => self.postings(k, v).len(),
                Required::AnyOf(k, values) => {
                    values.iter().map(|v| self.postings(k, v).len()).sum()
                }
                Required::Key(k) => self.by_key.get(k.as_str()).map_or(0, |p| p.any.len()),
            };
            if best.is_none_or(|(smallest, _)| size < smallest) {
                best = Some((size, term));
            }
            if size == 0 {
                break; // nothing can match
            }
        }
        Some(match best?.1 {
            Required::Label(k, v) => Candidates::One(self.postings(k, v)),
            Required::AnyOf(k, values) => Candidates::Union(
                values
                    .iter()
                    .flat_map(|v| self.postings(k, v))
                    .copied()
                    .collect(),
            ),
            Required::Key(k) => {
                Candidates::One(self.by_key.get(k.as_str()).map_or(NONE, |p| &p.any))
            }
        })
    }

    fn postings(&self, key: &str, value: &str) -> &[u32] {
        self.by_key
            .get(key)
            .and_then(|p| p.by_value.get(value))
            .map_or(NONE, Vec::as_slice)
    }
}
