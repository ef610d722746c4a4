//! The messages of the HTTP transport: [`Method`], the [`Call`] a provider sends (headers whose
//! values — tokens, keys — are never shown, not even by `Debug`) and the [`Response`] it gets
//! back (lower-case header names, the whole body, JSON decoding whose errors quote nothing of
//! the body), plus the header checks and conversions the client applies to them.

use serde::de::DeserializeOwned;
use ureq::http;

use crate::error::{Error, Result};

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // etcd posts only; the other REST backends need the rest
pub(crate) enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One request: method, path (with query) below the client's base URL, headers, body, and the
/// operation name errors carry. Its `Debug` shows no query, header value or body.
#[derive(Clone)]
pub(crate) struct Call<'a> {
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) operation: &'static str,
    pub(super) headers: Vec<(&'a str, &'a str)>,
    pub(super) body: Option<&'a [u8]>,
    /// Failure statuses this call reads as data (see [`Call::status_as_data`]).
    pub(super) as_data: Vec<u16>,
    /// What error text and logs show instead of `path`, when the path holds a secret.
    pub(super) shown: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A request for `path` (`/v1/kv/x?cas=5`: appended to the base URL's path, its query
    /// joined to the base URL's) on behalf of `operation` (`"acquire"`).
    pub(crate) fn new(method: Method, path: &'a str, operation: &'static str) -> Call<'a> {
        Call {
            method,
            path,
            operation,
            headers: Vec::new(),
            body: None,
            as_data: Vec::new(),
            shown: None,
        }
    }

    /// Shows `shown` instead of the real path in error text, logs and `Debug`: for paths that
    /// carry a secret (Consul's `/v1/session/renew/<session id>`).
    pub(crate) fn redact_path(mut self, shown: &'a str) -> Call<'a> {
        self.shown = Some(shown);
        self
    }

    /// The path error text and logs may show.
    pub(super) fn shown_path(&self) -> &'a str {
        self.shown.unwrap_or(self.path)
    }

    /// Adds a header. Its value is never logged nor put in an error: tokens go here.
    pub(crate) fn header(mut self, name: &'a str, value: &'a str) -> Call<'a> {
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    pub(crate) fn body(mut self, body: &'a [u8]) -> Call<'a> {
        self.body = Some(body);
        self
    }

    /// Returns `status` — a failure status such as 401 — to the caller as data instead of an
    /// error, for a caller that must read the server's reason (etcd answers an expired token
    /// with 401 and a body that says so); it may still turn the response into the usual error
    /// with [`HttpClient::unexpected`](super::HttpClient::unexpected). No retry applies to it.
    pub(crate) fn status_as_data(mut self, status: u16) -> Call<'a> {
        self.as_data.push(status);
        self
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.shown_path().split('?').next().unwrap_or_default();
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &path)
            .field("operation", &self.operation)
            .field("headers", &names)
            .field("body_len", &self.body.map(<[u8]>::len))
            .finish()
    }
}

/// A response whose status is a success or a "data" status ([`Class::Data`](super::Class::Data)). Its `Debug`
/// shows the status, header names and body length only (a body may echo a secret).
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The headers, names in lower case, values lossily decoded.
    pub(crate) headers: Vec<(String, String)>,
    /// The whole body.
    pub(crate) body: Vec<u8>,
    pub(super) backend: &'static str,
    pub(super) operation: &'static str,
}

impl Response {
    /// The first value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON. A body that does not parse is a permanent backend error whose text
    /// gives the position and kind of the fault only (serde's own text quotes the input).
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Backend {
            backend: self.backend,
            operation: self.operation,
            transient: false,
            source: format!(
                "HTTP {} response is not the expected JSON ({:?} error at line {}, column {})",
                self.status,
                e.classify(),
                e.line(),
                e.column()
            )
            .into(),
        })
    }
}

#[cfg(test)]
impl Response {
    /// A response as `backend`'s `operation` would receive it, for providers' unit tests.
    pub(crate) fn for_test(backend: &'static str, status: u16, body: &str) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            backend,
            operation: "test",
        }
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Rejects a header ureq would refuse, naming it but never echoing its value.
pub(super) fn check_headers(call: &Call<'_>) -> Result<()> {
    for (name, value) in &call.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(Error::config(
                "http header",
                format!("{name}: invalid name, or a value with control characters"),
            ));
        }
    }
    Ok(())
}

/// The headers with lower-case names (the `http` crate's are) and lossily decoded values.
pub(super) fn headers(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
