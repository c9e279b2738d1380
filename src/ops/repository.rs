//! Which repository a command uses and with which password. By default the
//! site's own folder `backups/`, with a random password kept in
//! `.upkeep/repository.password` (mode 0600) and created on first backup.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::durable;
use crate::repo::{RepoLocation, Repository};
use crate::site::Site;

#[derive(Debug, Clone, Default)]
pub struct RepoOptions {
    /// A folder or `s3:http(s)://host[:port]/bucket[/prefix]`.
    pub url: Option<String>,
    /// A file holding the password (first line).
    pub password_file: Option<PathBuf>,
}

pub fn default_location(site: &Site) -> PathBuf {
    site.root().join("backups")
}

pub fn password_path(site: &Site) -> PathBuf {
    site.state_dir().join("repository.password")
}

/// A host without a site (a disaster-recovery host, say) names the
/// repository and its password itself; a site has defaults for both.
fn location(site: Option<&Site>, opts: &RepoOptions) -> Result<RepoLocation> {
    let url = match (&opts.url, site) {
        (Some(u), _) => u.clone(),
        (None, Some(site)) => default_location(site).display().to_string(),
        (None, None) => anyhow::bail!("no upkeep site here: name the repository with --repo URL"),
    };
    Ok(RepoLocation::parse(&url)?)
}

/// The password: `--password-file`, `UPKEEP_PASSWORD`, or the site's file
/// (created with a random password when `create` is set and none exists).
fn password(site: Option<&Site>, opts: &RepoOptions, create: bool) -> Result<String> {
    if let Some(file) = &opts.password_file {
        return read_password(file);
    }
    if let Ok(p) = std::env::var("UPKEEP_PASSWORD") {
        if p.is_empty() {
            anyhow::bail!(
                "UPKEEP_PASSWORD is set but empty: set it to the repository password, or unset it"
            );
        }
        return Ok(p);
    }
    let Some(site) = site else {
        anyhow::bail!(
            "no upkeep site here, so no site password: pass --password-file FILE (or set \
             UPKEEP_PASSWORD) with the password of the repository"
        );
    };
    let path = password_path(site);
    if path.is_file() {
        return read_password(&path);
    }
    if !create {
        anyhow::bail!(
            "no repository password: this site has no {} yet. Pass --password-file FILE (or set \
             UPKEEP_PASSWORD) with the password of the repository",
            path.display()
        );
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let generated = hex::encode(bytes);
    durable::write_atomic(&path, format!("{generated}\n").as_bytes(), 0o600)?;
    tracing::warn!(
        "created a random repository password in {}: keep a copy somewhere else, without it \
         the backups cannot be read (`upkeep key` prints it)",
        path.display()
    );
    Ok(generated)
}

fn read_password(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the repository password from {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        anyhow::bail!(
            "the password file {} is empty (its first line is the password): an empty password \
             protects nothing, so upkeep refuses it; write the repository password into it",
            path.display()
        );
    }
    Ok(password.to_string())
}

/// Opens the repository, creating it (and the site password) if `create`.
pub fn open(site: Option<&Site>, opts: &RepoOptions, create: bool) -> Result<Repository> {
    let loc = location(site, opts)?;
    let password = password(site, opts, create)?;
    let repo = if create {
        Repository::open_or_init(&loc, &password)
    } else {
        Repository::open(&loc, &password)
    };
    repo.with_context(|| format!("opening the repository {loc}"))
}

/// The password `open` used, for commands that write a file with it.
pub fn password_for(site: Option<&Site>, opts: &RepoOptions) -> Result<String> {
    password(site, opts, false)
}

/// The password this site uses for its default repository, for `upkeep key`.
pub fn site_password(site: &Site) -> Result<String> {
    read_password(&password_path(site))
}
