//! The provider's one watch thread: a streaming `/v3/watch` on every key under the key
//! prefix, deletions only (`NOPUT`: a release, an expiry or an administrator's delete is what
//! lets a follower in), waking the electors that watch the group whose key went.
//!
//! The thread remembers the next revision it has not seen. After an idle stream (etcd sends
//! nothing while nothing changes, so a quiet stream and a dead connection look alike) it
//! re-creates the watch from that revision without waking anyone: etcd replays whatever
//! happened meanwhile. After a failure it reconnects with back-off (the next endpoint, if the
//! failure was transient) and wakes every watcher once the new stream is created. If etcd has
//! compacted the history past that revision (a `compact_revision` cancel), or the endpoint's
//! revision is below it (a lagging member, or etcd lost its data), the thread starts again from
//! the current revision and wakes everyone, since deletions may have been missed. A refused
//! token (etcd checks it only when a watch is created) is fetched again at once; any other
//! cancellation is reported and retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Error, Result};
use crate::providers::support::http::watch::Watch;
use crate::providers::support::http::{Call, Method};
use crate::providers::support::listener::{self, Stop};
use crate::providers::support::watchers::Watchers;

use super::BACKEND;
use super::api::{self, Failure, WatchResponse, b64, unb64};
use super::cluster::Cluster;

/// How long a watch stream may stay silent before it is re-created (see the module docs).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Why a stream was ended from inside (reported through [`Error::ShutDown`] as a sentinel).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Streaming,
    /// Start again from the current revision.
    Restart,
    /// Authenticate again, then reconnect.
    Reauthenticate,
}

/// The watch thread's state.
pub(super) struct Watcher {
    pub(super) cluster: Arc<Cluster>,
    pub(super) prefix: String,
    pub(super) range_end: String,
    pub(super) watchers: Watchers,
    pub(super) stop: Stop,
    /// The first revision not yet seen, once a stream was created.
    next: Option<i64>,
}

impl Watcher {
    pub(super) fn new(
        cluster: Arc<Cluster>,
        prefix: String,
        range_end: String,
        watchers: Watchers,
        stop: Stop,
    ) -> Watcher {
        Watcher {
            cluster,
            prefix,
            range_end,
            watchers,
            stop,
            next: None,
        }
    }

    /// Runs until the provider is dropped.
    pub(super) fn run(mut self) {
        let handles: Vec<Watch> = self
            .cluster
            .clients
            .iter()
            .map(|c| c.watch(&self.stop))
            .collect();
        let (stop, watchers) = (self.stop.clone(), self.watchers.clone());
        listener::run(BACKEND, &stop, &watchers, |subscribed| {
            let i = self.cluster.current();
            match self.session(&handles[i], subscribed) {
                Ok(()) => Ok(()),
                Err(_) if stop.is_stopped() => Ok(()),
                Err(e) => {
                    if e.is_transient() {
                        self.cluster.rotate(i);
                    }
                    Err(e.report())
                }
            }
        });
    }

    /// One connection: streams until it fails, re-creating idle streams from the next
    /// revision; calls `subscribed` once the first stream is created.
    fn session(&mut self, watch: &Watch, subscribed: &dyn Fn()) -> Result<()> {
        let mut woke = false;
        let mut fresh_token = false;
        loop {
            let deadline = Instant::now() + self.cluster.request_timeout;
            let (generation, token) = self.cluster.token(deadline)?;
            let mut create = json!({
                "key": b64(self.prefix.as_bytes()),
                "range_end": b64(self.range_end.as_bytes()),
                "filters": ["NOPUT"],
                "progress_notify": true,
            });
            if let Some(next) = self.next {
                create["start_revision"] = json!(next.to_string());
            }
            let body = serde_json::to_vec(&json!({ "create_request": create })).map_err(|_| {
                Error::Backend {
                    backend: BACKEND,
                    operation: "watch",
                    transient: false,
                    source: "cannot encode the watch request".into(),
                }
            })?;
            let call = Call::new(Method::Post, "/v3/watch", "watch")
                .header("content-type", "application/json")
                .body(&body);
            let call = match &token {
                Some(t) => call.header("authorization", t.expose()),
                None => call,
            };
            let mut end = End::Streaming;
            let mut created = false;
            let result = watch.stream(&call, MAX_IDLE, |line| {
                let response: WatchResponse = api::stream_line(line, "watch")?;
                self.on_response(response, &mut created, &mut end)?;
                if created && !woke {
                    woke = true;
                    subscribed();
                }
                Ok(())
            });
            match end {
                End::Restart => return Ok(()),
                End::Reauthenticate => {
                    self.cluster.invalidate(generation);
                    if fresh_token {
                        return Err(Error::Backend {
                            backend: BACKEND,
                            operation: "watch",
                            transient: true,
                            source: "etcd refused a fresh token".into(),
                        });
                    }
                    log::debug!("etcd: the watch's token was refused; authenticating again");
                    fresh_token = true;
                    continue;
                }
                End::Streaming => {}
            }
            match result {
                Err(Error::Timeout { .. }) if created && !watch.is_stopped() => {
                    log::debug!(
                        "etcd: the watch stream was idle for {MAX_IDLE:?}; re-creating it \
                         from revision {:?}",
                        self.next
                    );
                }
                other => return other,
            }
        }
    }

