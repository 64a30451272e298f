//! Where guest modules come from: the builtin default, a file (local
//! mode), a ConfigMap's `binaryData` (Kubernetes) or an OCI artifact (the
//! CNCF Wasm layout `wkg oci push` writes), pinned by manifest digest.
//! Every module is verified before it can run: digests against their pins
//! and descriptors, sizes against the limit before downloading, and (by the
//! runtime) the component against our WIT world.
//!
//! - [`config`]: `registries:` in the host config.
//! - [`store`]: blobs and manifests on disk by digest.
//! - [`oci`]: resolving and pulling artifacts.
//! - [`docker_config`]: registry credentials in Docker's `config.json` form.
//! - [`configmap`]: modules from ConfigMaps.

pub mod config;
pub mod configmap;
pub mod docker_config;
pub mod oci;
pub mod store;

use crate::error::{Classify, RetryClass};

/// Why a module cannot be used: the reasons status shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleReason {
    PullFailed,
    Unauthorized,
    DigestMismatch,
    InvalidArtifact,
    TooLarge,
    IncompatibleContract,
}

impl ModuleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleReason::PullFailed => "PullFailed",
            ModuleReason::Unauthorized => "Unauthorized",
            ModuleReason::DigestMismatch => "DigestMismatch",
            ModuleReason::InvalidArtifact => "InvalidArtifact",
            ModuleReason::TooLarge => "TooLarge",
            ModuleReason::IncompatibleContract => "IncompatibleContract",
        }
    }
}

/// A module that could not be fetched, verified or loaded. Never logs or
/// carries secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("guest module {module}: {message}")]
pub struct ModuleError {
    /// The reference, as [`crate::config::transform_file::ModuleRef::describe`] writes it.
    pub module: String,
    pub reason: ModuleReason,
    pub message: String,
}

impl ModuleError {
    pub fn new(module: &str, reason: ModuleReason, message: impl Into<String>) -> ModuleError {
        ModuleError {
            module: module.to_string(),
            reason,
            message: message.into(),
        }
    }
}

impl Classify for ModuleError {
    fn retry_class(&self) -> RetryClass {
        match self.reason {
            // The registry may come back, credentials may be fixed.
            ModuleReason::PullFailed | ModuleReason::Unauthorized => RetryClass::Retryable,
            _ => RetryClass::Permanent,
        }
    }
}

/// A module's bytes and where they came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The OCI manifest digest.
    pub manifest_digest: Option<String>,
    /// `sha256:` of the bytes (the OCI layer digest).
    pub layer_digest: String,
    /// Served from the cache without the network.
    pub from_cache: bool,
    /// Something the status should say (a tag without a digest).
    pub warning: Option<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
