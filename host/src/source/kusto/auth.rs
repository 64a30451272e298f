//! Signing in to ADX with azure_identity's credentials. The credentials
//! cache their tokens and fetch a new one five minutes before expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::config::{AuthMode, KustoConfig};
use super::transport::transport;

/// Token requests are small; a token endpoint that does not answer within
/// this is treated as down (so `default` moves on from an absent IMDS).
const TOKEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A credential and a description of it for messages (never a secret).
#[derive(Clone, Debug)]
pub struct Identity {
    pub credential: Option<Arc<dyn TokenCredential>>,
    pub description: String,
}

impl Identity {
    pub fn none() -> Identity {
        Identity {
            credential: None,
            description: "no credential (auth: none)".to_string(),
        }
    }

    /// A bearer token for the cluster at `cluster_url`.
    pub async fn token(&self, cluster_url: &str) -> Result<Option<String>, String> {
        let Some(credential) = &self.credential else {
            return Ok(None);
        };
        let scope = format!("{}/.default", cluster_url.trim_end_matches('/'));
        let token = credential
            .get_token(&[scope.as_str()], None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(token.token.secret().to_string()))
    }
}

fn client_options() -> Result<ClientOptions, String> {
    // Token requests carry a client secret, an assertion or IMDS's
    // `Metadata` header: never redirected to another origin.
    let http = crate::net::build(crate::net::ClientSpec {
        purpose: "tokens",
        redirects: crate::net::Redirects::get(true),
        timeouts: crate::net::Timeouts {
            connect: TOKEN_CONNECT_TIMEOUT,
            read: TOKEN_TIMEOUT,
            total: Some(TOKEN_TIMEOUT),
        },
        tls: crate::net::Tls::default(),
    })
    .map_err(|e| e.to_string())?;
    Ok(ClientOptions {
        transport: Some(transport(http)),
        ..ClientOptions::default()
    })
}

fn client_id(config: &KustoConfig) -> Option<String> {
    config
        .client_id
        .clone()
        .or_else(|| std::env::var("AZURE_CLIENT_ID").ok())
}

fn tenant_id(config: &KustoConfig) -> Option<String> {
    config
        .tenant_id
        .clone()
        .or_else(|| std::env::var("AZURE_TENANT_ID").ok())
}

fn workload_identity(config: &KustoConfig) -> Result<Arc<dyn TokenCredential>, String> {
    let options = WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options()?,
        },
        client_id: client_id(config),
        tenant_id: tenant_id(config),
        ..Default::default()
    };
    let c = WorkloadIdentityCredential::new(Some(options)).map_err(|e| e.to_string())?;
    Ok(c)
}

fn managed_identity(config: &KustoConfig) -> Result<Arc<dyn TokenCredential>, String> {
    let options = ManagedIdentityCredentialOptions {
        // Only the config's client ID picks a user-assigned identity:
        // AZURE_CLIENT_ID may belong to a workload identity.
        user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
        client_options: client_options()?,
    };
    let c = ManagedIdentityCredential::new(Some(options)).map_err(|e| e.to_string())?;
    Ok(c)
}

fn azure_cli(config: &KustoConfig) -> Result<Arc<dyn TokenCredential>, String> {
    let options = azure_identity::AzureCliCredentialOptions {
        tenant_id: config.tenant_id.clone(),
        ..Default::default()
    };
    let c = AzureCliCredential::new(Some(options)).map_err(|e| e.to_string())?;
    Ok(c)
}

fn client_secret(config: &KustoConfig) -> Result<Arc<dyn TokenCredential>, String> {
    let tenant = tenant_id(config).ok_or("client-secret needs tenantId (or AZURE_TENANT_ID)")?;
    let client = client_id(config).ok_or("client-secret needs clientId (or AZURE_CLIENT_ID)")?;
    let secret = config
        .client_secret
        .as_ref()
        .ok_or("client-secret needs clientSecret")?
        .resolve("clientSecret")?;
    let options = ClientSecretCredentialOptions {
        client_options: client_options()?,
    };
    let c = ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(options))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// The credential `source.kusto.auth` asks for. Fails when it cannot be set
/// up at all (e.g. workload identity without its token file).
pub fn identity(config: &KustoConfig) -> Result<Identity, String> {
    let mode = config.auth;
    let who = client_id(config)
        .map(|c| format!(", client id {c}"))
        .unwrap_or_default();
    let single = |credential: Result<Arc<dyn TokenCredential>, String>| {
        credential
            .map(|c| Identity {
                credential: Some(c),
                description: format!("{}{who}", mode.as_str()),
            })
            .map_err(|e| format!("auth {}: {e}", mode.as_str()))
    };
    match mode {
        AuthMode::None => Ok(Identity::none()),
        AuthMode::WorkloadIdentity => single(workload_identity(config)),
        AuthMode::ManagedIdentity => single(managed_identity(config)),
        AuthMode::AzureCli => single(azure_cli(config)),
        AuthMode::ClientSecret => single(client_secret(config)),
        AuthMode::Default => {
            let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
            let mut skipped = Vec::new();
            for (name, made) in [
                ("workload-identity", workload_identity(config)),
                ("managed-identity", managed_identity(config)),
                ("azure-cli", azure_cli(config)),
            ] {
                match made {
                    Ok(c) => sources.push((name, c)),
                    Err(e) => skipped.push(format!("{name}: {e}")),
                }
            }
            if sources.is_empty() {
                return Err(format!(
                    "auth default: no credential can be set up ({})",
                    skipped.join("; ")
                ));
            }
            let names: Vec<&str> = sources.iter().map(|(n, _)| *n).collect();
            Ok(Identity {
                description: format!("default: {}{who}", names.join(" -> ")),
                credential: Some(Arc::new(Chain {
                    sources,
                    chosen: Mutex::new(None),
                })),
            })
        }
    }
}

/// Tries each credential in turn until one gives a token, then keeps to it,
/// so a host in AKS does not ask IMDS or the CLI on every refresh.
#[derive(Debug)]
struct Chain {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let chosen = *self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = chosen {
            return self.sources[i].1.get_token(scopes, options).await;
        }
        let mut errors = Vec::new();
        for (i, (name, credential)) in self.sources.iter().enumerate() {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    tracing::info!(credential = name, "signed in to ADX");
                    *self.chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                    return Ok(token);
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!("no credential gave a token ({})", errors.join("; ")),
        ))
    }
}
