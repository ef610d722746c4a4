//! The bundled providers: single-file ones for memory, files and fault injection, one folder
//! per network backend, and `support/` with the pieces they share.

#[cfg(feature = "azure-blob")]
pub(crate) mod azure_blob;
#[cfg(feature = "consul")]
pub(crate) mod consul;
#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod faulty;
#[cfg(feature = "file")]
pub(crate) mod file;
pub(crate) mod memory;
#[cfg(feature = "odbc")]
pub(crate) mod odbc;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;
// Shared by several backends: a build with only some of them leaves parts of it unused.
#[cfg_attr(
    not(all(
        feature = "postgres",
        feature = "redis",
        feature = "zookeeper",
        feature = "etcd"
    )),
    allow(dead_code)
)]
pub(crate) mod support;
#[cfg(feature = "zookeeper")]
pub(crate) mod zookeeper;
