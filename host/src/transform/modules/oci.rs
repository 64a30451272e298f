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
//!
//! Many teams share one host, so nothing one namespace pulled serves
//! another on its digest alone: a cached module is handed out only after
//! the registry accepted this namespace's credentials (or anonymous access)
//! for that manifest in that repository, once (the store records it), and
//! only when the bytes were downloaded from that repository
//! ([`super::store`]). Every fetch gets an oci-client of its own, so a token
//! or password one namespace's secret earned never signs another's request.
//!
//! Manifests are read with our own client ([`crate::net`]): capped at
//! [`MAX_MANIFEST_BYTES`] before parsing (a larger declared length is
//! refused unread), redirected only within the registry's origin. Every
//! step (signing in, the manifest, the layer) ends within
//! `registries.timeout`; a registry that trickles is cut off there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;

use super::config::RegistriesConfig;
use super::docker_config::DockerAuths;
use super::store::BlobStore;
use super::{Fetched, ModuleError, ModuleReason, sha256_digest};
use crate::config::transform_file::{OciRef, PullPolicy};
use crate::net::{self, BodyError, Redirects};

pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest read, as containerd caps them. A Wasm module's is
/// a few hundred bytes; a registry that declares more is not read at all.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// How much of a registry's error answer is read, for the message.
const MAX_ERROR_BODY: usize = 4096;
/// How much of it the message quotes.
const ERROR_SNIPPET_CHARS: usize = 300;

pub struct Registries {
    /// `host[:port]` spoken to over plain http.
    insecure: Vec<String>,
    extra_roots: Vec<Certificate>,
    /// Ours, for manifests: capped reads, the redirect rule, timeouts.
    http: reqwest::Client,
    /// Local mode's credentials (`registries.dockerConfig`).
    local_auths: DockerAuths,
    max_size: u64,
    timeout: Duration,
    store: BlobStore,
    /// Tags resolved once (`IfNotPresent`): reference → manifest digest.
    tags: Mutex<HashMap<String, String>>,
}

