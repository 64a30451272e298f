//! The one place a `reqwest::Client` is built: TLS on rustls, our user
//! agent, timeouts on every phase, and the redirect rule of [`super::redirect`].

use std::path::Path;
use std::time::Duration;

use super::error_chain;
use super::redirect::{self, Redirects};
use crate::error::{Classify, RetryClass};

pub const USER_AGENT: &str = concat!("kusto-metrics/", env!("CARGO_PKG_VERSION"));

/// Setting up TCP and TLS takes milliseconds on a healthy network; a peer
/// that has not answered by then is down or filtered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest silence between two reads of one response (headers
/// included), unless the caller's whole deadline is shorter: a peer that
/// stops sending is given up on without waiting for the total deadline.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each phase of a request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Between two reads; a trickle that keeps this alive is cut by `total`.
    pub read: Duration,
    /// The whole request, from connecting to the last byte of the body;
    /// `None` for a stream, which may go on as long as it keeps coming
    /// (`read` still bounds each silence).
    pub total: Option<Duration>,
}

impl Timeouts {
    /// A request that must be over within `total`, with the default connect
    /// and read timeouts (never longer than `total`).
    pub fn within(total: Duration) -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT.min(total),
            read: READ_TIMEOUT.min(total),
            total: Some(total),
        }
    }

    /// For a server that may think for all of `total` before its first byte
    /// (a Kusto query runs for up to its `servertimeout`).
    pub fn slow_first_byte(total: Duration) -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT.min(total),
            read: total,
            total: Some(total),
        }
    }

    /// For a response read as a stream, for as long as it keeps coming: the
    /// server may be silent for up to `silence` at any point (a Kusto query
    /// thinks for up to its `servertimeout` before its first byte, and a
    /// body is read only as fast as its consumer takes it), with no bound
    /// on the whole.
    pub fn streaming(silence: Duration) -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT.min(silence),
            read: silence,
            total: None,
        }
    }
}

/// PEM bytes and where they came from, for messages.
#[derive(Clone)]
pub struct Pem {
    pub origin: String,
    pub bytes: Vec<u8>,
}

impl Pem {
    /// Reads `path`; `key` (e.g. `tls.caFile`) names the setting in errors.
    pub fn read(path: &Path, key: &str) -> Result<Pem, NetError> {
        let bytes = std::fs::read(path)
            .map_err(|e| NetError::Tls(format!("{key} {}: {e}", path.display())))?;
        Ok(Pem {
            origin: format!("{key} {}", path.display()),
            bytes,
        })
    }
}

#[derive(Clone, Default)]
pub struct Tls {
    /// Trusted beside the built-in roots.
    pub roots: Vec<Pem>,
    /// A client certificate (chain) and its key, for mutual TLS.
    pub identity: Option<(Pem, Pem)>,
    pub accept_invalid_certs: bool,
}

/// What a client is for and how it behaves.
pub struct ClientSpec<'a> {
    /// Names the client in logs (`exporter sink`, `kusto`, `registry`).
    pub purpose: &'a str,
    pub redirects: Redirects,
    pub timeouts: Timeouts,
    pub tls: Tls,
}

/// A client that cannot be built: permanent, the configuration is at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// The message names the setting and file.
    #[error("{0}")]
    Tls(String),
    #[error("HTTP client for {purpose}: {message}")]
    Client { purpose: String, message: String },
}

impl Classify for NetError {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Permanent
    }
}

pub fn build(spec: ClientSpec<'_>) -> Result<reqwest::Client, NetError> {
    let t = spec.timeouts;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .connect_timeout(t.connect)
        .read_timeout(t.read)
        .redirect(redirect::policy(spec.redirects, spec.purpose));
    if let Some(total) = t.total {
        builder = builder.timeout(total);
    }
    for pem in &spec.tls.roots {
        let certs = reqwest::Certificate::from_pem_bundle(&pem.bytes)
            .map_err(|e| NetError::Tls(format!("{}: {}", pem.origin, error_chain(&e))))?;
        if certs.is_empty() {
            return Err(NetError::Tls(format!(
                "{}: no PEM certificate in it",
                pem.origin
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = &spec.tls.identity {
        let mut pem = cert.bytes.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&key.bytes);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            NetError::Tls(format!(
                "{} / {}: {}",
                cert.origin,
                key.origin,
                error_chain(&e)
            ))
        })?;
        builder = builder.identity(identity);
    }
    if spec.tls.accept_invalid_certs {
        tracing::warn!(
            client = spec.purpose,
            "tls.insecureSkipVerify is on: the server's certificate is not checked, so anyone on the path can read and change what is sent"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| NetError::Client {
        purpose: spec.purpose.to_string(),
        message: error_chain(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_never_outlast_the_deadline() {
        let t = Timeouts::within(Duration::from_secs(2));
        assert_eq!(t.connect, Duration::from_secs(2));
        assert_eq!(t.read, Duration::from_secs(2));
        let t = Timeouts::within(Duration::from_secs(300));
        assert_eq!((t.connect, t.read), (CONNECT_TIMEOUT, READ_TIMEOUT));
        let t = Timeouts::slow_first_byte(Duration::from_secs(120));
        assert_eq!(t.read, Duration::from_secs(120));
        let t = Timeouts::streaming(Duration::from_secs(120));
        assert_eq!((t.read, t.total), (Duration::from_secs(120), None));
    }

    #[test]
    fn bad_pem_names_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let spec = ClientSpec {
            purpose: "test",
            redirects: Redirects::post(false),
            timeouts: Timeouts::within(Duration::from_secs(1)),
            tls: Tls {
                roots: vec![Pem::read(&path, "tls.caFile").unwrap()],
                ..Tls::default()
            },
        };
        let e = build(spec).unwrap_err().to_string();
        assert!(e.contains("tls.caFile") && e.contains("ca.pem"), "{e}");
        let e = Pem::read(&dir.path().join("absent.pem"), "registries.caFile")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("registries.caFile"), "{e}");
    }
}
