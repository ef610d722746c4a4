//! The double's state store, modelled on Consul's (`agent/consul/state/kvs.go`, `session.go`,
//! `txn.go`, `delay.go`) and not on what the provider sends: a Raft index that every write
//! takes (even one that changes nothing), KV entries with `CreateIndex`/`ModifyIndex`/
//! `LockIndex`, a graveyard of tombstones (so that a prefix's index does not slide back on a
//! delete, until they are reaped), sessions with their TTL timers and lock-delays.
//!
//! Rules kept from the source, each where it applies below: an identical write keeps
//! `ModifyIndex`; a plain set keeps the lock holder; a lock by the holding session keeps
//! `LockIndex`, a new holder bumps it, a new key starts at 1; an unlock or a set resends value
//! and flags (they are overwritten); destroying or invalidating a session releases (or deletes)
//! what it holds and starts the lock-delay (capped at 60 s) on each of those keys.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The node check every session gets unless the create request says otherwise.
pub const SERF_CHECK: &str = "serfHealth";
/// `structs.MaxLockDelay`.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// A KV entry (`structs.DirEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    /// Empty when unlocked.
    pub session: String,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Entry {
    pub fn new(key: &str, value: Option<Vec<u8>>, flags: u64, session: &str) -> Entry {
        Entry {
            key: key.to_owned(),
            value,
            flags,
            session: session.to_owned(),
            lock_index: 0,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// `DirEntry.Equal`: the content, not the indexes (but `LockIndex` counts).
    fn same_content(&self, o: &Entry) -> bool {
        self.lock_index == o.lock_index
            && self.key == o.key
            && self.flags == o.flags
            && self.value == o.value
            && self.session == o.session
    }
}

/// What invalidating a session does to the keys it holds (`structs.SessionBehavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Release,
    Delete,
}

/// A session (`structs.Session`) and its timer.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    /// `None`: no TTL (never expires by itself).
    pub ttl: Option<Duration>,
    pub ttl_text: String,
    pub node_checks: Vec<String>,
    pub checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the timer fires (only while the cluster has a leader).
    pub expires: Option<Instant>,
}

/// When, between TTL and 2 × TTL after a renew, the double invalidates a session. Consul arms
/// its timer at exactly 2 × TTL but documents only the lower bound, so the default draws a
/// random moment in the documented range; tests may pin either end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Random,
    AtTtl,
    AtTwiceTtl,
}

/// The whole store; cloned for snapshots and for transaction rollback.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The last Raft index applied.
    pub index: u64,
    pub kvs: BTreeMap<String, Entry>,
    /// Key → the index of its delete.
    pub tombstones: BTreeMap<String, u64>,
    /// The `kvs` + `tombstones` tables' index (`kvsMaxIndex`).
    pub kvs_table: u64,
    pub sessions: BTreeMap<String, Session>,
    pub sessions_table: u64,
    /// Key → end of its lock-delay (kept in memory by each server, on its wall clock).
    pub lock_delays: HashMap<String, Instant>,
}

