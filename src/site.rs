//! The site: the install root that holds `releases/`, `instances/` (homes of
//! extra copies), the default backup repository and upkeep's state in
//! `.upkeep/`. Mutating commands hold the site lock for their whole run.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::durable;

/// Name of the state folder inside a site.
pub const STATE_DIR: &str = ".upkeep";

#[derive(Debug, Clone)]
pub struct Site {
    root: PathBuf,
    /// Random id of this site, kept in `.upkeep/site.json`; everything upkeep
    /// creates on the engine carries it in a label, so two sites on one
    /// engine never take each other's containers or volumes for their own.
    id: String,
}

/// `.upkeep/site.json`: the site's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    id: String,
    created: String,
}

/// Raised when another upkeep run holds the site lock.
#[derive(Debug, thiserror::Error)]
#[error("site {site} is busy: {holder}. Wait for it to finish, then run the command again")]
pub struct Busy {
    pub site: String,
    pub holder: String,
}

/// Who holds (or last held) the lock; written into the lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub command: String,
    pub started: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`upkeep {}` (pid {}) has held it since {}",
            self.command, self.pid, self.started
        )
    }
}

/// The held site lock; released when dropped or when the process dies
/// (the kernel drops the flock), so a crashed run never blocks the next one.
#[derive(Debug)]
pub struct SiteLock {
    _file: File,
    /// The holder recorded by a run that died without releasing the lock.
    pub recovered_from: Option<LockHolder>,
}

impl Site {
    /// Opens the site at `root`, creating its folders and identity if needed.
    pub fn create(root: &Path) -> Result<Site> {
        fs::create_dir_all(root.join("releases"))
            .with_context(|| format!("creating site folder {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("site folder {} does not exist", root.display()))?;
        durable::create_private_dir(&root.join(STATE_DIR))?;
        let id = load_or_create_identity(&root)?;
        Ok(Site { root, id })
    }

    /// Finds the site: the explicit folder (flag or `UPKEEP_SITE`), else the
    /// nearest folder at or above `cwd` that holds `.upkeep/` or `releases/`.
    pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Result<Site> {
        if let Some(root) = explicit {
            return Site::create(root);
        }
        for dir in cwd.ancestors() {
            if dir.join(STATE_DIR).is_dir() || dir.join("releases").is_dir() {
                return Site::create(dir);
            }
        }
        bail!(
            "no upkeep site found at or above {}: run from the install root (the folder that \
             holds releases/), or pass --site DIR (or set UPKEEP_SITE)",
            cwd.display()
        )
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The site's random id (the value of its ownership label).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn releases_dir(&self) -> PathBuf {
        self.root.join("releases")
    }

    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.releases_dir().join(version)
    }

    /// Homes of instances that are not their release's default copy.
    pub fn instance_homes_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Per-release records (bundle digests) kept by upkeep.
    pub fn release_records_dir(&self) -> PathBuf {
        self.state_dir().join("releases")
    }

    /// Per-instance records and generated compose files.
    pub fn instance_state_dir(&self) -> PathBuf {
        self.state_dir().join("instances")
    }

    /// Journals of operations in progress (restore, services stopped for a copy).
    pub fn journals_dir(&self) -> PathBuf {
        self.state_dir().join("journals")
    }

    /// Takes the exclusive site lock, failing at once with [`Busy`] when
    /// another run holds it.
    pub fn lock(&self, command: &str) -> Result<SiteLock> {
        durable::create_private_dir(&self.state_dir())?;
        let path = self.state_dir().join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let previous = read_holder(&mut file);
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = previous
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another upkeep run holds the lock".into());
                return Err(Busy {
                    site: self.root.display().to_string(),
                    holder,
                }
                .into());
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        let holder = LockHolder {
            pid: std::process::id(),
            command: command.to_string(),
            started: now_rfc3339(),
        };
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(serde_json::to_string(&holder)?.as_bytes())?;
        file.sync_all()?;
        // A holder left in the file by a run that is gone: it died mid-way.
        let recovered_from = previous.filter(|h| h.pid != holder.pid && !pid_alive(h.pid));
        if let Some(dead) = &recovered_from {
            tracing::warn!("recovered the site lock left by a run that died: {dead}");
        }
        Ok(SiteLock {
            _file: file,
            recovered_from,
        })
    }
}

impl Drop for SiteLock {
    fn drop(&mut self) {
        // Clear the holder so the next run does not report a dead one.
        let _ = self._file.set_len(0);
    }
}

/// The id in `.upkeep/site.json`, created at random on first use. A site
/// made by an upkeep without ids gets one now, and what its records name is
/// recorded as owned (its volumes carry no site label).
fn load_or_create_identity(root: &Path) -> Result<String> {
    let path = root.join(STATE_DIR).join("site.json");
    if let Some(identity) = durable::read_json::<Identity>(&path)? {
        return Ok(identity.id);
    }
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    let identity = Identity {
        id: hex::encode(bytes),
        created: now_rfc3339(),
    };
    crate::ownership::claim_legacy(root)?;
    durable::write_json(&path, &identity)?;
    Ok(identity.id)
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Current UTC time as RFC 3339, for state files and messages.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::create(dir.path()).unwrap();
        let held = site.lock("install b.tar").unwrap();
        // A second open file description conflicts even within one process.
        let err = site.lock("up v1").unwrap_err();
        let busy = err.downcast_ref::<Busy>().expect("a Busy error");
        assert!(busy.holder.contains("install b.tar"), "{}", busy.holder);
        drop(held);
        site.lock("up v1").expect("free again after release");
    }

    #[test]
    fn a_site_keeps_its_random_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = Site::create(dir.path()).unwrap();
        assert_eq!(first.id().len(), 16);
        assert_eq!(Site::create(dir.path()).unwrap().id(), first.id());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Site::create(other.path()).unwrap().id(), first.id());
    }

    #[test]
    fn locate_walks_up_to_the_site() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::create(dir.path()).unwrap();
        let deep = site.release_dir("v1").join("etc");
        fs::create_dir_all(&deep).unwrap();
        let found = Site::locate(None, &deep).unwrap();
        assert_eq!(found.root(), site.root());
    }

    #[test]
    fn locate_without_site_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = Site::locate(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("--site"), "{err}");
    }
}
