//! Which redirects a client follows.
//!
//! reqwest on its own follows ten redirects anywhere and drops only
//! `Authorization` and `Cookie` when the host changes, so a receiver
//! answering 307 to another server would hand it an exporter's `DD-API-KEY`
//! or `X-Tenant` header. The rule here:
//! - a request that carries credentials (any configured header, a token,
//!   registry credentials) is redirected only within its origin (scheme,
//!   host and port as configured);
//! - never from https to plain http, nor to anything but http(s);
//! - a request with a body (POST) follows only 307 and 308: the others
//!   would resend it as a GET without the body, which a server may answer
//!   with success while the data is lost;
//! - at most [`MAX_REDIRECTS`] hops.
//!
//! A redirect not followed is logged (where it pointed, why) and its 3xx
//! answer reaches the caller, whose error says the same ([`explain`]).

use reqwest::Url;

/// Hops followed before giving up; a loop ends here too.
pub const MAX_REDIRECTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirects {
    /// Only 307 and 308, which resend the body as it was.
    pub keep_body: bool,
    /// The requests carry secrets: never to another origin.
    pub credentials: bool,
}

impl Redirects {
    /// For POSTs.
    pub fn post(credentials: bool) -> Redirects {
        Redirects {
            keep_body: true,
            credentials,
        }
    }

    /// For GETs and HEADs.
    pub fn get(credentials: bool) -> Redirects {
        Redirects {
            keep_body: false,
            credentials,
        }
    }
}

/// Why a redirect is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "that is another origin than the configured {from}; requests that carry configured headers or credentials are redirected only within their origin (scheme, host and port), so that a secret never reaches a server it was not configured for: configure the final URL instead"
    )]
    OtherOrigin { from: String, to: String },
    #[error("that leaves TLS (https to plain http): configure the final URL instead")]
    Downgrade { to: String },
    #[error("that is a `{scheme}:` URL, not http(s)")]
    Scheme { scheme: String },
    #[error(
        "HTTP {status} would resend the request as a GET without its body; only 307 and 308 are followed: configure the final URL instead"
    )]
    DropsBody { status: u16 },
    #[error("that is more than {MAX_REDIRECTS} redirects")]
    TooMany,
    #[error("it has no usable Location header")]
    NoLocation,
}

/// `scheme://host:port` (the port always written out).
pub fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether the `hops`-th redirect (1 for the first), answered with
/// `status`, from a request first sent to `first` may go on to `next`.
pub fn judge(
    rule: Redirects,
    status: u16,
    first: &Url,
    next: &Url,
    hops: usize,
) -> Result<(), Refusal> {
    if !matches!(next.scheme(), "http" | "https") {
        return Err(Refusal::Scheme {
            scheme: next.scheme().to_string(),
        });
    }
    if first.scheme() == "https" && next.scheme() == "http" {
        return Err(Refusal::Downgrade { to: origin(next) });
    }
    if rule.credentials && !same_origin(first, next) {
        return Err(Refusal::OtherOrigin {
            from: origin(first),
            to: origin(next),
        });
    }
    if rule.keep_body && !matches!(status, 307 | 308) {
        return Err(Refusal::DropsBody { status });
    }
    if hops > MAX_REDIRECTS {
        return Err(Refusal::TooMany);
    }
    Ok(())
}

/// The reqwest policy of `rule`; `purpose` names the client in the log.
pub fn policy(rule: Redirects, purpose: &str) -> reqwest::redirect::Policy {
    let purpose = purpose.to_string();
    reqwest::redirect::Policy::custom(move |attempt| {
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.stop();
        };
        let hops = attempt.previous().len();
        match judge(rule, attempt.status().as_u16(), &first, attempt.url(), hops) {
            Ok(()) => attempt.follow(),
            Err(refusal) => {
                tracing::warn!(
                    client = %purpose,
                    status = attempt.status().as_u16(),
                    from = %origin(&first),
                    to = %origin(attempt.url()),
                    reason = %refusal,
                    "redirect not followed"
                );
                attempt.stop()
            }
        }
    })
}

/// For a 3xx answer that reached the caller (so the policy did not follow
/// it): what it asked and why it was not followed, for the error message.
/// `sent_to` is the URL the request was configured with.
pub fn explain(rule: Redirects, sent_to: &str, response: &reqwest::Response) -> String {
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    let first = Url::parse(sent_to).ok();
    let next = location.and_then(|l| response.url().join(l).ok());
    let refusal = match (&first, &next) {
        (Some(first), Some(next)) => {
            let hops = usize::from(response.url() != first) + 1;
            judge(rule, status, first, next, hops)
                .err()
                .unwrap_or(Refusal::TooMany)
        }
        _ => Refusal::NoLocation,
    };
    let to = next.map_or_else(|| "(no Location)".to_string(), |u| origin(&u));
    format!("the server answered HTTP {status} with a redirect to {to}, not followed: {refusal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn credentials_stay_within_their_origin() {
        let first = url("https://collector.example:4318/v1/metrics");
        let creds = Redirects::post(true);
        assert_eq!(
            judge(
                creds,
                307,
                &first,
                &url("https://collector.example:4318/otlp/v1/metrics"),
                1
            ),
            Ok(())
        );
        // Host case is no other origin; an explicit default port neither.
        assert_eq!(
            judge(
                creds,
                308,
                &url("https://c.example/v1/metrics"),
                &url("https://C.EXAMPLE:443/x"),
                1
            ),
            Ok(())
        );
        for other in [
            "https://elsewhere.example:4318/v1/metrics",
            "https://collector.example:4319/v1/metrics",
            "https://127.0.0.1:4318/v1/metrics",
        ] {
            let e = judge(creds, 307, &first, &url(other), 1).unwrap_err();
            assert!(matches!(e, Refusal::OtherOrigin { .. }), "{other}: {e}");
            assert!(e.to_string().contains("another origin"), "{e}");
        }
        // Without credentials, another host is fine.
        assert_eq!(
            judge(
                Redirects::post(false),
                307,
                &first,
                &url("https://elsewhere.example/v1/metrics"),
                1
            ),
            Ok(())
        );
        // Loopback by name and by address are two origins.
        let e = judge(
            creds,
            308,
            &url("http://127.0.0.1:4318/v1/metrics"),
            &url("http://localhost:4318/v1/metrics"),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::OtherOrigin { .. }));
    }

    #[test]
    fn bodies_downgrades_schemes_and_loops() {
        let first = url("https://c.example/v1/metrics");
        let plain = Redirects::post(false);
        for status in [301, 302, 303] {
            assert_eq!(
                judge(plain, status, &first, &url("https://c.example/x"), 1),
                Err(Refusal::DropsBody { status })
            );
            assert_eq!(
                judge(
                    Redirects::get(false),
                    status,
                    &first,
                    &url("https://c.example/x"),
                    1
                ),
                Ok(())
            );
        }
        assert!(matches!(
            judge(plain, 307, &first, &url("http://c.example/x"), 1),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            judge(plain, 307, &first, &url("file:///etc/passwd"), 1),
            Err(Refusal::Scheme { .. })
        ));
        assert_eq!(
            judge(plain, 307, &first, &first, MAX_REDIRECTS + 1),
            Err(Refusal::TooMany)
        );
        assert_eq!(judge(plain, 307, &first, &first, MAX_REDIRECTS), Ok(()));
    }
}
