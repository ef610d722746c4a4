//! Providers from a connection URL: [`connect`] reads the scheme, hands the URL to the
//! backend's options parser (each takes query parameters named like its builder methods) and
//! returns the provider boxed. A scheme whose backend feature is not built gets an error naming
//! the feature; nothing from the URL but parameter names ever reaches an error.

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::providers::memory::MemoryProvider;

/// Makes a provider from a connection URL, for every backend whose cargo feature is built.
///
/// | URL | Backend (feature) |
/// |---|---|
/// | `memory:` | this process's shared [`MemoryProvider`] (always) |
/// | `file:///abs/dir`, `file:rel/dir` | `FileProvider` (`file`) |
/// | `postgres://…`, `postgresql://…` | `PostgresProvider` (`postgres`) |
/// | `redis://…`, `rediss://…` | `RedisProvider` (`redis`) |
/// | `zookeeper://[user:pw@]h1:2181,h2:2181[/chroot]` | `ZooKeeperProvider` (`zookeeper`) |
/// | `etcd://[user:pw@]h1:2379[,h2:2379][/prefix/]`, `etcds://…` (https) | `EtcdProvider` (`etcd`) |
/// | `consul://host:8500[/key/prefix/]`, `consul+https://…` | `ConsulProvider` (`consul`) |
///
/// A Consul ACL token never goes in the URL (a `token` parameter is refused): it is read from
/// the `CONSUL_HTTP_TOKEN` environment variable, as Consul's own tools do.
/// | `azure-blob+https://[account:key@]host/[account/]container[?SAS token]`, `azure-blob+http://…` | `AzureBlobProvider` (`azure-blob`) |
/// | `azure-blob:?connection_string=…&container=…` | `AzureBlobProvider` (`azure-blob`) |
///
/// Azure Blob URLs take the account key (percent-encoded) as the password, or a SAS token as
/// query parameters; a path of two segments is path-style (`/devstoreaccount1/container`, for
/// the emulator), one segment is the container of a virtual-host endpoint.
/// | `odbc:Driver={…};Server=…;UID=…;PWD=…[?dialect=…&table=…]` | `OdbcProvider` (`odbc`) |
///
/// An `odbc:` URL carries an ODBC connection string verbatim (no percent-decoding: `;`, `=`
/// and `%` need no escaping); the options follow the first `?` outside `{…}`, so put a value
/// holding `?` — like one holding `;` — in braces (`PWD={a?b;c}`). The dialect comes from the
/// driver's name unless `?dialect=sqlserver|mysql|mariadb|postgres` says it.
///
/// Each backend's options are query parameters named like its builder methods
/// (`?table=leases&command_timeout=2s`); durations are written `500ms`, `10s`, `1m`. The
/// README lists every parameter. An unknown parameter is an error naming it (never echoing
/// its value), and so is a URL for a backend whose feature is off. Network providers connect
/// at once unless the URL says `fail_fast=false`.
///
/// ```
/// use leader_election::{Elector, connect};
///
/// let provider = connect("memory:")?;
/// let elector = Elector::builder(provider).group("doc-connect").start()?;
/// # drop(elector);
/// let err = connect("memory:?colour=blue").err().expect("an unknown parameter");
/// assert!(err.to_string().contains("colour"));
/// # Ok::<(), leader_election::Error>(())
/// ```
pub fn connect(url: &str) -> Result<Box<dyn Provider>> {
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .ok_or_else(|| Error::config("url", "has no scheme (such as redis:// or file:///)"))?;
    match scheme.as_str() {
        "memory" => memory(url),
        "file" => file(url),
        "postgres" | "postgresql" => postgres(url),
        "redis" | "rediss" => redis(url),
        "zookeeper" => zookeeper(url),
        "etcd" | "etcds" => etcd(url),
        "consul" | "consul+https" => consul(url),
        "azure-blob" | "azure-blob+https" | "azure-blob+http" => azure_blob(url),
        "odbc" => odbc(url),
        other => Err(Error::config(
            "url",
            format!(
                "unknown scheme {other:?}; known are memory:, file:, postgres://, redis://, \
                 rediss://, zookeeper://, etcd://, etcds://, consul://, consul+https://, \
                 azure-blob+https://, azure-blob+http://, azure-blob:, odbc:"
            ),
        )),
    }
}

