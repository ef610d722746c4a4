//! The etcd cluster as the provider reaches it: one HTTP client per endpoint, the endpoint in
//! use (a call that cannot reach it, or that it cannot serve, tries the next one, within the
//! call's deadline), and the authentication token. The token comes from
//! `/v3/auth/authenticate`, is kept only in memory as a [`Secret`] (never shown by `Debug`,
//! never in logs or errors), and is fetched again when etcd answers that it is invalid, empty
//! or stale — the three answers on which etcd's own client refreshes it — with the rejected
//! call then sent once more (etcd rejected it before doing anything).
//!
//! Every call here may be repeated safely, which the retries rely on: reads and keepalives are
//! idempotent, a create-if-absent transaction that already ran fails its compare the second
//! time (the provider then recognises its own lease on the key), a conditional delete or a
//! revoke of what is gone does nothing, and a repeated grant costs one spare lease that expires
//! with its TTL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::providers::support::http::{Call, HttpClient, Method, Response};

use super::BACKEND;
use super::api::{self, AuthenticateResponse, Failure};

/// A credential (password or token): its `Debug` shows nothing of it.
#[derive(Clone)]
pub(super) struct Secret(String);

impl Secret {
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The outcome of a call that etcd answered.
pub(super) enum Reply {
    /// A 2xx response.
    Ok(Response),
    /// `etcdserver: requested lease not found`.
    LeaseNotFound,
}

/// The credentials and the token they got.
struct Auth {
    user: String,
    password: Secret,
    state: Mutex<Token>,
    /// Held while authenticating, so that concurrent callers wait for one token.
    login: Mutex<()>,
}

#[derive(Default)]
struct Token {
    /// Bumped whenever the token is replaced, so that a caller invalidates only the token it
    /// used, not a newer one.
    generation: u64,
    /// Whether `token` is current (`None` and fetched: authentication is not enabled).
    fetched: bool,
    token: Option<Secret>,
}

/// See the module docs. Shared by the provider and its watch thread.
pub(super) struct Cluster {
    pub(super) clients: Vec<HttpClient>,
    current: AtomicUsize,
    auth: Option<Auth>,
    pub(super) request_timeout: Duration,
}

impl Cluster {
    pub(super) fn new(
        clients: Vec<HttpClient>,
        auth: Option<(String, String)>,
        request_timeout: Duration,
    ) -> Cluster {
        Cluster {
            clients,
            current: AtomicUsize::new(0),
            auth: auth.map(|(user, password)| Auth {
                user,
                password: Secret(password),
                state: Mutex::new(Token::default()),
                login: Mutex::new(()),
            }),
            request_timeout,
        }
    }

