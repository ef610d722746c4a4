//! Telemetry (feature `metrics`): a recording exporter installed as the process's recorder sees
//! the documented names and labels for terms won, leadership lost, campaign and renew
//! latency, and backend errors.

use std::time::Duration;

use leader_election::{ChangesExt, Elector, FaultyProvider, MemoryProvider, Operation};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// `(name, labels "k=v" sorted, value)` of every metric recorded so far.
fn recorded(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(String, Vec<String>, f64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let v = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            (key.key().name().to_owned(), labels, v)
        })
        .collect()
}

fn find<'a>(
    all: &'a [(String, Vec<String>, f64)],
    name: &str,
    labels: &[&str],
) -> Option<&'a (String, Vec<String>, f64)> {
    all.iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|want| l.iter().any(|have| have == want)))
}

#[test]
fn terms_losses_latencies_and_errors_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let provider = FaultyProvider::new(MemoryProvider::new());
    let faults = provider.faults();
    faults.only(&[Operation::Acquire]);
    faults.fail_next(2);
    let elector = Elector::builder(provider)
        .group("metrics-g")
        .lease_ttl(Duration::from_secs(4))
        .heartbeat_interval(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    elector.subscribe().take_until_leader().for_each(drop);
    std::thread::sleep(Duration::from_millis(700)); // a few renews
    elector.resign();
    elector.shutdown().unwrap();

    let all = recorded(&snapshotter);
    let g = "group=metrics-g";
    let b = "backend=memory";
    let won = find(&all, "leader_election_terms_won_total", &[g, b]).expect("terms won");
    assert!(won.2 >= 1.0, "{won:?}");
    let lost = find(
        &all,
        "leader_election_leadership_lost_total",
        &[g, b, "reason=resigned"],
    )
    .expect("leadership lost");
    assert_eq!(lost.2, 1.0);
    let errors = find(
        &all,
        "leader_election_backend_errors_total",
        &[g, b, "operation=campaign", "kind=transient"],
    )
    .expect("backend errors");
    assert_eq!(errors.2, 2.0);
    for (name, outcome) in [
        ("leader_election_campaign_seconds", "outcome=error"),
        ("leader_election_campaign_seconds", "outcome=acquired"),
        ("leader_election_renew_seconds", "outcome=renewed"),
    ] {
        let h = find(&all, name, &[g, b, outcome])
            .unwrap_or_else(|| panic!("{name} {outcome}: {all:?}"));
        assert!(h.2 >= 1.0, "{h:?}");
    }
}
