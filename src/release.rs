//! Releases: vendor versions unpacked side by side in `releases/<version>/`.
//! Installing unpacks a bundle into a temporary folder beside its final
//! place, verifies it, loads its images, records the vendor compose file's
//! digest (to spot hand edits later) and only then renames it into place.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bundle;
use crate::compose::ComposeFile;
use crate::docker::Engine;
use crate::durable::{self, free_bytes, human_bytes};
use crate::progress::{bytes_bar, Counted};
use crate::site::{now_rfc3339, Site, SiteLock};

/// What upkeep remembers of an installed release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub version: String,
    pub installed_at: String,
    pub bundle: String,
    /// File name of the vendor compose file and its SHA-256 as shipped.
    pub compose_file: String,
    pub compose_sha256: String,
    pub image_archive: Option<String>,
    /// What the engine said while loading (`Loaded image: …`).
    pub loaded: Vec<String>,
    /// SHA-256 of every file as shipped (image archives excepted), so an
    /// upgrade can tell the administrator's edits from vendor defaults.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// One installed release as `upkeep releases` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseStatus {
    pub version: String,
    pub path: PathBuf,
    /// Service → image reference.
    pub images: BTreeMap<String, String>,
    pub missing_images: Vec<String>,
    /// The vendor compose file differs from what the bundle shipped.
    pub compose_edited: bool,
    pub instances: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct InstallOptions {
    /// Version to install as when the bundle has no VERSION file.
    pub version: Option<String>,
    /// Skip `docker load` (images already present, or loaded elsewhere).
    pub skip_load: bool,
}

/// Result of an install, for the CLI to report.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub version: String,
    pub path: PathBuf,
    pub checksums_verified: usize,
    pub loaded: Vec<String>,
}

/// A release version must be a plain folder name.
pub fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version != "."
        && version != ".."
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        bail!("`{version}` is not a usable release version: use letters, digits, '.', '_', '+', '-' (e.g. v2.10.5)");
    }
    Ok(())
}

/// Installs `bundle` into the site. Refuses, leaving the site unchanged, a
/// bundle that is unsafe, damaged, or a version that is already installed.
pub fn install(
    site: &Site,
    _lock: &SiteLock,
    engine: &Engine,
    bundle_path: &Path,
    opts: &InstallOptions,
) -> Result<Installed> {
    let releases = site.releases_dir();
    fs::create_dir_all(&releases)?;
    remove_stale_staging(&releases)?;
    // Beside the final place, so the last step is an atomic rename; removed
    // on every early return by TempDir's drop.
    let staging = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(&releases)
        .context("creating a staging folder in releases/")?;
    let root = bundle::unpack(bundle_path, staging.path())?;
    let version = bundle_version(&root, opts.version.as_deref())?;
    let final_dir = site.release_dir(&version);
    if final_dir.exists() {
        bail!(
            "release {version} is already installed at {}; upkeep never overwrites a release. \
             To reinstall it, move that folder away first",
            final_dir.display()
        );
    }
    let checksums_verified = bundle::verify_checksums(&root)?;
    let compose_path = bundle::compose_file_in(&root).expect("unpack found it");
    let compose = ComposeFile::load(&compose_path)?;
    compose.images()?;
    let archive = bundle::image_archive_in(&root);
    let loaded = match (&archive, opts.skip_load) {
        (Some(archive), false) => load_archive(engine, archive)?,
        _ => Vec::new(),
    };
    let record = ReleaseRecord {
        version: version.clone(),
        installed_at: now_rfc3339(),
        bundle: bundle_path.display().to_string(),
        compose_file: file_name(&compose_path),
        compose_sha256: durable::sha256_file(&compose_path)?,
        image_archive: archive.as_deref().map(file_name),
        loaded: loaded.clone(),
        files: vendor_files(&root)?,
    };
    // The vendor's .env as shipped: the baseline for merging config on upgrade.
    if let Ok(env) = fs::read(root.join(".env")) {
        durable::write_atomic(&vendor_env_path(site, &version), &env, 0o600)?;
    }
    // Record first: a crash before the rename leaves a record without a
    // folder, which listing ignores and the next install overwrites.
    durable::write_json(&record_path(site, &version), &record)?;
    fs::rename(&root, &final_dir)
        .with_context(|| format!("moving the release into {}", final_dir.display()))?;
    durable::sync_dir(&releases)?;
    Ok(Installed {
        version,
        path: final_dir,
        checksums_verified,
        loaded,
    })
}

