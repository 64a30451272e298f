//! Guest modules from OCI registries, in the CNCF Wasm OCI artifact layout
//! (`wkg oci push`): an image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and exactly one layer of type
//! `application/wasm`. Anything else is refused, naming what was found.
//!
//! A pinned manifest (by digest) is fetched once: later runs read the
//! manifest and the layer from the store and touch no network. A tag is
//! resolved once (`IfNotPresent`) or before every run (`Always`). The
//! manifest's bytes must have the pinned digest, the layer's bytes the
//! digest its descriptor gives, and the descriptor's size must be within
//! the limit before anything is downloaded.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::config::RegistriesConfig;
use super::docker_config::DockerAuths;
use super::store::BlobStore;
use super::{Fetched, ModuleError, ModuleReason, sha256_digest};
use crate::config::transform_file::{OciRef, PullPolicy};

pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A manifest is a few hundred bytes; one beyond this is not ours.
const MAX_MANIFEST_BYTES: usize = 256 * 1024;

pub struct Registries {
    client: Client,
    /// Local mode's credentials (`registries.dockerConfig`).
    local_auths: DockerAuths,
    max_size: u64,
    store: BlobStore,
    /// Tags resolved once (`IfNotPresent`): reference → manifest digest.
    tags: Mutex<HashMap<String, String>>,
}