    /// The endpoint in use.
    pub(super) fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst) % self.clients.len().max(1)
    }

    /// Moves on from endpoint `from` (unless another caller already did).
    pub(super) fn rotate(&self, from: usize) {
        let next = (from + 1) % self.clients.len().max(1);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Posts `body` as JSON to `path` with the token, if any. A 2xx answer or a missing lease
    /// comes back; every other answer is an error, after one fresh token if etcd asked for it.
    pub(super) fn post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        operation: &'static str,
        body: &T,
        deadline: Instant,
    ) -> Result<Reply> {
        let body = encode(operation, body)?;
        let mut fresh_token = false;
        loop {
            let (generation, token) = self.token(deadline)?;
            let (response, client) = self.send(path, operation, &body, token.as_ref(), deadline)?;
            if (200..300).contains(&response.status) {
                return Ok(Reply::Ok(response));
            }
            match api::failure(&response) {
                Failure::Reauthenticate if self.auth.is_some() && !fresh_token => {
                    log::debug!("etcd: {operation}: the token was refused; authenticating again");
                    self.invalidate(generation);
                    fresh_token = true;
                }
                Failure::LeaseNotFound => return Ok(Reply::LeaseNotFound),
                _ => return Err(self.unexpected(client, path, operation, &response)),
            }
        }
    }

    /// The token to send: the current one, or a new one (authenticating within `deadline`).
    /// `None` without credentials, or when etcd's authentication is not enabled. Also returns
    /// the token's generation, for [`Cluster::invalidate`].
    pub(super) fn token(&self, deadline: Instant) -> Result<(u64, Option<Secret>)> {
        let Some(auth) = &self.auth else {
            return Ok((0, None));
        };
        let current = |state: &Token| {
            state
                .fetched
                .then(|| (state.generation, state.token.clone()))
        };
        if let Some(t) = current(&auth.state.lock()) {
            return Ok(t);
        }
        let _login = auth.login.try_lock_until(deadline).ok_or(Error::Timeout {
            backend: BACKEND,
            operation: "authenticate",
            timeout: self.request_timeout,
        })?;
        if let Some(t) = current(&auth.state.lock()) {
            return Ok(t);
        }
        let token = self.authenticate(auth, deadline)?;
        let mut state = auth.state.lock();
        state.generation += 1;
        state.fetched = true;
        state.token = token;
        Ok((state.generation, state.token.clone()))
    }

    /// Forgets the token of `generation` (one etcd refused), so the next call authenticates.
    pub(super) fn invalidate(&self, generation: u64) {
        if let Some(auth) = &self.auth {
            let mut state = auth.state.lock();
            if state.generation == generation {
                state.fetched = false;
                state.token = None;
            }
        }
    }

    fn authenticate(&self, auth: &Auth, deadline: Instant) -> Result<Option<Secret>> {
        #[derive(Serialize)]
        struct Request<'a> {
            name: &'a str,
            password: &'a str,
        }
        let operation = "authenticate";
        let body = encode(
            operation,
            &Request {
                name: &auth.user,
                password: auth.password.expose(),
            },
        )?;
        let path = "/v3/auth/authenticate";
        let (response, client) = self.send(path, operation, &body, None, deadline)?;
        if (200..300).contains(&response.status) {
            let token = response.json::<AuthenticateResponse>()?.token;
            if token.is_empty() {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation,
                    transient: false,
                    source: "etcd answered without a token".into(),
                });
            }
            log::debug!("etcd: authenticated as {:?}", auth.user);
            return Ok(Some(Secret(token)));
        }
        if api::failure(&response) == Failure::AuthNotEnabled {
            // As etcd's own client does: go on without a token (if authentication is enabled
            // later, etcd answers "user name is empty" and the provider authenticates then).
            log::info!(
                "etcd: credentials were given but the server's authentication is not enabled; \
                 continuing without a token"
            );
            return Ok(None);
        }
        Err(self.unexpected(client, path, operation, &response))
    }

    /// Sends one POST, trying the next endpoint after a transient failure while time remains
    /// (each endpoint once). Returns the response — any status the transport returns as data,
    /// plus 400 and 401 for [`api::failure`] to read — and the endpoint that answered.
    fn send(
        &self,
        path: &str,
        operation: &'static str,
        body: &[u8],
        token: Option<&Secret>,
        deadline: Instant,
    ) -> Result<(Response, usize)> {
        let mut tried = 0;
        loop {
            let i = self.current();
            let call = Call::new(Method::Post, path, operation)
                .header("content-type", "application/json")
                .status_as_data(400)
                .status_as_data(401)
                .body(body);
            let call = match token {
                Some(t) => call.header("authorization", t.expose()),
                None => call,
            };
            match self.clients[i].request(&call, deadline) {
                Ok(response) => return Ok((response, i)),
                Err(e) if e.is_transient() => {
                    self.rotate(i);
                    tried += 1;
                    if tried >= self.clients.len() || Instant::now() >= deadline {
                        return Err(e);
                    }
                    log::debug!(
                        "etcd: {operation}: endpoint {} failed ({}); trying the next",
                        i + 1,
                        e.report()
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The error for a response nobody expected, as the transport words it.
    fn unexpected(
        &self,
        client: usize,
        path: &str,
        operation: &'static str,
        r: &Response,
    ) -> Error {
        self.clients[client].unexpected(&Call::new(Method::Post, path, operation), r)
    }
}

fn encode<T: Serialize + ?Sized>(operation: &'static str, body: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::Backend {
        backend: BACKEND,
        operation,
        transient: false,
        source: format!("cannot encode the request as JSON: {:?}", e.classify()).into(),
    })
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.clients)
            .field("user", &self.auth.as_ref().map(|a| &a.user))
            .finish_non_exhaustive()
    }
}
