//! A Consul HTTP API double for the tests: no Consul server can be installed on the test
//! machines, so the provider is tested against this model of the agent's API, built from
//! Consul's API documentation and source (the files are cited where each rule lives) — never
//! from what the provider happens to send. It serves, on 127.0.0.1:
//!
//! - `/v1/kv/<key>`: GET (single key, `?recurse`, `?raw`; blocking with `?index=&wait=`, which
//!   must carry a unit), PUT (`?acquire=`, `?release=`, `?cas=`, `?flags=`), DELETE (`?cas=`,
//!   `?recurse`); `X-Consul-Index` on reads only;
//! - `/v1/session/create|renew/<id>|destroy/<id>|info/<id>|list`: TTL sessions (10 s – 24 h,
//!   else HTTP 500), invalidated between TTL and 2 × TTL after the last renew (see
//!   [`Expiry`]), lock-delay (bare numbers below 1000 are seconds; capped at 60 s), the
//!   `serfHealth` check unless the request removes it;
//! - `/v1/txn`: KV operations, all-or-nothing, 409 listing every failed operation;
//! - `/v1/status/leader`;
//! - ACLs: with a token configured, a wrong token gets 403 "ACL not found", none gets the
//!   anonymous token's 403 "Permission denied" (lists are filtered instead, transactions fail
//!   per operation with 409);
//! - faults, switched at run time: every request answered with a status (500 "No cluster
//!   leader", 429, 503), only blocking queries failing, a leaderless cluster (requests held for
//!   `rpc_hold_timeout`, then 500; timers paused and restarted in full), stalled requests,
//!   connections closed unanswered, refused connections, spurious early returns of blocking
//!   queries, a zero `X-Consul-Index`, a gossip flap, tombstone reaping and snapshot restores (indexes going back).

pub mod client;
mod endpoints;
mod http;
mod sessions;
mod store;
mod txn;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use store::{Behavior, Entry, Expiry, SERF_CHECK, Session, State};

/// How a double is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// With `Some`, ACLs are on and this is the one token with every permission.
    pub acl_token: Option<String>,
    /// How long a leaderless cluster holds a request before answering 500 (Consul's
    /// `rpc_hold_timeout`, 7 s by default).
    pub rpc_hold: Duration,
    pub expiry: Expiry,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            acl_token: None,
            rpc_hold: Duration::from_secs(7),
            expiry: Expiry::Random,
        }
    }
}

