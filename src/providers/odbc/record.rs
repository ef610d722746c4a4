//! Values in and records out: the TTL in a statement's unit, metadata as ASCII-only JSON,
//! and the leader record of a returned row (a row that cannot be one is `Corrupt`, never a
//! panic).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::conn::BACKEND;
use super::exec::Row;
use crate::error::{Error, Result};
use crate::lease::LeaderInfo;

/// The TTL in the statement's unit, rounded up so a lease is never shorter than asked.
pub(super) fn ttl_units(ttl: Duration, in_ms: bool) -> i64 {
    let unit_ns: u128 = if in_ms { 1_000_000 } else { 1_000 };
    let units = ttl.as_nanos().div_ceil(unit_ns).max(1);
    i64::try_from(units).unwrap_or(i64::MAX)
}

pub(super) fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::config("fencing_token", "is too large for a SQL bigint"))
}

/// Metadata as JSON with every non-ASCII character escaped (`\u00e9`): valid JSON that reads
/// back the same, and plain ASCII whatever the driver's and column's character sets.
pub(super) fn ascii_json(metadata: &BTreeMap<String, String>) -> String {
    let json = serde_json::to_string(metadata).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

pub(super) fn corrupt(group: &str, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        backend: BACKEND,
        group: group.to_owned(),
        detail: detail.into(),
    }
}

/// The leader record in a returned row; `None` when the row names no participant.
pub(super) fn info(group: &str, row: &Row) -> Result<Option<LeaderInfo>> {
    let Some(participant) = &row.participant else {
        return Ok(None);
    };
    let token = row
        .token
        .ok_or_else(|| corrupt(group, "the row has a participant but no fencing token"))?;
    let token = u64::try_from(token)
        .map_err(|_| corrupt(group, format!("negative fencing token {token}")))?;
    let metadata = serde_json::from_str(row.metadata.as_deref().unwrap_or("{}")).map_err(|e| {
        corrupt(
            group,
            format!("metadata is not a JSON object of strings: {e}"),
        )
    })?;
    let mut info = LeaderInfo::new(group, participant.clone(), token, metadata);
    let since_ms = u64::try_from(row.since_ms.unwrap_or(0)).unwrap_or(0);
    info.since = UNIX_EPOCH
        .checked_add(Duration::from_millis(since_ms))
        .unwrap_or(UNIX_EPOCH);
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up() {
        assert_eq!(ttl_units(Duration::from_micros(1500), true), 2);
        assert_eq!(ttl_units(Duration::from_millis(1500), true), 1500);
        assert_eq!(ttl_units(Duration::from_nanos(1), false), 1);
        assert_eq!(ttl_units(Duration::from_secs(2), false), 2_000_000);
    }

    #[test]
    fn metadata_is_stored_as_ascii_json_that_reads_back() {
        let mut m = BTreeMap::new();
        m.insert("zone".to_owned(), "Zürich 🚀 \"q\"".to_owned());
        let json = ascii_json(&m);
        assert!(json.is_ascii(), "{json}");
        let back: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
