//! What a MetricsExporter's own KQL (`spec.body`) may reach, checked on its
//! text before it is ever sent. The query runs with the host's identity, so
//! under a tenancy policy it must stay inside the databases its namespace
//! may read: no `cluster(...)` at all, `database(...)` only with a plain
//! string literal naming an allowed database, and none of the functions
//! and plugins that read outside the database ([`OUTSIDE_CALLS`]).
//!
//! This is a conservative text check, not a KQL parser: names are matched
//! without case, as whole words followed by `(` (whitespace and `//`
//! comments between them are skipped), anywhere in the text. A query that
//! only mentions one of these words in a string literal or a comment, as a
//! call, is refused too. What it cannot see: stored functions of the
//! database, which run whatever their authors put in them.

/// `cluster(...)`: a cross-cluster query, always refused.
pub const CLUSTER_CALL: &str = "cluster";
/// `database(...)`: a cross-database query, allowed only when its argument
/// is a plain string literal naming an allowed database.
pub const DATABASE_CALL: &str = "database";

/// Functions and plugins (`evaluate <plugin>(...)`) that read from, or
/// send to, somewhere outside the database the query runs in: external
/// tables and storage, SQL, Cosmos DB, MySQL, PostgreSQL, Azure Digital
/// Twins, HTTP endpoints, AI endpoints, and the sandboxed languages (whose
/// callout policy the host does not control).
pub const OUTSIDE_CALLS: &[&str] = &[
    "external_table",
    "externaldata",
    "sql_request",
    "cosmosdb_sql_request",
    "mysql_request",
    "postgresql_request",
    "azure_digital_twins_query_request",
    "http_request",
    "http_request_post",
    "ai_chat_completion",
    "ai_chat_completion_prompt",
    "ai_embed_text",
    "ai_embeddings",
    "python",
    "r",
];

/// Why a body may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("it calls cluster(...) (at byte {at}): cross-cluster queries are not allowed")]
    Cluster { at: usize },
    #[error(
        "it calls database(...) (at byte {at}) without a plain string literal naming the database"
    )]
    DatabaseNotLiteral { at: usize },
    #[error("it reads database `{database}` (database(...) at byte {at})")]
    Database { database: String, at: usize },
    #[error("it calls {name}(...) (at byte {at}), which reads outside the database")]
    Outside { name: &'static str, at: usize },
}

impl crate::error::Classify for ScopeError {
    fn retry_class(&self) -> crate::error::RetryClass {
        crate::error::RetryClass::Permanent
    }
}

/// Checks `body`; `allowed` says whether a database named in
/// `database("...")` may be read.
pub fn check(body: &str, allowed: impl Fn(&str) -> bool) -> Result<(), ScopeError> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        let word = &body[start..i];
        let Some(open) = call_paren(bytes, i) else {
            continue;
        };
        if word.eq_ignore_ascii_case(CLUSTER_CALL) {
            return Err(ScopeError::Cluster { at: start });
        }
        if word.eq_ignore_ascii_case(DATABASE_CALL) {
            let Some(name) = literal_argument(body, open + 1) else {
                return Err(ScopeError::DatabaseNotLiteral { at: start });
            };
            if !allowed(name) {
                return Err(ScopeError::Database {
                    database: name.to_string(),
                    at: start,
                });
            }
            continue;
        }
        if let Some(name) = OUTSIDE_CALLS.iter().find(|n| word.eq_ignore_ascii_case(n)) {
            return Err(ScopeError::Outside { name, at: start });
        }
    }
    Ok(())
}

/// KQL identifiers are letters, digits and `_`; any other byte (UTF-8
/// continuation bytes included) ends a word.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Skips whitespace and `//` comments from `i`.
fn skip_blank(bytes: &[u8], mut i: usize) -> usize {
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        return i;
    }
}

/// Where the `(` of a call is, when the word ending at `i` is followed by
/// one.
fn call_paren(bytes: &[u8], i: usize) -> Option<usize> {
    let j = skip_blank(bytes, i);
    (bytes.get(j) == Some(&b'(')).then_some(j)
}

