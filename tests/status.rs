//! `Elector::status()`: the health snapshot a user can ask for, and the warning logged when a
//! backend call runs longer than the heartbeat interval.

use std::time::Duration;

use le_test_support as common;
use leader_election::{ChangesExt, Elector, FaultyProvider, MemoryProvider, Operation, Role};

#[test]
fn status_reports_failures_hung_calls_and_recovery() {
    common::logs::capture();
    let provider = FaultyProvider::new(MemoryProvider::new());
    let faults = provider.faults();
    faults.only(&[Operation::Acquire]);
    faults.fail_next(3);
    let elector = Elector::builder(provider)
        .group(common::unique("status"))
        .lease_ttl(Duration::from_secs(4))
        .heartbeat_interval(Duration::from_millis(300))
        .retry_interval(Duration::from_millis(30))
        .start()
        .unwrap();
    // Three failed campaigns show up, with the error's text.
    assert!(common::wait_for(Duration::from_secs(10), || {
        elector.status().consecutive_failures >= 2
    }));
    let failing = elector.status();
    assert_eq!(failing.role, Role::Follower);
    assert!(
        failing
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("injected"),
        "{failing:?}"
    );
    // Then it leads, and the failures are forgotten.
    elector.subscribe().take_until_leader().for_each(drop);
    let leading = elector.status();
    assert_eq!(leading.role, Role::Leader);
    assert_eq!(leading.consecutive_failures, 0);
    assert_eq!(leading.last_error, None);
    assert!(leading.term.is_some());
    assert!(
        leading.watch_established,
        "the memory provider pushes changes"
    );
    // A renew that hangs: visible in the status, and warned about once it outlasts the
    // heartbeat interval.
    faults.only(&[Operation::Renew]);
    faults.hang();
    assert!(common::wait_for(Duration::from_secs(10), || {
        elector
            .status()
            .call_in_flight
            .is_some_and(|(name, running)| name == "renew" && running > Duration::from_millis(300))
    }));
    assert!(common::wait_for(Duration::from_secs(10), || {
        common::logs::any(|l| l.contains("renew call") && l.contains("hung"))
    }));
    faults.unhang();
    elector.shutdown().unwrap();
    assert_eq!(elector.status().role, Role::Stopped);
}