impl Registries {
    pub fn new(config: &RegistriesConfig, store: BlobStore) -> Result<Registries, String> {
        let mut extra = Vec::new();
        let mut tls = net::Tls::default();
        if let Some(ca) = &config.ca_file {
            let pem = net::Pem::read(ca, "registries.caFile").map_err(|e| e.to_string())?;
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.bytes.clone(),
            });
            tls.roots.push(pem);
        }
        let local_auths = match &config.docker_config {
            None => DockerAuths::default(),
            Some(p) => {
                let text = std::fs::read(p)
                    .map_err(|e| format!("registries.dockerConfig {}: {e}", p.display()))?;
                DockerAuths::parse(&p.display().to_string(), &text)?
            }
        };
        for host in &config.insecure {
            if !matches!(local_auths.for_registry(host), RegistryAuth::Anonymous) {
                net::cleartext::refuse_plain_http_host(
                    host,
                    "registries.dockerConfig",
                    &format!("credentials for `{host}`, which registries.insecure lists"),
                )
                .map_err(|e| e.to_string())?;
            }
        }
        let timeout = config.timeout();
        let http = net::build(net::ClientSpec {
            purpose: "registry",
            redirects: Redirects::get(true),
            timeouts: net::Timeouts::within(timeout),
            tls,
        })
        .map_err(|e| e.to_string())?;
        Ok(Registries {
            insecure: config.insecure.clone(),
            extra_roots: extra,
            http,
            local_auths,
            max_size: config.max_module_size()?,
            timeout,
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

    fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.iter().any(|h| h == registry)
    }

    /// An oci-client for one fetch: its token cache and stored credentials
    /// are keyed by registry alone, so a shared one would sign a request of
    /// one namespace with another's credentials.
    fn oci_client(&self) -> Client {
        let protocol = if self.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure.clone())
        };
        Client::new(ClientConfig {
            protocol,
            extra_root_certificates: self.extra_roots.clone(),
            // A module is one artifact: an index (several platforms) is
            // not what we read.
            platform_resolver: None,
            connect_timeout: Some(net::client::CONNECT_TIMEOUT.min(self.timeout)),
            read_timeout: Some(net::client::READ_TIMEOUT.min(self.timeout)),
            user_agent: net::USER_AGENT,
            ..ClientConfig::default()
        })
    }

    /// Fetches (or reads from the store) the module `r` names for a
    /// MetricsExporter in `namespace`. `secret_auths`: credentials from the
    /// exporter's pull secret, which win over local mode's.
    pub async fn fetch(
        &self,
        namespace: &str,
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
        let registry = base.resolve_registry().to_string();
        let repository = format!("{registry}/{}", base.repository());
        let (auth, auth_origin) = match secret_auths {
            Some(a) => (a.for_registry(base.registry()), "pullSecretRef"),
            None => (
                self.local_auths.for_registry(base.registry()),
                "registries.dockerConfig",
            ),
        };
        if !matches!(auth, RegistryAuth::Anonymous) && self.is_insecure(&registry) {
            net::cleartext::refuse_plain_http_host(
                &registry,
                auth_origin,
                &format!("credentials for `{registry}`, which registries.insecure lists"),
            )
            .map_err(|e| fail(ModuleReason::Unauthorized, e.to_string()))?;
        }
        let scheme = if self.is_insecure(&registry) {
            "http"
        } else {
            "https"
        };
        let mut session = Session {
            registries: self,
            reference: &base,
            repository: &repository,
            base_url: format!("{scheme}://{registry}/v2/{}", base.repository()),
            anonymous: matches!(auth, RegistryAuth::Anonymous),
            auth,
            client: None,
            credential: None,
            shown: &shown,
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
        // Only bytes downloaded from this very repository serve it.
        let cached = pinned
            .as_ref()
            .filter(|d| self.store.has_origin(&repository, d))
            .and_then(|d| self.store.read(d).map(|m| (m, d.clone())));
        let (manifest, manifest_digest) = match cached {
            Some((bytes, digest)) => {
                if !self.store.has_access(namespace, &repository, &digest) {
                    session.check_access(&digest).await?;
                    tracing::info!(module = %shown, namespace, digest = %digest, "the registry accepted this namespace's access to the cached module; using it without downloading");
                    self.remember(namespace, &repository, &digest, false);
                }
                (bytes, digest)
            }
            None => {
                from_cache = false;
                let wanted = match (&pinned, base.tag()) {
                    (Some(d), _) => d.clone(),
                    (None, Some(tag)) => tag.to_string(),
                    (None, None) => "latest".to_string(),
                };
                let bytes = session.manifest(&wanted).await?;
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
                if let Err(e) = self.store.write(&digest, &bytes) {
                    tracing::warn!(module = %shown, error = %e, "cannot cache the manifest; it is pulled again next time");
                }
                self.remember(namespace, &repository, &digest, true);
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
        let cached_layer = if self.store.has_origin(&repository, &layer.digest) {
            self.store.read(&layer.digest)
        } else {
            None
        };
        let bytes = match cached_layer {
            Some(b) => b,
            None => {
                from_cache = false;
                let bytes = session.layer(&manifest_digest, &layer).await?;
                if let Err(e) = self.store.write(&layer.digest, &bytes) {
                    tracing::warn!(module = %shown, error = %e, "cannot cache the module; it is pulled again next time");
                } else if let Err(e) = self.store.record_origin(&repository, &layer.digest) {
                    tracing::warn!(module = %shown, error = %e, "cannot record where the module came from; it is pulled again next time");
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

    /// Records that `namespace` may use `digest` of `repository` (and, for a
    /// download, that the bytes came from there). A record that cannot be
    /// written only costs a check or a download next time.
    fn remember(&self, namespace: &str, repository: &str, digest: &str, downloaded: bool) {
        let written = if downloaded {
            self.store.record_origin(repository, digest)
        } else {
            Ok(())
        }
        .and_then(|()| self.store.record_access(namespace, repository, digest));
        if let Err(e) = written {
            tracing::warn!(repository, digest, error = %e, "cannot record the module's access check; the registry is asked again next time");
        }
    }

    fn lock_tags(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a request to the registry carries, as the registry's sign-in
/// answered for this fetch's credentials.
#[derive(Clone)]
enum Credential {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One fetch's conversation with a registry: its own oci-client (and so
/// its own tokens), and our client for manifests.
struct Session<'a> {
    registries: &'a Registries,
    reference: &'a Reference,
    /// `registry/repository`, as the store's records name it.
    repository: &'a str,
    /// `scheme://registry/v2/repository`.
    base_url: String,
    auth: RegistryAuth,
    anonymous: bool,
    client: Option<Client>,
    credential: Option<Credential>,
    shown: &'a str,
}

impl Session<'_> {
    fn fail(&self, reason: ModuleReason, message: String) -> ModuleError {
        ModuleError::new(self.shown, reason, message)
    }

    fn timed_out(&self, what: &str) -> ModuleError {
        self.fail(
            ModuleReason::PullFailed,
            format!(
                "{what}: the registry did not finish within {} (registries.timeout)",
                humantime::format_duration(self.registries.timeout)
            ),
        )
    }

    fn client(&mut self) -> &Client {
        self.client
            .get_or_insert_with(|| self.registries.oci_client())
    }

    /// Signs in once per fetch (the registry's token dance, by oci-client).
    async fn credential(&mut self) -> Result<Credential, ModuleError> {
        if let Some(c) = &self.credential {
            return Ok(c.clone());
        }
        let timeout = self.registries.timeout;
        let auth = self.auth.clone();
        let reference = self.reference.clone();
        let answer = tokio::time::timeout(
            timeout,
            self.client()
                .auth(&reference, &auth, RegistryOperation::Pull),
        )
        .await
        .map_err(|_| self.timed_out("signing in"))?
        .map_err(|e| pull_error(self.shown, e))?;
        let credential = match (answer, &self.auth) {
            (Some(token), _) => Credential::Bearer(token),
            // A registry that asks for basic auth gets no token: the
            // password goes with each request.
            (None, RegistryAuth::Basic(u, p)) => Credential::Basic(u.clone(), p.clone()),
            (None, _) => Credential::None,
        };
        self.credential = Some(credential.clone());
        Ok(credential)
    }

    async fn request(
        &mut self,
        method: reqwest::Method,
        wanted: &str,
    ) -> Result<reqwest::Response, ModuleError> {
        let credential = self.credential().await?;
        let url = format!("{}/manifests/{wanted}", self.base_url);
        let mut request = self.registries.http.request(method, &url).header(
            reqwest::header::ACCEPT,
            format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"),
        );
        request = match credential {
            Credential::None => request,
            Credential::Basic(u, p) => request.basic_auth(u, Some(p)),
            Credential::Bearer(t) => request.bearer_auth(t),
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                self.timed_out("the manifest")
            } else {
                self.fail(
                    ModuleReason::PullFailed,
                    format!("the manifest: {}", net::error_chain(&e)),
                )
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let who = if self.anonymous {
            "anonymous access".to_string()
        } else {
            "these credentials".to_string()
        };
        Err(match status.as_u16() {
            401 | 403 => self.fail(
                ModuleReason::Unauthorized,
                format!(
                    "the registry refused {who} for {}@{wanted} (HTTP {status})",
                    self.repository
                ),
            ),
            404 => self.fail(
                ModuleReason::PullFailed,
                format!(
                    "the registry has no manifest {wanted} in {} (HTTP 404)",
                    self.repository
                ),
            ),
            300..=399 => self.fail(
                ModuleReason::PullFailed,
                net::redirect::explain(Redirects::get(true), &url, &response),
            ),
            _ => {
                let body = net::read_prefix(response, MAX_ERROR_BODY).await;
                let text: String = String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(ERROR_SNIPPET_CHARS)
                    .collect();
                self.fail(
                    ModuleReason::PullFailed,
                    format!("the manifest: HTTP {status}: {text}"),
                )
            }
        })
    }

    /// That the registry lets this fetch's credentials have manifest
    /// `digest`: a HEAD, nothing downloaded.
    async fn check_access(&mut self, digest: &str) -> Result<(), ModuleError> {
        let timeout = self.registries.timeout;
        match tokio::time::timeout(timeout, self.request(reqwest::Method::HEAD, digest)).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(self.timed_out("checking access to the cached module")),
        }
    }

    /// The manifest `wanted` (a digest or a tag), read with the cap.
    async fn manifest(&mut self, wanted: &str) -> Result<bytes::Bytes, ModuleError> {
        let timeout = self.registries.timeout;
        let read = async {
            let response = self.request(reqwest::Method::GET, wanted).await?;
            net::read_capped(response, MAX_MANIFEST_BYTES)
                .await
                .map_err(|e| match e {
                    BodyError::Read { timeout: true, .. } => self.timed_out("the manifest"),
                    BodyError::Read { .. } => {
                        self.fail(ModuleReason::PullFailed, format!("the manifest: {e}"))
                    }
                    _ => self.fail(
                        ModuleReason::TooLarge,
                        format!(
                            "the manifest: {e} (manifests are capped at {MAX_MANIFEST_BYTES} bytes; a module's is a few hundred)"
                        ),
                    ),
                })
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out("the manifest")),
        }
    }

    /// The layer's bytes, checked against its descriptor as they arrive.
    async fn layer(
        &mut self,
        manifest_digest: &str,
        layer: &Layer,
    ) -> Result<Vec<u8>, ModuleError> {
        // Signed in already (for the manifest), or now: oci-client keeps the
        // credentials and token for the blob request.
        self.credential().await?;
        let timeout = self.registries.timeout;
        let layer_ref = Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            manifest_digest.to_string(),
        );
        let shown = self.shown;
        let fail = |reason, message: String| ModuleError::new(shown, reason, message);
        let client = self.client();
        let download = async {
            let mut stream = client
                .pull_blob_stream(&layer_ref, layer.digest.as_str())
                .await
                .map_err(|e| pull_error(shown, e))?;
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
            Ok(bytes)
        };
        match tokio::time::timeout(timeout, download).await {
            Ok(result) => result,
            Err(_) => Err(fail(
                ModuleReason::PullFailed,
                format!(
                    "the layer: the registry did not finish within {} (registries.timeout)",
                    humantime::format_duration(timeout)
                ),
            )),
        }
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
    fn credentials_for_a_plain_http_registry_off_the_machine_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            br#"{"auths": {"registry.internal:5000": {"auth": "dXNlcjpwYXNz"}, "127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let config = |insecure: &str| RegistriesConfig {
            insecure: vec![insecure.to_string()],
            docker_config: Some(docker.clone()),
            ..RegistriesConfig::default()
        };
        let store = BlobStore::new(dir.path().join("store"));
        let e = Registries::new(&config("registry.internal:5000"), store.clone())
            .err()
            .expect("refused");
        assert!(
            e.starts_with("registries.dockerConfig: credentials for `registry.internal:5000`")
                && e.contains("not sent over plain http://"),
            "{e}"
        );
        assert!(Registries::new(&config("127.0.0.1:5000"), store.clone()).is_ok());
        // Plain http without credentials stays possible: digests pin the bytes.
        assert!(Registries::new(&config("other.internal:5000"), store).is_ok());
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
