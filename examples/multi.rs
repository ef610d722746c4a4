//! Several participants in one process: the leader resigns, then the next one is dropped;
//! each failover is printed with how long it took.
//!
//! ```text
//! cargo run --example multi
//! ```

use std::time::{Duration, Instant};

use leader_election::{Elector, LeadershipChange, MemoryProvider};

fn main() -> Result<(), leader_election::Error> {
    let provider = MemoryProvider::new();
    let mut electors: Vec<Elector> = (1..=4)
        .map(|i| {
            Elector::builder(provider.clone())
                .group("multi")
                .participant_id(format!("worker-{i}"))
                .lease_ttl(Duration::from_secs(3))
                .heartbeat_interval(Duration::from_secs(1))
                .retry_interval(Duration::from_millis(500))
                .start()
        })
        .collect::<Result<_, _>>()?;

    // One printer thread per participant; times are since the start.
    let start = Instant::now();
    for e in &electors {
        let id = e.participant_id().to_owned();
        let changes = e.subscribe();
        std::thread::spawn(move || {
            for c in changes {
                let t = start.elapsed().as_secs_f64();
                match c {
                    LeadershipChange::Acquired { fencing_token, .. } => {
                        println!("{t:8.3}s {id}: ACQUIRED (token {fencing_token})")
                    }
                    LeadershipChange::Lost { reason, .. } => {
                        println!("{t:8.3}s {id}: LOST ({reason})")
                    }
                    _ => {}
                }
            }
        });
    }

    for step in ["resigns", "is dropped", "resigns"] {
        let leader = wait_for_leader(&electors);
        std::thread::sleep(Duration::from_secs(2));
        let id = electors[leader].participant_id().to_owned();
        println!("{:8.3}s -- {id} {step}", start.elapsed().as_secs_f64());
        let t = Instant::now();
        if step == "is dropped" {
            drop(electors.remove(leader));
        } else {
            electors[leader].resign();
        }
        let next = wait_for_leader(&electors);
        println!(
            "{:8.3}s -- {} took over after {:?}",
            start.elapsed().as_secs_f64(),
            electors[next].participant_id(),
            t.elapsed()
        );
    }
    for e in electors {
        e.shutdown()?;
    }
    std::thread::sleep(Duration::from_millis(50)); // let the printers finish
    Ok(())
}

fn wait_for_leader(electors: &[Elector]) -> usize {
    loop {
        if let Some(i) = electors.iter().position(Elector::is_leader) {
            return i;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
