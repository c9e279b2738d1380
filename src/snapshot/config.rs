//! An instance's config files and folders as one tar stream, with modes,
//! owners and times, and its restore into a home folder. TLS private keys
//! keep their 0600 (they are created so, never chmod-ed down later).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::untar;

/// Streams the existing `paths` (relative to `home`) as a tar, written by a
/// thread into a pipe so no copy lands on disk and memory stays small.
pub fn archive(home: &Path, paths: &[String]) -> Result<ConfigArchive> {
    let (reader, writer) = io::pipe().context("creating a pipe")?;
    let home = home.to_path_buf();
    let present: Vec<String> = paths
        .iter()
        .filter(|p| home.join(p).symlink_metadata().is_ok())
        .cloned()
        .collect();
    let worker = std::thread::spawn(move || -> io::Result<()> {
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        for rel in &present {
            let src = home.join(rel);
            if src.is_dir() && !src.is_symlink() {
                tar.append_dir_all(rel, &src)?;
            } else {
                tar.append_path_with_name(&src, rel)?;
            }
        }
        tar.finish()
    });
    Ok(ConfigArchive {
        reader,
        worker: Some(worker),
    })
}

/// The config tar being written; a failure of the writer surfaces as a read error.
pub struct ConfigArchive {
    reader: io::PipeReader,
    worker: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Read for ConfigArchive {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        if n == 0 {
            if let Some(w) = self.worker.take() {
                w.join()
                    .map_err(|_| io::Error::other("config archiver panicked"))??;
            }
        }
        Ok(n)
    }
}

/// Unpacks a config tar into `home`, replacing the files it names and
/// restoring modes, times and (as root) owners exactly. Returns the paths.
///
/// A snapshot may come from anyone who holds the repository's password, so
/// the whole archive is checked (see [`untar`]) before anything in `home` is
/// removed or written: a refused archive leaves `home` as it was. It is
/// spooled to an unnamed temporary file for that second reading (config is
/// small).
pub fn restore(mut tar_stream: impl Read, home: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(home)?;
    let mut spool = tempfile::tempfile().context("creating a temporary file for the config")?;
    io::copy(&mut tar_stream, &mut spool).context("reading the config archive")?;
    let rules = untar::Rules {
        replace: true,
        owners: is_root(),
        links_inside: false,
        drop_world_write: false,
    };
    spool.seek(SeekFrom::Start(0))?;
    untar::check(&mut spool, home, &rules).context(
        "the snapshot's config archive was refused; nothing in the instance folder was changed",
    )?;
    spool.seek(SeekFrom::Start(0))?;
    untar::unpack(&mut spool, home, &rules).context("restoring the config")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_keeps_bytes_modes_and_times() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc/ssl")).unwrap();
        let key = src.path().join("etc/ssl/server.key");
        fs::write(&key, "secret").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        fs::File::options()
            .write(true)
            .open(&key)
            .unwrap()
            .set_modified(t)
            .unwrap();
        fs::write(src.path().join(".env"), "A=1\n").unwrap();
        let paths = vec![".env".to_string(), "etc/ssl".into(), "missing".into()];
        let mut tar = Vec::new();
        archive(src.path(), &paths)
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();

        let dst = tempfile::tempdir().unwrap();
        fs::write(dst.path().join(".env"), "DEFAULT=1\n").unwrap();
        restore(&tar[..], dst.path()).unwrap();
        let got = dst.path().join("etc/ssl/server.key");
        assert_eq!(fs::read_to_string(&got).unwrap(), "secret");
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(&got).unwrap().modified().unwrap(), t);
        assert_eq!(
            fs::read_to_string(dst.path().join(".env")).unwrap(),
            "A=1\n"
        );
    }
}