    /// Handles one response of the stream: creation, cancellation, events, progress.
    fn on_response(&mut self, r: WatchResponse, created: &mut bool, end: &mut End) -> Result<()> {
        if r.canceled {
            if r.compact_revision > 0 {
                log::info!(
                    "etcd: watch history compacted past revision {:?} (now {}); watching from \
                     the current revision",
                    self.next,
                    r.compact_revision
                );
                self.next = None;
                *end = End::Restart;
                return Err(Error::ShutDown);
            }
            if api::cancel_reason(&r.cancel_reason) == Failure::Reauthenticate {
                *end = End::Reauthenticate;
                return Err(Error::ShutDown);
            }
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "watch",
                transient: true,
                source: format!(
                    "etcd cancelled the watch ({})",
                    api::cancel_name(&r.cancel_reason)
                )
                .into(),
            });
        }
        if r.created {
            let now = r.header.revision;
            match self.next {
                Some(next) if now + 1 < next => {
                    log::info!(
                        "etcd: the endpoint is at revision {now}, before {next} that this watch \
                         already saw (a lagging member, or etcd lost its data); watching from \
                         its current revision"
                    );
                    self.next = None;
                    *end = End::Restart;
                    return Err(Error::ShutDown);
                }
                Some(_) => {}
                None => self.next = Some(now + 1),
            }
            *created = true;
            return Ok(());
        }
        if r.events.is_empty() {
            // A progress notification: everything up to this revision was sent.
            if r.header.revision > 0 {
                self.advance(r.header.revision + 1);
            }
            return Ok(());
        }
        for event in r.events {
            self.advance(event.kv.mod_revision + 1);
            let key = unb64(&event.kv.key).unwrap_or_default();
            if let Some(group) = key
                .strip_prefix(self.prefix.as_bytes())
                .and_then(|g| std::str::from_utf8(g).ok())
            {
                self.watchers.wake(group);
            }
        }
        Ok(())
    }

    fn advance(&mut self, to: i64) {
        self.next = Some(self.next.map_or(to, |n| n.max(to)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Wakeup;

    fn response(json: &str) -> WatchResponse {
        api::stream_line(json.as_bytes(), "watch").unwrap()
    }

    #[test]
    fn revisions_compaction_and_wake_ups() {
        let watchers = Watchers::default();
        let (wakeup, woken) = Wakeup::channel();
        let _w = watchers.add("g", wakeup);
        let cluster = Arc::new(Cluster::new(Vec::new(), None, Duration::from_secs(1)));
        let mut w = Watcher::new(
            cluster,
            "le/".into(),
            "le0".into(),
            watchers,
            Stop::default(),
        );
        let (mut created, mut end) = (false, End::Streaming);
        let mut feed =
            |w: &mut Watcher, json: &str| w.on_response(response(json), &mut created, &mut end);
        // Created at revision 7: watch from 8.
        feed(
            &mut w,
            r#"{"result":{"header":{"revision":"7"},"created":true}}"#,
        )
        .unwrap();
        assert_eq!(w.next, Some(8));
        // A deletion of le/g at 9 wakes g's watcher; other keys wake nobody.
        let delete = |key: &str, rev: u32| {
            format!(
                r#"{{"result":{{"header":{{"revision":"{rev}"}},"events":[{{"type":"DELETE",
                "kv":{{"key":"{}","mod_revision":"{rev}"}}}}]}}}}"#,
                api::b64(key.as_bytes())
            )
        };
        feed(&mut w, &delete("le/g", 9)).unwrap();
        assert!(woken.try_recv().is_ok());
        feed(&mut w, &delete("le/other", 10)).unwrap();
        assert!(woken.try_recv().is_err());
        assert_eq!(w.next, Some(11));
        // A progress notification moves on; a lower one does not move back.
        feed(&mut w, r#"{"result":{"header":{"revision":"20"}}}"#).unwrap();
        feed(&mut w, r#"{"result":{"header":{"revision":"15"}}}"#).unwrap();
        assert_eq!(w.next, Some(21));
        // Re-created on a member behind revision 21: start again from its current revision.
        let e = feed(
            &mut w,
            r#"{"result":{"header":{"revision":"5"},"created":true}}"#,
        );
        assert!(e.is_err());
        assert!(end == End::Restart && w.next.is_none());
        // Compacted: likewise.
        w.next = Some(3);
        let mut end = End::Streaming;
        let r = response(r#"{"result":{"header":{},"canceled":true,"compact_revision":"8"}}"#);
        assert!(w.on_response(r, &mut created, &mut end).is_err());
        assert!(end == End::Restart && w.next.is_none());
        // A refused token asks for a fresh one; other cancellations are errors.
        let mut end = End::Streaming;
        let r = response(
            r#"{"result":{"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#,
        );
        assert!(w.on_response(r, &mut created, &mut end).is_err());
        assert!(end == End::Reauthenticate);
        let mut end = End::Streaming;
        let r = response(
            r#"{"result":{"canceled":true,"cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied"}}"#,
        );
        let e = w.on_response(r, &mut created, &mut end).unwrap_err();
        assert!(
            end == End::Streaming && e.report().contains("PermissionDenied"),
            "{e:?}"
        );
    }
}
