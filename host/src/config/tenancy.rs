//! `tenancy:` in the host configuration: which namespaces may read which
//! databases, and whether their MetricsExporters may run their own KQL
//! (`body`). Every query runs with the host's identity, so this is what
//! keeps one team's manifests off another team's data. Without the section
//! every namespace may read every database (one team, as before).
//!
//! ```yaml
//! tenancy:
//!   namespaces:
//!     team-a: {databases: [TeamA], allowBody: true}
//!     "*": {databases: [Shared]}       # every namespace not listed
//! ```
//!
//! Database names compare without case, as Kusto compares them; `"*"` in
//! `databases` allows every database. Local mode reads tables from folders
//! named by database, so the same policy decides which folders a namespace
//! reads.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::source::kusto::kql_scope::{self, ScopeError};

/// The entry for every namespace not listed by name.
pub const ANY_NAMESPACE: &str = "*";
/// In `databases`: every database.
pub const ANY_DATABASE: &str = "*";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenancyConfig {
    /// By namespace name, or `*` for the rest. A namespace without an
    /// entry (and no `*`) may read nothing.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacePolicy {
    /// Databases this namespace's SummaryRules and MetricsExporters read.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Whether its MetricsExporters may give `database` and `body` (their
    /// own KQL) instead of selecting SummaryRules. Off unless said.
    #[serde(default)]
    pub allow_body: bool,
}

/// Why a namespace may not do what a manifest asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenancyError {
    #[error("namespace `{namespace}` may not read database `{database}` ({entry})")]
    DatabaseNotAllowed {
        namespace: String,
        database: String,
        /// The policy entry that decided, described.
        entry: String,
    },
    #[error("namespace `{namespace}` may not run its own KQL (spec.body) ({entry})")]
    BodyNotAllowed { namespace: String, entry: String },
    #[error("spec.body in namespace `{namespace}`: {source} ({entry})")]
    BodyOutOfScope {
        namespace: String,
        entry: String,
        #[source]
        source: ScopeError,
    },
}

/// A manifest outside the policy stays outside until it or the policy
/// changes: never worth a retry.
impl crate::error::Classify for TenancyError {
    fn retry_class(&self) -> crate::error::RetryClass {
        crate::error::RetryClass::Permanent
    }
}

impl TenancyConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (ns, policy) in &self.namespaces {
            if ns.trim().is_empty() {
                return Err("namespaces: a namespace name is empty".to_string());
            }
            for (i, db) in policy.databases.iter().enumerate() {
                if db.trim().is_empty() {
                    return Err(format!("namespaces.{ns}.databases[{i}]: must not be empty"));
                }
            }
        }
        Ok(())
    }

    /// The entry that applies to `namespace`, with its name in the config.
    fn entry(&self, namespace: &str) -> Option<(&str, &NamespacePolicy)> {
        self.namespaces
            .get_key_value(namespace)
            .or_else(|| self.namespaces.get_key_value(ANY_NAMESPACE))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// Says which entry decided for `namespace` and what it allows.
    fn describe(&self, namespace: &str) -> String {
        match self.entry(namespace) {
            None => format!(
                "tenancy.namespaces has no entry `{namespace}` and no `{ANY_NAMESPACE}` entry"
            ),
            Some((key, policy)) => format!(
                "tenancy.namespaces.{key} allows databases: {}; allowBody: {}",
                if policy.databases.is_empty() {
                    "none".to_string()
                } else {
                    policy.databases.join(", ")
                },
                policy.allow_body
            ),
        }
    }

    /// Whether `namespace` may read `database`.
    pub fn allows(&self, namespace: &str, database: &str) -> bool {
        self.entry(namespace).is_some_and(|(_, p)| {
            p.databases
                .iter()
                .any(|d| d == ANY_DATABASE || d.eq_ignore_ascii_case(database))
        })
    }

    pub fn check_database(&self, namespace: &str, database: &str) -> Result<(), TenancyError> {
        if self.allows(namespace, database) {
            return Ok(());
        }
        Err(TenancyError::DatabaseNotAllowed {
            namespace: namespace.to_string(),
            database: database.to_string(),
            entry: self.describe(namespace),
        })
    }

    /// A MetricsExporter's own query: allowed at all, in an allowed
    /// database, and reaching no further (see [`kql_scope`]).
    pub fn check_body(
        &self,
        namespace: &str,
        database: &str,
        body: &str,
    ) -> Result<(), TenancyError> {
        if !self.entry(namespace).is_some_and(|(_, p)| p.allow_body) {
            return Err(TenancyError::BodyNotAllowed {
                namespace: namespace.to_string(),
                entry: self.describe(namespace),
            });
        }
        self.check_database(namespace, database)?;
        kql_scope::check(body, |db| self.allows(namespace, db)).map_err(|source| {
            TenancyError::BodyOutOfScope {
                namespace: namespace.to_string(),
                entry: self.describe(namespace),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TenancyConfig {
        serde_yaml::from_str(
            "namespaces:\n  team-a: {databases: [TeamA, Shared], allowBody: true}\n  admins: {databases: ['*']}\n  '*': {databases: [Shared]}\n",
        )
        .unwrap()
    }

    #[test]
    fn databases_by_namespace_without_case() {
        let p = policy();
        p.validate().unwrap();
        assert!(p.allows("team-a", "teama"));
        assert!(p.allows("team-a", "SHARED"));
        assert!(!p.allows("team-a", "TeamB"));
        assert!(p.allows("admins", "Anything"));
        assert!(p.allows("team-z", "Shared"), "the `*` entry");
        assert!(!p.allows("team-z", "TeamA"));
        let e = p.check_database("team-z", "TeamA").unwrap_err();
        assert_eq!(
            e.to_string(),
            "namespace `team-z` may not read database `TeamA` (tenancy.namespaces.* allows databases: Shared; allowBody: false)"
        );
        let strict: TenancyConfig =
            serde_yaml::from_str("namespaces: {team-a: {databases: [A]}}").unwrap();
        assert_eq!(
            strict
                .check_database("team-b", "A")
                .unwrap_err()
                .to_string(),
            "namespace `team-b` may not read database `A` (tenancy.namespaces has no entry `team-b` and no `*` entry)"
        );
    }

    #[test]
    fn bodies_need_allow_body_and_stay_in_scope() {
        let p = policy();
        assert_eq!(
            p.check_body("team-a", "TeamA", "T | take 1"),
            Ok(()),
            "allowed"
        );
        assert!(matches!(
            p.check_body("team-z", "Shared", "T | take 1"),
            Err(TenancyError::BodyNotAllowed { .. })
        ));
        assert!(matches!(
            p.check_body("team-a", "TeamB", "T | take 1"),
            Err(TenancyError::DatabaseNotAllowed { .. })
        ));
        let e = p
            .check_body("team-a", "TeamA", "cluster('other').database('TeamA').T")
            .unwrap_err();
        assert!(e.to_string().contains("cross-cluster"), "{e}");
        assert!(
            p.check_body("team-a", "TeamA", "database('shared').T | take 1")
                .is_ok()
        );
        let e = p
            .check_body("team-a", "TeamA", "database('TeamB').T")
            .unwrap_err();
        assert!(e.to_string().contains("database `TeamB`"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e: Result<TenancyConfig, _> = serde_yaml::from_str("namespaces: {a: {database: [x]}}");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("unknown field `database`")
        );
        let p: TenancyConfig = serde_yaml::from_str("namespaces: {a: {databases: ['']}}").unwrap();
        assert_eq!(
            p.validate().unwrap_err(),
            "namespaces.a.databases[0]: must not be empty"
        );
    }
}
