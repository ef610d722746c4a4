//! The HTTP transport of the REST backends (Azure Blob, Consul, etcd): one [`HttpClient`] per
//! provider — a `ureq` agent with a keep-alive pool, the crate's TLS modes, and every request
//! bounded by the caller's deadline — sending [`Call`]s and returning [`Response`]s whose
//! status [`status::check`] has already sorted: failures become the crate's [`Error`]
//! (transient or not), while 2xx and the "data" statuses 404/409/412 come back for the caller to
//! read. A request that dies on a pooled connection the server had closed is retried once, and
//! a 429/503 with `Retry-After` is retried once if the deadline allows. Long polls and streams
//! for watch threads live in [`watch`]. Header values (tokens, keys), query strings (SAS
//! signatures) and bodies never reach logs or error text.

mod agent;
mod call;
mod status;
#[cfg(test)]
mod tests;
pub(crate) mod watch;

use std::time::{Duration, Instant};

use serde::Serialize;
use ureq::http;

use crate::error::{Error, Result};
use crate::providers::support::deadline;
use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;

pub(crate) use call::{Call, Method, Response};
use call::{check_headers, headers};
use status::{Class, check};

/// Extracts a server error code (a header such as Azure's `x-ms-error-code`, or a field of a
/// JSON error body) from a failed response, for error text; see [`status::error_code`] for
/// what is kept.
pub(crate) type ErrorCode = fn(&Response) -> Option<String>;

