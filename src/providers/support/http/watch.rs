//! Watch threads over HTTP: a [`Watch`] is a watch thread's handle on an [`HttpClient`], with a
//! connection pool of its own that its [`Stop`] shuts down — which interrupts a long poll or
//! stream the thread is blocked in, so stopping never waits for a server to answer.
//! [`Watch::long_poll`] is a request the server may hold (Consul's blocking queries);
//! [`Watch::stream`] reads a response body line by line as it arrives (etcd's `/v3/watch`, a
//! chunked body of newline-separated JSON objects). [`HttpClient::run_watch`] runs a session
//! on [`listener::run`]'s reconnect and back-off loop.

use std::io::Read;
use std::time::Duration;

use super::{Call, Class, HttpClient, Limits, Response, agent, check, check_headers, status};
use crate::error::{Error, Result};
use crate::providers::support::listener::{self, Stop};
use crate::providers::support::watchers::Watchers;

/// The longest line [`Watch::stream`] accepts (a watch event batch), to bound memory.
const MAX_LINE: usize = 16 << 20;

/// See the module docs.
pub(crate) struct Watch {
    client: HttpClient,
    agent: ureq::Agent,
    stop: Stop,
}

impl HttpClient {
    /// A handle for the watch thread that `stop` ends. Create one per thread: each registers a
    /// hook on `stop`.
    pub(crate) fn watch(&self, stop: &Stop) -> Watch {
        let agent = agent::agent(&self.config);
        let pool = agent.clone();
        stop.on_stop(move || pool.shutdown());
        Watch {
            client: self.clone(),
            agent,
            stop: stop.clone(),
        }
    }

    /// Runs `session` on [`listener::run`]'s loop until `stop`: `session` long-polls or streams
    /// through the [`Watch`], calls `subscribed` once it is caught up (which resets the back-off
    /// and wakes every watcher), wakes watchers on changes, and returns when its connection
    /// fails. An error caused by the stop itself is not reported.
    #[cfg_attr(not(test), allow(dead_code))] // etcd rotates endpoints: until Consul
    pub(crate) fn run_watch(
        &self,
        stop: &Stop,
        watchers: &Watchers,
        mut session: impl FnMut(&Watch, &dyn Fn()) -> Result<()>,
    ) {
        let watch = self.watch(stop);
        listener::run(self.backend, stop, watchers, |subscribed| {
            match session(&watch, subscribed) {
                Err(_) if stop.is_stopped() => Ok(()),
                other => other.map_err(|e| e.report()),
            }
        });
    }
}

impl Watch {
    /// Whether the thread was told to end.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// A request the server may hold for up to `wait` before answering: it gets `wait` plus
    /// the client's request timeout. Statuses are checked as by [`HttpClient::request`]; there
    /// is no retry (the watch loop reconnects).
    #[cfg_attr(not(test), allow(dead_code))] // until Consul's blocking queries
    pub(crate) fn long_poll(&self, call: &Call<'_>, wait: Duration) -> Result<Response> {
        check_headers(call)?;
        let client = &self.client;
        let url = client.url(call.path);
        let target = status::target(call.method.as_str(), &client.url(call.shown_path()));
        let allowed = wait.saturating_add(client.request_timeout);
        let limits = Limits {
            connect: client.connect_timeout,
            response: None,
            total: Some(allowed),
            per_read: None,
        };
        let response = client.send(&self.agent, call, &url, &limits).map_err(|e| {
            status::transport_error(client.backend, call.operation, &target, allowed, &e)
        })?;
        let response = client.read(response, call.operation, &target, allowed)?;
        match check(response.status) {
            Class::Success | Class::Data => Ok(response),
            Class::Permanent | Class::Transient => {
                Err(client.status_error(call.operation, &target, &response))
            }
        }
    }

    /// Sends `call` and hands each line of the response body (without its `\n` or `\r\n`;
    /// empty lines skipped) to `on_line` as it arrives, until the stop (`Ok`), the end of the
    /// body (`Ok`: the caller's loop reconnects), an error from `on_line`, or `max_idle`
    /// without a byte (a timeout error: the connection may be dead). A non-2xx status is an
    /// error.
    pub(crate) fn stream(
        &self,
        call: &Call<'_>,
        max_idle: Duration,
        mut on_line: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        check_headers(call)?;
        let client = &self.client;
        let (backend, operation) = (client.backend, call.operation);
        let url = client.url(call.path);
        let target = status::target(call.method.as_str(), &client.url(call.shown_path()));
        let limits = Limits {
            connect: client.connect_timeout,
            response: Some(client.request_timeout),
            total: None,
            per_read: Some(max_idle),
        };
        let response = client
            .send(&self.agent, call, &url, &limits)
            .map_err(|e| self.failure(operation, &target, max_idle, e))?;
        if check(response.status().as_u16()) != Class::Success {
            let response = client.read(response, operation, &target, max_idle)?;
            return Err(client.status_error(operation, &target, &response));
        }
        let mut body = response.into_body();
        let mut reader = body.as_reader();
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(_) if self.is_stopped() => return Ok(()),
                Err(e) => return Err(self.failure(operation, &target, max_idle, ureq_error(e))),
            };
            if n == 0 {
                log::debug!("{backend}: {target}: the server ended the stream");
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                let line = trim_cr(&pending[start..start + end]);
                if !line.is_empty() {
                    on_line(line)?;
                }
                start += end + 1;
            }
            pending.drain(..start);
            if pending.len() > MAX_LINE {
                return Err(Error::Backend {
                    backend,
                    operation,
                    transient: true,
                    source: format!("{target}: a stream line is over {MAX_LINE} bytes").into(),
                });
            }
            if self.is_stopped() {
                return Ok(());
            }
        }
    }

    /// A stream's failure: timeouts report `max_idle`, the limit that ran out.
    fn failure(
        &self,
        operation: &'static str,
        target: &str,
        max_idle: Duration,
        e: ureq::Error,
    ) -> Error {
        status::transport_error(self.client.backend, operation, target, max_idle, &e)
    }
}

/// The ureq error inside an I/O error from a body reader (ureq wraps its own errors so).
fn ureq_error(e: std::io::Error) -> ureq::Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
        return ureq::Error::Io(e);
    }
    match e.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
        Some(Ok(ureq)) => *ureq,
        _ => ureq::Error::ConnectionFailed,
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