impl State {
    /// A Raft apply: the next index, taken whether or not the write changes anything.
    pub fn raft_apply(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// `kvsSetTxn`: stores `entry`, keeping the existing session unless `update_session`, and
    /// skipping the write (same `ModifyIndex`) when nothing changed.
    fn set_entry(&mut self, idx: u64, mut entry: Entry, update_session: bool) -> Entry {
        let existing = self.kvs.get(&entry.key);
        entry.create_index = existing.map_or(idx, |e| e.create_index);
        if !update_session {
            entry.session = existing.map(|e| e.session.clone()).unwrap_or_default();
        }
        if let Some(e) = existing
            && e.same_content(&entry)
        {
            entry.modify_index = e.modify_index;
            return entry;
        }
        entry.modify_index = idx;
        self.kvs.insert(entry.key.clone(), entry.clone());
        self.kvs_table = idx;
        entry
    }

    /// A plain set (`PUT /v1/kv/<key>`, txn `set`): keeps the lock holder (not its
    /// `LockIndex`: the incoming entry carries none).
    pub fn kv_set(&mut self, idx: u64, key: &str, value: Option<Vec<u8>>, flags: u64) -> Entry {
        self.set_entry(idx, Entry::new(key, value, flags, ""), false)
    }

    /// `kvsSetCASTxn`: index 0 means "only if absent".
    pub fn kv_cas(
        &mut self,
        idx: u64,
        key: &str,
        value: Option<Vec<u8>>,
        flags: u64,
        cas: u64,
    ) -> Option<Entry> {
        match self.kvs.get(key) {
            Some(_) if cas == 0 => return None,
            None if cas != 0 => return None,
            Some(e) if e.modify_index != cas => return None,
            _ => {}
        }
        Some(self.kv_set(idx, key, value, flags))
    }

    /// `kvsLockTxn` (the lock-delay is checked before, on the leader: see `lock_delayed`).
    pub fn kv_lock(
        &mut self,
        idx: u64,
        key: &str,
        value: Option<Vec<u8>>,
        flags: u64,
        session: &str,
    ) -> Result<Option<Entry>, String> {
        if session.is_empty() {
            return Err("missing session".into());
        }
        if !self.sessions.contains_key(session) {
            return Err(format!("invalid session {session:?}"));
        }
        let mut entry = Entry::new(key, value, flags, session);
        match self.kvs.get(key) {
            Some(e) if e.session == session => entry.lock_index = e.lock_index,
            Some(e) if !e.session.is_empty() => return Ok(None),
            Some(e) => entry.lock_index = e.lock_index + 1,
            None => entry.lock_index = 1,
        }
        Ok(Some(self.set_entry(idx, entry, true)))
    }

    /// `kvsUnlockTxn`: only the holding session unlocks; value and flags are overwritten.
    pub fn kv_unlock(
        &mut self,
        idx: u64,
        key: &str,
        value: Option<Vec<u8>>,
        flags: u64,
        session: &str,
    ) -> Result<Option<Entry>, String> {
        if session.is_empty() {
            return Err("missing session".into());
        }
        let Some(e) = self.kvs.get(key) else {
            return Ok(None);
        };
        if e.session != session {
            return Ok(None);
        }
        let mut entry = Entry::new(key, value, flags, "");
        entry.lock_index = e.lock_index;
        Ok(Some(self.set_entry(idx, entry, true)))
    }

    /// `kvsDeleteTxn`: a plain delete, locked or not, leaving a tombstone.
    pub fn kv_delete(&mut self, idx: u64, key: &str) {
        if self.kvs.remove(key).is_some() {
            self.tombstones.insert(key.to_owned(), idx);
            self.kvs_table = idx;
        }
    }

    /// `kvsDeleteCASTxn`: `true` if deleted, or if the key is absent.
    pub fn kv_delete_cas(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.kvs.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.kv_delete(idx, key);
                true
            }
        }
    }

    /// `kvsDeleteTreeTxn`.
    pub fn kv_delete_tree(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self
            .kvs
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for key in keys {
            self.kv_delete(idx, &key);
        }
    }

    /// Whether a lock of `key` is refused for its lock-delay (`kvsPreApply`).
    pub fn lock_delayed(&self, key: &str, now: Instant) -> bool {
        self.lock_delays.get(key).is_some_and(|end| *end > now)
    }

    /// `KVS.Get`'s index: the entry's `ModifyIndex`, or the table's for an absent key (never 0).
    pub fn get_index(&self, key: &str) -> u64 {
        self.kvs
            .get(key)
            .map_or(self.kvs_table, |e| e.modify_index)
            .max(1)
    }

    /// `kvsListTxn`: the entries under `prefix` and the list's index — the highest
    /// `ModifyIndex` among them or among the prefix's tombstones, else the table's; never 0.
    pub fn list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        let entries: Vec<Entry> = self
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let mut lindex = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        if prefix.is_empty() {
            lindex = self.kvs_table;
        } else {
            let gindex = self
                .tombstones
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0);
            lindex = lindex.max(gindex);
        }
        let index = if lindex != 0 { lindex } else { self.kvs_table };
        (index.max(1), entries)
    }

    /// Drops every tombstone (Consul reaps them after `tombstone_ttl`): a prefix whose
    /// highest index was a delete then reports a lower index.
    pub fn reap_tombstones(&mut self) {
        self.tombstones.clear();
    }

    pub fn session_create(&mut self, idx: u64, mut session: Session) {
        session.create_index = idx;
        session.modify_index = idx;
        self.sessions.insert(session.id.clone(), session);
        self.sessions_table = idx;
    }

    /// `sessionDestroyTxn`: releases or deletes what the session holds, starting the
    /// lock-delay on each such key, then removes it. `false` if there was no such session.
    pub fn session_destroy(&mut self, idx: u64, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.sessions_table = idx;
        let delay = session.lock_delay.min(MAX_LOCK_DELAY);
        let held: Vec<Entry> = self
            .kvs
            .values()
            .filter(|e| e.session == id)
            .cloned()
            .collect();
        for e in held {
            match session.behavior {
                Behavior::Release => {
                    let mut released = e.clone();
                    released.session = String::new();
                    self.set_entry(idx, released, true);
                }
                Behavior::Delete => self.kv_delete(idx, &e.key),
            }
            if delay > Duration::ZERO {
                self.lock_delays.insert(e.key.clone(), now + delay);
            }
        }
        true
    }

    /// Arms (or re-arms) a session's timer, as a renew or a new leader does: it fires between
    /// TTL and 2 × TTL from `now`, as `expiry` says.
    pub fn reset_timer(&mut self, id: &str, now: Instant, expiry: Expiry, unit: f64) {
        if let Some(s) = self.sessions.get_mut(id)
            && let Some(ttl) = s.ttl
        {
            let factor = match expiry {
                Expiry::AtTtl => 1.0,
                Expiry::AtTwiceTtl => 2.0,
                Expiry::Random => 1.0 + unit.clamp(0.0, 1.0),
            };
            s.expires = Some(now + ttl.mul_f64(factor));
        }
    }

    /// The sessions whose timer has fired.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.sessions
            .values()
            .filter(|s| s.expires.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect()
    }

    /// The check of txn `check-session` (`kvsCheckSessionTxn`).
    pub fn check_session(&self, key: &str, session: &str) -> Result<Entry, String> {
        let e = self
            .kvs
            .get(key)
            .ok_or_else(|| format!("failed to check session, key {key:?} doesn't exist"))?;
        if e.session != session {
            return Err(format!(
                "failed session check for key {key:?}, current session {:?} != {session:?}",
                e.session
            ));
        }
        Ok(e.clone())
    }

    /// The check of txn `check-index` (`kvsCheckIndexTxn`).
    pub fn check_index(&self, key: &str, index: u64) -> Result<Entry, String> {
        let e = self
            .kvs
            .get(key)
            .ok_or_else(|| format!("failed to check index, key {key:?} doesn't exist"))?;
        if e.modify_index != index {
            return Err(format!(
                "failed index check for key {key:?}, current modify index {} != {index}",
                e.modify_index
            ));
        }
        Ok(e.clone())
    }
}
