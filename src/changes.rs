//! The stream of leadership changes a subscriber receives.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryIter};

use crate::change::LeadershipChange;

/// A stream of [`LeadershipChange`]s from one elector, returned by
/// [`crate::Elector::subscribe`].
///
/// It is a blocking [`Iterator`] that ends when the elector shuts down. The first item is the
/// elector's state at subscription time — `Acquired` if it leads, else `LeaderChanged` with the
/// leader it last observed, if it observed one — so a late subscriber never misses the current
/// state.
/// The channel is unbounded: a slow subscriber never blocks the heartbeat thread, and dropping
/// the stream unsubscribes.
///
/// ```
/// use leader_election::{Elector, MemoryProvider, ChangesExt};
///
/// let elector = Elector::builder(MemoryProvider::new()).group("doc-changes").start().unwrap();
/// // Blocks until this participant leads (here: at once).
/// let acquired = elector.subscribe().take_until_leader().last().unwrap();
/// assert!(acquired.is_acquired());
/// ```
#[derive(Debug)]
pub struct Changes {
    rx: Receiver<LeadershipChange>,
}

impl Changes {
    pub(crate) fn new(rx: Receiver<LeadershipChange>) -> Self {
        Changes { rx }
    }

    /// Waits for the next change; `None` once the elector has shut down.
    pub fn recv(&self) -> Option<LeadershipChange> {
        self.rx.recv().ok()
    }

    /// Waits at most `timeout` for the next change.
    ///
    /// ```
    /// use leader_election::{Elector, MemoryProvider};
    /// use std::time::Duration;
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-timeout").start().unwrap();
    /// let changes = elector.subscribe();
    /// assert!(changes.recv_timeout(Duration::from_secs(5)).is_ok());
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<LeadershipChange, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The changes already queued, without blocking.
    pub fn try_iter(&self) -> TryIter<'_, LeadershipChange> {
        self.rx.try_iter()
    }

    /// The underlying receiver, for `crossbeam_channel::select!`.
    ///
    /// ```
    /// use crossbeam_channel::{select, never};
    /// use leader_election::{Elector, MemoryProvider};
    /// use std::time::Duration;
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-select").start().unwrap();
    /// let changes = elector.subscribe();
    /// let stop = never::<()>();
    /// select! {
    ///     recv(changes.receiver()) -> change => assert!(change.unwrap().is_acquired()),
    ///     recv(stop) -> _ => unreachable!(),
    ///     default(Duration::from_secs(5)) => panic!("no change"),
    /// }
    /// ```
    pub fn receiver(&self) -> &Receiver<LeadershipChange> {
        &self.rx
    }

    /// Unwraps the underlying receiver.
    pub fn into_receiver(self) -> Receiver<LeadershipChange> {
        self.rx
    }
}

impl Iterator for Changes {
    type Item = LeadershipChange;

    fn next(&mut self) -> Option<LeadershipChange> {
        self.rx.recv().ok()
    }
}
