//! Secrets never travel in clear text over a network.
//!
//! A secret is refused at config load when it would be sent over plain
//! `http://` to a host that is not loopback (`localhost`, `127.0.0.0/8`,
//! `::1`; a loopback connection does not leave the machine, so test
//! servers and local emulators may use http). What counts as a secret:
//! - a configured header whose value is read from `{env: ...}` or
//!   `{file: ...}`: that is how the config says "secret";
//! - a configured header whose name looks like a credential, even written
//!   inline: it holds one of [`CREDENTIAL_WORDS`] (`Authorization`,
//!   `DD-API-KEY`, `X-Auth-Token`, `Cookie`, ...);
//! - a Kusto token (any `auth` but `none`);
//! - registry credentials for a registry listed in `registries.insecure`.
//!
//! Other inline headers (`X-Scope-OrgID: team-a`) may go over plain http
//! inside a cluster's network.

use reqwest::Url;

/// Words that make a header name a credential's, matched case-insensitively
/// anywhere in the name.
pub const CREDENTIAL_WORDS: [&str; 9] = [
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "cookie",
    "credential",
    "signature",
    "session",
];

/// Whether a header named `name` holds a secret: its value comes from an
/// environment variable or a file, or its name says so.
pub fn is_secret_header(name: &str, value_from_env_or_file: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    value_from_env_or_file || CREDENTIAL_WORDS.iter().any(|w| lower.contains(w))
}

/// `localhost`, or an address in `127.0.0.0/8` or `::1`. Names are not
/// resolved: another name for loopback is treated as a network host.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// A secret that would go over plain http to a network host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key}: {what}: not sent over plain http:// to `{host}`, which is not a loopback address, where anyone on the network path could read it; use https://"
)]
pub struct PlainHttpRefused {
    /// The config key at fault, e.g. `headers.DD-API-KEY`.
    pub key: String,
    /// What the secret is, e.g. `a secret header`.
    pub what: String,
    pub host: String,
}

/// Refuses the secret `key` (described by `what`) when `url` is plain http
/// to a host that is not loopback.
pub fn refuse_plain_http(url: &Url, key: &str, what: &str) -> Result<(), PlainHttpRefused> {
    if url.scheme() != "http" || is_loopback(url) {
        return Ok(());
    }
    Err(PlainHttpRefused {
        key: key.to_string(),
        what: what.to_string(),
        host: url.host_str().unwrap_or_default().to_string(),
    })
}

/// The same for a registry named `host[:port]`, spoken to over plain http.
pub fn refuse_plain_http_host(
    host_port: &str,
    key: &str,
    what: &str,
) -> Result<(), PlainHttpRefused> {
    match Url::parse(&format!("http://{host_port}/")) {
        Ok(url) => refuse_plain_http(&url, key, what),
        Err(_) => Err(PlainHttpRefused {
            key: key.to_string(),
            what: what.to_string(),
            host: host_port.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_name_and_address_only() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "collector",
            "localhost.example.com",
            "[::ffff:10.0.0.1]",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn secrets_need_tls_off_the_machine() {
        let url = |s: &str| Url::parse(s).unwrap();
        let e = refuse_plain_http(
            &url("http://collector.monitoring:4318"),
            "headers.DD-API-KEY",
            "a secret header",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("headers.DD-API-KEY:") && text.contains("collector.monitoring"),
            "{text}"
        );
        assert!(refuse_plain_http(&url("https://collector:4318"), "k", "x").is_ok());
        assert!(refuse_plain_http(&url("http://127.0.0.1:4318"), "k", "x").is_ok());
        assert!(refuse_plain_http(&url("http://[::1]:4318"), "k", "x").is_ok());
        assert!(refuse_plain_http_host("registry.internal:5000", "k", "x").is_err());
        assert!(refuse_plain_http_host("localhost:5000", "k", "x").is_ok());
    }

    #[test]
    fn which_headers_are_secrets() {
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "DD-API-KEY",
            "X-Api-Key",
            "apikey",
            "X-Auth-Token",
            "Cookie",
            "X-Amz-Security-Token",
            "X-Client-Secret",
        ] {
            assert!(is_secret_header(name, false), "{name}");
        }
        for name in [
            "X-Scope-OrgID",
            "X-Tenant",
            "X-Prometheus-Remote-Write-Version",
        ] {
            assert!(!is_secret_header(name, false), "{name}");
            assert!(is_secret_header(name, true), "{name} from env/file");
        }
    }
}
