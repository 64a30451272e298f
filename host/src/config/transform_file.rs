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
    match (kind.as_str(), v.as_str()) {
        ("builtin", Some(name)) => Ok(ModuleRef::Builtin(name.to_string())),
        ("file", Some(p)) => Ok(ModuleRef::File(base.join(p))),
        ("builtin" | "file", None) => Err(format!("transform.module.{kind} must be a string")),
        ("configMap" | "oci", _) => Err(format!(
            "transform.module.{kind} is not supported by this version; use `builtin` or `file`"
        )),
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

        let err = parse("s.yaml", "kind: SummaryRule\nspec: {}\n", Path::new(".")).unwrap_err();
        assert!(
            err.to_string().contains("found kind `SummaryRule`"),
            "{err}"
        );
    }
}
