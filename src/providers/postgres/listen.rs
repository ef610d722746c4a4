//! The PostgreSQL provider's LISTEN thread: one per provider, started by the first watch; it
//! listens on the table's channel and wakes the watchers of the group a `NOTIFY` names, and
//! reconnects with back-off through the shared listener loop.

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::BACKEND;
use crate::providers::support::listener::{self, Stop};
use crate::providers::support::watchers::Watchers;

/// The LISTEN thread's state.
pub(super) struct ListenCtx {
    pub(super) config: postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) channel: String,
    pub(super) watchers: Watchers,
    pub(super) stop: Stop,
}

impl ListenCtx {
    pub(super) fn run(self) {
        listener::run(BACKEND, &self.stop, &self.watchers, |subscribed| {
            let mut client = self.config.connect(self.tls.clone())?;
            // The channel was built from validated identifiers: [a-z0-9_]+.
            client.batch_execute(&format!("LISTEN \"{}\"", self.channel))?;
            log::debug!("postgres: listening on {}", self.channel);
            subscribed();
            self.listen(&mut client)
        });
    }

    fn listen(&self, client: &mut Client) -> std::result::Result<(), postgres::Error> {
        while !self.stop.is_stopped() {
            {
                let mut notifications = client.notifications();
                let mut iter = notifications.timeout_iter(Duration::from_millis(500));
                while let Some(n) = iter.next()? {
                    self.watchers.wake(n.payload());
                }
            }
            if client.is_closed() {
                log::warn!("postgres: LISTEN connection closed");
                return Ok(());
            }
        }
        Ok(())
    }
}
