//! Room for one more elector: the check [`crate::Elector::start`] makes before it spawns a
//! thread. Near a process limit, spawning a thread may still succeed while a thread that
//! already runs then fails an allocation (or its signal stack) and aborts the whole process —
//! with the kernel's default `vm.max_map_count` (65,530) that happened near 8,000 electors.
//! So an elector is refused, with [`Error::ResourceLimit`], while a reserve is still free:
//! memory mappings (every thread takes four), address space (`RLIMIT_AS`) and data
//! (`RLIMIT_DATA`, which counts thread stacks). Counting the mappings means reading
//! `/proc/self/maps`, so it is done only when an estimate (the last count plus a margin per
//! elector started since) comes near the limit, or every [`RECOUNT_EVERY`] starts. Elsewhere
//! than Linux and Android, or when `/proc` cannot be read, nothing is refused.

use crate::error::{Error, Result};

/// Mappings kept free for the threads already running (allocations, pool workers).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAP_RESERVE: usize = 4096;
/// Mappings one elector may add: its thread's stack and signal stack with their guard pages,
/// and a share of the pool's and the allocator's.
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAPS_PER_ELECTOR: usize = 8;
/// Starts between two counts of the mappings when far from the limit.
#[cfg(any(target_os = "linux", target_os = "android"))]
const RECOUNT_EVERY: usize = 1024;
/// Address space or data kept free for the threads already running.
#[cfg(any(target_os = "linux", target_os = "android"))]
const MEMORY_RESERVE: u64 = 64 << 20;

/// `Ok` if the process has room for one more elector; see the module docs.
pub(crate) fn check_room() -> Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        linux::check_maps()?;
        linux::check_memory()?;
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use std::sync::OnceLock;

    use parking_lot::Mutex;
    use rustix::process::{Resource, getrlimit};

    use super::*;

    /// The last count of mappings and the starts since.
    static MAPS: Mutex<(usize, usize)> = Mutex::new((0, usize::MAX));

    fn max_map_count() -> Option<usize> {
        static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
        *LIMIT.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }

    fn count_maps() -> Option<usize> {
        let maps = std::fs::read("/proc/self/maps").ok()?;
        Some(maps.iter().filter(|&&b| b == b'\n').count())
    }

    pub(super) fn check_maps() -> Result<()> {
        let Some(limit) = max_map_count() else {
            return Ok(());
        };
        let mut maps = MAPS.lock();
        let (counted, since) = *maps;
        let estimate = counted.saturating_add(since.saturating_mul(MAPS_PER_ELECTOR));
        let room = |in_use: usize| in_use + MAPS_PER_ELECTOR + MAP_RESERVE <= limit;
        if since < RECOUNT_EVERY && room(estimate) {
            maps.1 += 1;
            return Ok(());
        }
        let Some(in_use) = count_maps() else {
            return Ok(());
        };
        *maps = (in_use, 1);
        if room(in_use) {
            Ok(())
        } else {
            Err(Error::ResourceLimit {
                resource: "memory mapping (vm.max_map_count)",
                detail: format!(
                    "{in_use} of {limit} mappings in use, {MAP_RESERVE} kept free for the \
                     threads already running"
                ),
            })
        }
    }

    /// Bytes of address space and of data (stacks included) in use, from `/proc/self/statm`.
    fn memory_in_use() -> Option<(u64, u64)> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let fields: Vec<u64> = statm
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let page = rustix::param::page_size() as u64;
        Some((fields.first()? * page, fields.get(5)? * page))
    }

    pub(super) fn check_memory() -> Result<()> {
        let limits = [
            (Resource::As, "address space (RLIMIT_AS)"),
            (Resource::Data, "data (RLIMIT_DATA)"),
        ];
        let finite: Vec<_> = limits
            .into_iter()
            .filter_map(|(r, name)| getrlimit(r).current.map(|limit| (r, name, limit)))
            .collect();
        if finite.is_empty() {
            return Ok(());
        }
        let Some((size, data)) = memory_in_use() else {
            return Ok(());
        };
        for (resource, name, limit) in finite {
            let in_use = if resource == Resource::As { size } else { data };
            if in_use.saturating_add(MEMORY_RESERVE) > limit {
                return Err(Error::ResourceLimit {
                    resource: name,
                    detail: format!(
                        "{} MiB of {} MiB in use, {} MiB kept free for the threads already \
                         running",
                        in_use >> 20,
                        limit >> 20,
                        MEMORY_RESERVE >> 20
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_normal_process_has_room() {
        super::check_room().unwrap();
    }
}
