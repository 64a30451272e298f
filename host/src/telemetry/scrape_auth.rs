//! The bearer token that scrape exporters' paths can require
//! (`server.scrapeToken`). Exported series are the tenants' data; the host's
//! own `/metrics`, `/healthz` and `/readyz` stay open for probes and the
//! platform's Prometheus.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token, kept only as its SHA-256 digest: comparing digests in constant
/// time tells a caller neither where a guess went wrong nor how long the
/// token is.
#[derive(Clone, PartialEq, Eq)]
pub struct ScrapeToken {
    digest: [u8; 32],
    /// Where it came from, for logs.
    origin: String,
}

impl fmt::Debug for ScrapeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeToken")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ScrapeToken {
    pub fn new(token: &str, origin: &str) -> Result<ScrapeToken, String> {
        if token.trim().is_empty() {
            return Err(format!("{origin} is empty"));
        }
        Ok(ScrapeToken {
            digest: Sha256::digest(token.as_bytes()).into(),
            origin: origin.to_string(),
        })
    }

    pub fn from_env(var: &str) -> Result<ScrapeToken, String> {
        let origin = format!("environment variable {var:?}");
        match std::env::var(var) {
            Ok(v) => Self::new(&v, &origin),
            Err(std::env::VarError::NotPresent) => Err(format!("{origin} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{origin} is not UTF-8")),
        }
    }

    /// A file as Kubernetes mounts a Secret key; a trailing newline is no
    /// part of the token.
    pub fn from_file(path: &Path) -> Result<ScrapeToken, String> {
        let origin = format!("file {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Self::new(text.strip_suffix('\r').unwrap_or(text), &origin)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let given: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        given.ct_eq(&self.digest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_is_admitted() {
        let t = ScrapeToken::new("s3cret", "test").unwrap();
        assert!(t.admits(Some("Bearer s3cret")));
        assert!(t.admits(Some("bearer  s3cret ")));
        assert!(!t.admits(Some("Bearer s3cre")));
        assert!(!t.admits(Some("Basic s3cret")));
        assert!(!t.admits(Some("s3cret")));
        assert!(!t.admits(None));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(ScrapeToken::new(" \n", "x").is_err());
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert!(
            ScrapeToken::from_file(&path)
                .unwrap()
                .admits(Some("Bearer abc"))
        );
        let e = ScrapeToken::from_file(&dir.path().join("none")).unwrap_err();
        assert!(e.contains("cannot read file"), "{e}");
        let e = ScrapeToken::from_env("KM_TEST_SURELY_UNSET_SCRAPE_TOKEN").unwrap_err();
        assert!(e.contains("is not set"), "{e}");
    }
}
