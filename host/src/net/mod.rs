//! Outbound HTTP: the one policy every client the host builds follows
//! (OTLP/HTTP, remote write, Kusto and its token requests, the requests we
//! make to OCI registries), so that a rule about secrets holds everywhere.
//!
//! - [`client`]: building a `reqwest::Client`: TLS, user agent, connect /
//!   read / total timeouts, the redirect rule.
//! - [`redirect`]: which redirects are followed. A request that carries
//!   configured headers or a token is never redirected to another origin
//!   (scheme, host, port), nor from https to plain http.
//! - [`cleartext`]: secrets (a configured header with a secret value, a
//!   token, registry credentials) are refused at config load when they would
//!   go over plain `http://` to an address that is not loopback.
//! - [`body`]: response bodies read with a cap before anything parses them.
//!
//! gRPC (tonic) does not follow redirects; its channel has its own connect
//! and per-request timeouts (`export/otlp_grpc.rs`). The blob downloads and
//! token requests oci-client makes use its own reqwest, configured from
//! [`client::CONNECT_TIMEOUT`] and [`client::READ_TIMEOUT`] and bounded by
//! the registry timeout around each call (`transform/modules/oci.rs`).

pub mod body;
pub mod cleartext;
pub mod client;
pub mod redirect;

pub use body::{BodyError, read_capped, read_prefix};
pub use cleartext::{PlainHttpRefused, is_loopback, refuse_plain_http};
pub use client::{ClientSpec, NetError, Pem, Timeouts, Tls, USER_AGENT, build};
pub use redirect::Redirects;

/// An error and its sources on one line: reqwest's own message alone
/// ("error sending request") hides the cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
