//! `status` (who leads now: exit status 0 someone, 1 nobody, 2 error) and `watch` (one line per
//! change, through the library's [`Observer`]), as text or JSON. The JSON form of a leader:
//! `{"participant_id", "fencing_token", "since" (RFC 3339), "since_unix_ms", "metadata"}`.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::select;
use leader_election::{LeaderInfo, LeadershipChange, Observer, Provider};
use serde_json::{Value, json};

use crate::args::{QueryArgs, WatchArgs};
use crate::{explain, signals};

const EXIT_LEADS: u8 = 0;
const EXIT_NO_LEADER: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn connect(q: &QueryArgs) -> Result<Box<dyn Provider>, String> {
    leader_election::validate::group(&q.target.group).map_err(|e| explain(&e))?;
    leader_election::connect(&q.target.url).map_err(|e| explain(&e))
}

/// `status`: reads the leader once.
pub fn status(q: &QueryArgs) -> u8 {
    let leader = connect(q).and_then(|provider| {
        provider
            .leader(&q.target.group, Instant::now() + q.timeout)
            .map_err(|e| explain(&e))
    });
    let leader = match leader {
        Ok(leader) => leader,
        Err(e) => {
            log::error!("cannot read the leader of group {:?}: {e}", q.target.group);
            return EXIT_ERROR;
        }
    };
    let text = if q.json {
        json!({ "group": q.target.group, "leader": leader.as_ref().map(leader_json) }).to_string()
    } else {
        match &leader {
            Some(l) => describe(l),
            None => format!("no leader of group {:?}", q.target.group),
        }
    };
    if writeln!(std::io::stdout(), "{text}").is_err() {
        return EXIT_ERROR;
    }
    if leader.is_some() {
        EXIT_LEADS
    } else {
        EXIT_NO_LEADER
    }
}

/// `watch`: prints the current leader, then every change, until SIGINT or SIGTERM.
pub fn watch(w: &WatchArgs) -> u8 {
    let q = &w.query;
    let stop = match signals::stopping() {
        Ok(rx) => rx,
        Err(e) => {
            log::error!("cannot handle signals: {e}");
            return EXIT_ERROR;
        }
    };
    let observer = connect(q).and_then(|provider| {
        let backend = provider.name();
        Observer::builder(provider)
            .group(&q.target.group)
            .poll_interval(w.poll)
            .call_timeout(q.timeout)
            .start()
            .map(|o| (o, backend))
            .map_err(|e| explain(&e))
    });
    let (observer, backend) = match observer {
        Ok(o) => o,
        Err(e) => {
            log::error!("cannot watch group {:?}: {e}", q.target.group);
            return EXIT_ERROR;
        }
    };
    log::info!(
        "watching group {:?} on {backend} ({}, read every {})",
        q.target.group,
        if observer.is_pushed() {
            "changes pushed by the backend"
        } else {
            "polled"
        },
        humantime::format_duration(w.poll)
    );
    let changes = observer.subscribe();
    let mut out = std::io::stdout();
    loop {
        select! {
            recv(changes.receiver()) -> change => {
                let Ok(LeadershipChange::LeaderChanged { leader }) = change else {
                    log::error!("the observer stopped");
                    return EXIT_ERROR;
                };
                let line = if q.json {
                    json!({
                        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                        "group": q.target.group,
                        "leader": leader.as_ref().map(leader_json),
                    })
                    .to_string()
                } else {
                    let what = match &leader {
                        Some(l) => describe_short(l),
                        None => "no leader".to_owned(),
                    };
                    format!("{} {what}", humantime::format_rfc3339_millis(SystemTime::now()))
                };
                // A closed stdout (`watch … | head -1`) ends the watch quietly.
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return 0;
                }
            },
            recv(stop) -> sig => {
                if let Ok(sig) = sig {
                    log::info!("received {}: stopping", signals::name(sig));
                }
                return 0;
            },
        }
    }
}

/// A leader as JSON.
pub fn leader_json(l: &LeaderInfo) -> Value {
    json!({
        "participant_id": l.participant_id,
        "fencing_token": l.fencing_token,
        "since": humantime::format_rfc3339_millis(l.since).to_string(),
        "since_unix_ms": l.since.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "metadata": l.metadata,
    })
}

/// A leader for people, several lines.
fn describe(l: &LeaderInfo) -> String {
    let mut s = format!(
        "group:     {}\nleader:    {}\ntoken:     {}\nsince:     {}{}",
        l.group,
        l.participant_id,
        l.fencing_token,
        humantime::format_rfc3339_seconds(l.since),
        ago(l.since),
    );
    for (k, v) in &l.metadata {
        s += &format!("\nmetadata:  {k}={v}");
    }
    s
}

/// A leader for people, one line.
fn describe_short(l: &LeaderInfo) -> String {
    let mut s = format!(
        "{} leads (token {}, since {})",
        l.participant_id,
        l.fencing_token,
        humantime::format_rfc3339_seconds(l.since)
    );
    for (k, v) in &l.metadata {
        s += &format!(" {k}={v}");
    }
    s
}

fn ago(since: SystemTime) -> String {
    match SystemTime::now().duration_since(since) {
        Ok(d) => format!(
            " ({} ago)",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        Err(_) => String::new(),
    }
}
