//! Registry credentials in Docker's `config.json` form (`auths`), as
//! `docker login` writes them and as `kubernetes.io/dockerconfigjson`
//! Secrets hold them: basic auth (`auth`, or `username`/`password`) and
//! tokens (`identitytoken`, `registrytoken`).

use std::collections::HashMap;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;

/// Credentials by registry host (`host[:port]`).
#[derive(Clone, Default)]
pub struct DockerAuths(HashMap<String, RegistryAuth>);

impl std::fmt::Debug for DockerAuths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hosts only: never the secrets.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000` stays.
fn host_of(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    if host == "docker.io" {
        "index.docker.io".to_string()
    } else {
        host
    }
}

impl DockerAuths {
    /// Parses a `config.json` document; `origin` names it in errors.
    pub fn parse(origin: &str, text: &[u8]) -> Result<DockerAuths, String> {
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| format!("{origin}: not a Docker config.json: {e}"))?;
        let mut out = HashMap::new();
        let Some(auths) = v.get("auths").and_then(Value::as_object) else {
            return Ok(DockerAuths(out));
        };
        for (key, entry) in auths {
            let field = |n: &str| {
                entry
                    .get(n)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            let auth = if let Some(t) = field("registrytoken").or_else(|| field("identitytoken")) {
                RegistryAuth::Bearer(t.to_string())
            } else if let (Some(u), Some(p)) = (field("username"), field("password")) {
                RegistryAuth::Basic(u.to_string(), p.to_string())
            } else if let Some(a) = field("auth") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| format!("{origin}: auths.{key}.auth is not base64"))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| format!("{origin}: auths.{key}.auth is not UTF-8"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| format!("{origin}: auths.{key}.auth is not user:password"))?;
                RegistryAuth::Basic(u.to_string(), p.to_string())
            } else {
                continue;
            };
            out.insert(host_of(key), auth);
        }
        Ok(DockerAuths(out))
    }

    /// The credentials for `registry` (`host[:port]`), or anonymous.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.0.get(&host_of(registry)) {
            Some(RegistryAuth::Basic(u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            Some(RegistryAuth::Bearer(t)) => RegistryAuth::Bearer(t.clone()),
            _ => RegistryAuth::Anonymous,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_token_credentials_by_host() {
        let text = br#"{"auths": {
            "registry.example.com:5000": {"auth": "dXNlcjpwYXNz"},
            "https://index.docker.io/v1/": {"username": "u", "password": "p"},
            "ghcr.io": {"identitytoken": "tok"},
            "empty.example.com": {}
        }}"#;
        let a = DockerAuths::parse("c.json", text).unwrap();
        assert!(
            matches!(a.for_registry("registry.example.com:5000"), RegistryAuth::Basic(u, p) if u == "user" && p == "pass")
        );
        assert!(matches!(
            a.for_registry("docker.io"),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(a.for_registry("ghcr.io"), RegistryAuth::Bearer(t) if t == "tok"));
        assert!(matches!(
            a.for_registry("other.example.com"),
            RegistryAuth::Anonymous
        ));
        assert!(!format!("{a:?}").contains("pass"), "no secrets in Debug");
        assert!(DockerAuths::parse("c.json", br#"{"auths": {"x": {"auth": "%%%"}}}"#).is_err());
    }
}
