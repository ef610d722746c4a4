//! Small helpers: randomness for jitter and ids, the default participant id.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded by the OS; the time and thread id tell threads apart.
    let mut h = RandomState::new().build_hasher();
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// A pseudo-random u64 (xorshift64*, seeded per thread from the OS-seeded `RandomState`).
/// Good for jitter and id suffixes, not for secrets.
pub(crate) fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// `d` scaled by a random factor in `[lo, hi]`.
pub(crate) fn jitter(d: Duration, lo: f64, hi: f64) -> Duration {
    let unit = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(lo + (hi - lo) * unit)
}

/// `hostname-pid-suffix`, with the hostname cut to characters valid in a participant id.
pub(crate) fn default_participant_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let mut host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if !host.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        host.insert_str(0, "host");
    }
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        random_u64() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_id_is_valid_and_unique() {
        let a = default_participant_id();
        let b = default_participant_id();
        crate::validate::participant_id(&a).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(100), 0.5, 1.0);
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
