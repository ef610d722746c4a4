//! The Blob service operations the provider needs, one request each: read a blob (its lease
//! state, ETag, token counter and leader record, in one GET), create it (only if absent), lease
//! it (acquire with a proposed id, renew, release), write the leader record under the lease, and
//! create the container. Answers come back as outcomes — the service's error codes
//! (`LeaseAlreadyPresent`, `ConditionNotMet`, `ContainerNotFound`, …) read from the
//! `x-ms-error-code` header into [`Code`] — never as strings the caller must match. Failures the
//! transport reports (unreachable service, timeouts, 5xx, refused credentials) stay errors, with
//! refusals explained by [`refusals::explain`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::providers::azure_blob::account::{Account, Credential};
use crate::providers::azure_blob::refusals;
use crate::providers::azure_blob::signing::{Request, Signer};
use crate::providers::support::http::{HttpClient, Method, Response};

/// The metadata entry holding a group's token counter (`x-ms-meta-fencingtoken`).
const TOKEN_META: &str = "x-ms-meta-fencingtoken";

/// The service error codes the provider acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BlobNotFound,
    ContainerNotFound,
    BlobAlreadyExists,
    ContainerAlreadyExists,
    LeaseAlreadyPresent,
    ConditionNotMet,
    /// Any other (or no) code.
    Other,
}

fn code(response: &Response) -> Code {
    match response.header("x-ms-error-code").unwrap_or_default() {
        "BlobNotFound" => Code::BlobNotFound,
        "ContainerNotFound" => Code::ContainerNotFound,
        "BlobAlreadyExists" => Code::BlobAlreadyExists,
        "ContainerAlreadyExists" => Code::ContainerAlreadyExists,
        "LeaseAlreadyPresent" => Code::LeaseAlreadyPresent,
        "ConditionNotMet" => Code::ConditionNotMet,
        _ => Code::Other,
    }
}

/// A blob's lease state (`x-ms-lease-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// `leased`, or `breaking` (still held until its break period ends).
    Held,
    /// `available`, `expired` or `broken`: anyone may acquire.
    Free,
}

/// What a GET of a group's blob found.
pub(crate) enum Found {
    Blob(BlobState),
    /// No blob (`container_missing`: no container either), and the service's clock then.
    Missing {
        container_missing: bool,
        server_time: SystemTime,
    },
}

/// A blob's state as read.
pub(crate) struct BlobState {
    pub(crate) etag: String,
    pub(crate) lease: LeaseState,
    /// The token counter; 0 if the blob has none.
    pub(crate) counter: u64,
    /// The leader record (JSON), empty before the first term.
    pub(crate) record: Vec<u8>,
}

/// The outcome of a lease operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseOutcome {
    /// 200/201.
    Done,
    /// 409 with this code (another lease, no lease, a broken lease, …).
    Conflict(Code),
    /// 412: the `If-Match` condition failed (the blob changed).
    Changed,
    /// 404: no blob (or no container).
    Missing,
}

/// The lease operations.
pub(crate) enum LeaseAction<'a> {
    /// Acquire for `seconds` with the proposed `id`, if the blob's ETag is still `etag`.
    Acquire {
        id: &'a str,
        seconds: u64,
        etag: &'a str,
    },
    Renew {
        id: &'a str,
    },
    Release {
        id: &'a str,
    },
}

/// The container's blobs, through one HTTP client.
pub(crate) struct Blobs {
    client: HttpClient,
    signer: Signer,
    account: String,
    credential: Credential,
    container: String,
    prefix: String,
}

impl Blobs {
    /// The blobs of `account`'s container; group `G` is the blob `<prefix>G`.
    pub(crate) fn new(client: HttpClient, account: Account, prefix: String) -> Blobs {
        Blobs {
            signer: Signer::new(&account.name, &account.credential, &account.endpoint),
            client,
            account: account.name,
            credential: account.credential,
            container: account.container,
            prefix,
        }
    }

