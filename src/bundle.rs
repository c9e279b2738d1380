//! Vendor bundles: a folder or a tarball (`.tar`, `.tar.gz`/`.tgz`,
//! `.tar.zst`) holding one release. Unpacking refuses anything that could
//! write outside the release folder: absolute paths, `..`, links that
//! escape (followed through every other link), device files; setuid bits
//! and world-write are dropped (see [`untar`]). A refused bundle leaves
//! nothing behind.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::durable::{self, sha256_file};
use crate::untar::{self, Unsafe};

/// Why a bundle was refused; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the bundle was refused: {0}")]
    Unsafe(#[from] Unsafe),
    #[error("checksum mismatch for `{file}`: SHA256SUMS says {expected}, the file has {actual}. The bundle is damaged or was altered: fetch it again from the vendor")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Folder,
    Tar,
    TarGz,
    TarZst,
}

impl BundleKind {
    pub fn detect(path: &Path) -> Result<BundleKind> {
        let meta = fs::metadata(path)
            .with_context(|| format!("bundle {} does not exist", path.display()))?;
        if meta.is_dir() {
            return Ok(BundleKind::Folder);
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_lowercase();
        Ok(if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            BundleKind::TarGz
        } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            BundleKind::TarZst
        } else if name.ends_with(".tar") {
            BundleKind::Tar
        } else {
            bail!(
                "{} is not a bundle upkeep knows: give a folder or a .tar, .tar.gz or .tar.zst",
                path.display()
            )
        })
    }
}

/// Unpacks `bundle` into the empty folder `dest` and returns the release
/// root inside it (`dest` itself, or its single top folder).
pub fn unpack(bundle: &Path, dest: &Path) -> Result<PathBuf> {
    match BundleKind::detect(bundle)? {
        BundleKind::Folder => copy_folder(bundle, dest)?,
        kind => {
            let file = BufReader::new(
                File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?,
            );
            let reader: Box<dyn Read> = match kind {
                BundleKind::Tar => Box::new(file),
                BundleKind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
                BundleKind::TarZst => Box::new(zstd::Decoder::with_buffer(file)?),
                BundleKind::Folder => unreachable!(),
            };
            unpack_tar(reader, dest)
                .with_context(|| format!("unpacking bundle {}", bundle.display()))?;
        }
    }
    release_root(dest)
}

fn unpack_tar(reader: impl Read, dest: &Path) -> Result<()> {
    let rules = untar::Rules {
        replace: false,
        owners: false,
        links_inside: true,
        drop_world_write: true,
    };
    match untar::unpack(reader, dest, &rules) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.downcast::<Unsafe>() {
            Ok(unsafe_entry) => Refused::from(unsafe_entry).into(),
            Err(e) => e,
        }),
    }
}

fn copy_folder(src: &Path, dest: &Path) -> Result<()> {
    copy_tree(src, dest, Path::new(""), &|_| true)
}

/// Copies `src` into `dest` (both folders), keeping mtimes and the modes
/// [`untar::safe_mode`] allows, refusing links that resolve outside `src`
/// (through any other link of it); `keep` filters relative paths. Files and
/// folders are synced.
pub fn copy_tree(src: &Path, dest: &Path, rel: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
    let here = src.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&here)
        .with_context(|| format!("reading {}", here.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        if !keep(&rel_path) {
            continue;
        }
        let from = entry.path();
        let to = dest.join(&rel_path);
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        let mode = untar::safe_mode(&rel_path, meta.permissions().mode(), ft.is_dir(), true);
        if ft.is_symlink() {
            // src is complete, so resolving there is exact
            untar::check_link_resolves_inside(src, &rel_path).map_err(Refused::from)?;
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)
                .with_context(|| format!("creating link {}", to.display()))?;
            continue;
        } else if ft.is_dir() {
            fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
            copy_tree(src, dest, &rel_path, keep)?;
        } else if ft.is_file() {
            copy_file(&from, &to, mode).with_context(|| format!("copying {}", from.display()))?;
        } else {
            return Err(Refused::from(Unsafe::SpecialFile(rel_path.display().to_string())).into());
        }
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        let mtime = meta.modified()?;
        File::open(&to)
            .and_then(|f| f.set_modified(mtime))
            .with_context(|| format!("setting the time of {}", to.display()))?;
    }
    durable::sync_dir(&dest.join(rel)).with_context(|| format!("syncing {}", dest.display()))
}

/// Copies one file, created with `mode` before its first byte, and syncs it.
fn copy_file(from: &Path, to: &Path, mode: u32) -> std::io::Result<()> {
    let mut src = File::open(from)?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    out.set_permissions(fs::Permissions::from_mode(mode))?;
    std::io::copy(&mut src, &mut out)?;
    out.sync_all()
}

