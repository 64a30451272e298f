//! Manifests from a folder: every `.yaml`, `.yml` and `.json` file below it,
//! multi-document files too. A file that stops parsing keeps its last good
//! objects (and the error is reported), so an edit in progress never stops
//! exports that were running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{MetaExt, MetricsExporter, Resource, SummaryRule};

/// A file changed less than this before it was looked at may change again
/// without its size or times showing it (coarse file system clocks: FAT
/// keeps 2 s), so it is read again on the next scan, as git does with its
/// index.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Everything read from the folder, by `namespace/name`. The objects are
/// shared with the folder's own copy, so a catalog costs no deep copies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Each exporter with the file it came from.
    pub exporters: BTreeMap<String, (Arc<MetricsExporter>, PathBuf)>,
    pub rules: BTreeMap<String, Arc<SummaryRule>>,
    /// Files that could not be read, with why.
    pub errors: Vec<(PathBuf, String)>,
}

/// What a stat says about a file; when any of it differs from the last
/// scan, the file is read (and its digest compared) again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file changed so shortly before `looked` that a change
    /// right after could leave the same stamp.
    fn is_racy(&self, looked: SystemTime) -> bool {
        self.modified.is_none_or(|m| m + RACY_WINDOW > looked)
    }
}

#[derive(Debug, Clone)]
enum Object {
    Exporter(Arc<MetricsExporter>),
    Rule(Arc<SummaryRule>),
}

struct FileEntry {
    stamp: Stamp,
    /// The stamp cannot vouch for the content yet: read it next scan.
    racy: bool,
    digest: [u8; 32],
    objects: Vec<Object>,
}

pub struct ManifestFolder {
    root: PathBuf,
    files: HashMap<PathBuf, FileEntry>,
    /// The catalog of the last scan that saw a change.
    /// Shared, so an unchanged scan hands it out without a copy.
    catalog: Option<std::sync::Arc<Catalog>>,
    /// Files read so far, for the log and the tests.
    reads: u64,
}

impl ManifestFolder {
    pub fn new(root: PathBuf) -> Self {
        ManifestFolder {
            root,
            files: HashMap::new(),
            catalog: None,
            reads: 0,
        }
    }

    /// How many times a file was read since the folder was opened.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Looks at the folder again. Returns the catalog and whether anything
    /// changed since the last scan. Only files whose size, times or inode
    /// changed are read; when nothing did, the catalog is the last one
    /// (errors included).
    pub fn scan(&mut self) -> Result<(std::sync::Arc<Catalog>, bool), std::io::Error> {
        // Listed with their stats (taken relative to the folder, not by a
        // walk of the whole path); in no order: the catalog sorts.
        let mut paths = Vec::new();
        collect(&self.root, &mut paths)?;
        let looked = SystemTime::now();
        let mut changed = false;
        let mut errors = Vec::new();
        let mut seen = HashMap::with_capacity(paths.len());
        for (path, stamp) in paths {
            let previous = match self.files.remove(&path) {
                Some(entry) if entry.stamp == stamp && !entry.racy => {
                    seen.insert(path, entry);
                    continue;
                }
                previous => previous,
            };
            self.reads += 1;
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    changed |= previous.is_some();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let racy = stamp.is_racy(looked);
            let objects = match previous {
                // Touched, or looked at again after a racy stamp: the same.
                Some(entry) if entry.digest == digest => entry.objects,
                previous => {
                    changed = true;
                    match parse(&bytes) {
                        Ok(objects) => objects,
                        Err(message) => {
                            errors.push((path.clone(), message));
                            // Keep the last good objects; the new digest
                            // stops the same error from being reported on
                            // every scan.
                            previous.map(|e| e.objects).unwrap_or_default()
                        }
                    }
                }
            };
            seen.insert(
                path,
                FileEntry {
                    stamp,
                    racy,
                    digest,
                    objects,
                },
            );
        }
        if !self.files.is_empty() {
            changed = true; // files deleted since the last scan
        }
        self.files = seen;
        if changed || self.catalog.is_none() {
            self.catalog = Some(std::sync::Arc::new(self.catalog(errors)));
        }
        Ok((self.catalog.clone().unwrap_or_default(), changed))
    }

