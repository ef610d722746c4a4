//! Idle followers on a backend that pushes changes poll only as a safety net: far fewer
//! campaigns than one per retry interval, yet a graceful hand-off still takes one push and a
//! crashed leader is still replaced within its TTL plus a retry interval (they poll when its
//! lease would run out); while the push is down they poll every retry interval again.
//! Uses the memory provider (which pushes releases and reports the lease time left) behind a
//! wrapper that counts campaigns and lets the test take the push down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use le_test_support as common;
use leader_election::{
    AcquireRequest, Acquisition, Capabilities, ChangesExt, Elector, LeaderInfo, Lease,
    MemoryProvider, Provider, Renewal, Result, Wakeup, Watch,
};

/// The memory provider, counting campaigns, with a push the test can take down; every call
/// fails while `crashed` (a participant that died without releasing).
#[derive(Clone)]
struct Counted {
    inner: MemoryProvider,
    campaigns: Arc<AtomicU64>,
    live: Arc<AtomicBool>,
    crashed: Arc<AtomicBool>,
    /// A group found held is reported without its leader (as during Consul's lock-delay).
    anonymous: Arc<AtomicBool>,
    wakeups: Arc<parking_lot::Mutex<Vec<Wakeup>>>,
}

impl Counted {
    fn new() -> Self {
        Counted {
            inner: MemoryProvider::new(),
            campaigns: Arc::default(),
            live: Arc::new(AtomicBool::new(true)),
            crashed: Arc::default(),
            anonymous: Arc::default(),
            wakeups: Arc::default(),
        }
    }

    /// Another participant's view of the same backend (its own `crashed` flag).
    fn peer(&self) -> Self {
        Counted {
            crashed: Arc::default(),
            ..self.clone()
        }
    }

    fn check(&self, operation: &'static str) -> Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(leader_election::Error::Injected {
                operation,
                transient: true,
            });
        }
        Ok(())
    }

    /// Takes the push down (or up) and wakes the watchers, as a provider's listener does.
    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        for w in self.wakeups.lock().iter() {
            w.wake();
        }
    }
}

impl Provider for Counted {
    fn name(&self) -> &'static str {
        "counted-memory"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        self.campaigns.fetch_add(1, Ordering::SeqCst);
        self.check("acquire")?;
        match self.inner.try_acquire(request, deadline)? {
            Acquisition::Held(_) if self.anonymous.load(Ordering::SeqCst) => {
                Ok(Acquisition::Held(None))
            }
            other => Ok(other),
        }
    }
    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        self.check("renew")?;
        self.inner.renew(lease, deadline)
    }
    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        self.check("release")?;
        self.inner.release(lease, deadline)
    }
    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        self.inner.leader(group, deadline)
    }
    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.wakeups.lock().push(wakeup.clone());
        Ok(self
            .inner
            .watch(group, wakeup)?
            .map(|w| w.with_liveness(self.live.clone())))
    }
}

const TTL: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(100);

fn elector(p: &Counted, group: &str, id: &str, idle_poll: Option<Duration>) -> Elector {
    let mut b = Elector::builder(p.clone())
        .group(group)
        .participant_id(id)
        .lease_ttl(TTL)
        .heartbeat_interval(Duration::from_millis(400))
        .retry_interval(RETRY);
    if let Some(d) = idle_poll {
        b = b.idle_poll_interval(d);
    }
    b.start().unwrap()
}

/// Campaigns by `followers` idle followers over `window`, with `idle_poll` set or not.
fn campaigns_of_idle_followers(idle_poll: Option<Duration>, window: Duration) -> u64 {
    let p = Counted::new();
    let group = common::unique("idle");
    let leader = elector(&p, &group, "leader", idle_poll);
    leader.subscribe().take_until_leader().for_each(drop);
    let followers: Vec<Elector> = (0..10)
        .map(|i| elector(&p, &group, &format!("f{i}"), idle_poll))
        .collect();
    assert!(common::wait_for(Duration::from_secs(10), || followers
        .iter()
        .all(|f| f.status().watch_established)));
    std::thread::sleep(Duration::from_millis(500));
    let before = p.campaigns.load(Ordering::SeqCst);
    std::thread::sleep(window);
    let n = p.campaigns.load(Ordering::SeqCst) - before;
    assert!(leader.is_leader());
    n
}

