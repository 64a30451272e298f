//! Manifests from a folder: every `.yaml`, `.yml` and `.json` file below it,
//! multi-document files too. A file that stops parsing keeps its last good
//! objects (and the error is reported), so an edit in progress never stops
//! exports that were running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{MetaExt, MetricsExporter, Resource, SummaryRule};

/// Everything read from the folder, by `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Each exporter with the file it came from.
    pub exporters: BTreeMap<String, (MetricsExporter, PathBuf)>,
    pub rules: BTreeMap<String, SummaryRule>,
    /// Files that could not be read, with why.
    pub errors: Vec<(PathBuf, String)>,
}

struct FileEntry {
    digest: [u8; 32],
    resources: Vec<Resource>,
}

pub struct ManifestFolder {
    root: PathBuf,
    files: HashMap<PathBuf, FileEntry>,
}

impl ManifestFolder {
    pub fn new(root: PathBuf) -> Self {
        ManifestFolder {
            root,
            files: HashMap::new(),
        }
    }

    /// Reads the folder again. Returns the catalog and whether anything
    /// changed since the last scan.
    pub fn scan(&mut self) -> Result<(Catalog, bool), std::io::Error> {
        let mut paths = Vec::new();
        collect(&self.root, &mut paths)?;
        paths.sort();
        let mut changed = paths.len() != self.files.len();
        let mut errors = Vec::new();
        let mut seen = HashMap::new();
        for path in paths {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // Deleted between listing and reading: the next scan sees it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let previous = match self.files.remove(&path) {
                Some(entry) if entry.digest == digest => {
                    seen.insert(path, entry);
                    continue;
                }
                previous => previous,
            };
            changed = true;
            let resources = match parse(&bytes) {
                Ok(resources) => resources,
                Err(message) => {
                    errors.push((path.clone(), message));
                    // Keep the last good objects; the new digest stops the
                    // same error from being reported on every scan.
                    previous.map(|e| e.resources).unwrap_or_default()
                }
            };
            seen.insert(path, FileEntry { digest, resources });
        }
        if !self.files.is_empty() {
            changed = true; // files deleted since the last scan
        }
        self.files = seen;
        Ok((self.catalog(errors), changed))
    }

    fn catalog(&self, mut errors: Vec<(PathBuf, String)>) -> Catalog {
        let mut catalog = Catalog::default();
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        for path in paths {
            for resource in &self.files[path].resources {
                match resource {
                    Resource::MetricsExporter(me) => {
                        let key = me.metadata.key();
                        if let Some((_, first)) = catalog.exporters.get(&key) {
                            errors.push((
                                path.clone(),
                                format!(
                                    "MetricsExporter {key} is also defined in {}",
                                    first.display()
                                ),
                            ));
                            continue;
                        }
                        catalog
                            .exporters
                            .insert(key, ((**me).clone(), path.clone()));
                    }
                    Resource::SummaryRule(rule) => {
                        let key = rule.metadata.key();
                        if catalog.rules.contains_key(&key) {
                            errors.push((
                                path.clone(),
                                format!("SummaryRule {key} is defined twice"),
                            ));
                            continue;
                        }
                        catalog.rules.insert(key, (**rule).clone());
                    }
                }
            }
        }
        catalog.errors = errors;
        catalog
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), std::io::Error> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editors' swap files, hidden folders
        }
        if entry.file_type()?.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// All documents of a file; an error names the document.
fn parse(bytes: &[u8]) -> Result<Vec<Resource>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            serde_json::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        match Resource::from_value(value) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(e) => return Err(format!("document {}: {e}", i + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata: {name: r, namespace: ns, labels: {team: a}}\nspec: {database: DB, table: T, body: x, interval: 5m}\n";
    const EXPORTER: &str = "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: e, namespace: ns}\nspec:\n  exporters: [console]\n  interval: 1m\n  transform: {valueColumn: v, timestampColumn: t, defaultMetricName: m}\n";

    #[test]
    fn multi_document_files_changes_and_last_good() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("all.yaml"),
            format!("{RULE}---\n{EXPORTER}---\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut folder = ManifestFolder::new(dir.path().to_path_buf());
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed);
        assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
        assert!(catalog.rules.contains_key("ns/r") && catalog.exporters.contains_key("ns/e"));
        assert!(!folder.scan().unwrap().1, "nothing changed");

        std::fs::write(
            dir.path().join("all.yaml"),
            "kind: MetricsExporter\n  bad: [",
        )
        .unwrap();
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed);
        assert_eq!(catalog.errors.len(), 1);
        assert!(
            catalog.exporters.contains_key("ns/e"),
            "last good objects are kept"
        );

        std::fs::remove_file(dir.path().join("all.yaml")).unwrap();
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed && catalog.exporters.is_empty() && catalog.rules.is_empty());
    }
}
