//! Building the `ureq` agent behind an [`HttpClient`](super::HttpClient): its configuration
//! (keep-alive pool, no redirects, status codes as data, the crate's TLS mode on the explicit
//! `ring` provider — never a process-default provider, never ureq's bundled roots) and the one
//! connector wrapper that tells a request whether it opened a fresh connection or reused a pooled
//! one, which is what decides whether a connection that died under a request may be retried.

use std::cell::Cell;
use std::sync::Arc;

use ureq::config::Config;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{ConnectionDetails, Connector, DefaultConnector, Transport};

use crate::error::{Error, Result};
use crate::providers::support::tls::{Tls, crypto_provider};

/// Idle keep-alive connections kept per host: enough for a provider's heartbeat thread, its
/// callers and a watch thread.
const IDLE_PER_HOST: usize = 4;

/// The agent configuration shared by a client's agents (the request agent and each watch's).
pub(super) fn config(url: &url::Url, tls: &Tls) -> Result<Config> {
    let builder = Config::builder()
        // Statuses are data for `status::check`, not ureq errors.
        .http_status_as_error(false)
        // A redirect would re-send the request (and its credentials) elsewhere; REST backends
        // do not redirect, so one is reported as an unexpected status.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .max_idle_connections_per_host(IDLE_PER_HOST)
        .user_agent(concat!("leader-election/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls_config(url, tls)?);
    Ok(builder.build())
}

/// A new agent with its own connection pool (so that shutting it down, to interrupt a watch,
/// leaves other agents alone).
pub(super) fn agent(config: &Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config.clone(),
        FreshConnections(DefaultConnector::new()),
        DefaultResolver::default(),
    )
}

/// The crate's TLS mode in ureq's terms. Only `https` URLs load root certificates; the others
/// get an empty root set, so that nothing ever falls back to ureq's defaults.
fn tls_config(url: &url::Url, tls: &Tls) -> Result<TlsConfig> {
    let builder = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(crypto_provider());
    let builder = match tls {
        Tls::DangerAcceptInvalidCerts => builder.disable_verification(true),
        Tls::Verify | Tls::VerifyWithCa(_) => {
            let roots = if url.scheme() == "https" {
                tls.roots()?
            } else {
                Vec::new()
            };
            if url.scheme() == "https" && roots.is_empty() {
                return Err(Error::config(
                    "tls",
                    "no root certificate found on this system; give a CA file",
                ));
            }
            let roots = roots
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            builder.root_certs(RootCerts::Specific(Arc::new(roots)))
        }
    };
    Ok(builder.build())
}

thread_local! {
    /// Set when this thread's request opened a new connection (see [`FreshConnections`]).
    static CONNECTED: Cell<bool> = const { Cell::new(false) };
}

/// Clears this thread's "opened a connection" mark; call before sending a request.
pub(super) fn clear_connected() {
    CONNECTED.with(|c| c.set(false));
}

/// Whether this thread's request, since [`clear_connected`], opened a new connection (ureq
/// connects in the calling thread). `false` after a failed request means it ran on a pooled
/// keep-alive connection.
pub(super) fn connected() -> bool {
    CONNECTED.with(Cell::get)
}

/// ureq's default connector (TCP, proxies, rustls), marking each new connection.
#[derive(Debug)]
struct FreshConnections(DefaultConnector);

impl Connector<()> for FreshConnections {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        // Marked before connecting: a connection attempt that fails is not a pooled one either.
        CONNECTED.with(|c| c.set(true));
        self.0.connect(details, chained)
    }
}