/// See the module docs. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub(crate) struct HttpClient {
    agent: ureq::Agent,
    config: ureq::config::Config,
    base: url::Url,
    backend: &'static str,
    connect_timeout: Duration,
    request_timeout: Duration,
    error_code: Option<ErrorCode>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("backend", &self.backend)
            .field("base", &SafeUrl::from_url(&self.base))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for the server at `base` (`http` or `https`; a path prefix and query
    /// parameters — a SAS token, say — apply to every request). Each request gets at most
    /// `connect_timeout` to connect and `request_timeout` in all, both cut to the caller's
    /// deadline.
    pub(crate) fn new(
        backend: &'static str,
        base: url::Url,
        tls: &Tls,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<HttpClient> {
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(Error::config(
                "url",
                format!(
                    "expected an http:// or https:// URL with a host, got {}",
                    SafeUrl::from_url(&base)
                ),
            ));
        }
        let config = agent::config(&base, tls)?;
        Ok(HttpClient {
            agent: agent::agent(&config),
            config,
            base,
            backend,
            connect_timeout,
            request_timeout,
            error_code: None,
        })
    }

    /// Names the server error code of failed responses in error text (see [`ErrorCode`]).
    pub(crate) fn with_error_code(mut self, extract: ErrorCode) -> HttpClient {
        self.error_code = Some(extract);
        self
    }

    /// Sends `call`, finishing by `deadline`. `Ok` for 2xx and the data statuses; failures are
    /// mapped by [`status::check`] and `status::transport_error`.
    pub(crate) fn request(&self, call: &Call<'_>, deadline: Instant) -> Result<Response> {
        check_headers(call)?;
        let url = self.url(call.path);
        let target = status::target(call.method.as_str(), &self.url(call.shown_path()));
        let mut retried_connection = false;
        let mut honoured_retry_after = false;
        loop {
            let allowed = deadline::clamp(self.request_timeout, deadline);
            let limits = Limits {
                connect: deadline::clamp(self.connect_timeout, deadline),
                response: None,
                total: Some(allowed),
                per_read: None,
            };
            agent::clear_connected();
            let response = match self.send(&self.agent, call, &url, &limits) {
                Ok(response) => response,
                Err(e)
                    if !retried_connection
                        && !agent::connected()
                        && status::dead_connection(&e)
                        && Instant::now() < deadline =>
                {
                    log::debug!(
                        "{}: {}: pooled connection was closed by the server, retrying once",
                        self.backend,
                        target
                    );
                    retried_connection = true;
                    continue;
                }
                Err(e) => {
                    return Err(status::transport_error(
                        self.backend,
                        call.operation,
                        &target,
                        allowed,
                        &e,
                    ));
                }
            };
            let response = self.read(response, call.operation, &target, allowed)?;
            match check(response.status) {
                Class::Success | Class::Data => return Ok(response),
                _ if call.as_data.contains(&response.status) => return Ok(response),
                Class::Permanent | Class::Transient => {}
            }
            let wait = status::retry_after(response.status, response.header("retry-after"));
            if let Some(wait) = wait
                && !honoured_retry_after
                && Instant::now()
                    .checked_add(wait)
                    .is_some_and(|at| at < deadline)
            {
                log::debug!(
                    "{}: {}: HTTP {}, retrying once after {wait:?} as asked",
                    self.backend,
                    target,
                    response.status
                );
                honoured_retry_after = true;
                std::thread::sleep(wait);
                continue;
            }
            return Err(self.status_error(call.operation, &target, &response));
        }
    }

    /// [`HttpClient::request`] with `value` as a JSON body.
    #[cfg_attr(not(test), allow(dead_code))] // until a REST provider that sends JSON as-is
    pub(crate) fn send_json<T: Serialize + ?Sized>(
        &self,
        call: Call<'_>,
        value: &T,
        deadline: Instant,
    ) -> Result<Response> {
        let body = serde_json::to_vec(value).map_err(|e| Error::Backend {
            backend: self.backend,
            operation: call.operation,
            transient: false,
            source: format!("cannot encode the request body as JSON: {:?}", e.classify()).into(),
        })?;
        let call = call.header("content-type", "application/json").body(&body);
        self.request(&call, deadline)
    }

    /// The error for `response` when its status is one the caller did not expect (a data
    /// status it has no use for, say): as [`HttpClient::request`] reports failures.
    pub(crate) fn unexpected(&self, call: &Call<'_>, response: &Response) -> Error {
        let target = status::target(call.method.as_str(), &self.url(call.shown_path()));
        self.status_error(call.operation, &target, response)
    }

    fn status_error(&self, operation: &'static str, target: &str, response: &Response) -> Error {
        let code = self.error_code.and_then(|f| f(response));
        status::status_error(
            self.backend,
            operation,
            target,
            response.status,
            code.as_deref(),
        )
    }

    /// The base URL joined with `path_and_query`.
    fn url(&self, path_and_query: &str) -> url::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        let query = match (self.base.query(), query) {
            (Some(a), Some(b)) if !a.is_empty() => Some(format!("{a}&{b}")),
            (Some(a), None) if !a.is_empty() => Some(a.to_owned()),
            (_, Some(b)) => Some(b.to_owned()),
            _ => None,
        };
        url.set_query(query.as_deref());
        url.set_fragment(None);
        url
    }

    /// One exchange on `agent`, up to the response headers.
    fn send(
        &self,
        agent: &ureq::Agent,
        call: &Call<'_>,
        url: &url::Url,
        limits: &Limits,
    ) -> std::result::Result<http::Response<ureq::Body>, ureq::Error> {
        let mut builder = http::Request::builder()
            .method(call.method.as_str())
            .uri(url.as_str());
        for (name, value) in &call.headers {
            builder = builder.header(*name, *value);
        }
        // PUT and POST always carry a body (an empty one: `Content-Length: 0`).
        let body = match (call.body, call.method) {
            (Some(body), _) => Some(body),
            (None, Method::Put | Method::Post) => Some(&[][..]),
            (None, _) => None,
        };
        match body {
            Some(body) => {
                let request = limits.apply(agent.configure_request(builder.body(body)?));
                agent.run(request)
            }
            None => {
                let request = limits.apply(agent.configure_request(builder.body(())?));
                agent.run(request)
            }
        }
    }

    /// Reads the whole response.
    fn read(
        &self,
        response: http::Response<ureq::Body>,
        operation: &'static str,
        target: &str,
        allowed: Duration,
    ) -> Result<Response> {
        let (parts, mut body) = response.into_parts();
        let body = body
            .read_to_vec()
            .map_err(|e| status::transport_error(self.backend, operation, target, allowed, &e))?;
        Ok(Response {
            status: parts.status.as_u16(),
            headers: headers(&parts.headers),
            body,
            backend: self.backend,
            operation,
        })
    }
}

/// One exchange's time limits.
struct Limits {
    /// For connecting (TCP and TLS).
    connect: Duration,
    /// For receiving the response headers once the request is sent.
    response: Option<Duration>,
    /// For everything, the body included; `None` for streams.
    total: Option<Duration>,
    /// For each read from the socket (a stream's idle limit).
    per_read: Option<Duration>,
}

impl Limits {
    fn apply<S: ureq::AsSendBody>(
        &self,
        config: ureq::config::ConfigBuilder<ureq::typestate::HttpCrateScope<S>>,
    ) -> http::Request<S> {
        config
            .timeout_connect(Some(self.connect))
            // Name resolution comes before connecting; without a total limit it needs its own.
            .timeout_resolve(self.total.is_none().then_some(self.connect))
            .timeout_recv_response(self.response)
            .timeout_global(self.total)
            .timeout_per_read(self.per_read)
            .build()
    }
}
