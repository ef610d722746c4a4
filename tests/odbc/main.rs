//! The ODBC provider against live servers: MariaDB (the shared server of
//! `scripts/services.sh`, and private ones a test crashes), PostgreSQL through psqlODBC, and
//! SQL Server when `LE_MSSQL_ODBC` holds a connection string (otherwise its tests say loudly
//! that they did not run). Every test first points unixODBC at the project's own driver
//! registry (`common::odbc_setup`).
#![cfg(feature = "odbc")]

use le_test_support as common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::chain;
use leader_election::testing::Harness;
use leader_election::{AcquireRequest, Acquisition, OdbcOptions, OdbcProvider, Provider};

mod mariadb;
mod postgres;
mod sqlserver;

/// Builds providers from one set of options.
pub struct OdbcHarness {
    pub options: OdbcOptions,
}

impl Harness for OdbcHarness {
    type Provider = OdbcProvider;
    fn client(&self) -> OdbcProvider {
        common::odbc_setup();
        OdbcProvider::new(self.options.clone())
            .unwrap_or_else(|e| panic!("cannot build the ODBC provider: {}", chain(&e)))
    }
}

pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// `racers` providers (each its own connections) race for one group `rounds` times: every
/// round exactly one wins, no other names anyone but that winner as the holder, and the
/// winners' tokens strictly rise. The winner then releases. (A loser may see no holder: on
/// PostgreSQL its statement's snapshot can predate the winner's commit, which `ON CONFLICT`
/// waited for; it then reports `Held(None)`, as the native provider does.)
pub fn race(h: &OdbcHarness, racers: usize, rounds: usize) {
    let clients: Vec<OdbcProvider> = (0..racers).map(|_| h.client()).collect();
    let group = common::unique("race").replace('_', "-");
    let mut last = 0;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(racers));
        let outcomes: Vec<Acquisition> = std::thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let barrier = barrier.clone();
                    let req = AcquireRequest::new(&group, format!("p{i}"), Duration::from_secs(30));
                    s.spawn(move || {
                        barrier.wait();
                        c.try_acquire(&req, deadline()).unwrap_or_else(|e| {
                            panic!("round {round}: racer {i} failed: {}", chain(&e))
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|j| j.join().unwrap()).collect()
        });
        let winners: Vec<(usize, &leader_election::Lease)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Acquisition::Acquired(l) => Some((i, l)),
                Acquisition::Held(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let (w, lease) = winners[0];
        assert!(
            lease.fencing_token() > last,
            "round {round}: token {} after {last}",
            lease.fencing_token()
        );
        last = lease.fencing_token();
        for o in &outcomes {
            if let Acquisition::Held(Some(held)) = o {
                assert_eq!(held.participant_id, format!("p{w}"), "round {round}");
                assert_eq!(held.fencing_token, last, "round {round}");
            }
        }
        clients[w].release(lease, deadline()).unwrap();
    }
}

/// Every conformance check, one after another (for the gated SQL Server run, which is one
/// test so that it can say once that it did not run).
pub fn all_conformance_checks(h: &OdbcHarness) {
    use leader_election::testing::*;
    first_acquirer_wins(h);
    others_see_the_holder(h);
    renew_extends_the_lease(h);
    release_lets_another_acquire_at_once(h);
    expiry_lets_another_acquire(h);
    tokens_strictly_rise(h);
    superseded_renew_fails(h);
    renew_after_expiry_fails(h);
    groups_are_isolated(h);
    racing_participants_give_one_winner(h);
    participant_and_metadata_round_trip(h);
    same_participant_is_not_granted_twice(h);
    watch_wakes_on_release(h);
}

/// An error's full text and Debug form must not show `secret`.
pub fn assert_hidden(secret: &str, e: &leader_election::Error) {
    let text = format!("{} / {e:?}", chain(e));
    assert!(!text.contains(secret), "the secret leaked: {text}");
}

/// Identifiers carrying SQL are refused before any driver is involved: the connection string
/// points nowhere (port 1), so reaching the server would give a different error.
pub fn sql_in_names_is_rejected_before_any_statement(conn: &str) {
    common::odbc_setup();
    for (table, schema) in [
        ("leases; DROP TABLE users", None),
        ("leases]--", None),
        ("leases`", None),
        ("Leases", None),
        ("leases", Some("x\"; DROP SCHEMA y")),
    ] {
        let mut o = OdbcOptions::new(conn).table(table);
        if let Some(s) = schema {
            o = o.schema(s);
        }
        let e = OdbcProvider::new(o).unwrap_err();
        assert!(
            matches!(
                e,
                leader_election::Error::InvalidConfig {
                    field: "table" | "schema",
                    ..
                }
            ),
            "{}",
            chain(&e)
        );
        assert!(!e.is_transient());
    }
}

/// `conn` with its `PWD=` (or `Password=`) attribute replaced by `password` (appended if it
/// has none).
pub fn with_password(conn: &str, password: &str) -> String {
    let mut out = Vec::new();
    let mut replaced = false;
    let mut rest = conn;
    while !rest.is_empty() {
        // One attribute: up to the next ';' outside braces.
        let mut end = rest.len();
        let mut in_braces = false;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => in_braces = true,
                '}' => in_braces = false,
                ';' if !in_braces => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let attr = &rest[..end];
        let key = attr
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase();
        if key == "PWD" || key == "PASSWORD" {
            out.push(format!("PWD={{{password}}}"));
            replaced = true;
        } else if !attr.trim().is_empty() {
            out.push(attr.to_owned());
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    if !replaced {
        out.push(format!("PWD={{{password}}}"));
    }
    out.join(";") + ";"
}

/// Non-ASCII metadata survives (it is stored as ASCII-escaped JSON whatever the column's and
/// driver's character sets), and `since` is the server's clock at the acquire (the servers
/// here run on this machine's clock).
pub fn metadata_and_since_round_trip(h: &OdbcHarness) {
    let p = h.client();
    let group = common::unique("meta").replace('_', "-");
    let req = AcquireRequest::new(&group, "m", Duration::from_secs(30))
        .with_metadata("city", "Zürich 🚀 \"quoted\" \\ back");
    let before = std::time::SystemTime::now() - Duration::from_secs(5);
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    let seen = p.leader(&group, deadline()).unwrap().expect("a leader");
    assert_eq!(seen.metadata, req.metadata);
    assert_eq!(lease.info.metadata, req.metadata);
    let after = std::time::SystemTime::now() + Duration::from_secs(5);
    assert!(
        seen.since > before && seen.since < after,
        "since {:?} is not the acquire time",
        seen.since
    );
    p.release(&lease, deadline()).unwrap();
}