/// The name in `("name")`, `('name')`, `(@"name")` or `(@'name')` starting
/// after the `(` at `from`: a plain literal, no escapes, nothing else
/// before the `)`.
fn literal_argument(body: &str, from: usize) -> Option<&str> {
    let bytes = body.as_bytes();
    let mut i = skip_blank(bytes, from);
    if bytes.get(i) == Some(&b'@') {
        i += 1;
    }
    let quote = *bytes.get(i).filter(|q| matches!(q, b'"' | b'\''))?;
    let start = i + 1;
    let len = bytes[start..].iter().position(|&b| b == quote)?;
    let name = &body[start..start + len];
    if name.is_empty() || name.contains(['\\', '\n']) {
        return None;
    }
    let close = skip_blank(bytes, start + len + 1);
    (bytes.get(close) == Some(&b')')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(body: &str) -> Result<(), ScopeError> {
        check(body, |db| db.eq_ignore_ascii_case("TeamDB"))
    }

    #[test]
    fn plain_queries_pass() {
        for body in [
            "Raw | where t between (_startTime .. _endTime) | summarize count() by bin(t, 1m)",
            "T | extend clustered = 1 | project database_name = 'x'",
            "database('TeamDB').T | take 1",
            "Database ( @\"teamdb\" ).T",
            "T | where name == 'cluster' | count",
            "T | extend mycluster = f(x), r2 = round(v, 2)",
        ] {
            assert_eq!(check_with(body), Ok(()), "{body}");
        }
    }

    #[test]
    fn reaching_outside_is_refused_whatever_the_case_and_spacing() {
        assert_eq!(
            check_with("cluster(\"other\").database(\"TeamDB\").T"),
            Err(ScopeError::Cluster { at: 0 })
        );
        assert!(matches!(
            check_with("T | union CLUSTER  (\"x\").database('y').T"),
            Err(ScopeError::Cluster { .. })
        ));
        assert!(matches!(
            check_with("cluster // hidden\n ('x').database('TeamDB').T"),
            Err(ScopeError::Cluster { .. })
        ));
        assert_eq!(
            check_with("T | join (database('Other').T) on k"),
            Err(ScopeError::Database {
                database: "Other".into(),
                at: 10
            })
        );
        for body in [
            "database(strcat('Te', 'amDB')).T",
            "database(name).T",
            "database('Team\\DB').T",
            "database('TeamDB', 'x').T",
            "database(",
        ] {
            assert!(
                matches!(check_with(body), Err(ScopeError::DatabaseNotLiteral { .. })),
                "{body}: {:?}",
                check_with(body)
            );
        }
        for (body, name) in [
            ("external_table('x')", "external_table"),
            (
                "T | evaluate sql_request('Server=...', 'select 1')",
                "sql_request",
            ),
            ("evaluate HTTP_REQUEST ('https://x')", "http_request"),
            (
                "evaluate http_request_post('https://x')",
                "http_request_post",
            ),
            (
                "evaluate cosmosdb_sql_request('x', 'y')",
                "cosmosdb_sql_request",
            ),
            (
                "evaluate azure_digital_twins_query_request('x', 'y')",
                "azure_digital_twins_query_request",
            ),
            ("externaldata (a:string) [@'https://x']", "externaldata"),
            ("T | evaluate python(typeof(*), 'x')", "python"),
        ] {
            assert_eq!(
                check_with(body).map_err(|e| match e {
                    ScopeError::Outside { name, .. } => name,
                    other => panic!("{other}"),
                }),
                Err(name),
                "{body}"
            );
        }
    }

    #[test]
    fn the_check_is_conservative_about_strings_and_comments() {
        // A mention in a string or a comment, written as a call, is refused:
        // the check does not parse KQL.
        assert!(check_with("T | where s == 'cluster(x)'").is_err());
        assert!(check_with("T // no cluster('x') here\n| take 1").is_err());
        assert_eq!(
            ScopeError::Cluster { at: 3 }.to_string(),
            "it calls cluster(...) (at byte 3): cross-cluster queries are not allowed"
        );
    }
}