#[test]
fn idle_followers_poll_far_less_while_the_push_is_up() {
    let window = Duration::from_secs(4);
    let every_retry = campaigns_of_idle_followers(Some(RETRY), window);
    let slow = campaigns_of_idle_followers(None, window);
    println!(
        "10 idle followers, {window:?}: {every_retry} campaigns polling every retry interval, {slow} by default"
    );
    // Every retry interval (jittered to 50–100 ms): ≈ 530. At the leader's expiry: ≈ 25.
    assert!(every_retry >= 200, "{every_retry}");
    assert!(slow * 5 <= every_retry, "{slow} vs {every_retry}");
}

#[test]
fn a_crashed_leader_is_replaced_within_its_ttl_plus_a_retry_interval() {
    let p = Counted::new();
    let group = common::unique("idle-crash");
    let leader = elector(&p, &group, "leader", None);
    leader.subscribe().take_until_leader().for_each(drop);
    // A safety-net poll far longer than the TTL: only polling at the leader's expiry can
    // replace it in time.
    let follower = elector(&p.peer(), &group, "follower", Some(Duration::from_secs(30)));
    let changes = follower.subscribe();
    assert!(common::wait_for(Duration::from_secs(10), || follower
        .status()
        .watch_established));
    std::thread::sleep(Duration::from_secs(1));
    // The leader's calls all fail from now on (as if its process died): no release, no
    // renew; its lease runs out on its own.
    p.crashed.store(true, Ordering::SeqCst);
    let crashed = Instant::now();
    let (_, at) = common::wait_acquired(&changes, Duration::from_secs(20));
    let took = at - crashed;
    println!("crash failover took {took:?} (TTL {TTL:?}, retry {RETRY:?})");
    // The lease had at most TTL left; generous for a busy machine.
    assert!(took < TTL + RETRY + Duration::from_millis(1500), "{took:?}");
}

#[test]
fn while_the_push_is_down_followers_poll_every_retry_interval() {
    let p = Counted::new();
    let group = common::unique("idle-down");
    let leader = elector(&p, &group, "leader", None);
    leader.subscribe().take_until_leader().for_each(drop);
    let follower = elector(&p, &group, "follower", None);
    assert!(common::wait_for(Duration::from_secs(10), || follower
        .status()
        .watch_established));
    std::thread::sleep(Duration::from_millis(500));
    let count = |d: Duration| {
        let before = p.campaigns.load(Ordering::SeqCst);
        std::thread::sleep(d);
        p.campaigns.load(Ordering::SeqCst) - before
    };
    let up = count(Duration::from_secs(3));
    p.set_live(false);
    let down = count(Duration::from_secs(3));
    p.set_live(true);
    println!("one idle follower over 3 s: {up} campaigns with the push up, {down} with it down");
    // Down: every 50–100 ms, ≈ 40. Up: about once per lease TTL.
    assert!(down >= 20, "{down}");
    assert!(up * 4 <= down, "{up} vs {down}");
}

/// A group held without a known leader (Consul's lock-delay, a ZooKeeper queue place being
/// re-made): no push announces its end, so the follower polls every retry interval.
#[test]
fn a_group_held_by_nobody_known_is_polled_every_retry_interval() {
    let p = Counted::new();
    let group = common::unique("idle-anon");
    let leader = elector(&p, &group, "leader", None);
    leader.subscribe().take_until_leader().for_each(drop);
    p.anonymous.store(true, Ordering::SeqCst);
    let follower = elector(&p, &group, "follower", None);
    assert!(common::wait_for(Duration::from_secs(10), || follower
        .status()
        .watch_established));
    std::thread::sleep(Duration::from_millis(300));
    let before = p.campaigns.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    let n = p.campaigns.load(Ordering::SeqCst) - before;
    // Every 50–100 ms: ≈ 27; once per TTL (2 s) if it relied on a push.
    assert!(n >= 10, "{n} campaigns in 2 s");
}
