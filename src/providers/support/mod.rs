//! Support code shared by the providers: deadlines, secret-safe URLs, TLS, the HTTP transport
//! of the REST backends, the listener-thread slot and the watchers registry. Nothing here is a
//! provider; each piece exists once so that every backend behaves alike.

pub(crate) mod deadline;
#[cfg(feature = "http")]
pub(crate) mod http;
#[cfg(any(feature = "postgres", feature = "redis", feature = "http"))]
pub(crate) mod listener;
pub(crate) mod params;
pub(crate) mod safe_url;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod watchers;
