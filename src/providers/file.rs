//! The file-system provider: one exclusively locked file per group in a local directory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::Mutex;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::Provider;
use crate::validate;

const BACKEND: &str = "file";

/// A provider that elects through OS file locks in a local directory; works across processes
/// on one machine.
///
/// For group `G` it keeps `G.lock`, exclusively locked (`flock` on Unix, `LockFileEx` on
/// Windows) by the leader for its whole term, and `G.leader`, the leader record (participant
/// id, fencing token, metadata), replaced atomically by each new leader. The lock is the lease:
/// the operating system drops it the moment the leader's process dies, so failover after a
/// crash takes one retry interval, not a TTL. A leader whose process is alive but stuck keeps
/// the lock, but its own deadline still makes it step down. The fencing token is the previous
/// record's plus one, so tokens keep rising across restarts as long as the directory is kept.
///
/// Locks belong to the open file, not to the process: two providers (or two groups' electors)
/// in one process conflict exactly as two processes would. One provider value holds at most
/// one lease per group.
///
/// **The directory must be the service's own.** Whoever can delete `G.lock` can let a second
/// participant lock a fresh file at that path while the leader still believes it leads (it
/// notices at its next renew). So [`FileProvider::new`] creates the directory with owner-only
/// permissions (`0700` on Unix) and refuses an existing one that every user may write (such
/// as `/tmp` itself — use a directory of your own below it), and each renew refreshes the
/// modification time of the lock and record files so that age-based temp cleaners
/// (systemd-tmpfiles, tmpreaper) leave them alone. Keep other tools out of the directory.
///
/// **Not supported:** network file systems (NFS, SMB, most FUSE mounts), whose lock semantics
/// and failure modes differ. Local file operations are not bounded by the call deadline.
///
/// ```
/// use leader_election::{ChangesExt, Elector, FileProvider};
///
/// let dir = std::env::temp_dir().join(format!("le-doc-{}", std::process::id()));
/// let elector = Elector::builder(FileProvider::new(&dir)?).group("nightly-report").start()?;
/// elector.subscribe().take_until_leader().for_each(drop);
/// assert!(elector.is_leader());
/// # elector.shutdown()?;
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct FileProvider {
    dir: PathBuf,
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    file: File,
    token: u64,
    participant_id: String,
}

impl FileProvider {
    /// A provider using `dir`, which is created if missing (owner-only on Unix). Fails with
    /// [`Error::InvalidConfig`] if `dir` is writable by every user.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)
            .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
        check_not_world_writable(&dir)?;
        Ok(FileProvider {
            dir,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The directory holding the lock and record files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.lock"))
    }

    fn record_path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.leader"))
    }

    fn open_lock(&self, group: &str) -> Result<File> {
        let path = self.lock_path(group);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))
    }

    /// Tries to lock `group`'s lock file: `Some(file)` holding the lock, or `None` if another
    /// open file holds it.
    fn try_lock(&self, group: &str) -> Result<Option<File>> {
        let file = self.open_lock(group)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("locking {}", self.lock_path(group).display()),
                e,
            )),
        }
    }

    fn read_record(&self, group: &str) -> Result<Option<LeaderInfo>> {
        let path = self.record_path(group);
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().is_empty() => Ok(None),
            Ok(s) => LeaderInfo::from_json(BACKEND, group, &s).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn write_record(&self, info: &LeaderInfo) -> Result<()> {
        let path = self.record_path(&info.group);
        let tmp = self.dir.join(format!(
            ".{}.leader.{}-{}",
            info.group,
            std::process::id(),
            crate::util::random_u64()
        ));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(info.to_json().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // Make the rename durable so the token survives a power cut.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
    }

    /// Whether `file` is still the file at `group`'s lock path (it was not deleted or
    /// replaced, which would let someone lock a new file at that path).
    #[cfg(unix)]
    fn still_linked(&self, group: &str, file: &File) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let ours = file
            .metadata()
            .map_err(|e| Error::io("inspecting the held lock file", e))?;
        match std::fs::metadata(self.lock_path(group)) {
            Ok(now) => Ok(now.dev() == ours.dev() && now.ino() == ours.ino()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(
                format!("inspecting {}", self.lock_path(group).display()),
                e,
            )),
        }
    }

    /// Sets the modification time of the group's lock and record files to now, so that
    /// age-based temp cleaners skip them. Best effort: a failure is logged, not fatal.
    fn refresh(&self, group: &str, lock: &File) {
        let now = std::time::SystemTime::now();
        let record = OpenOptions::new()
            .write(true)
            .open(self.record_path(group))
            .and_then(|f| f.set_modified(now));
        if let Err(e) = lock.set_modified(now).and(record) {
            log::debug!("file provider: refreshing the files of group {group:?} failed: {e}");
        }
    }

    #[cfg(not(unix))]
    fn still_linked(&self, group: &str, _file: &File) -> Result<bool> {
        Ok(self.lock_path(group).exists())
    }
}

