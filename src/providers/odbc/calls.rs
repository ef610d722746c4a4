//! The ODBC provider's calls: what its call threads share (the r2d2 pool, the statements,
//! the connection string for redaction), the threads themselves, and one call's life — a
//! pooled connection checked out within the deadline, the statements run, a dead connection
//! replaced and the call retried once, a deadlock victim retried — while the caller waits no
//! longer than its deadline and abandons a call still running then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::conn::{self, BACKEND, Manager};
use super::connstr::ConnString;
use super::errors::Diag;
use super::exec::{self, Answer, Op};
use super::options::Dialect;
use super::sql::Statements;
use crate::error::{Error, Result};
use crate::providers::support::deadline;

/// What the call threads share with the provider.
pub(super) struct Inner {
    pub(super) pool: r2d2::Pool<Manager>,
    pub(super) sql: Arc<Statements>,
    pub(super) conn: ConnString,
    pub(super) command_timeout: Duration,
    pub(super) auth_failed: Arc<AtomicBool>,
    pub(super) channel: String,
}

pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The queue of the provider's call threads.
pub(super) struct Calls {
    jobs: Sender<Job>,
}

impl Calls {
    /// `threads` call threads fed by one queue; they end when the provider (the sender) is dropped
    /// and the call they run, if any, returns.
    pub(super) fn spawn(threads: u32) -> Result<Calls> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("le-odbc-call-{i}"))
                .spawn(move || {
                    for job in rx {
                        // A panic in the ODBC layer ends that call (its caller sees the call
                        // thread gone), never the thread.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            log::error!("odbc: a call panicked in the ODBC layer");
                        }
                    }
                })
                .map_err(|e| Error::io("spawning an ODBC call thread", e))?;
        }
        Ok(Calls { jobs: tx })
    }

    /// Runs `op` on a call thread and waits for its answer until `deadline`.
    pub(super) fn call(
        &self,
        inner: &Arc<Inner>,
        operation: &'static str,
        deadline: Instant,
        op: Op,
    ) -> Result<Answer> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let inner = inner.clone();
        let job: Job = Box::new(move || {
            // Queued behind calls that outlived their callers: this one's caller is gone too.
            if Instant::now() >= deadline {
                return;
            }
            let _ = tx.send(inner.run(operation, deadline, &op));
        });
        let thread_gone = || Error::Backend {
            backend: BACKEND,
            operation,
            transient: true,
            source: "the ODBC call thread is gone".into(),
        };
        self.jobs.send(job).map_err(|_| thread_gone())?;
        let waited = deadline::time_left(deadline);
        match rx.recv_deadline(deadline) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
                backend: BACKEND,
                operation,
                timeout: waited,
            }),
            Err(RecvTimeoutError::Disconnected) if Instant::now() >= deadline => {
                Err(Error::Timeout {
                    backend: BACKEND,
                    operation,
                    timeout: waited,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(thread_gone()),
        }
    }
}

impl Inner {
    /// A pooled connection, waiting at most until shortly before `deadline` — so that when
    /// none can be had (a refused login, a server down) the reason reaches the caller, who
    /// stops waiting at the deadline itself.
    fn checkout(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<r2d2::PooledConnection<Manager>> {
        let left = deadline::time_left(deadline);
        let wait = left.saturating_sub((left / 10).min(Duration::from_millis(100)));
        self.pool
            .get_timeout(wait.max(deadline::MIN_TIMEOUT))
            .map_err(|e| {
                let source = Box::new(Diag::plain(format!("{operation}: {e}")));
                if self.pool.state().connections == 0 && self.auth_failed.load(Ordering::SeqCst) {
                    // Wrong credentials or database: permanent, and said so.
                    Error::Backend {
                        backend: BACKEND,
                        operation,
                        transient: false,
                        source,
                    }
                } else {
                    Error::Unavailable {
                        backend: BACKEND,
                        source,
                    }
                }
            })
    }

    /// Runs `op` on a pooled connection (on a call thread). A connection that had served
    /// calls and turns out dead is dropped and the call retried once on a new one: every
    /// statement here may be repeated (a repeated acquire that had won sees its own live
    /// lease and answers `Held`, which only delays this participant). A deadlock victim is
    /// retried up to three times.
    fn run(&self, operation: &'static str, deadline: Instant, op: &Op) -> Result<Answer> {
        let mut retried = false;
        let mut deadlocks = 0;
        loop {
            let mut conn = self.checkout(operation, deadline)?;
            let idle_before = conn.uses > 0;
            conn.uses += 1;
            let timeout = match self.sql.dialect {
                // MariaDB's driver ignores it (with a warning per statement).
                Dialect::MySql => None,
                _ => Some(conn::ceil_secs(deadline::clamp(
                    self.command_timeout,
                    deadline,
                ))),
            };
            match exec::perform(&self.sql, &self.conn, &mut conn, op, timeout, &self.channel) {
                Ok(answer) => return Ok(answer),
                Err(d) => {
                    // A deadlock victim was rolled back whole: run it again (racing upserts of
                    // a new row can deadlock on InnoDB's and SQL Server's key-range locks).
                    if d.deadlocked() && deadlocks < 3 && Instant::now() < deadline {
                        deadlocks += 1;
                        log::debug!("odbc: {operation} was a deadlock victim ({d}); retrying");
                        continue;
                    }
                    // Drivers differ in how they report a dropped link (psqlODBC: HY000 "server
                    // closed the connection"); the driver's own verdict settles it.
                    if d.connection_lost() || conn.is_dead() {
                        conn.broken = true;
                        // Not after a timeout: that call had its time.
                        if idle_before && !retried && !d.timed_out() && Instant::now() < deadline {
                            log::debug!("odbc: pooled connection was dead ({d}); retrying");
                            retried = true;
                            continue;
                        }
                    }
                    return Err(d.into_error(operation, self.command_timeout));
                }
            }
        }
    }
}