/// The folder holding `docker-compose.yml`: the unpack root or its only
/// top folder (vendor tarballs usually wrap the release in one).
fn release_root(dest: &Path) -> Result<PathBuf> {
    if has_compose_file(dest) {
        return Ok(dest.to_path_buf());
    }
    let subdirs: Vec<PathBuf> = fs::read_dir(dest)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    if let [only] = subdirs.as_slice() {
        if has_compose_file(only) {
            return Ok(only.clone());
        }
    }
    bail!("the bundle holds no docker-compose.yml (at its top or in its single top folder): it is not a release bundle")
}

/// The compose file name of a release folder, if any.
pub fn compose_file_in(dir: &Path) -> Option<PathBuf> {
    [
        "docker-compose.yml",
        "docker-compose.yaml",
        "compose.yml",
        "compose.yaml",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

fn has_compose_file(dir: &Path) -> bool {
    compose_file_in(dir).is_some()
}

/// Checks every file listed in `root/SHA256SUMS` (sha256sum's format).
/// Returns how many files were verified (0 when there is no SHA256SUMS).
pub fn verify_checksums(root: &Path) -> Result<usize> {
    let sums = root.join("SHA256SUMS");
    let text = match fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).context("reading SHA256SUMS"),
    };
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (expected, name) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("SHA256SUMS line `{line}` is not `<digest>  <file>`"))?;
        let name = name.trim_start().trim_start_matches('*');
        let rel = untar::relative(Path::new(name)).map_err(Refused::from)?;
        let path = root.join(&rel);
        if !path.is_file() {
            bail!("SHA256SUMS lists `{name}` but the bundle does not hold it: the bundle is incomplete; fetch it again");
        }
        let actual = sha256_file(&path)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Refused::Checksum {
                file: name.to_string(),
                expected: expected.to_string(),
                actual,
            }
            .into());
        }
        count += 1;
    }
    Ok(count)
}

/// The image archive a release ships, if any.
pub fn image_archive_in(dir: &Path) -> Option<PathBuf> {
    ["containers.tar", "containers.tar.gz", "containers.tar.zst"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data_or_target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if kind.is_symlink() {
                h.set_size(0);
                b.append_link(&mut h, path, data_or_target).unwrap();
            } else {
                h.set_size(data_or_target.len() as u64);
                // append_data would normalise `..`; write the raw name.
                let name = h.as_old_mut().name.as_mut();
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, data_or_target.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8]) -> Result<PathBuf> {
        let dir = tempfile::tempdir().unwrap().keep();
        let tar = dir.join("b.tar");
        fs::write(&tar, bytes).unwrap();
        let out = dir.join("out");
        fs::create_dir(&out).unwrap();
        unpack(&tar, &out)
    }

    const F: tar::EntryType = tar::EntryType::Regular;
    const L: tar::EntryType = tar::EntryType::Symlink;

    #[test]
    fn unpacks_a_wrapped_release() {
        let bytes = tar_with(&[
            ("rel/docker-compose.yml", F, "services: {}\n"),
            ("rel/VERSION", F, "v1\n"),
        ]);
        let root = unpack_bytes(&bytes).unwrap();
        assert!(root.ends_with("rel"));
        assert_eq!(fs::read_to_string(root.join("VERSION")).unwrap(), "v1\n");
    }

    #[test]
    fn refuses_parent_absolute_and_escaping_links() {
        let cases = [
            tar_with(&[("docker-compose.yml", F, "x"), ("../evil", F, "x")]),
            tar_with(&[("docker-compose.yml", F, "x"), ("/tmp/evil", F, "x")]),
            tar_with(&[
                ("docker-compose.yml", F, "x"),
                ("etc/link", L, "../../outside"),
            ]),
            tar_with(&[("docker-compose.yml", F, "x"), ("link", L, "/etc/passwd")]),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let err = unpack_bytes(bytes).unwrap_err();
            let refused = err.chain().any(|e| e.downcast_ref::<Refused>().is_some());
            assert!(refused, "case {i}: {err:#}");
        }
    }

    #[test]
    fn accepts_links_that_stay_inside() {
        let bytes = tar_with(&[("docker-compose.yml", F, "x"), ("a/b/link", L, "../c")]);
        unpack_bytes(&bytes).unwrap();
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "hello").unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        fs::write(dir.path().join("SHA256SUMS"), format!("{good}  a\n")).unwrap();
        assert_eq!(verify_checksums(dir.path()).unwrap(), 1);
        fs::write(dir.path().join("a"), "hellO").unwrap();
        let err = verify_checksums(dir.path()).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch for `a`"), "{err}");
    }
}
