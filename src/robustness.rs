//! Property tests: arbitrary builder values, identifiers, metadata, stored records and
//! connection strings thrown at the validators and parsers must give an error, never a panic.
//! (Parsers that are private to the crate are reached from here; none of these connects.)

use std::time::Duration;

use proptest::prelude::*;

use crate::{Elector, Error, LeaderInfo, MemoryProvider};

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000).prop_map(Duration::from_millis),
    ]
}

fn config_error(e: &Error) -> bool {
    matches!(e, Error::InvalidConfig { .. })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn builder_values_never_panic(
        ttl in any_duration(),
        heartbeat in any_duration(),
        retry in any_duration(),
        margin in proptest::option::of(any_duration()),
        shutdown in any_duration(),
    ) {
        let mut b = Elector::builder(MemoryProvider::new())
            .group("g")
            .lease_ttl(ttl)
            .heartbeat_interval(heartbeat)
            .retry_interval(retry)
            .shutdown_timeout(shutdown);
        if let Some(m) = margin {
            b = b.safety_margin(m);
        }
        if let Err(e) = b.build() {
            prop_assert!(config_error(&e), "{e}");
        }
    }

    #[test]
    fn identifiers_and_metadata_never_panic(
        group in "\\PC{0,200}",
        id in "\\PC{0,200}",
        key in "\\PC{0,80}",
        value in "\\PC{0,1100}",
    ) {
        let r = Elector::builder(MemoryProvider::new())
            .group(group)
            .participant_id(id)
            .metadata(key, value)
            .build();
        if let Err(e) = r {
            prop_assert!(config_error(&e), "{e}");
        }
    }

    #[test]
    fn stored_records_never_panic(json in "\\PC{0,300}", token in any::<u64>(), since in any::<u64>()) {
        let _ = LeaderInfo::from_json("test", "g", &json);
        let shaped = format!(r#"{{"id":"p","token":{token},"since":{since},"metadata":{{}}}}"#);
        prop_assert!(LeaderInfo::from_json("test", "g", &shaped).is_ok());
    }

    #[cfg(feature = "file")]
    #[test]
    fn corrupt_file_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        use crate::{AcquireRequest, Provider};
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(dir.path().join("g.leader"), &bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let p = crate::FileProvider::new(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let _ = p.try_acquire(&req, std::time::Instant::now() + Duration::from_secs(1));
        let _ = p.leader("g", std::time::Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn connection_strings_never_panic(rest in "\\PC{0,120}") {
        use crate::providers::support::{params::Params, safe_url::SafeUrl};
        let _ = SafeUrl::describe(&rest);
        let _ = Params::parse("test", &rest);
        let _ = crate::connect(&format!("memory:{rest}"));
        #[cfg(feature = "postgres")]
        {
            let _ = crate::PostgresOptions::from_url(&format!("postgres://{rest}"));
            let _ = crate::providers::postgres::options::describe(&rest);
            crate::providers::postgres::sslmode_of(&rest);
        }
        #[cfg(feature = "redis")]
        let _ = crate::RedisOptions::from_url(&format!("redis://{rest}"));
        #[cfg(feature = "zookeeper")]
        let _ = crate::ZooKeeperOptions::from_url(&format!("zookeeper://{rest}"));
        #[cfg(feature = "azure-blob")]
        {
            use crate::AzureBlobOptions;
            use crate::providers::azure_blob::account::Account;
            for url in [
                format!("azure-blob+https://{rest}"),
                format!("azure-blob+http://a:b@h/{rest}"),
                format!("azure-blob:?{rest}"),
            ] {
                let _ = AzureBlobOptions::from_url(&url);
            }
            let _ = Account::resolve(&AzureBlobOptions::connection_string(rest.as_str(), "ccc"));
            let _ = Account::resolve(&AzureBlobOptions::sas_url(format!(
                "https://a.blob.core.windows.net/ccc?sig=x&{rest}"
            )));
            let _ = crate::providers::azure_blob::sas_time(&rest);
        }
        #[cfg(feature = "odbc")]
        {
            let _ = crate::OdbcOptions::from_url(&format!("odbc:{rest}"));
            let _ = format!("{:?}", crate::OdbcOptions::new(rest.as_str()));
        }
    }
}