/// The `bundle` of a release recorded by adoption without its bundle.
pub const UNPACKED_BY_HAND: &str = "unpacked by hand";

/// What adopting a release folder unpacked by hand found.
#[derive(Debug, Clone, Serialize)]
pub struct HandUnpacked {
    pub version: String,
    /// Compared with a bundle: the files that differ from what it ships.
    pub edited: Vec<String>,
    /// True when no bundle was given, so hand edits cannot be told apart.
    pub unverified: bool,
}

/// Records a release folder that was unpacked by hand (no record yet, or
/// one made by an earlier adoption without the bundle).
/// Without the vendor's bundle its files are taken as they are now, so hand
/// edits of the compose file cannot be detected; with `bundle`, the
/// bundle's digests and `.env` are recorded and the differences reported.
/// The release folder itself is never changed.
pub fn record_hand_unpacked(
    site: &Site,
    _lock: &SiteLock,
    version: &str,
    bundle_path: Option<&Path>,
) -> Result<HandUnpacked> {
    let dir = release_dir(site, version)?;
    let compose_path = bundle::compose_file_in(&dir)
        .with_context(|| format!("{} holds no docker-compose.yml", dir.display()))?;
    let (files, vendor_env, origin) = match bundle_path {
        Some(path) => {
            let scratch = tempfile::Builder::new()
                .prefix(".adopt-")
                .tempdir_in(site.state_dir())?;
            let root = bundle::unpack(path, scratch.path())?;
            bundle::verify_checksums(&root)?;
            let env = fs::read(root.join(".env")).ok();
            (vendor_files(&root)?, env, path.display().to_string())
        }
        None => (vendor_files(&dir)?, None, UNPACKED_BY_HAND.to_string()),
    };
    let compose_file = file_name(&compose_path);
    let now = vendor_files(&dir)?;
    let edited: Vec<String> = files
        .iter()
        .filter(|(path, digest)| now.get(*path).is_some_and(|d| d != *digest))
        .map(|(path, _)| path.clone())
        .collect();
    let record = ReleaseRecord {
        version: version.to_string(),
        installed_at: now_rfc3339(),
        bundle: origin,
        compose_sha256: files
            .get(&compose_file)
            .cloned()
            .unwrap_or(durable::sha256_file(&compose_path)?),
        compose_file,
        image_archive: bundle::image_archive_in(&dir).as_deref().map(file_name),
        loaded: Vec::new(),
        files,
    };
    if let Some(env) = vendor_env {
        durable::write_atomic(&vendor_env_path(site, version), &env, 0o600)?;
    }
    durable::write_json(&record_path(site, version), &record)?;
    Ok(HandUnpacked {
        version: version.to_string(),
        edited,
        unverified: bundle_path.is_none(),
    })
}

/// Staging folders of installs that died (we hold the lock, so no live run
/// owns one); they hold only a partial copy of a bundle.
fn remove_stale_staging(releases: &Path) -> Result<()> {
    for entry in fs::read_dir(releases)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(".incoming-") && path.is_dir() {
            tracing::warn!(
                "removing {} left by an install that was interrupted",
                path.display()
            );
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale staging folder {}", path.display()))?;
        }
    }
    Ok(())
}

fn bundle_version(root: &Path, flag: Option<&str>) -> Result<String> {
    let from_file = match fs::read_to_string(root.join("VERSION")) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading VERSION"),
    };
    let version = match (from_file, flag) {
        (Some(file), Some(flag)) if file != flag => bail!(
            "the bundle says it is {file} (its VERSION file) but --version says {flag}: \
             check you have the right bundle, or drop --version"
        ),
        (Some(v), _) => v,
        (None, Some(flag)) => flag.to_string(),
        (None, None) => bail!("the bundle has no VERSION file: pass --version VERSION"),
    };
    check_version(&version)?;
    Ok(version)
}

