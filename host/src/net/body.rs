//! Response bodies read with a cap: a misbehaving server or proxy cannot
//! make the host buffer without bound, and a body that declares more than
//! the cap is refused before a byte of it is read.

use bytes::{Bytes, BytesMut};

use super::error_chain;
use crate::error::{Classify, RetryClass};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the answer declares {declared} bytes, over the {max}-byte cap; not read")]
    Declared { declared: u64, max: usize },
    #[error("the answer is over the {max}-byte cap; reading stopped there")]
    Over { max: usize },
    /// The connection broke or went silent (read or total timeout).
    #[error("reading the answer: {message}")]
    Read { message: String, timeout: bool },
}

impl BodyError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, BodyError::Declared { .. } | BodyError::Over { .. })
    }
}

impl Classify for BodyError {
    fn retry_class(&self) -> RetryClass {
        if self.is_too_large() {
            RetryClass::Permanent
        } else {
            RetryClass::Retryable
        }
    }
}

fn read_error(e: &reqwest::Error) -> BodyError {
    BodyError::Read {
        message: error_chain(e),
        timeout: e.is_timeout(),
    }
}

/// The whole body, if it is at most `max` bytes.
pub async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Bytes, BodyError> {
    if let Some(declared) = response.content_length()
        && declared > max as u64
    {
        return Err(BodyError::Declared { declared, max });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| read_error(&e))? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::Over { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// At most the first `max` bytes, for an error message: whatever could be
/// read (a broken body gives what came before the break). The rest is
/// dropped with the connection.
pub async fn read_prefix(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each connection with `head` and then `body`
    /// in chunks, counting what it managed to write.
    async fn serve(
        head: String,
        chunk: Vec<u8>,
        chunks: usize,
    ) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let mut sent = 0;
            if socket.write_all(head.as_bytes()).await.is_err() {
                return sent;
            }
            for _ in 0..chunks {
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        (url, task)
    }

    fn client() -> reqwest::Client {
        crate::net::build(crate::net::ClientSpec {
            purpose: "test",
            redirects: crate::net::Redirects::get(false),
            timeouts: crate::net::Timeouts::within(Duration::from_secs(10)),
            tls: crate::net::Tls::default(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_declared_size_over_the_cap_is_refused_unread() {
        let (url, _server) = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n".into(),
            vec![b'x'; 1024],
            4,
        )
        .await;
        let response = client().get(&url).send().await.unwrap();
        let e = read_capped(response, 4096).await.unwrap_err();
        assert_eq!(
            e,
            BodyError::Declared {
                declared: 1 << 30,
                max: 4096
            }
        );
        assert!(e.to_string().contains("4096-byte cap"), "{e}");
    }

    #[tokio::test]
    async fn an_undeclared_body_stops_at_the_cap() {
        // Close-delimited (no length): far more than the cap is on offer.
        let (url, server) = serve(
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".into(),
            vec![b'x'; 64 * 1024],
            16 * 1024,
        )
        .await;
        let response = client().get(&url).send().await.unwrap();
        let e = read_capped(response, 100_000).await.unwrap_err();
        assert_eq!(e, BodyError::Over { max: 100_000 });
        let sent = server.await.unwrap();
        assert!(
            sent < 64 << 20,
            "the server could write only what the socket buffers hold, not 1 GiB: {sent}"
        );
    }

    #[tokio::test]
    async fn small_bodies_whole_and_prefixes() {
        let (url, _s) = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".into(),
            b"0123456789".to_vec(),
            1,
        )
        .await;
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(&read_capped(response, 10).await.unwrap()[..], b"0123456789");
        let (url, _s) = serve(
            "HTTP/1.1 500 Oops\r\ncontent-length: 10\r\n\r\n".into(),
            b"0123456789".to_vec(),
            1,
        )
        .await;
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(read_prefix(response, 4).await, b"0123");
    }
}
