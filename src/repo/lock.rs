//! Lock files in `locks/`, compatible with restic's: a shared lock for backup,
//! restore and check, an exclusive one for forget/prune. A lock is stale when
//! it is older than 30 minutes, or when it was taken on this host by a process
//! that no longer exists (restic's `Lock.Stale` rule). Stale locks do not block
//! us; those of dead processes on this host are also deleted, as `restic unlock`
//! would, because restic 0.14 itself never skips a stale lock (its `check` and
//! `prune` would refuse to run until someone unlocks). Empty lock files are
//! skipped, as restic does. Held locks are refreshed every 5 minutes, as restic does.
//! A refresh that fails is retried every minute; once the lock file on the
//! repository is 20 minutes old (10 before another host may call it stale and
//! prune data this writer still needs) the lock counts as lost and the writer
//! stops with [`RepoError::LockLost`].

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::backend::{Backend, FileType};
use super::crypto::Key;
use super::error::{RepoError, Result};
use super::format::LockFile;
use super::id::Id;
use super::repository::{format_time, hostname, now, parse_time, username, Repository};

const STALE_AFTER: time::Duration = time::Duration::minutes(30);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// How often a held lock is rewritten. `UPKEEP_LOCK_REFRESH_SECS` shortens it
/// for tests of a failing refresh; retries and the point where the lock
/// counts as lost scale with it (1/5 and 4 times the period).
fn refresh_every() -> Duration {
    std::env::var("UPKEEP_LOCK_REFRESH_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(REFRESH_EVERY)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A held lock; removed when dropped.
pub struct Lock {
    be: Arc<dyn Backend>,
    current: Arc<Mutex<String>>,
    /// Set by the refresher when the lock could not be refreshed in time.
    lost: Arc<Mutex<Option<String>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for the process' existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why a lock no longer counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stale {
    /// Older than 30 minutes (or without a readable time): its holder stopped
    /// refreshing it. Ignored, not deleted (the holder may be on another host).
    Old,
    /// Taken on this host by a process that no longer exists: ignored and deleted.
    DeadProcess,
}

/// Whether (and why) a lock no longer counts.
pub fn staleness(l: &LockFile, now: OffsetDateTime) -> Option<Stale> {
    let Some(t) = parse_time(&l.time) else {
        return Some(Stale::Old);
    };
    if now - t > STALE_AFTER {
        return Some(Stale::Old);
    }
    (l.hostname == hostname() && !pid_alive(l.pid)).then_some(Stale::DeadProcess)
}

fn save(be: &dyn Backend, key: &Key, version: u32, lf: &LockFile) -> Result<String> {
    let json = serde_json::to_vec(lf).expect("serializable");
    let data = if version >= 2 {
        let mut v = vec![2u8];
        v.extend(zstd::bulk::compress(&json, 3).map_err(|e| RepoError::io("zstd", e))?);
        v
    } else {
        json
    };
    let enc = key.encrypt(&data);
    let id = Id::hash(&enc).to_hex();
    be.write(FileType::Lock, &id, &enc)?;
    Ok(id)
}

fn describe(l: &LockFile) -> String {
    format!(
        "{} lock of {}@{} (pid {}) taken at {}",
        if l.exclusive { "an exclusive" } else { "a" },
        l.username,
        l.hostname,
        l.pid,
        l.time
    )
}

impl Lock {
    /// Takes a lock of `kind`, or fails with [`RepoError::Locked`] naming the holder.
    pub fn acquire(repo: &Repository, kind: LockKind) -> Result<Lock> {
        let exclusive = kind == LockKind::Exclusive;
        Lock::check_others(repo, exclusive, None)?;
        let lf = new_lockfile(exclusive);
        let id = save(repo.be.as_ref(), &repo.key, repo.config.version, &lf)?;
        // a second look closes the race with a lock taken at the same moment
        if let Err(e) = Lock::check_others(repo, exclusive, Some(&id)) {
            let _ = repo.be.remove(FileType::Lock, &id);
            return Err(e);
        }
        let current = Arc::new(Mutex::new(id));
        let lost = Arc::new(Mutex::new(None));
        let (tx, rx) = channel::<()>();
        let refresher = Refresher {
            be: repo.be.clone(),
            key: repo.key.clone(),
            version: repo.config.version,
            exclusive,
            current: current.clone(),
            lost: lost.clone(),
            location: repo.location(),
        };
        let thread = std::thread::spawn(move || refresher.run(&rx));
        Ok(Lock {
            be: repo.be.clone(),
            current,
            lost,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Fails with [`RepoError::LockLost`] once the lock could not be
    /// refreshed in time: a writer must not go on without it.
    pub fn ensure_held(&self) -> Result<()> {
        match &*self.lost.lock().expect("lock state") {
            Some(e) => Err(RepoError::LockLost(e.clone())),
            None => Ok(()),
        }
    }

    fn check_others(repo: &Repository, exclusive: bool, own: Option<&str>) -> Result<()> {
        let now = now();
        for (name, size) in repo.be.list(FileType::Lock)? {
            // an empty file is an interrupted upload on a non-atomic backend (restic skips them too)
            if Some(name.as_str()) == own || size == 0 {
                continue;
            }
            let lf: LockFile = match repo.load_json(FileType::Lock, &name) {
                Ok(l) => l,
                // vanished in the meantime (released)
                Err(RepoError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match staleness(&lf, now) {
                Some(Stale::DeadProcess) => {
                    // best effort: a lock left by a killed process (ours or restic's)
                    let _ = repo.be.remove(FileType::Lock, &name);
                    continue;
                }
                Some(Stale::Old) => continue,
                None => {}
            }
            if exclusive || lf.exclusive {
                return Err(RepoError::Locked {
                    location: repo.location(),
                    holder: describe(&lf),
                });
            }
        }
        Ok(())
    }
}

/// The thread that keeps a held lock fresh.
struct Refresher {
    be: Arc<dyn Backend>,
    key: Key,
    version: u32,
    exclusive: bool,
    current: Arc<Mutex<String>>,
    lost: Arc<Mutex<Option<String>>>,
    location: String,
}

impl Refresher {
    fn run(self, stop: &std::sync::mpsc::Receiver<()>) {
        let every = refresh_every();
        let give_up_after = every * 4;
        let mut last_written = Instant::now();
        let mut wait = every;
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
            let lf = new_lockfile(self.exclusive);
            match save(self.be.as_ref(), &self.key, self.version, &lf) {
                Ok(new) => {
                    last_written = Instant::now();
                    wait = every;
                    let old = std::mem::replace(&mut *self.current.lock().expect("lock id"), new);
                    let _ = self.be.remove(FileType::Lock, &old);
                }
                Err(e) => {
                    tracing::warn!("refreshing the lock in {} failed: {e}", self.location);
                    if last_written.elapsed() >= give_up_after {
                        *self.lost.lock().expect("lock state") = Some(format!(
                            "the lock in {} could not be refreshed for {} s (last error: {e})",
                            self.location,
                            last_written.elapsed().as_secs()
                        ));
                        return;
                    }
                    wait = every / 5;
                }
            }
        }
    }
}

fn new_lockfile(exclusive: bool) -> LockFile {
    // SAFETY: these calls have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    LockFile {
        time: format_time(now()),
        exclusive,
        hostname: hostname(),
        username: username(),
        pid: i64::from(std::process::id()),
        uid,
        gid,
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let id = self.current.lock().expect("lock id").clone();
        let _ = self.be.remove(FileType::Lock, &id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(time: OffsetDateTime, host: &str, pid: i64) -> LockFile {
        LockFile {
            time: format_time(time),
            exclusive: true,
            hostname: host.into(),
            username: "root".into(),
            pid,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn staleness_follows_restic() {
        let t = now();
        let me = i64::from(std::process::id());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = i64::from(child.id());
        child.wait().unwrap();
        let here = hostname();
        // a live process here, fresh: holds
        assert_eq!(staleness(&lock(t, &here, me), t), None);
        // a dead process here: stale (and deleted by acquire)
        assert_eq!(
            staleness(&lock(t, &here, dead), t),
            Some(Stale::DeadProcess)
        );
        // another host: its pids mean nothing here, so it holds until 30 minutes old
        assert_eq!(staleness(&lock(t, "elsewhere", dead), t), None);
        let old = t - time::Duration::minutes(31);
        assert_eq!(
            staleness(&lock(old, "elsewhere", dead), t),
            Some(Stale::Old)
        );
        assert_eq!(staleness(&lock(old, &here, me), t), Some(Stale::Old));
        assert_eq!(
            staleness(&lock(t - time::Duration::minutes(29), "elsewhere", 1), t),
            None
        );
        let mut bad = lock(t, &here, me);
        bad.time = "yesterday".into();
        assert_eq!(staleness(&bad, t), Some(Stale::Old));
    }
}
