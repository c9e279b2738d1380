//! `export` and `import`: one snapshot moved as one self-contained file.
//!
//! The file is an uncompressed tar holding a complete restic repository with
//! just that snapshot: `config`, `keys/`, `data/`, `index/`, `snapshots/`.
//! It has its own master key, protected by the password given to `export`
//! (the exporting repository's key never leaves it). Extracted with `tar -x`,
//! `restic -r DIR` reads it; `import` reads it in place, without extracting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::tarfile::TarBackend;
use super::backend::Backend;
use super::error::{RepoError, Result};
use super::lock::{Lock, LockKind};
use super::repository::{info, Repository, SnapshotInfo};
use super::writer::SnapshotMeta;

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    file.with_file_name(name)
}

impl Repository {
    /// Writes snapshot `snapshot` (id, prefix or `latest`) with all its data to
    /// the new file `file`, encrypted for `password`. The file appears only
    /// when complete (it is written as `FILE.partial`, then renamed).
    pub fn export(&self, snapshot: &str, file: &Path, password: &str) -> Result<SnapshotInfo> {
        self.export_with_progress(snapshot, file, password, None)
    }

    /// [`export`](Self::export), calling `progress` with the bytes copied so far.
    pub fn export_with_progress(
        &self,
        snapshot: &str,
        file: &Path,
        password: &str,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<SnapshotInfo> {
        if file.exists() {
            return Err(RepoError::Invalid(format!(
                "{} already exists: choose a new file name",
                file.display()
            )));
        }
        let _lock = Lock::acquire(self, LockKind::Shared)?;
        let (_, snap) = self.resolve(snapshot)?;
        let partial = partial_path(file);
        let _ = std::fs::remove_file(&partial);
        let res = (|| -> Result<SnapshotInfo> {
            let tar = Arc::new(TarBackend::create(&partial)?);
            let dst =
                Repository::init_backend(tar.clone() as Arc<dyn Backend>, password, Some(self))?;
            let idx = self.index()?;
            let mut w = dst.writer(SnapshotMeta::default(), None)?;
            if let Some(p) = progress {
                w.set_progress(p);
            }
            w.copy_tree(self, &idx, &snap.tree)?;
            let info = w.commit_copy(&snap)?;
            tar.finish()?;
            std::fs::rename(&partial, file).map_err(|e| {
                RepoError::io(
                    format!("cannot rename {} to {}", partial.display(), file.display()),
                    e,
                )
            })?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(info)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        res
    }

    /// Copies the snapshot(s) of an export file made by [`export`](Self::export)
    /// into this repository; `password` is the one the file was exported with.
    /// Importing the same file twice does not duplicate the snapshot.
    pub fn import(&self, file: &Path, password: &str) -> Result<Vec<SnapshotInfo>> {
        self.import_with_progress(file, password, None)
    }

    /// [`import`](Self::import), calling `progress` with the bytes copied so far.
    pub fn import_with_progress(
        &self,
        file: &Path,
        password: &str,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<Vec<SnapshotInfo>> {
        let tar = Arc::new(TarBackend::open(file)?);
        let src = Repository::open_backend(tar, password).map_err(|e| match e {
            RepoError::WrongPassword { .. } => RepoError::WrongPassword {
                location: format!("export file {}", file.display()),
            },
            RepoError::NotARepository { .. } => RepoError::Invalid(format!(
                "{} is not an upkeep export (no repository inside)",
                file.display()
            )),
            e => e,
        })?;
        let src_idx = src.index()?;
        let existing = self.load_snapshots()?;
        let mut out = Vec::new();
        for (_, snap) in src.load_snapshots()? {
            if let Some((id, e)) = existing.iter().find(|(_, e)| {
                e.tree == snap.tree && e.time == snap.time && e.hostname == snap.hostname
            }) {
                out.push(info(id, e));
                continue;
            }
            let lock = Lock::acquire(self, LockKind::Shared)?;
            let mut w = self.writer(SnapshotMeta::default(), Some(lock))?;
            if let Some(p) = progress {
                w.set_progress(p);
            }
            w.copy_tree(&src, &src_idx, &snap.tree)?;
            out.push(w.commit_copy(&snap)?);
        }
        Ok(out)
    }
}