    pub(crate) fn container(&self) -> &str {
        &self.container
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL path of a group's blob (or of any other name below the prefix).
    fn path(&self, group: &str) -> String {
        format!("/{}/{}{group}", self.container, self.prefix)
    }

    fn send(&self, request: Request, deadline: Instant) -> Result<Response> {
        let request = request.sign(&self.signer);
        self.client
            .request(&request.call(), deadline)
            .map_err(|e| refusals::explain(e, &self.account, &self.credential))
    }

    fn unexpected(&self, request: &Request, response: &Response) -> Error {
        self.client.unexpected(&request.call(), response)
    }

    /// Reads `group`'s blob: one GET, whose headers carry the lease state, ETag and token counter and
    /// whose body is the leader record.
    pub(crate) fn get(
        &self,
        group: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Found> {
        let request = || Request::new(Method::Get, &self.path(group), None, operation);
        let response = self.send(request(), deadline)?;
        match response.status {
            200..=299 => {
                let corrupt = |detail: &str| Error::Corrupt {
                    backend: super::BACKEND,
                    group: group.to_owned(),
                    detail: detail.to_owned(),
                };
                let etag = response
                    .header("etag")
                    .ok_or_else(|| corrupt("the blob has no ETag"))?
                    .to_owned();
                let lease = match response.header("x-ms-lease-state").unwrap_or("available") {
                    "leased" | "breaking" => LeaseState::Held,
                    _ => LeaseState::Free,
                };
                let counter = match response.header(TOKEN_META) {
                    None => 0,
                    Some(v) => v
                        .trim()
                        .parse()
                        .map_err(|_| corrupt("the fencingtoken metadata is not a number"))?,
                };
                Ok(Found::Blob(BlobState {
                    etag,
                    lease,
                    counter,
                    record: response.body,
                }))
            }
            404 => Ok(Found::Missing {
                container_missing: code(&response) == Code::ContainerNotFound,
                server_time: server_time(&response),
            }),
            _ => Err(self.unexpected(&request(), &response)),
        }
    }

    /// Creates `group`'s blob, empty, with token counter `counter`, unless it exists. `Ok(Some(etag))`
    /// if this call created it, `Ok(None)` if it exists; a missing container is an error here
    /// (see [`Blobs::create_container`]).
    pub(crate) fn create(
        &self,
        group: &str,
        counter: u64,
        deadline: Instant,
    ) -> Result<std::result::Result<String, Code>> {
        let request = || {
            Request::new(Method::Put, &self.path(group), None, "acquire")
                .header("x-ms-blob-type", "BlockBlob")
                .header("if-none-match", "*")
                .header(TOKEN_META, counter.to_string())
        };
        let response = self.send(request(), deadline)?;
        match (response.status, code(&response)) {
            (200..=299, _) => match response.header("etag") {
                Some(etag) => Ok(Ok(etag.to_owned())),
                None => Err(self.unexpected(&request(), &response)),
            },
            (409 | 412, c) | (404, c @ Code::ContainerNotFound) => Ok(Err(c)),
            _ => Err(self.unexpected(&request(), &response)),
        }
    }

    /// Creates the container; `Ok` if it exists already.
    pub(crate) fn create_container(&self, deadline: Instant) -> Result<()> {
        let path = format!("/{}", self.container);
        let request = || {
            Request::new(
                Method::Put,
                &path,
                Some("restype=container"),
                "create container",
            )
        };
        let response = self.send(request(), deadline)?;
        match response.status {
            200..=299 | 409 => {
                if response.status == 201 {
                    log::info!("azure-blob: created container {:?}", self.container);
                }
                Ok(())
            }
            _ => Err(self.unexpected(&request(), &response)),
        }
    }

    /// One lease operation on `group`'s blob.
    pub(crate) fn lease(
        &self,
        group: &str,
        action: &LeaseAction<'_>,
        deadline: Instant,
    ) -> Result<LeaseOutcome> {
        let path = self.path(group);
        let request = || {
            let r = Request::new(Method::Put, &path, Some("comp=lease"), operation(action));
            match *action {
                LeaseAction::Acquire { id, seconds, etag } => r
                    .header("x-ms-lease-action", "acquire")
                    .header("x-ms-lease-duration", seconds.to_string())
                    .header("x-ms-proposed-lease-id", id)
                    .header("if-match", etag),
                LeaseAction::Renew { id } => r
                    .header("x-ms-lease-action", "renew")
                    .header("x-ms-lease-id", id),
                LeaseAction::Release { id } => r
                    .header("x-ms-lease-action", "release")
                    .header("x-ms-lease-id", id),
            }
        };
        let response = self.send(request(), deadline)?;
        Ok(match response.status {
            200..=299 => LeaseOutcome::Done,
            409 => LeaseOutcome::Conflict(code(&response)),
            412 => LeaseOutcome::Changed,
            404 => LeaseOutcome::Missing,
            _ => return Err(self.unexpected(&request(), &response)),
        })
    }

    /// Writes the leader `record` and token `counter` to `group`'s blob, under lease `id`, if the
    /// blob's ETag is still `etag`: one Put Blob, which replaces body and metadata and keeps
    /// the lease. `Done` if written.
    pub(crate) fn write_record(
        &self,
        group: &str,
        id: &str,
        etag: &str,
        counter: u64,
        record: &str,
        deadline: Instant,
    ) -> Result<LeaseOutcome> {
        let path = self.path(group);
        let request = || {
            Request::new(Method::Put, &path, None, "acquire")
                .header("x-ms-blob-type", "BlockBlob")
                .header("x-ms-lease-id", id)
                .header("if-match", etag)
                .header("content-type", "application/json")
                .header(TOKEN_META, counter.to_string())
                .body(record.as_bytes().to_vec())
        };
        let response = self.send(request(), deadline)?;
        Ok(match response.status {
            200..=299 => LeaseOutcome::Done,
            409 => LeaseOutcome::Conflict(code(&response)),
            412 => LeaseOutcome::Changed,
            404 => LeaseOutcome::Missing,
            _ => return Err(self.unexpected(&request(), &response)),
        })
    }
}

fn operation(action: &LeaseAction<'_>) -> &'static str {
    match action {
        LeaseAction::Acquire { .. } => "acquire",
        LeaseAction::Renew { .. } => "renew",
        LeaseAction::Release { .. } => "release",
    }
}

/// The service's clock from a response's `Date` header (whole seconds); this machine's clock
/// if the header is missing or unreadable.
fn server_time(response: &Response) -> SystemTime {
    match response.header("date").map(httpdate::parse_http_date) {
        Some(Ok(t)) => t,
        _ => {
            log::debug!("azure-blob: no usable Date header; using this machine's clock");
            SystemTime::now()
        }
    }
}

/// `t` in whole seconds since the epoch, as microseconds: a token counter seed.
pub(crate) fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_mul(1_000_000))
        .unwrap_or(0)
}