    fn catalog(&self, mut errors: Vec<(PathBuf, String)>) -> Catalog {
        let mut catalog = Catalog::default();
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        for path in paths {
            for object in &self.files[path].objects {
                match object {
                    Object::Exporter(me) => {
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
                        catalog.exporters.insert(key, (me.clone(), path.clone()));
                    }
                    Object::Rule(rule) => {
                        let key = rule.metadata.key();
                        if catalog.rules.contains_key(&key) {
                            errors.push((
                                path.clone(),
                                format!("SummaryRule {key} is defined twice"),
                            ));
                            continue;
                        }
                        catalog.rules.insert(key, rule.clone());
                    }
                }
            }
        }
        catalog.errors = errors;
        catalog
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, Stamp)>) -> Result<(), std::io::Error> {
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
            // A symlink is followed, as reading it does.
            let meta = if entry.file_type()?.is_symlink() {
                std::fs::metadata(&path)
            } else {
                entry.metadata()
            };
            match meta {
                Ok(meta) => out.push((path, Stamp::of(&meta))),
                // Deleted between listing and looking: gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// All documents of a file; an error names the document.
fn parse(bytes: &[u8]) -> Result<Vec<Object>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value =
            serde_json::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        match Resource::from_value(value) {
            Ok(Some(Resource::MetricsExporter(me))) => out.push(Object::Exporter(Arc::from(me))),
            Ok(Some(Resource::SummaryRule(rule))) => out.push(Object::Rule(Arc::from(rule))),
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

    /// Sets a file's modification time well before now, as if it had been
    /// written a while ago.
    fn age(path: &Path) {
        let old = SystemTime::now() - 10 * RACY_WINDOW;
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn a_scan_reads_only_files_whose_stat_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = |i: usize| dir.path().join(format!("r{i}.yaml"));
        for i in 0..10 {
            std::fs::write(file(i), RULE.replace("name: r,", &format!("name: r{i},"))).unwrap();
            age(&file(i));
        }
        let mut folder = ManifestFolder::new(dir.path().to_path_buf());
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed);
        assert_eq!((catalog.rules.len(), folder.reads()), (10, 10));
        let (again, changed) = folder.scan().unwrap();
        assert!(!changed);
        assert_eq!(folder.reads(), 10, "nothing changed, nothing read");
        assert_eq!(again, catalog, "the same catalog");

        // New content: read, and noticed.
        std::fs::write(file(3), RULE.replace("name: r,", "name: renamed,")).unwrap();
        age(&file(3));
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed);
        assert_eq!(folder.reads(), 11);
        assert!(catalog.rules.contains_key("ns/renamed") && !catalog.rules.contains_key("ns/r3"));

        // Touched: read (its times changed), but the same content.
        age(&file(4));
        assert!(!folder.scan().unwrap().1);
        assert_eq!(folder.reads(), 12);

        // Written just now: the stamp cannot vouch for it yet, so it is
        // read again on each scan until it is older than RACY_WINDOW.
        std::fs::write(file(5), RULE.replace("name: r,", "name: fresh,")).unwrap();
        assert!(folder.scan().unwrap().1);
        assert_eq!(folder.reads(), 13);
        assert!(!folder.scan().unwrap().1);
        assert_eq!(folder.reads(), 14, "a racy file is read again");
        age(&file(5));
        folder.scan().unwrap();
        assert_eq!(folder.reads(), 15);
        folder.scan().unwrap();
        assert_eq!(folder.reads(), 15);

        // Deleted: noticed without reading anything.
        std::fs::remove_file(file(0)).unwrap();
        let (catalog, changed) = folder.scan().unwrap();
        assert!(changed && !catalog.rules.contains_key("ns/r0"));
        assert_eq!((catalog.rules.len(), folder.reads()), (9, 15));
    }
}
