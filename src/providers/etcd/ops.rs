//! The etcd requests the provider is made of, one method each on [`Cluster`]: lease grant,
//! keepalive and revoke; a linearizable read of one key; the create-if-absent transaction
//! that acquires; the conditional delete that releases. Each is one round trip (plus, rarely,
//! a fresh token or another endpoint; see `cluster`).

use std::time::Instant;

use serde_json::json;

use crate::error::{Error, Result};

use super::BACKEND;
use super::api::{
    KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse, RangeResponse, TxnResponse, b64,
    stream_line,
};
use super::cluster::{Cluster, Reply};

/// The outcome of [`Cluster::create`].
pub(super) enum Created {
    /// The key was absent and is now ours (as read back in the same transaction).
    Mine(KeyValue),
    /// The key exists: its current state.
    Exists(KeyValue),
    /// The lease expired before the transaction: nothing was written.
    LeaseGone,
}

fn unexpected(operation: &'static str, what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        transient: false,
        source: format!("unexpected answer: {what}").into(),
    }
}

impl Cluster {
    /// Grants a lease of `ttl` seconds; returns its id and the TTL etcd granted (which may be
    /// longer: etcd raises TTLs below its minimum).
    pub(super) fn grant(&self, ttl: i64, deadline: Instant) -> Result<(i64, i64)> {
        let body = json!({ "TTL": ttl.to_string() });
        match self.post("/v3/lease/grant", "acquire", &body, deadline)? {
            Reply::Ok(r) => {
                let g: LeaseGrantResponse = r.json()?;
                if !g.error.is_empty() || g.ID == 0 {
                    return Err(unexpected("acquire", "a lease grant without a lease"));
                }
                Ok((g.ID, g.TTL))
            }
            Reply::LeaseNotFound => Err(unexpected("acquire", "lease not found on a grant")),
        }
    }

    /// Refreshes lease `id` to its full TTL from the moment etcd's leader processes it;
    /// returns that TTL, `0` if the lease is gone (expired or revoked: etcd never renews an
    /// expired lease, it waits for the revocation and reports it not found).
    /// Refreshes lease `id`: the TTL it was given (0: the lease is gone) and the Raft term of
    /// the member that answered.
    pub(super) fn keepalive(&self, id: i64, deadline: Instant) -> Result<(i64, i64)> {
        let body = json!({ "ID": id.to_string() });
        match self.post("/v3/lease/keepalive", "renew", &body, deadline)? {
            Reply::Ok(r) => {
                // A stream of one `{"result":…}` line: the request body held one request.
                let line = r
                    .body
                    .split(|&b| b == b'\n')
                    .find(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .ok_or_else(|| unexpected("renew", "an empty keepalive stream"))?;
                let answer = stream_line::<LeaseKeepAliveResponse>(line, "renew")?;
                Ok((answer.TTL.max(0), answer.header.raft_term))
            }
            Reply::LeaseNotFound => Ok((0, 0)),
        }
    }

    /// Revokes lease `id`, deleting every key attached to it; a lease already gone is fine.
    pub(super) fn revoke(&self, id: i64, operation: &'static str, deadline: Instant) -> Result<()> {
        let body = json!({ "ID": id.to_string() });
        self.post("/v3/lease/revoke", operation, &body, deadline)
            .map(drop)
    }

    /// Reads `key` (linearizable: etcd confirms with a quorum that it is current).
    pub(super) fn get(
        &self,
        key: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Option<KeyValue>> {
        Ok(self.get_with_term(key, operation, deadline)?.0)
    }

    /// As [`Cluster::get`], with the Raft term of the member that answered.
    pub(super) fn get_with_term(
        &self,
        key: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<(Option<KeyValue>, i64)> {
        let body = json!({ "key": b64(key.as_bytes()) });
        match self.post("/v3/kv/range", operation, &body, deadline)? {
            Reply::Ok(r) => {
                let answer = r.json::<RangeResponse>()?;
                Ok((answer.kvs.into_iter().next(), answer.header.raft_term))
            }
            Reply::LeaseNotFound => Err(unexpected(operation, "lease not found on a read")),
        }
    }

    /// Counts the keys under `prefix` (`[prefix, range_end)`): a cheap check that etcd answers
    /// and lets this user read there.
    pub(super) fn probe(&self, prefix: &str, range_end: &str, deadline: Instant) -> Result<()> {
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(range_end.as_bytes()),
            "count_only": true,
        });
        self.post("/v3/kv/range", "connect", &body, deadline)
            .map(drop)
    }

    /// One transaction: if `key` does not exist (`create_revision == 0`), put `value` with
    /// `lease` and read the key back; otherwise read it.
    pub(super) fn create(
        &self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<Created> {
        let key = b64(key.as_bytes());
        let read = json!({ "request_range": { "key": key } });
        let body = json!({
            "compare": [{
                "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0",
            }],
            "success": [
                { "request_put": { "key": key, "value": b64(value.as_bytes()),
                                   "lease": lease.to_string() } },
                read,
            ],
            "failure": [read],
        });
        match self.post("/v3/kv/txn", "acquire", &body, deadline)? {
            Reply::Ok(r) => {
                let txn: TxnResponse = r.json()?;
                let succeeded = txn.succeeded;
                match (succeeded, txn.first_kv()) {
                    (true, Some(kv)) => Ok(Created::Mine(kv)),
                    (false, Some(kv)) => Ok(Created::Exists(kv)),
                    (true, None) => Err(unexpected("acquire", "a created key that is not there")),
                    // Deleted between the compare and the read: impossible within one
                    // transaction, but nothing is ours either way.
                    (false, None) => Err(Error::Backend {
                        backend: BACKEND,
                        operation: "acquire",
                        transient: true,
                        source: "the key was neither absent nor present".into(),
                    }),
                }
            }
            Reply::LeaseNotFound => Ok(Created::LeaseGone),
        }
    }

    /// Deletes `key` if it is still the one created at `create_revision` (this term's).
    pub(super) fn delete_if(
        &self,
        key: &str,
        create_revision: i64,
        deadline: Instant,
    ) -> Result<()> {
        let key = b64(key.as_bytes());
        let body = json!({
            "compare": [{
                "key": key, "target": "CREATE", "result": "EQUAL",
                "create_revision": create_revision.to_string(),
            }],
            "success": [{ "request_delete_range": { "key": key } }],
        });
        self.post("/v3/kv/txn", "release", &body, deadline)
            .map(drop)
    }
}