impl Registries {
    pub fn new(config: &RegistriesConfig, store: BlobStore) -> Result<Registries, String> {
        let mut extra = Vec::new();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("registries.caFile {}: {e}", ca.display()))?;
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let local_auths = match &config.docker_config {
            None => DockerAuths::default(),
            Some(p) => {
                let text = std::fs::read(p)
                    .map_err(|e| format!("registries.dockerConfig {}: {e}", p.display()))?;
                DockerAuths::parse(&p.display().to_string(), &text)?
            }
        };
        let protocol = if config.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(config.insecure.clone())
        };
        let client = Client::new(ClientConfig {
            protocol,
            extra_root_certificates: extra,
            // A module is one artifact: an index (several platforms) is
            // not what we read.
            platform_resolver: None,
            ..ClientConfig::default()
        });
        Ok(Registries {
            client,
            local_auths,
            max_size: config.max_module_size()?,
            store,
            tags: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Fetches (or reads from the store) the module `r` names.
    /// `secret_auths`: credentials from the exporter's pull secret, which
    /// win over local mode's.
    pub async fn fetch(
        &self,
        r: &OciRef,
        secret_auths: Option<&DockerAuths>,
    ) -> Result<Fetched, ModuleError> {
        let shown = format!("oci://{}", r.reference);
        let fail = |reason, message: String| ModuleError::new(&shown, reason, message);
        let base: Reference = r.reference.parse().map_err(|e| {
            fail(
                ModuleReason::PullFailed,
                format!("not an OCI reference: {e}"),
            )
        })?;
        let auth = match secret_auths {
            Some(a) => a.for_registry(base.registry()),
            None => self.local_auths.for_registry(base.registry()),
        };
        let mut warning = None;
        let pinned = match &r.digest {
            Some(d) => Some(d.clone()),
            None => {
                warning = Some(format!(
                    "{shown} is a tag without a digest: pin it (digest: sha256:...) so that what runs cannot change under you"
                ));
                let known = self.lock_tags().get(&r.reference).cloned();
                match (r.pull_policy, known) {
                    (PullPolicy::IfNotPresent, Some(d)) => Some(d),
                    _ => None,
                }
            }
        };
        let mut from_cache = true;
        let (manifest, manifest_digest) = match pinned
            .as_ref()
            .and_then(|d| self.store.read(d).map(|m| (m, d.clone())))
        {
            Some(hit) => hit,
            None => {
                from_cache = false;
                let target = match &pinned {
                    Some(d) => Reference::with_digest(
                        base.registry().to_string(),
                        base.repository().to_string(),
                        d.clone(),
                    ),
                    None => base.clone(),
                };
                let (bytes, _) = self
                    .client
                    .pull_manifest_raw(&target, &auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
                    .await
                    .map_err(|e| pull_error(&shown, e))?;
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(fail(
                        ModuleReason::InvalidArtifact,
                        format!("the manifest is {} bytes: not a module's", bytes.len()),
                    ));
                }
                let digest = sha256_digest(&bytes);
                if let Some(want) = &pinned
                    && *want != digest
                {
                    return Err(fail(
                        ModuleReason::DigestMismatch,
                        format!(
                            "the registry served a manifest with digest {digest}, not the pinned {want}; refusing it"
                        ),
                    ));
                }
                let _ = self.store.write(&digest, &bytes);
                if r.digest.is_none() {
                    self.lock_tags().insert(r.reference.clone(), digest.clone());
                }
                (bytes.to_vec(), digest)
            }
        };
        let layer = wasm_layer(&manifest).map_err(|m| fail(ModuleReason::InvalidArtifact, m))?;
        if layer.size > self.max_size {
            return Err(fail(
                ModuleReason::TooLarge,
                format!(
                    "the module is {} bytes, over maxModuleSize ({} bytes)",
                    layer.size, self.max_size
                ),
            ));
        }
        let bytes = match self.store.read(&layer.digest) {
            Some(b) => b,
            None => {
                from_cache = false;
                let layer_ref = Reference::with_digest(
                    base.registry().to_string(),
                    base.repository().to_string(),
                    manifest_digest.clone(),
                );
                let mut stream = self
                    .client
                    .pull_blob_stream(&layer_ref, layer.digest.as_str())
                    .await
                    .map_err(|e| pull_error(&shown, e))?;
                let mut bytes = Vec::with_capacity(layer.size as usize);
                while let Some(chunk) = stream.stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        // oci-client checks the digest as the bytes stream in.
                        if e.to_string().to_ascii_lowercase().contains("digest") {
                            fail(
                                ModuleReason::DigestMismatch,
                                format!(
                                    "the layer's bytes do not have digest {} as its descriptor says ({e}); refusing them",
                                    layer.digest
                                ),
                            )
                        } else {
                            fail(ModuleReason::PullFailed, format!("reading the layer: {e}"))
                        }
                    })?;
                    if (bytes.len() + chunk.len()) as u64 > layer.size {
                        return Err(fail(
                            ModuleReason::DigestMismatch,
                            format!(
                                "the registry sent more than the {} bytes the layer descriptor gives",
                                layer.size
                            ),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let got = sha256_digest(&bytes);
                if got != layer.digest {
                    return Err(fail(
                        ModuleReason::DigestMismatch,
                        format!(
                            "the layer's bytes have digest {got}, not {} as its descriptor says; refusing them",
                            layer.digest
                        ),
                    ));
                }
                if let Err(e) = self.store.write(&layer.digest, &bytes) {
                    tracing::warn!(module = %shown, error = %e, "cannot cache the module; it is pulled again next time");
                }
                bytes
            }
        };
        Ok(Fetched {
            bytes,
            manifest_digest: Some(manifest_digest),
            layer_digest: layer.digest,
            from_cache,
            warning,
        })
    }

    fn lock_tags(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Layer {
    digest: String,
    size: u64,
}

/// The one `application/wasm` layer of a Wasm OCI artifact manifest.
fn wasm_layer(manifest: &[u8]) -> Result<Layer, String> {
    let v: Value =
        serde_json::from_slice(manifest).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let media = v
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(OCI_MANIFEST);
    if media != OCI_MANIFEST && media != DOCKER_MANIFEST {
        return Err(format!(
            "the manifest has media type `{media}`; a Wasm module is an image manifest ({OCI_MANIFEST})"
        ));
    }
    let config = v
        .pointer("/config/mediaType")
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    if config != WASM_CONFIG_MEDIA_TYPE {
        return Err(format!(
            "the config has media type `{config}`, not `{WASM_CONFIG_MEDIA_TYPE}`: this is not a Wasm component artifact (an image built for containers?)"
        ));
    }
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let types: Vec<&str> = layers
        .iter()
        .map(|l| {
            l.get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("(none)")
        })
        .collect();
    if layers.len() != 1 || types[0] != WASM_LAYER_MEDIA_TYPE {
        return Err(format!(
            "a Wasm artifact has exactly one `{WASM_LAYER_MEDIA_TYPE}` layer; this one has {} layer(s): {}",
            layers.len(),
            if types.is_empty() {
                "none".to_string()
            } else {
                types.join(", ")
            }
        ));
    }
    let digest = layers[0]
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !digest.starts_with("sha256:") {
        return Err(format!("the layer digest `{digest}` is not sha256"));
    }
    let size = layers[0]
        .get("size")
        .and_then(Value::as_u64)
        .ok_or("the layer descriptor has no size")?;
    Ok(Layer { digest, size })
}

fn pull_error(module: &str, e: OciDistributionError) -> ModuleError {
    let reason = match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ModuleReason::Unauthorized,
        OciDistributionError::ServerError { code, .. } if *code == 401 || *code == 403 => {
            ModuleReason::Unauthorized
        }
        OciDistributionError::UnsupportedMediaTypeError(_)
        | OciDistributionError::ImageIndexParsingNoPlatformResolverError => {
            ModuleReason::InvalidArtifact
        }
        OciDistributionError::DigestError(_) => ModuleReason::DigestMismatch,
        _ => ModuleReason::PullFailed,
    };
    let mut message = match reason {
        ModuleReason::DigestMismatch => {
            format!(
                "the registry served content that is not what the pinned digest names, refusing it: {e}"
            )
        }
        _ => e.to_string(),
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ModuleError::new(module, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<Value> = layers
            .iter()
            .map(|m| serde_json::json!({"mediaType": m, "digest": format!("sha256:{}", "a".repeat(64)), "size": 42}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": format!("sha256:{}", "b".repeat(64)), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn only_the_wasm_artifact_layout_is_taken() {
        let ok = wasm_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE])).unwrap();
        assert_eq!(ok.size, 42);
        let e = wasm_layer(&manifest(
            "application/vnd.oci.image.config.v1+json",
            &[WASM_LAYER_MEDIA_TYPE],
        ))
        .unwrap_err();
        assert!(
            e.contains("application/vnd.oci.image.config.v1+json"),
            "{e}"
        );
        let e = wasm_layer(&manifest(
            WASM_CONFIG_MEDIA_TYPE,
            &[WASM_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE],
        ))
        .unwrap_err();
        assert!(e.contains("2 layer(s)"), "{e}");
        let e = wasm_layer(&manifest(
            WASM_CONFIG_MEDIA_TYPE,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        ))
        .unwrap_err();
        assert!(e.contains("tar+gzip"), "{e}");
        let index = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}"#;
        assert!(wasm_layer(index).unwrap_err().contains("image.index"));
    }
}