/// Creates `dir` and its missing parents; on Unix, the directories it creates are owner-only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Refuses a directory every user may write: anyone could delete a lock file there.
#[cfg(unix)]
fn check_not_world_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("inspecting directory {}", dir.display()), e))?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(Error::config(
            "dir",
            format!(
                "{} is writable by every user, who could delete a lock file and lead alongside \
                 the leader; use a directory only the service's user can write (e.g. one of \
                 your own inside it)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_writable(_dir: &Path) -> Result<()> {
    Ok(())
}

impl std::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProvider")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Provider for FileProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// A lease is an OS file lock: it ends when its file is closed or the process dies.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_lease_ends_with_client(true)
    }

    fn try_acquire(&self, request: &AcquireRequest, _deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        let mut held = self.held.lock();
        if held.contains_key(&request.group) {
            return Ok(Acquisition::Held(self.read_record(&request.group)?));
        }
        let Some(file) = self.try_lock(&request.group)? else {
            return Ok(Acquisition::Held(self.read_record(&request.group)?));
        };
        // The file may have been unlinked between open and lock, while another participant
        // locks the new file at the path: then our lock proves nothing.
        if !self.still_linked(&request.group, &file)? {
            return Ok(Acquisition::Held(None));
        }
        // We hold the lock: no other participant can write the record now.
        let last = self.read_record(&request.group)?;
        let token = match last {
            None => 1,
            Some(l) => l
                .fencing_token
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt {
                    backend: BACKEND,
                    group: request.group.clone(),
                    detail: "the record's fencing token is at its maximum; no higher one exists"
                        .into(),
                })?,
        };
        let info = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            token,
            request.metadata.clone(),
        );
        self.write_record(&info)?; // on error the file drops and the lock with it
        held.insert(
            request.group.clone(),
            Held {
                file,
                token,
                participant_id: request.participant_id.clone(),
            },
        );
        Ok(Acquisition::Acquired(Lease::new(
            info,
            request.ttl,
            token.to_string(),
        )))
    }

    fn renew(&self, lease: &Lease, _deadline: Instant) -> Result<Renewal> {
        let group = &lease.info.group;
        let mut held = self.held.lock();
        match held.get(group) {
            Some(h)
                if h.token == lease.info.fencing_token
                    && h.participant_id == lease.info.participant_id =>
            {
                if self.still_linked(group, &h.file)? {
                    self.refresh(group, &h.file);
                    Ok(Renewal::Renewed)
                } else {
                    log::warn!(
                        "file provider: the lock file of group {group:?} was removed or replaced"
                    );
                    // Close the orphaned file so this provider can campaign again.
                    held.remove(group);
                    Ok(Renewal::Lost(None))
                }
            }
            _ => Ok(Renewal::Lost(self.read_record(group).ok().flatten())),
        }
    }

    fn release(&self, lease: &Lease, _deadline: Instant) -> Result<()> {
        let mut held = self.held.lock();
        let ours = held
            .get(&lease.info.group)
            .is_some_and(|h| h.token == lease.info.fencing_token);
        if ours && let Some(h) = held.remove(&lease.info.group) {
            h.file
                .unlock()
                .map_err(|e| Error::io("unlocking the lock file", e))?;
        }
        Ok(())
    }

    fn leader(&self, group: &str, _deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        if self.held.lock().contains_key(group) {
            return self.read_record(group);
        }
        // Probe the lock: if we get it, nobody leads.
        match self.try_lock(group)? {
            Some(file) => {
                drop(file);
                Ok(None)
            }
            None => self.read_record(group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    #[test]
    fn token_survives_a_new_provider() {
        let dir = tempfile::tempdir().unwrap();
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let a = FileProvider::new(dir.path()).unwrap();
        let Acquisition::Acquired(l1) = a.try_acquire(&req, deadline()).unwrap() else {
            panic!("not acquired")
        };
        drop(a); // a crash: the OS drops the lock
        let b = FileProvider::new(dir.path()).unwrap();
        let Acquisition::Acquired(l2) = b.try_acquire(&req, deadline()).unwrap() else {
            panic!("not acquired after the holder's file closed")
        };
        assert!(l2.fencing_token() > l1.fencing_token());
    }

    #[test]
    fn deleted_lock_file_is_noticed_on_renew() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileProvider::new(dir.path()).unwrap();
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let Acquisition::Acquired(l) = p.try_acquire(&req, deadline()).unwrap() else {
            panic!("not acquired")
        };
        assert_eq!(p.renew(&l, deadline()).unwrap(), Renewal::Renewed);
        std::fs::remove_file(dir.path().join("g.lock")).unwrap();
        assert!(matches!(p.renew(&l, deadline()).unwrap(), Renewal::Lost(_)));
        // The provider can lead again, with a higher token.
        let Acquisition::Acquired(l2) = p.try_acquire(&req, deadline()).unwrap() else {
            panic!("not acquired after losing an orphaned lock")
        };
        assert!(l2.fencing_token() > l.fencing_token());
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_token_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.leader"), "garbage").unwrap();
        let p = FileProvider::new(dir.path()).unwrap();
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let e = p.try_acquire(&req, deadline()).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn directories_are_private_and_shared_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("a/b");
        FileProvider::new(&mine).unwrap();
        let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = FileProvider::new(&shared).unwrap_err().to_string();
        assert!(e.contains("writable by every user"), "{e}");
    }

    #[test]
    fn renew_keeps_the_files_fresh_for_temp_cleaners() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileProvider::new(dir.path()).unwrap();
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let Acquisition::Acquired(l) = p.try_acquire(&req, deadline()).unwrap() else {
            panic!("not acquired")
        };
        let old = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
        for f in ["g.lock", "g.leader"] {
            let file = OpenOptions::new()
                .write(true)
                .open(dir.path().join(f))
                .unwrap();
            file.set_modified(old).unwrap();
        }
        assert_eq!(p.renew(&l, deadline()).unwrap(), Renewal::Renewed);
        for f in ["g.lock", "g.leader"] {
            let age = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .modified()
                .unwrap()
                .elapsed()
                .unwrap_or_default();
            assert!(age < Duration::from_secs(3600), "{f} is {age:?} old");
        }
    }

    #[test]
    fn a_token_at_its_maximum_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let rec = format!(r#"{{"id":"x","token":{},"since":0}}"#, u64::MAX);
        std::fs::write(dir.path().join("g.leader"), rec).unwrap();
        let p = FileProvider::new(dir.path()).unwrap();
        let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
        let e = p.try_acquire(&req, deadline()).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn bad_group_is_rejected_before_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileProvider::new(dir.path()).unwrap();
        let req = AcquireRequest::new("../escape", "a", Duration::from_secs(5));
        assert!(matches!(
            p.try_acquire(&req, deadline()),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
