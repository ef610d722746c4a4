//! The bundled providers, one per file.

pub(crate) mod faulty;
#[cfg(feature = "file")]
pub(crate) mod file;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) mod listener;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "postgres")]
pub(crate) mod postgres_options;
#[cfg(feature = "postgres")]
pub(crate) mod postgres_tls;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "redis")]
pub(crate) mod redis_options;
pub(crate) mod watchers;
#[cfg(feature = "zookeeper")]
pub(crate) mod zookeeper;
#[cfg(feature = "zookeeper")]
pub(crate) mod zookeeper_options;
