//! Checks for identifiers that reach backend keys, paths and SQL.

use crate::error::{Error, Result};

/// Longest group name accepted.
pub const MAX_GROUP_LEN: usize = 128;
/// Longest participant id accepted.
pub const MAX_PARTICIPANT_LEN: usize = 128;
/// Longest metadata key accepted.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Longest metadata value accepted, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// Most metadata entries accepted.
pub const MAX_METADATA_ENTRIES: usize = 32;

/// A group name: 1–128 characters from `[A-Za-z0-9._-]`, starting with a letter or digit.
///
/// Group names become file names, Redis keys, ZooKeeper paths and SQL parameters, so the rule
/// is strict enough to be safe in all of them.
pub fn group(name: &str) -> Result<()> {
    ident("group", name, MAX_GROUP_LEN, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
}

/// A participant id: 1–128 characters from `[A-Za-z0-9._:@-]`, starting with a letter or digit.
pub fn participant_id(id: &str) -> Result<()> {
    ident("participant_id", id, MAX_PARTICIPANT_LEN, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')
    })
}

/// A metadata key: 1–64 characters from `[A-Za-z0-9._-]`.
pub fn metadata_key(key: &str) -> Result<()> {
    ident("metadata key", key, MAX_METADATA_KEY_LEN, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
}

/// A metadata value: at most 1024 bytes, no control characters.
pub fn metadata_value(value: &str) -> Result<()> {
    if value.len() > MAX_METADATA_VALUE_LEN {
        return Err(Error::config(
            "metadata value",
            format!(
                "must be at most {MAX_METADATA_VALUE_LEN} bytes, got {}",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::config(
            "metadata value",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The longest duration option: 24 hours.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A duration option: at least 1 ms and at most 24 hours, which keeps every deadline
/// computed from it far from overflowing the clock.
pub fn duration(field: &'static str, d: std::time::Duration) -> Result<()> {
    if d < std::time::Duration::from_millis(1) {
        Err(Error::config(field, "must be at least 1 ms"))
    } else if d > MAX_DURATION {
        Err(Error::config(field, "must be at most 24 hours"))
    } else {
        Ok(())
    }
}

/// A SQL identifier (table or schema name): 1–63 characters from `[a-z0-9_]`, starting with a
/// lowercase letter or underscore. Anything else is rejected, never quoted into SQL.
pub fn sql_identifier(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 63 {
        return Err(Error::config(field, "must be 1 to 63 characters long"));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return Err(Error::config(
            field,
            "must start with a lowercase letter or '_'",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::config(
            field,
            "may contain only lowercase letters, digits and '_'",
        ));
    }
    Ok(())
}

fn ident(field: &'static str, s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<()> {
    if s.is_empty() {
        return Err(Error::config(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Error::config(
            field,
            format!("must be at most {max} characters, got {}", s.len()),
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::config(field, "must start with a letter or digit"));
    }
    if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
        return Err(Error::config(
            field,
            format!("contains the character {bad:?}, which is not allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert!(group("jobs").is_ok());
        assert!(group("a.b_c-1").is_ok());
        assert!(group("").is_err());
        assert!(group("-x").is_err());
        assert!(group("a/b").is_err());
        assert!(group("../etc").is_err());
        assert!(group(&"a".repeat(129)).is_err());
        assert!(group(&"a".repeat(128)).is_ok());
        let e = group("a b").unwrap_err().to_string();
        assert!(e.contains("group") && e.contains("' '"), "{e}");
    }

    #[test]
    fn participants() {
        assert!(participant_id("host-1:42@x").is_ok());
        assert!(participant_id("a\nb").is_err());
        assert!(participant_id("").is_err());
    }

    #[test]
    fn sql_identifiers() {
        assert!(sql_identifier("table", "leader_election").is_ok());
        assert!(sql_identifier("table", "_t1").is_ok());
        assert!(sql_identifier("table", "x; DROP TABLE y").is_err());
        assert!(sql_identifier("table", "Leader").is_err());
        assert!(sql_identifier("table", "1abc").is_err());
        assert!(sql_identifier("table", "a\"b").is_err());
        assert!(sql_identifier("table", "").is_err());
        assert!(sql_identifier("table", &"a".repeat(64)).is_err());
    }

    #[test]
    fn metadata() {
        assert!(metadata_key("version").is_ok());
        assert!(metadata_key("").is_err());
        assert!(metadata_value("1.2.3 (build 7)").is_ok());
        assert!(metadata_value("a\u{0}").is_err());
        assert!(metadata_value(&"x".repeat(1025)).is_err());
    }
}
