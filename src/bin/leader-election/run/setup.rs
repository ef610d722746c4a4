//! Setting `run` up: the options checked (on a memory provider first, so a bad flag is named
//! before any connection; then `--grace` against the timing), the backend connected, the
//! elector built and the guard process started.

use std::time::Duration;

use leader_election::{Elector, ElectorBuilder, MemoryProvider, Provider};

use super::{KILL_RESERVE, Runner};
use crate::args::RunArgs;
use crate::guard::Guard;
use crate::{EXIT_TOOL_FAILED, explain};

fn configure<P: Provider>(a: &RunArgs, provider: P) -> ElectorBuilder<P> {
    let mut b = Elector::builder(provider)
        .group(&a.target.group)
        .lease_ttl(a.ttl)
        .heartbeat_interval(a.heartbeat)
        .retry_interval(a.retry);
    if let Some(id) = &a.id {
        b = b.participant_id(id);
    }
    if let Some(m) = a.safety_margin {
        b = b.safety_margin(m);
    }
    for (k, v) in &a.metadata {
        b = b.metadata(k, v);
    }
    b
}

/// The longest grace the options allow: ttl − safety margin − heartbeat − kill reserve.
fn grace_limit(a: &RunArgs) -> Duration {
    let margin = a.safety_margin.unwrap_or(a.ttl / 10);
    a.ttl
        .saturating_sub(margin)
        .saturating_sub(a.heartbeat)
        .saturating_sub(KILL_RESERVE)
}

pub(super) fn setup(args: RunArgs) -> Result<Runner, (u8, String)> {
    let fail = |m: String| (EXIT_TOOL_FAILED, m);
    // Options first, on a memory provider: a bad flag is named before any connection.
    configure(&args, MemoryProvider::new())
        .build()
        .map_err(|e| fail(explain(&e)))?;
    let limit = grace_limit(&args);
    if args.grace >= limit {
        return Err(fail(format!(
            "invalid --grace: {} is too long; the command gets SIGTERM when its term's deadline \
             (renewed every --heartbeat to --ttl − safety margin ahead) is grace + {} away, so \
             grace must be below ttl − safety margin − heartbeat − {} = {}",
            humantime::format_duration(args.grace),
            humantime::format_duration(KILL_RESERVE),
            humantime::format_duration(KILL_RESERVE),
            humantime::format_duration(limit),
        )));
    }
    let provider = leader_election::connect(&args.target.url).map_err(|e| fail(explain(&e)))?;
    let backend = provider.name();
    let start_delay = if provider.capabilities().lease_ends_with_client {
        args.safety_margin.unwrap_or(args.ttl / 10)
    } else {
        Duration::ZERO
    };
    let elector = configure(&args, provider)
        .build()
        .map_err(|e| fail(explain(&e)))?;
    let (died_tx, guard_died) = crossbeam_channel::unbounded();
    let guard =
        Guard::start(died_tx).map_err(|e| fail(format!("cannot start the guard process: {e}")))?;
    log::info!(
        "campaigning for group {:?} on {backend} as {} (ttl {}, heartbeat {}, retry {}, grace {})",
        elector.group(),
        elector.participant_id(),
        humantime::format_duration(args.ttl),
        humantime::format_duration(args.heartbeat),
        humantime::format_duration(args.retry),
        humantime::format_duration(args.grace),
    );
    Ok(Runner {
        args,
        elector,
        guard,
        guard_died,
        exited: crossbeam_channel::unbounded(),
        current: None,
        restart_at: None,
        start_delay,
        last_deadline: None,
        exit_on_signal: None,
    })
}
