//! azure_identity's credentials send their token requests through this: the
//! host's own reqwest client. Without it the crate would bring a second HTTP
//! and TLS stack (reqwest 0.13 with aws-lc, a C build) for a few small
//! requests.

use std::sync::Arc;

use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Method, Request, Transport};

#[derive(Debug)]
pub struct ReqwestTransport(pub reqwest::Client);

pub fn transport(client: reqwest::Client) -> Transport {
    Transport::new(Arc::new(ReqwestTransport(client)))
}

fn failed(kind: azure_core::error::ErrorKind, e: impl std::fmt::Display) -> azure_core::Error {
    azure_core::Error::with_message(kind, e.to_string())
}

#[async_trait::async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let method = match request.method() {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
            Method::Head => reqwest::Method::HEAD,
            other => return Err(failed(ErrorKind::Other, format!("method {other:?}"))),
        };
        let mut builder = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let builder = match request.body() {
            Body::Bytes(bytes) => builder.body(bytes.to_vec()),
            #[allow(
                unreachable_patterns,
                reason = "the stream variant exists with some features"
            )]
            _ => {
                return Err(failed(
                    ErrorKind::Other,
                    "streamed request bodies are not used by credentials",
                ));
            }
        };
        let response = builder.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            failed(kind, e)
        })?;
        let status = response.status().as_u16();
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            if let Ok(v) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                );
            }
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failed(ErrorKind::Io, e))?;
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, bytes))
    }
}