/// Streams the archive into the engine after checking Docker's free space.
fn load_archive(engine: &Engine, archive: &Path) -> Result<Vec<String>> {
    let size = fs::metadata(archive)?.len();
    let name = file_name(archive);
    // Loaded layers take about the uncompressed size; a compressed archive
    // is assumed to expand threefold (its own size field wraps at 4 GiB).
    let needed = if name.ends_with(".tar") {
        size
    } else {
        size.saturating_mul(3)
    };
    let root = engine.data_root()?;
    match free_bytes(Path::new(&root)) {
        Ok(free) if free < needed => bail!(
            "Docker's data root {root} has {} free but loading {name} needs about {}: free \
             space (e.g. `docker image prune`) or move Docker's data root, then install again",
            human_bytes(free),
            human_bytes(needed)
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot check free space of {root} (remote engine?): {e}"),
    }
    let file = BufReader::with_capacity(1 << 20, File::open(archive)?);
    let bar = bytes_bar(size, &format!("loading {name}"));
    let counted = Counted {
        inner: file,
        bar: bar.clone(),
    };
    let loaded = if name.ends_with(".zst") {
        // Older engines do not read zstd: decompress on the way.
        engine.load_images(zstd::Decoder::new(counted)?)
    } else {
        engine.load_images(counted)
    }
    .with_context(|| format!("loading images from {name}"))?;
    bar.finish_and_clear();
    Ok(loaded)
}

/// Digests of the files a release ships, by relative path.
fn vendor_files(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && !rel.starts_with("containers.tar") {
                files.insert(rel, durable::sha256_file(&path)?);
            }
        }
    }
    Ok(files)
}

/// Where the vendor's pristine `.env` of a release is kept.
pub fn vendor_env_path(site: &Site, version: &str) -> PathBuf {
    site.release_records_dir().join(format!("{version}.env"))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn record_path(site: &Site, version: &str) -> PathBuf {
    site.release_records_dir().join(format!("{version}.json"))
}

pub fn record(site: &Site, version: &str) -> Result<Option<ReleaseRecord>> {
    durable::read_json(&record_path(site, version))
}

/// Installed versions, sorted by name.
pub fn versions(site: &Site) -> Result<Vec<String>> {
    let dir = site.releases_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

/// The release folder of `version`, which must be installed.
pub fn release_dir(site: &Site, version: &str) -> Result<PathBuf> {
    check_version(version)?;
    let dir = site.release_dir(version);
    if !dir.is_dir() {
        let known = versions(site)?.join(", ");
        bail!(
            "release {version} is not installed (installed: {}); install its bundle with \
             `upkeep install BUNDLE`",
            if known.is_empty() { "none" } else { &known }
        );
    }
    Ok(dir)
}

/// True when the vendor compose file no longer matches the bundle's.
pub fn compose_edited(site: &Site, version: &str) -> Result<bool> {
    let Some(rec) = record(site, version)? else {
        return Ok(false);
    };
    let path = site.release_dir(version).join(&rec.compose_file);
    Ok(durable::sha256_file(&path)? != rec.compose_sha256)
}

/// Service → image of a release, as compose will resolve them.
pub fn images(dir: &Path) -> Result<BTreeMap<String, String>> {
    let compose_path = bundle::compose_file_in(dir)
        .with_context(|| format!("{} holds no docker-compose.yml", dir.display()))?;
    ComposeFile::load(&compose_path)?.images()
}

/// Status of every installed release; `instances_of` names each one's instances.
pub fn list(
    site: &Site,
    engine: &Engine,
    instances_of: &dyn Fn(&str) -> Vec<String>,
) -> Result<Vec<ReleaseStatus>> {
    let mut out = Vec::new();
    for version in versions(site)? {
        let path = site.release_dir(&version);
        let images = images(&path).unwrap_or_default();
        let mut missing = Vec::new();
        for image in images.values() {
            if !engine.image_exists(image)? && !missing.contains(image) {
                missing.push(image.clone());
            }
        }
        out.push(ReleaseStatus {
            compose_edited: compose_edited(site, &version).unwrap_or(false),
            instances: instances_of(&version),
            version,
            path,
            images,
            missing_images: missing,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_be_plain_folder_names() {
        check_version("v2.10.5").unwrap();
        check_version("1.0.0+build_7").unwrap();
        for bad in ["", "..", ".hidden", "a/b", "v 1"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_file_and_flag_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        assert!(bundle_version(dir.path(), None)
            .unwrap_err()
            .to_string()
            .contains("--version"));
        assert_eq!(bundle_version(dir.path(), Some("v9")).unwrap(), "v9");
        fs::write(dir.path().join("VERSION"), "v1.0.0\n").unwrap();
        assert_eq!(bundle_version(dir.path(), None).unwrap(), "v1.0.0");
        assert!(bundle_version(dir.path(), Some("v2")).is_err());
    }
}
