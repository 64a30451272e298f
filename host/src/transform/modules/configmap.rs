//! Guest modules from ConfigMaps (Kubernetes): a `binaryData` entry in the
//! MetricsExporter's namespace, checked against its `sha256` when given. A
//! ConfigMap holds at most 1 MiB, so larger modules must come from a
//! registry; and pull secrets for OCI modules, read from Secrets.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use super::docker_config::DockerAuths;
use super::{Fetched, ModuleError, ModuleReason, sha256_digest};

/// A 403: the host's ServiceAccount has no Role granting `get` on
/// `resource` in `namespace` (the base RBAC grants none anywhere).
fn no_permission(resource: &str, namespace: &str, server: &str) -> String {
    format!(
        "no permission to get {resource} in namespace {namespace}: give the host's ServiceAccount a Role there (deploy/components/watch-namespace); the API server said: {server}"
    )
}

/// What the API server allows in one ConfigMap.
pub const CONFIGMAP_LIMIT: usize = 1 << 20;

pub async fn fetch(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    sha256: Option<&str>,
    max_size: u64,
) -> Result<Fetched, ModuleError> {
    let shown = format!("configMap {namespace}/{name} key {key}");
    let fail = |reason, message: String| ModuleError::new(&shown, reason, message);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = match api.get_opt(name).await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Err(fail(ModuleReason::PullFailed, "no such ConfigMap".into())),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(fail(
                ModuleReason::Unauthorized,
                no_permission("configmaps", namespace, &e.message),
            ));
        }
        Err(kube::Error::Api(e)) if e.code == 401 => {
            return Err(fail(
                ModuleReason::Unauthorized,
                format!("the API server refused to show it: {}", e.message),
            ));
        }
        Err(e) => return Err(fail(ModuleReason::PullFailed, e.to_string())),
    };
    let Some(bytes) = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
    else {
        let mut keys: Vec<String> = cm
            .binary_data
            .iter()
            .flat_map(|d| d.keys().cloned())
            .collect();
        keys.extend(
            cm.data
                .iter()
                .flat_map(|d| d.keys().map(|k| format!("{k} (data, not binaryData)"))),
        );
        return Err(fail(
            ModuleReason::PullFailed,
            format!(
                "no binaryData key `{key}` (it has: {}); a ConfigMap holds at most 1 MiB, so a larger module goes in an OCI registry",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        ));
    };
    if bytes.len() as u64 > max_size {
        return Err(fail(
            ModuleReason::TooLarge,
            format!(
                "the module is {} bytes, over maxModuleSize ({max_size} bytes)",
                bytes.len()
            ),
        ));
    }
    let digest = sha256_digest(&bytes);
    if let Some(want) = sha256
        && digest != format!("sha256:{want}")
    {
        return Err(fail(
            ModuleReason::DigestMismatch,
            format!(
                "its bytes have {digest}, not sha256:{want} as the MetricsExporter pins; refusing them"
            ),
        ));
    }
    Ok(Fetched {
        bytes,
        manifest_digest: None,
        layer_digest: digest,
        from_cache: false,
        warning: None,
    })
}

/// The registry credentials in a `kubernetes.io/dockerconfigjson` Secret.
pub async fn pull_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    module: &str,
) -> Result<DockerAuths, ModuleError> {
    let fail = |reason, message: String| ModuleError::new(module, reason, message);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(fail(
                ModuleReason::Unauthorized,
                format!("pull secret {namespace}/{name} does not exist"),
            ));
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(fail(
                ModuleReason::Unauthorized,
                format!(
                    "pull secret {namespace}/{name}: {}",
                    no_permission("secrets", namespace, &e.message)
                ),
            ));
        }
        Err(e) => {
            return Err(fail(
                ModuleReason::Unauthorized,
                format!("pull secret {namespace}/{name}: {e}"),
            ));
        }
    };
    let kind = secret.type_.clone().unwrap_or_default();
    if kind != "kubernetes.io/dockerconfigjson" {
        return Err(fail(
            ModuleReason::Unauthorized,
            format!(
                "pull secret {namespace}/{name} has type `{kind}`, not kubernetes.io/dockerconfigjson"
            ),
        ));
    }
    let Some(json) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
    else {
        return Err(fail(
            ModuleReason::Unauthorized,
            format!("pull secret {namespace}/{name} has no .dockerconfigjson"),
        ));
    };
    DockerAuths::parse(&format!("secret {namespace}/{name}"), &json.0)
        .map_err(|m| fail(ModuleReason::Unauthorized, m))
}
