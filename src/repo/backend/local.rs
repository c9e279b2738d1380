//! A repository in a local folder, laid out exactly as restic's local backend.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{is_id, is_temporary, Backend, FileType};
use crate::repo::error::{RepoError, Result};

/// A folder holding a repository.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// The subfolders of `data/` (`00` … `ff`) that exist.
    fn pack_dirs(&self) -> Result<Vec<PathBuf>> {
        let data = self.root.join("data");
        let mut dirs = Vec::new();
        match fs::read_dir(&data) {
            Ok(rd) => {
                for e in rd {
                    let e = e.map_err(|e| self.err("list", &data, e))?;
                    if e.file_type().map(|f| f.is_dir()).unwrap_or(false) {
                        dirs.push(e.path());
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(self.err("list", &data, e)),
        }
        Ok(dirs)
    }

    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    fn err(&self, op: &'static str, path: &Path, e: std::io::Error) -> RepoError {
        if e.kind() == ErrorKind::NotFound && (op == "read" || op == "open") {
            return RepoError::NotFound {
                path: path.display().to_string(),
            };
        }
        let mut message = e.to_string();
        if e.raw_os_error() == Some(libc::ENOSPC) {
            message.push_str(" (free some space or use another repository)");
        }
        RepoError::Backend {
            location: self.location(),
            op,
            path: path.display().to_string(),
            message,
        }
    }

    fn file(&self, t: FileType, name: &str) -> PathBuf {
        self.root.join(t.path(name))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        let mk = |p: PathBuf| -> Result<()> {
            fs::create_dir_all(&p).map_err(|e| self.err("create folder", &p, e))?;
            set_mode(&p, 0o700);
            Ok(())
        };
        mk(self.root.clone())?;
        for d in ["keys", "locks", "snapshots", "index", "data"] {
            mk(self.root.join(d))?;
        }
        for i in 0..=255u8 {
            mk(self.root.join("data").join(format!("{i:02x}")))?;
        }
        sync_dir(&self.root).map_err(|e| self.err("sync", &self.root, e))
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        let dirs = if t == FileType::Pack {
            self.pack_dirs()?
        } else {
            vec![self.root.join(t.dir())]
        };
        let mut out = Vec::new();
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", &d, e)),
            };
            for e in rd {
                let e = e.map_err(|e| self.err("list", &d, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_id(&name) {
                    continue;
                }
                let md = e.metadata().map_err(|er| self.err("stat", &e.path(), er))?;
                if md.is_file() {
                    out.push((name, md.len()));
                }
            }
        }
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let p = self.file(t, name);
        fs::read(&p).map_err(|e| self.err("read", &p, e))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let p = self.file(t, name);
        let mut f = File::open(&p).map_err(|e| self.err("open", &p, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err("seek", &p, e))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)
            .map_err(|e| self.err("read", &p, e))?;
        Ok(buf)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        let p = self.file(t, name);
        let dir = p
            .parent()
            .expect("repository files live in a folder")
            .to_path_buf();
        let mut rnd = [0u8; 6];
        crate::repo::crypto::random_bytes(&mut rnd);
        // a temporary name that restic skips (not an id), in the same folder for an atomic rename
        let tmp = dir.join(format!("{name}-tmp-{}", hex::encode(rnd)));
        let res = (|| -> std::io::Result<()> {
            if !dir.exists() {
                fs::create_dir_all(&dir)?;
            }
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            // repository files are read-only, as restic makes them
            set_mode(&tmp, 0o400);
            fs::rename(&tmp, &p)?;
            sync_dir(&dir)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("write", &p, e));
        }
        Ok(())
    }

    fn remove_temporaries(&self) -> Result<(usize, u64)> {
        // not keys/ and locks/: those are written without holding a lock
        let mut dirs = vec![self.root.join("index"), self.root.join("snapshots")];
        dirs.extend(self.pack_dirs()?);
        let (mut files, mut bytes) = (0, 0);
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", &d, e)),
            };
            for e in rd {
                let e = e.map_err(|e| self.err("list", &d, e))?;
                if !is_temporary(&e.file_name().to_string_lossy()) {
                    continue;
                }
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(e.path()) {
                    Ok(()) => {
                        files += 1;
                        bytes += size;
                    }
                    Err(er) if er.kind() == ErrorKind::NotFound => {}
                    Err(er) => return Err(self.err("delete", &e.path(), er)),
                }
            }
        }
        Ok((files, bytes))
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        let p = self.file(t, name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", &p, e)),
        }
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
}