/// The fault switches (all off by default).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Every API request is answered with this status and body.
    pub status: Option<(u16, &'static str)>,
    /// Only blocking queries (requests with `?index=` above 0) are answered so.
    pub blocking_status: Option<(u16, &'static str)>,
    /// No cluster leader: see [`ConsulDouble::set_no_leader`].
    pub no_leader: bool,
    /// Requests are read but never answered; their connections close when the stall ends.
    pub stall: bool,
    /// Each request's connection is closed without an answer.
    pub close: bool,
    /// Nothing listens: connections are refused and open ones shut down.
    pub refuse: bool,
    /// Blocking queries return after about 20 ms with nothing new.
    pub early_returns: bool,
    /// KV reads report `X-Consul-Index: 0` (a Consul bug the docs tell clients to survive).
    pub zero_index: bool,
}

/// What the server threads share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Condvar,
    faults: Mutex<Faults>,
    pub(crate) options: Mutex<Options>,
    pub(crate) stopped: AtomicBool,
    /// Bumped by a snapshot restore: blocking queries return at once (Consul's `AbandonCh`).
    pub(crate) restores: AtomicU64,
    pub(crate) addr: SocketAddr,
    counts: Mutex<HashMap<&'static str, u64>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    rng: Mutex<u64>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn options(&self) -> Options {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count(&self, kind: &'static str) {
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// A uniform number in [0, 1) (xorshift).
    pub(crate) fn random(&self) -> f64 {
        let mut s = self.rng.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A fresh session id (a UUID's shape).
    pub(crate) fn uuid(&self) -> String {
        let hex: String = (0..4)
            .map(|_| format!("{:08x}", (self.random() * u32::MAX as f64) as u32))
            .collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    fn register(&self, stream: &TcpStream) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(s) = stream.try_clone() {
            self.conns.lock().unwrap().insert(id, s);
        }
        id
    }

    fn unregister(&self, id: u64) {
        self.conns.lock().unwrap().remove(&id);
    }

    fn close_connections(&self) {
        for (_, s) in self.conns.lock().unwrap().drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Wakes the accept thread (to notice a fault or the stop).
    fn poke(&self) {
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }

    /// Arms the timer of every session in full, as a new leader does.
    fn restart_timers(&self, state: &mut State) {
        let expiry = self.options().expiry;
        let ids: Vec<String> = state.sessions.keys().cloned().collect();
        for id in ids {
            state.reset_timer(&id, Instant::now(), expiry, self.random());
        }
    }
}

/// A running double; stops when dropped.
pub struct ConsulDouble {
    shared: Arc<Shared>,
}

/// A copy of the store, for [`ConsulDouble::restore`].
pub struct Snapshot(State);

impl ConsulDouble {
    /// A double with default options: no ACLs, random expiry in [TTL, 2 × TTL].
    pub fn start() -> ConsulDouble {
        ConsulDouble::with(Options::default())
    }

    pub fn with(options: Options) -> ConsulDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the double");
        let addr = listener.local_addr().expect("the double's address");
        let seed = std::collections::hash_map::RandomState::new();
        let seed = std::hash::BuildHasher::hash_one(&seed, addr.port()) | 1;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            faults: Mutex::new(Faults::default()),
            options: Mutex::new(options),
            stopped: AtomicBool::new(false),
            restores: AtomicU64::new(0),
            addr,
            counts: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            rng: Mutex::new(seed),
        });
        // Raft's first entries: a fresh cluster's indexes never start at 0.
        shared.state().index = 10;
        http::start(shared.clone(), listener);
        let reaper = shared.clone();
        std::thread::Builder::new()
            .name("consul-double-ttl".into())
            .spawn(move || sessions::reap(&reaper))
            .expect("spawn the double's TTL thread");
        ConsulDouble { shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Changes the fault switches.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        let (was, now) = {
            let mut f = self.shared.faults.lock().unwrap();
            let was = f.clone();
            change(&mut f);
            (was, f.clone())
        };
        if was.no_leader != now.no_leader {
            let mut state = self.shared.state();
            if now.no_leader {
                // clearAllSessionTimers: a leaderless cluster expires nothing.
                for s in state.sessions.values_mut() {
                    s.expires = None;
                }
            } else {
                // initializeSessionTimers on the new leader: every timer in full.
                self.shared.restart_timers(&mut state);
            }
        }
        self.shared.changed.notify_all();
        if was.refuse != now.refuse {
            self.shared.poke();
        }
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.faults(|f| *f = Faults::default());
    }

    pub fn set_expiry(&self, expiry: Expiry) {
        self.shared.options.lock().unwrap().expiry = expiry;
    }

    /// How many requests of a kind were answered or held: `kv`, `kv-blocking`, `session`,
    /// `txn`, `status`, `other`.
    pub fn requests(&self, kind: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// The entry at `key`.
    pub fn kv(&self, key: &str) -> Option<Entry> {
        self.shared.state().kvs.get(key).cloned()
    }

    /// An operator's plain write (`consul kv put`): keeps the lock holder.
    pub fn put(&self, key: &str, value: &[u8]) {
        self.write(|s, idx| {
            s.kv_set(idx, key, Some(value.to_vec()), 0);
        });
    }

    /// An operator's plain delete: removes a locked key, no lock-delay.
    pub fn delete(&self, key: &str) {
        self.write(|s, idx| s.kv_delete(idx, key));
    }

    /// An operator's `consul session destroy`.
    pub fn destroy_session(&self, id: &str) {
        self.write(|s, idx| {
            s.session_destroy(idx, id, Instant::now());
        });
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.shared.state().sessions.values().cloned().collect()
    }

    /// A gossip flap of the agent's node: every session with the `serfHealth` check is
    /// invalidated, releasing what it holds.
    pub fn serf_flap(&self) -> usize {
        let ids: Vec<String> = self
            .sessions()
            .into_iter()
            .filter(|s| {
                s.node_checks
                    .iter()
                    .chain(&s.checks)
                    .any(|c| c == SERF_CHECK)
            })
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.destroy_session(id);
        }
        ids.len()
    }

    /// Reaps every tombstone (a prefix whose newest change was a delete goes back).
    pub fn reap_tombstones(&self) {
        self.shared.state().reap_tombstones();
        self.shared.changed.notify_all();
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.shared.state().clone())
    }

    /// Restores a snapshot: every index goes back to the snapshot's, blocking queries wake
    /// with the restored data, and the leader restarts every session timer in full.
    pub fn restore(&self, snapshot: &Snapshot) {
        let mut state = self.shared.state();
        *state = snapshot.0.clone();
        self.shared.restart_timers(&mut state);
        self.shared.restores.fetch_add(1, Ordering::SeqCst);
        drop(state);
        self.shared.changed.notify_all();
    }

    fn write(&self, f: impl FnOnce(&mut State, u64)) {
        let mut state = self.shared.state();
        let idx = state.raft_apply();
        f(&mut state, idx);
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.shared.close_connections();
        self.shared.poke();
    }
}

/// The address of a real Consul agent to test against (`LE_CONSUL_ADDR`), if any.
pub fn consul_addr() -> Option<String> {
    std::env::var("LE_CONSUL_ADDR")
        .ok()
        .filter(|a| !a.is_empty())
}