#[cfg(not(all(
    feature = "file",
    feature = "postgres",
    feature = "redis",
    feature = "zookeeper",
    feature = "etcd",
    feature = "consul",
    feature = "azure-blob",
    feature = "odbc"
)))]
fn needs_feature(scheme: &str, feature: &str) -> Error {
    Error::config(
        "url",
        format!(
            "{scheme} URLs need the leader-election cargo feature {feature:?}, which this build \
             does not have"
        ),
    )
}

fn memory(url: &str) -> Result<Box<dyn Provider>> {
    static SHARED: OnceLock<MemoryProvider> = OnceLock::new();
    let rest = &url["memory:".len()..];
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !matches!(path, "" | "//") {
        return Err(Error::config(
            "url",
            "a memory URL is just `memory:`: one store per process",
        ));
    }
    crate::providers::support::params::Params::parse("memory", query)?.finish(&[])?;
    Ok(Box::new(SHARED.get_or_init(MemoryProvider::new).clone()))
}

#[cfg(feature = "file")]
fn file(url: &str) -> Result<Box<dyn Provider>> {
    let rest = &url["file:".len()..];
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    crate::providers::support::params::Params::parse("file", query)?.finish(&[])?;
    let path = match path.strip_prefix("//") {
        // file:///abs/dir, or file://localhost/abs/dir
        Some(rest) => {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                return Err(Error::config(
                    "url",
                    "a file URL names a local directory: file:///abs/dir or file:rel/dir",
                ));
            }
            rest
        }
        None => path,
    };
    if path.is_empty() {
        return Err(Error::config("url", "a file URL needs a directory"));
    }
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Error::config("url", "the file URL's path is not UTF-8"))?;
    Ok(Box::new(crate::FileProvider::new(path.as_ref())?))
}

#[cfg(not(feature = "file"))]
fn file(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("file:", "file"))
}

#[cfg(feature = "postgres")]
fn postgres(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::PostgresOptions::from_url(url)?;
    Ok(Box::new(crate::PostgresProvider::new(options)?))
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("postgres://", "postgres"))
}

#[cfg(feature = "redis")]
fn redis(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::RedisOptions::from_url(url)?;
    Ok(Box::new(crate::RedisProvider::new(options)?))
}

#[cfg(not(feature = "redis"))]
fn redis(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("redis://", "redis"))
}

#[cfg(feature = "zookeeper")]
fn zookeeper(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::ZooKeeperOptions::from_url(url)?;
    Ok(Box::new(crate::ZooKeeperProvider::new(options)?))
}

#[cfg(not(feature = "zookeeper"))]
fn zookeeper(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("zookeeper://", "zookeeper"))
}

#[cfg(feature = "etcd")]
fn etcd(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::EtcdOptions::from_url(url)?;
    Ok(Box::new(crate::EtcdProvider::new(options)?))
}

#[cfg(not(feature = "etcd"))]
fn etcd(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("etcd://", "etcd"))
}

#[cfg(feature = "consul")]
fn consul(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::ConsulOptions::from_url(url)?;
    Ok(Box::new(crate::ConsulProvider::new(options)?))
}

#[cfg(not(feature = "consul"))]
fn consul(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("consul://", "consul"))
}

#[cfg(feature = "azure-blob")]
fn azure_blob(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::AzureBlobOptions::from_url(url)?;
    Ok(Box::new(crate::AzureBlobProvider::new(options)?))
}

#[cfg(not(feature = "azure-blob"))]
fn azure_blob(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("azure-blob+https://", "azure-blob"))
}

