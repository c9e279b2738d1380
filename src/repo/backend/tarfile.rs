//! A whole repository inside one (uncompressed, ustar) tar file: the format of
//! `export`/`import`. Extracted with any `tar`, it is a restic repository.
//! Writing appends entries (files are written whole, so sizes are known);
//! reading indexes the headers once and then reads ranges in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{is_id, Backend, FileType};
use crate::repo::error::{RepoError, Result};

enum Mode {
    Write(File),
    Read {
        file: File,
        entries: HashMap<String, (u64, u64)>,
    },
}

/// A repository in a tar file, either being written or being read.
pub struct TarBackend {
    path: PathBuf,
    mode: Mutex<Mode>,
}

fn header(name: &str, size: u64, dir: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode = if dir { "0000700\0" } else { "0000600\0" };
    h[100..108].copy_from_slice(mode.as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    h[136..148].copy_from_slice(format!("{now:011o}\0").as_bytes());
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn parse_octal(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

impl TarBackend {
    /// Starts a new tar file at `path` (which must not exist).
    pub fn create(path: &Path) -> Result<TarBackend> {
        // it holds every byte of a snapshot (encrypted, but still the
        // owner's only): 0600 from its creation, whatever the umask
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                Ok(f)
            })
            .map_err(|e| RepoError::io(format!("cannot create {}", path.display()), e))?;
        Ok(TarBackend {
            path: path.to_path_buf(),
            mode: Mutex::new(Mode::Write(file)),
        })
    }

    /// Opens an existing tar file for reading.
    pub fn open(path: &Path) -> Result<TarBackend> {
        let ctx = |e| RepoError::io(format!("cannot read {}", path.display()), e);
        let mut file = File::open(path).map_err(ctx)?;
        let len = file.metadata().map_err(ctx)?.len();
        let mut entries = HashMap::new();
        let mut pos = 0u64;
        let mut h = [0u8; 512];
        while pos + 512 <= len {
            file.seek(SeekFrom::Start(pos)).map_err(ctx)?;
            file.read_exact(&mut h).map_err(ctx)?;
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let bad = || {
                RepoError::Invalid(format!(
                    "{} is not an upkeep export (bad tar header)",
                    path.display()
                ))
            };
            let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let mut name = String::from_utf8(h[..name_end].to_vec()).map_err(|_| bad())?;
            let prefix_end = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
            if &h[257..262] == b"ustar" && prefix_end > 0 {
                let prefix =
                    String::from_utf8(h[345..345 + prefix_end].to_vec()).map_err(|_| bad())?;
                name = format!("{prefix}/{name}");
            }
            let size = parse_octal(&h[124..136]).ok_or_else(bad)?;
            // a size past the end of the file would be read into memory whole
            if size > len - (pos + 512) {
                return Err(RepoError::Invalid(format!(
                    "{} is truncated or not an upkeep export (an entry runs past its end)",
                    path.display()
                )));
            }
            let name = name.trim_start_matches("./").to_string();
            if h[156] == b'0' || h[156] == 0 {
                entries.insert(name, (pos + 512, size));
            }
            pos += 512 + size.div_ceil(512) * 512;
        }
        Ok(TarBackend {
            path: path.to_path_buf(),
            mode: Mutex::new(Mode::Read { file, entries }),
        })
    }

    /// Writes the end-of-archive marker and syncs the file.
    pub fn finish(&self) -> Result<()> {
        let mut m = self.mode.lock().expect("tar lock");
        if let Mode::Write(f) = &mut *m {
            let ctx = |e| RepoError::io(format!("cannot write {}", self.path.display()), e);
            f.write_all(&[0u8; 1024]).map_err(ctx)?;
            f.sync_all().map_err(ctx)?;
        }
        Ok(())
    }

    /// Adds a folder entry (so that extracting the tar gives restic's layout).
    pub fn add_dir(&self, name: &str) -> Result<()> {
        let mut m = self.mode.lock().expect("tar lock");
        if let Mode::Write(f) = &mut *m {
            f.write_all(&header(&format!("{name}/"), 0, true))
                .map_err(|e| RepoError::io(format!("cannot write {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn read_at(&self, path: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
        let mut m = self.mode.lock().expect("tar lock");
        let Mode::Read { file, entries } = &mut *m else {
            // nothing can be read back while the file is being written
            return Err(RepoError::NotFound {
                path: path.to_string(),
            });
        };
        let &(start, size) = entries.get(path).ok_or_else(|| RepoError::NotFound {
            path: path.to_string(),
        })?;
        let len = len.unwrap_or(size.saturating_sub(offset));
        if offset + len > size {
            return Err(RepoError::Corrupt(format!(
                "{path} in {} is truncated",
                self.path.display()
            )));
        }
        let ctx = |e| RepoError::io(format!("cannot read {}", self.path.display()), e);
        file.seek(SeekFrom::Start(start + offset)).map_err(ctx)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).map_err(ctx)?;
        Ok(buf)
    }
}

impl Backend for TarBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn create(&self) -> Result<()> {
        for d in ["keys", "locks", "snapshots", "index", "data"] {
            self.add_dir(d)?;
        }
        Ok(())
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        let m = self.mode.lock().expect("tar lock");
        let Mode::Read { entries, .. } = &*m else {
            return Ok(Vec::new());
        };
        let dir = format!("{}/", t.dir());
        Ok(entries
            .iter()
            .filter(|(k, _)| k.starts_with(&dir))
            .filter_map(|(k, &(_, size))| {
                let name = k.rsplit('/').next()?;
                is_id(name).then(|| (name.to_string(), size))
            })
            .collect())
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.read_at(&t.path(name), 0, None)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.read_at(&t.path(name), offset, Some(u64::from(len)))
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        let mut m = self.mode.lock().expect("tar lock");
        let Mode::Write(f) = &mut *m else {
            return Err(RepoError::Invalid("an import file is read-only".into()));
        };
        let path = t.path(name);
        let ctx = |e| RepoError::io(format!("cannot write {}", self.path.display()), e);
        f.write_all(&header(&path, data.len() as u64, false))
            .map_err(ctx)?;
        f.write_all(data).map_err(ctx)?;
        let pad = (512 - data.len() % 512) % 512;
        f.write_all(&vec![0u8; pad]).map_err(ctx)?;
        Ok(())
    }

    fn remove(&self, _t: FileType, _name: &str) -> Result<()> {
        Ok(())
    }
}
