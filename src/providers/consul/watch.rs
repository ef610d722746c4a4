//! The watch thread of a Consul provider: one per provider, started by the first
//! [`crate::Provider::watch`], running a blocking query (`GET /v1/kv/<prefix>?recurse&index=N
//! &wait=Ws`) on the whole key prefix so that one thread serves every group the provider
//! watches, and waking the groups whose key's `ModifyIndex` changed, appeared or vanished.
//!
//! It follows Consul's rules for blocking queries ("Implementation details" of the API docs):
//! an index that goes backwards (a snapshot restore, a reaped tombstone) resets it to 0 and
//! wakes every watcher; an index of 0 is used as 1 (index 0 never blocks); a query that comes
//! back early with nothing new (Consul promises no change on return) is paced by a growing
//! pause, so a misbehaving server cannot make the loop spin; errors (429, 500 "No cluster
//! leader", 503, refused connections) back off on the shared listener loop, which sleeps
//! without spinning. The index is kept across reconnections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::providers::consul::api::{Api, BACKEND, KvEntry};
use crate::providers::support::http::Method;
use crate::providers::support::http::watch::Watch;
use crate::providers::support::listener::Stop;
use crate::providers::support::watchers::Watchers;
use crate::validate;

/// The first pause after an early, empty return; doubled up to [`MAX_PACE`].
const FIRST_PACE: Duration = Duration::from_millis(100);
const MAX_PACE: Duration = Duration::from_secs(5);

pub(crate) struct WatchLoop {
    pub(crate) api: Api,
    pub(crate) prefix: String,
    pub(crate) wait: Duration,
    pub(crate) watchers: Watchers,
    pub(crate) stop: Stop,
}

/// What the loop remembers between queries (and reconnections).
#[derive(Default)]
struct Seen {
    index: u64,
    /// Group → its key's `ModifyIndex`, from the last answer.
    groups: HashMap<String, u64>,
    /// Consecutive early answers that brought nothing new.
    idle: u32,
}

impl WatchLoop {
    pub(crate) fn run(self) {
        let mut seen = Seen::default();
        let http = self.api.http.clone();
        http.run_watch(&self.stop, &self.watchers, |watch, subscribed| {
            let mut first = true;
            while !watch.is_stopped() {
                self.poll(watch, &mut seen)?;
                if first {
                    first = false;
                    subscribed();
                }
            }
            Ok(())
        });
    }

    /// One blocking query and what follows from its answer.
    fn poll(&self, watch: &Watch, seen: &mut Seen) -> Result<()> {
        let index = format!("index={}", seen.index);
        let wait = format!("wait={}s", self.wait.as_secs().max(1));
        let path = self.api.path(
            &format!("/v1/kv/{}", self.prefix),
            &["recurse", &index, &wait],
        );
        let call = self.api.call(Method::Get, &path, "watch");
        let started = Instant::now();
        // Consul adds up to wait/16 to the wait.
        let resp = watch.long_poll(&call, self.wait + self.wait / 16)?;
        let entries: Vec<KvEntry> = match resp.status {
            200 => resp.json()?,
            404 => Vec::new(),
            _ => return Err(self.api.http.unexpected(&call, &resp)),
        };
        let returned = resp
            .header("x-consul-index")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                operation: "watch",
                transient: true,
                source: "a blocking query came back without a valid X-Consul-Index".into(),
            })?;
        if returned < seen.index {
            log::debug!(
                "consul: watch index went backwards ({} -> {returned}); restarting from 0",
                seen.index
            );
            seen.index = 0;
            seen.groups.clear();
            self.watchers.wake_all();
            return self.pace(watch, seen);
        }
        let groups = self.groups(&entries);
        for (group, modify) in &groups {
            if seen.groups.get(group) != Some(modify) {
                self.watchers.wake(group);
            }
        }
        for group in seen.groups.keys() {
            if !groups.contains_key(group) {
                self.watchers.wake(group);
            }
        }
        seen.groups = groups;
        let nothing_new = returned == seen.index;
        seen.index = returned.max(1);
        if nothing_new && started.elapsed() < self.wait / 2 {
            return self.pace(watch, seen);
        }
        seen.idle = 0;
        Ok(())
    }

    /// Group → `ModifyIndex` of the keys directly under the prefix that name a valid group.
    fn groups(&self, entries: &[KvEntry]) -> HashMap<String, u64> {
        entries
            .iter()
            .filter_map(|e| {
                let group = e.key.strip_prefix(&self.prefix)?;
                validate::group(group).ok()?;
                Some((group.to_owned(), e.modify_index))
            })
            .collect()
    }

    /// Sleeps a growing pause (without spinning, ending early on stop).
    fn pace(&self, watch: &Watch, seen: &mut Seen) -> Result<()> {
        let pause = FIRST_PACE
            .saturating_mul(1 << seen.idle.min(10))
            .min(MAX_PACE);
        seen.idle = seen.idle.saturating_add(1);
        let end = Instant::now() + pause;
        while !watch.is_stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
        Ok(())
    }
}