#[cfg(feature = "odbc")]
fn odbc(url: &str) -> Result<Box<dyn Provider>> {
    let options = crate::OdbcOptions::from_url(url)?;
    Ok(Box::new(crate::OdbcProvider::new(options)?))
}

#[cfg(not(feature = "odbc"))]
fn odbc(_: &str) -> Result<Box<dyn Provider>> {
    Err(needs_feature("odbc:", "odbc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match connect(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.report(),
        }
    }

    #[test]
    fn memory_urls_share_one_store() {
        let a = connect("memory:").unwrap();
        let b = connect("memory://").unwrap();
        let req =
            crate::AcquireRequest::new("connect-shared", "a", std::time::Duration::from_secs(5));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(matches!(
            a.try_acquire(&req, deadline),
            Ok(crate::Acquisition::Acquired(_))
        ));
        assert!(b.leader("connect-shared", deadline).unwrap().is_some());
        assert!(err("memory:other").contains("memory"));
    }

    #[test]
    fn bad_urls_are_named_not_echoed() {
        assert!(err("no-scheme-here").contains("scheme"));
        let e = err("mongodb://u:hunter2@h/");
        assert!(e.contains("mongodb") && !e.contains("hunter2"), "{e}");
        let e = err("memory:?password=hunter2");
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    }

    #[cfg(feature = "file")]
    #[test]
    fn file_urls() {
        let dir = std::env::temp_dir().join(format!("le-connect-{}", std::process::id()));
        let url = format!("file://{}", dir.display());
        let p = connect(&url).unwrap();
        assert_eq!(p.name(), "file");
        assert!(err("file://otherhost/x").contains("local directory"));
        assert!(err("file:").contains("directory"));
        assert!(err(&format!("{url}?x=1")).contains("\"x\""));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn disabled_backends_name_their_feature() {
        assert!(err("postgres://h/db").contains("feature \"postgres\""));
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_needs_its_feature() {
        let e = err("etcds://u:Hunter-22@h:2379/");
        assert!(
            e.contains("feature \"etcd\"") && !e.contains("Hunter-22"),
            "{e}"
        );
    }

    #[cfg(not(feature = "azure-blob"))]
    #[test]
    fn azure_blob_needs_its_feature() {
        let e = err("azure-blob+https://a:S3cr3t@acct.blob.core.windows.net/c");
        assert!(
            e.contains("feature \"azure-blob\"") && !e.contains("S3cr3t"),
            "{e}"
        );
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_urls_are_parsed_lazily_and_never_echoed() {
        let p = connect("etcd://127.0.0.1:1,127.0.0.1:2/app/le/?fail_fast=false").unwrap();
        assert_eq!(p.name(), "etcd");
        let e = err("etcd://127.0.0.1:1?password=Hunter-22");
        assert!(e.contains("password") && !e.contains("Hunter-22"), "{e}");
        let e = err("etcd://u:Hunter-22@127.0.0.1:1?connect_timeout=200ms");
        assert!(!e.contains("Hunter-22"), "{e}");
    }

    #[cfg(feature = "azure-blob")]
    #[test]
    fn azure_blob_urls_are_checked_before_any_request() {
        let e =
            err("azure-blob+http://devstoreaccount1:S3cr3t@127.0.0.1:1/devstoreaccount1/Bad_Name");
        assert!(e.contains("container") && !e.contains("S3cr3t"), "{e}");
        let e =
            err("azure-blob+https://acct.blob.core.windows.net/cc1?sp=r&sig=S3cr3t&se=2999-01-01");
        assert!(e.contains("read and write") && !e.contains("S3cr3t"), "{e}");
    }

    #[cfg(not(feature = "odbc"))]
    #[test]
    fn odbc_needs_its_feature() {
        let e = err("odbc:Driver={MariaDB Unicode};PWD=hunter2");
        assert!(
            e.contains("feature \"odbc\"") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
