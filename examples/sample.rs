//! Runs one participant and prints every leadership change; does "leader work" while leading.
//!
//! ```text
//! cargo run --example sample -- memory
//! cargo run --example sample -- file [DIR]          # run it in two terminals, kill one
//! cargo run --example sample -- file /tmp/le --for 10
//! cargo run --example sample --features postgres -- postgres://user:pw@127.0.0.1/db
//! cargo run --example sample --features redis -- redis://127.0.0.1:6379/
//! cargo run --example sample --features zookeeper -- 'zookeeper://127.0.0.1:2181?session_timeout=6s'
//! cargo run --example sample --features consul -- consul://127.0.0.1:8500/leader-election/
//! cargo run --example sample --features azure-blob -- \
//!     'azure-blob:?connection_string=UseDevelopmentStorage%3Dtrue&container=sample'
//! ODBCSYSINI=/tmp/leader-election-services/odbc cargo run --example sample --features odbc -- \
//!     'odbc:Driver={MariaDB Unicode};Server=127.0.0.1;Database=leader_election;UID=leader;PWD=leader-secret'
//! cargo run --example sample --features odbc -- \
//!     'odbc:Driver={ODBC Driver 18 for SQL Server};Server=db,1433;UID=app;PWD={…};Encrypt=yes'
//! ```
//!
//! A Consul ACL token comes from the `CONSUL_HTTP_TOKEN` environment variable, never the URL.
//!
//! The backend is `memory`, `file [DIR]`, or any connection URL [`leader_election::connect`]
//! takes (its query parameters are the README's options table). Options after it:
//! `--group NAME` (default `sample`), `--for SECONDS` (default: until killed).
//! `RUST_LOG=debug` shows the library's logs.

use std::time::{Duration, Instant};

use leader_election::{Elector, LeadershipChange, Provider};

fn usage() -> ! {
    eprintln!(
        "usage: sample BACKEND [ARG] [--group NAME] [--for SECONDS]\n\
         backends:\n  memory\n  file [DIR]   (default: $TMPDIR/leader-election-sample)\n  \
         URL          (postgres://, redis://, rediss://, zookeeper://, etcd://, consul://, \
         azure-blob+https://, azure-blob:, odbc:…, file:///dir, memory:)"
    );
    std::process::exit(2)
}

fn provider(backend: &str, arg: Option<&str>) -> Result<Box<dyn Provider>, leader_election::Error> {
    match backend {
        "memory" => leader_election::connect("memory:"),
        "file" => {
            let dir = arg
                .map(Into::into)
                .unwrap_or_else(|| std::env::temp_dir().join("leader-election-sample"));
            println!("lock directory: {}", std::path::Path::new(&dir).display());
            Ok(Box::new(leader_election::FileProvider::new(dir)?))
        }
        url if url.contains(':') => leader_election::connect(url),
        _ => usage(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(backend) = args.first() else { usage() };
    let mut positional = None;
    let mut group = "sample".to_owned();
    let mut run_for = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--group" => group = it.next().cloned().unwrap_or_else(|| usage()),
            "--for" => {
                let secs: u64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage());
                run_for = Some(Duration::from_secs(secs));
            }
            other if positional.is_none() && !other.starts_with("--") => positional = Some(other),
            _ => usage(),
        }
    }

    let provider = provider(backend, positional)?;
    let backend = provider.name();
    let elector = Elector::builder(provider)
        .group(&group)
        .lease_ttl(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_secs(2))
        .retry_interval(Duration::from_secs(1))
        .metadata("example", "sample")
        .start()?;
    println!(
        "{} campaigning for group {group:?} on {backend}",
        elector.participant_id()
    );

    let changes = elector.subscribe();
    let started = Instant::now();
    let mut work_tick = Instant::now();
    loop {
        if run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        match changes.recv_timeout(Duration::from_millis(200)) {
            Ok(change) => print_change(&change),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        // Leader work: only while the deadline says we lead, tagged with the token.
        if let (Some(token), true) = (
            elector.fencing_token(),
            work_tick.elapsed() >= Duration::from_secs(1),
        ) {
            work_tick = Instant::now();
            println!("  leader work with fencing token {token}");
        }
    }
    elector.shutdown()?;
    // The stream ends after shutdown; show what it still held (the final Lost).
    changes.try_iter().for_each(|c| print_change(&c));
    println!("shut down");
    Ok(())
}

fn print_change(change: &LeadershipChange) {
    match change {
        LeadershipChange::Acquired { fencing_token, .. } => {
            println!("ACQUIRED leadership, fencing token {fencing_token}")
        }
        LeadershipChange::Lost {
            fencing_token,
            reason,
        } => println!("LOST leadership (token {fencing_token}): {reason}"),
        LeadershipChange::LeaderChanged { leader: Some(l) } => println!(
            "leader is now {} (token {})",
            l.participant_id, l.fencing_token
        ),
        LeadershipChange::LeaderChanged { leader: None } => println!("nobody leads"),
        other => println!("{other:?}"),
    }
}
