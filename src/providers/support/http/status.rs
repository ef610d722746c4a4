//! What an HTTP exchange's outcome means for a provider, in one place: [`check`] sorts status
//! codes (success, "data" statuses a caller interprets, permanent and transient failures),
//! [`retry_after`] reads a server's back-off request, and the `*_error` functions turn failures
//! into the crate's [`Error`]. Error text is built only from safe parts — the method, the
//! [`SafeUrl`] rendering of the URL (no query, no password), the status code and a server error
//! code vetted by [`error_code`] — never from a header value, a query string or a body, any of
//! which may carry a secret; ureq's own error texts are reduced to their kind for the same
//! reason (some echo a URL or a header).

use std::time::Duration;

use crate::error::Error;
use crate::providers::support::safe_url::SafeUrl;

/// How a status code reads (see [`check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx.
    Success,
    /// 404, 409, 412: returned to the caller, which knows what they mean ("not there", "lost
    /// the compare-and-swap").
    Data,
    /// 401, 403, 3xx and the other 4xx: retrying the same request will not help.
    Permanent,
    /// 408, 429, 5xx (and 1xx, which should never reach here): the server may do better later.
    Transient,
}

/// The one status mapping of the HTTP transport.
pub(crate) fn check(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        404 | 409 | 412 => Class::Data,
        408 | 429 | 500..=599 => Class::Transient,
        300..=499 => Class::Permanent,
        _ => Class::Transient,
    }
}

/// The wait a `Retry-After: <seconds>` header asks for, on the statuses that carry one (429,
/// 503). The HTTP-date form is not honoured: it depends on clocks agreeing.
pub(super) fn retry_after(status: u16, value: Option<&str>) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// A server error code fit for error text: at most 64 characters of letters, digits and
/// `_ . : -` (such as Azure's `LeaseIdMismatchWithLeaseOperation` or a gRPC status name).
/// Anything else is dropped rather than echoed: it may be a message quoting the request.
pub(super) fn error_code(code: &str) -> Option<&str> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    ok.then_some(code)
}

/// What the request was, for error text: `PUT http://host:8500/v1/kv/x`.
pub(super) fn target(method: &str, url: &url::Url) -> String {
    format!("{method} {}", SafeUrl::from_url(url))
}

/// The error for a status [`check`] did not accept (`Permanent` or `Transient`; `Data` and
/// `Success` statuses are reported as permanent, for callers that did not expect them).
pub(super) fn status_error(
    backend: &'static str,
    operation: &'static str,
    target: &str,
    status: u16,
    code: Option<&str>,
) -> Error {
    let code = code
        .and_then(error_code)
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    Error::Backend {
        backend,
        operation,
        transient: check(status) == Class::Transient,
        source: format!("HTTP {status}{code} from {target}").into(),
    }
}

/// The error for a request that got no response: unreachable server, TLS failure, timeout,
/// malformed exchange. `allowed` is the time the request was given.
pub(super) fn transport_error(
    backend: &'static str,
    operation: &'static str,
    target: &str,
    allowed: Duration,
    e: &ureq::Error,
) -> Error {
    let what = describe(e);
    match e {
        ureq::Error::Timeout(_) => {
            log::debug!("{backend}: {operation}: {target}: {what}");
            Error::Timeout {
                backend,
                operation,
                timeout: allowed,
            }
        }
        ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..) => Error::Backend {
            backend,
            operation,
            transient: true,
            source: format!("{target}: {what}").into(),
        },
        ureq::Error::Http(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::BodyExceedsLimit(_) => Error::Backend {
            backend,
            operation,
            transient: false,
            source: format!("{target}: {what}").into(),
        },
        _ => Error::Unavailable {
            backend,
            source: format!("{target}: {what}").into(),
        },
    }
}

/// ureq's error without anything that may echo a URL, a header or a body.
pub(super) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => describe_io(io),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        ureq::Error::Tls(what) => format!("TLS: {what}"),
        ureq::Error::Pem(_) => "TLS: bad PEM data".to_owned(),
        ureq::Error::Rustls(e) => format!("TLS: {e}"),
        // "bad header: <the header>", "http parse fail: <the input>": the kind only.
        ureq::Error::Protocol(e) => {
            let text = e.to_string();
            let kind = text.split(':').next().unwrap_or_default();
            format!("malformed HTTP exchange: {kind}")
        }
        ureq::Error::LargeResponseHeader(size, limit) => {
            format!("response header too large ({size} > {limit} bytes)")
        }
        ureq::Error::BodyExceedsLimit(limit) => format!("response body over {limit} bytes"),
        ureq::Error::Http(_) => "invalid request".to_owned(),
        ureq::Error::BadUri(_) => "invalid URL".to_owned(),
        ureq::Error::InvalidProxyUrl => "invalid proxy URL".to_owned(),
        ureq::Error::ConnectProxyFailed(_) => "proxy CONNECT failed".to_owned(),
        ureq::Error::TlsRequired | ureq::Error::RequireHttpsOnly(_) => {
            "TLS required, but the URL is not https".to_owned()
        }
        _ => "HTTP transport error".to_owned(),
    }
}

/// An I/O error: the operating system's message, or a TLS error, or else just its kind.
fn describe_io(io: &std::io::Error) -> String {
    if io.raw_os_error().is_some() {
        return io.to_string();
    }
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(tls) => format!("TLS: {tls}"),
        None => io.kind().to_string(),
    }
}

/// Whether `e`, on a request that reused a pooled connection, means that connection was dead
/// before the server answered: closed or reset under the request, no response at all. Never a
/// timeout (the server may be working on the request).
pub(super) fn dead_connection(e: &ureq::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(e, ureq::Error::Io(io)
        if matches!(io.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(check(200), Class::Success);
        assert_eq!(check(204), Class::Success);
        for s in [404, 409, 412] {
            assert_eq!(check(s), Class::Data, "{s}");
        }
        for s in [301, 400, 401, 403, 405, 422] {
            assert_eq!(check(s), Class::Permanent, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(check(s), Class::Transient, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_only_on_429_and_503() {
        assert_eq!(retry_after(503, Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(429, Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(500, Some("2")), None);
        assert_eq!(
            retry_after(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(retry_after(503, None), None);
    }

    #[test]
    fn error_codes_are_vetted() {
        assert_eq!(
            error_code("LeaseAlreadyPresent"),
            Some("LeaseAlreadyPresent")
        );
        assert_eq!(error_code("token hunter2 is invalid"), None);
        assert_eq!(error_code(&"A".repeat(65)), None);
        assert_eq!(error_code(""), None);
    }
}
