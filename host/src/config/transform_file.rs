//! A `transform` block from a file: either the bare block or a whole
//! MetricsExporter manifest (its `spec.transform`), in YAML or JSON.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Which guest runs a transform (`transform.module`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    Builtin(String),
    /// A path, already resolved against the manifest's folder.
    File(PathBuf),
    /// A `binaryData` entry of a ConfigMap in the exporter's namespace.
    ConfigMap {
        name: String,
        key: String,
        /// Expected sha256 (hex) of the module.
        sha256: Option<String>,
    },
    Oci(OciRef),
}

/// An OCI artifact holding a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `registry/repository[:tag][@sha256:...]`.
    pub reference: String,
    /// The manifest digest the artifact is pinned to (from `digest` or the
    /// reference's `@sha256:`).
    pub digest: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the exporter's namespace.
    pub pull_secret: Option<String>,
    pub pull_policy: PullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// A tag is resolved once, then its digest is kept.
    #[default]
    IfNotPresent,
    /// A tag is resolved before every run.
    Always,
}

impl ModuleRef {
    /// How messages and status name it.
    pub fn describe(&self) -> String {
        match self {
            ModuleRef::Builtin(n) => format!("builtin {n}"),
            ModuleRef::File(p) => format!("file {}", p.display()),
            ModuleRef::ConfigMap { name, key, .. } => format!("configMap {name} key {key}"),
            ModuleRef::Oci(o) => match &o.digest {
                Some(d) if !o.reference.contains('@') => format!("oci://{}@{d}", o.reference),
                _ => format!("oci://{}", o.reference),
            },
        }
    }
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Checks an OCI reference and its pin: `ref@sha256:X` and `digest: Y`
/// must agree.
pub fn oci_ref(
    reference: &str,
    digest: Option<&str>,
    pull_secret: Option<String>,
    pull_policy: PullPolicy,
) -> Result<OciRef, String> {
    let reference = reference.trim().trim_start_matches("oci://").to_string();
    if reference.is_empty() || !reference.contains('/') {
        return Err(format!(
            "transform.module.oci.ref: `{reference}` is not a registry reference like registry.example.com/team/transform:1.2"
        ));
    }
    let in_ref = reference.split_once('@').map(|(_, d)| d.to_string());
    if let Some(d) = &in_ref
        && !is_sha256_digest(d)
    {
        return Err(format!(
            "transform.module.oci.ref: `{d}` is not a sha256 digest (sha256: and 64 hex digits)"
        ));
    }
    if let Some(d) = digest
        && !is_sha256_digest(d)
    {
        return Err(format!(
            "transform.module.oci.digest: `{d}` is not a sha256 digest (sha256: and 64 hex digits)"
        ));
    }
    let digest = match (in_ref, digest) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "transform.module.oci: the reference pins {a} but digest says {b}; they must agree"
            ));
        }
        (a, b) => a.or(b.map(str::to_string)),
    };
    Ok(OciRef {
        reference,
        digest,
        pull_secret,
        pull_policy,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformSpec {
    /// What the guest's `validate` and `transform` get: the block as JSON
    /// text, without `module`.
    pub config_json: String,
    /// `None`: the builtin default.
    pub module: Option<ModuleRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML or JSON: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub fn load(path: &Path) -> Result<TransformSpec, TransformFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TransformFileError::Io {
        path: shown.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&shown, &text, base)
}

/// `origin` names the source in errors; `base` resolves relative module paths.
pub fn parse(origin: &str, text: &str, base: &Path) -> Result<TransformSpec, TransformFileError> {
    // YAML is a superset of JSON, so one parser reads both.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| TransformFileError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
    let value = serde_json::to_value(yaml).map_err(|e| TransformFileError::Parse {
        path: origin.to_string(),
        message: e.to_string(),
    })?;
    let invalid = |message: String| TransformFileError::Invalid {
        path: origin.to_string(),
        message,
    };
    let block = if value.get("kind").is_some() || value.get("spec").is_some() {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "MetricsExporter" {
            return Err(invalid(format!(
                "expected a MetricsExporter manifest or a bare transform block, found kind `{kind}`"
            )));
        }
        value
            .pointer("/spec/transform")
            .cloned()
            .ok_or_else(|| invalid("the MetricsExporter has no spec.transform".to_string()))?
    } else {
        value.get("transform").cloned().unwrap_or(value)
    };
    transform_spec(block, base).map_err(invalid)
}

/// Splits `module` off a transform block.
pub fn transform_spec(block: Value, base: &Path) -> Result<TransformSpec, String> {
    let Value::Object(mut map) = block else {
        return Err("the transform block must be a mapping of keys to values".to_string());
    };
    let module = match map.remove("module") {
        None | Some(Value::Null) => None,
        Some(m) => Some(module_ref(&m, base)?),
    };
    Ok(TransformSpec {
        config_json: Value::Object(map).to_string(),
        module,
    })
}

fn module_ref(m: &Value, base: &Path) -> Result<ModuleRef, String> {
    let Some(map) = m.as_object().filter(|o| o.len() == 1) else {
        return Err(
            "transform.module must have exactly one of `builtin`, `file`, `configMap`, `oci`"
                .to_string(),
        );
    };
    let (kind, v) = map.iter().next().ok_or("transform.module is empty")?;
    let field = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    match (kind.as_str(), v.as_str()) {
        ("builtin", Some(name)) => Ok(ModuleRef::Builtin(name.to_string())),
        ("file", Some(p)) => Ok(ModuleRef::File(base.join(p))),
        ("builtin" | "file", None) => Err(format!("transform.module.{kind} must be a string")),
        ("configMap", _) => {
            let name = field("name").ok_or("transform.module.configMap.name is required")?;
            let key = field("key").ok_or("transform.module.configMap.key is required")?;
            let sha256 = field("sha256");
            if let Some(h) = &sha256
                && !is_sha256_digest(&format!("sha256:{h}"))
            {
                return Err(format!(
                    "transform.module.configMap.sha256: `{h}` is not 64 lowercase hex digits"
                ));
            }
            Ok(ModuleRef::ConfigMap { name, key, sha256 })
        }
        ("oci", _) => {
            let reference = field("ref").ok_or("transform.module.oci.ref is required")?;
            let secret = v
                .pointer("/pullSecretRef/name")
                .and_then(Value::as_str)
                .map(str::to_string);
            let policy = match field("pullPolicy").as_deref() {
                None | Some("IfNotPresent") => PullPolicy::IfNotPresent,
                Some("Always") => PullPolicy::Always,
                Some(other) => {
                    return Err(format!(
                        "transform.module.oci.pullPolicy: `{other}` (expected IfNotPresent or Always)"
                    ));
                }
            };
            oci_ref(&reference, field("digest").as_deref(), secret, policy).map(ModuleRef::Oci)
        }
        (other, _) => Err(format!(
            "transform.module has unknown kind `{other}` (expected builtin, file, configMap or oci)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_manifest_or_a_bare_block() {
        let manifest = "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: x}\nspec:\n  transform:\n    valueColumn: v\n    module: {file: g.wasm}\n";
        let spec = parse("m.yaml", manifest, Path::new("/d")).unwrap();
        assert_eq!(spec.config_json, r#"{"valueColumn":"v"}"#);
        assert_eq!(
            spec.module,
            Some(ModuleRef::File(PathBuf::from("/d/g.wasm")))
        );

        let bare = parse(
            "t.json",
            r#"{"transform": {"valueColumn": "v"}}"#,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(bare.config_json, r#"{"valueColumn":"v"}"#);
        assert_eq!(bare.module, None);

        let oci = |m: &str| {
            transform_spec(
                serde_json::from_str(&format!(r#"{{"module": {m}}}"#)).unwrap(),
                Path::new("."),
            )
        };
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = oci(&format!(
            r#"{{"oci": {{"ref": "reg.example.com/team/t:1.2", "digest": "{d}"}}}}"#
        ))
        .unwrap();
        let Some(ModuleRef::Oci(o)) = pinned.module else {
            panic!()
        };
        assert_eq!(
            (o.digest.as_deref(), o.pull_policy),
            (Some(d.as_str()), PullPolicy::IfNotPresent)
        );
        let e = oci(&format!(
            r#"{{"oci": {{"ref": "reg.example.com/t@sha256:{}", "digest": "{d}"}}}}"#,
            "b".repeat(64)
        ))
        .unwrap_err();
        assert!(e.contains("must agree"), "{e}");
        assert!(
            oci(r#"{"oci": {"ref": "reg/t", "digest": "sha256:abc"}}"#)
                .unwrap_err()
                .contains("not a sha256 digest")
        );
        assert!(oci(r#"{"oci": {"ref": "reg/t", "pullPolicy": "Never"}}"#).is_err());
        let cm = oci(r#"{"configMap": {"name": "guests", "key": "ratio.wasm"}}"#).unwrap();
        assert!(matches!(cm.module, Some(ModuleRef::ConfigMap { .. })));
        assert!(
            oci(r#"{"configMap": {"name": "guests"}}"#)
                .unwrap_err()
                .contains("key is required")
        );

        let err = parse("s.yaml", "kind: SummaryRule\nspec: {}\n", Path::new(".")).unwrap_err();
        assert!(
            err.to_string().contains("found kind `SummaryRule`"),
            "{err}"
        );
    }
}
