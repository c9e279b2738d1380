//! Instances: running copies of a release, each its own compose project
//! with its own volume names and host ports. The default copy of a release
//! lives in the release folder (as administrators run it today); further
//! copies (`--as NAME`) get a home of their own under `instances/NAME/`,
//! seeded from the release, so their config and local data never mix.
//!
//! `ports` chooses host ports, `lifecycle` brings instances up and down,
//! `startup` starts containers in dependency order and waits for them.

mod external;
mod lifecycle;
mod ports;
mod startup;

pub use external::{own_volume_advice, parse_mapping, ExternalVolumes};
pub use lifecycle::*;
pub use startup::{start_created, wait_probe, wait_ready, POLL};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bundle::{self, copy_tree};
use crate::compose::naming::{check_project_name, normalize_project_name};
use crate::compose::rewrite::InstanceRewrite;
use crate::compose::runner::Project;
use crate::compose::{Compose, ComposeFile};
use crate::docker::ContainerInfo;
use crate::durable;
use crate::release;
use crate::site::{now_rfc3339, Site, SiteLock};

use ports::assign_ports;

/// What upkeep remembers of an instance (`.upkeep/instances/NAME.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Also the compose project name.
    pub name: String,
    pub release: String,
    /// Compose's project directory: `.env` and relative paths resolve here.
    pub home: PathBuf,
    /// Volume key in the compose file → Docker volume name.
    pub volumes: BTreeMap<String, String>,
    pub ports: Vec<PortAssignment>,
    pub created_at: String,
    /// When upkeep took over this instance, made by hand or by plain
    /// compose (`upkeep adopt`); `None` for instances upkeep made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_at: Option<String>,
}

/// A vendor-published port and the host port this instance uses for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAssignment {
    pub service: String,
    pub index: usize,
    pub host_ip: Option<String>,
    pub vendor_port: u16,
    pub host_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    pub key: String,
    pub name: String,
    pub exists: bool,
    pub size: Option<String>,
    /// The vendor's external volume, used under its own name (not the
    /// instance's: `down` and restores never remove it).
    pub external: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub release: String,
    pub home: PathBuf,
    /// running, starting, unhealthy, stopped or down.
    pub state: String,
    pub containers: Vec<ContainerInfo>,
    pub volumes: Vec<VolumeStatus>,
    pub ports: Vec<PortAssignment>,
    /// An upgrade this instance takes part in, described for people.
    pub upgrade: Option<String>,
}

/// The default instance name of a release: compose's name for its folder.
pub fn default_name(version: &str) -> Result<String> {
    let name = normalize_project_name(version);
    if name.is_empty() {
        bail!("release {version} gives no usable compose project name: pass --as NAME");
    }
    Ok(name)
}

pub(super) fn record_path(site: &Site, name: &str) -> PathBuf {
    site.instance_state_dir().join(format!("{name}.json"))
}

/// The generated effective compose file of an instance.
pub fn effective_file(site: &Site, name: &str) -> PathBuf {
    site.instance_state_dir()
        .join(name)
        .join("docker-compose.yml")
}

/// Loads an instance's record, with a helpful error if there is none.
pub fn load(site: &Site, name: &str) -> Result<InstanceRecord> {
    durable::read_json(&record_path(site, name))?.with_context(|| {
        let known = list(site)
            .map(|l| l.into_iter().map(|r| r.name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        format!(
            "no instance named {name} (known: {}); start one with `upkeep up VERSION [--as NAME]`",
            if known.is_empty() { "none" } else { &known }
        )
    })
}

/// All instance records of the site, sorted by name.
pub fn list(site: &Site) -> Result<Vec<InstanceRecord>> {
    let dir = site.instance_state_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Some(rec) = durable::read_json::<InstanceRecord>(&path)? {
                out.push(rec);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of the instances of `version`.
pub fn names_of_release(site: &Site, version: &str) -> Vec<String> {
    list(site)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.release == version)
        .map(|r| r.name)
        .collect()
}

/// The record for `up VERSION [--as NAME]`: the existing one, or a new one
/// with its home, volume names and host ports chosen (not yet saved).
/// `own_external` gives a copy volumes of its own for the release's
/// external ones (see the `external` module).
pub fn prepare(
    site: &Site,
    version: &str,
    as_name: Option<&str>,
    own_external: &ExternalVolumes,
) -> Result<InstanceRecord> {
    let release_dir = release::release_dir(site, version)?;
    let default = default_name(version)?;
    let name = match as_name {
        Some(n) => {
            check_project_name(n)?;
            n.to_string()
        }
        None => default.clone(),
    };
    if let Some(existing) = durable::read_json::<InstanceRecord>(&record_path(site, &name))? {
        if existing.release != version {
            bail!(
                "instance {name} runs release {}, not {version}: to move it, use \
                 `upkeep upgrade {name} --to {version}`; for another copy, pick a new --as NAME",
                existing.release
            );
        }
        external::check_existing(&vendor_compose(&release_dir)?, &existing, own_external)?;
        return Ok(existing);
    }
    let home = if name == default {
        release_dir.clone()
    } else {
        site.instance_homes_dir().join(&name)
    };
    let compose = vendor_compose(&release_dir)?;
    let mut volumes = BTreeMap::new();
    for key in compose.volume_keys() {
        // The vendor's fixed name is the default copy's, as with plain
        // compose; any other copy gets names of its own.
        let volume = match compose.volume_name(&key) {
            Some(fixed) if name == default => fixed,
            _ => format!("{name}_{key}"),
        };
        volumes.insert(key, volume);
    }
    external::assign(site, &compose, &name, own_external, &mut volumes)?;
    let ports = assign_ports(site, &name, &compose.published_ports()?)?;
    Ok(InstanceRecord {
        name,
        release: version.to_string(),
        home,
        volumes,
        ports,
        created_at: now_rfc3339(),
        adopted_at: None,
    })
}

/// What an instance's volume names owe to the vendor's fixed `name:`s, for
/// plans and `up`: kept by the default copy, replaced for any other.
pub fn naming_notes(site: &Site, rec: &InstanceRecord) -> Result<Vec<String>> {
    let release_dir = site.release_dir(&rec.release);
    let compose = vendor_compose(&release_dir)?;
    let mut notes = Vec::new();
    for (key, volume) in &rec.volumes {
        match compose.volume_name(key) {
            Some(fixed) if &fixed == volume => notes.push(format!(
                "volume {key} keeps the vendor's fixed name {fixed}"
            )),
            Some(fixed) => notes.push(format!(
                "volume {key}: the vendor names it {fixed}; this copy uses {volume} of its own"
            )),
            None => {}
        }
    }
    Ok(notes)
}

/// The record of the instance that replaces `old` on release `version`:
/// named `as_name`, else the release's default name (when `old` is its
/// release's default copy) or `<old>-<release>`; the vendor ports `old`
/// published keep `old`'s host ports, since it replaces it.
pub fn successor(
    site: &Site,
    old: &InstanceRecord,
    version: &str,
    as_name: Option<&str>,
    own_external: &ExternalVolumes,
) -> Result<InstanceRecord> {
    let default = default_name(version)?;
    let name = match as_name {
        Some(n) => n.to_string(),
        None if old.is_default_copy(site) && old.name == default_name(&old.release)? => {
            default.clone()
        }
        None => format!("{}-{default}", old.name),
    };
    check_project_name(&name)?;
    let mut rec = prepare(site, version, Some(&name), own_external)?;
    // A vendor that fixes a volume's name in both releases would have the
    // new instance write into the old one's volume. (Names the administrator
    // chose for external ones are theirs: the upgrade refuses a shared one.)
    for (key, volume) in &mut rec.volumes {
        if !own_external.contains_key(key) && old.volumes.values().any(|v| v == volume) {
            *volume = format!("{}_{key}", rec.name);
        }
    }
    for port in &mut rec.ports {
        let inherited = old
            .ports
            .iter()
            .find(|p| p.service == port.service && p.vendor_port == port.vendor_port)
            .or_else(|| {
                old.ports
                    .iter()
                    .find(|p| p.service == port.service && p.index == port.index)
            });
        if let Some(p) = inherited {
            port.host_port = p.host_port;
        }
    }
    Ok(rec)
}

pub(super) fn vendor_compose(release_dir: &Path) -> Result<ComposeFile> {
    let path = bundle::compose_file_in(release_dir)
        .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
    ComposeFile::load(&path)
}

impl InstanceRecord {
    pub fn project(&self, site: &Site) -> Project {
        Project::new(&self.name, &self.home, &effective_file(site, &self.name))
    }

    pub fn is_default_copy(&self, site: &Site) -> bool {
        self.home == site.release_dir(&self.release)
    }

    /// Writes the effective compose file from the vendor file as it is now.
    pub(super) fn write_effective(&self, site: &Site) -> Result<()> {
        let release_dir = site.release_dir(&self.release);
        let vendor_file = bundle::compose_file_in(&release_dir)
            .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
        // Resolved with the instance's own .env: its ports are remapped.
        let compose = ComposeFile::resolve(
            &Compose::default(),
            &Project::new(&self.name, &self.home, &vendor_file),
        )?;
        let rewrite = InstanceRewrite {
            volume_names: self.volumes.clone(),
            host_ports: self
                .ports
                .iter()
                .map(|p| ((p.service.clone(), p.index), p.host_port))
                .collect(),
            name_prefix: (!self.is_default_copy(site)).then(|| self.name.clone()),
            header: format!(
                "# Generated by upkeep for instance {} from {}/docker-compose.yml; do not edit.\n\
                 # Change the vendor file or the instance's .env instead: this file is rewritten\n\
                 # before every compose command.\n",
                self.name,
                release_dir.display()
            ),
            labels: crate::ownership::labels(site, &self.name),
        };
        let text = compose.effective(&rewrite)?;
        durable::write_atomic(&effective_file(site, &self.name), text.as_bytes(), 0o600)
    }
}

/// Seeds a copy's home from the release: config and local data, not the
/// vendor compose file (the effective file replaces it) nor image archives.
pub(super) fn seed_home(site: &Site, rec: &InstanceRecord) -> Result<()> {
    if rec.home.exists() {
        return Ok(());
    }
    let parent = rec.home.parent().expect("home is under instances/");
    fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}-", rec.name))
        .tempdir_in(parent)?;
    let release_dir = site.release_dir(&rec.release);
    let skip = |rel: &Path| {
        let name = rel.to_string_lossy();
        !(name.starts_with("containers.tar")
            || name == "SHA256SUMS"
            || bundle::compose_file_in(&release_dir).is_some_and(|c| c.ends_with(&*name)))
    };
    copy_tree(&release_dir, staging.path(), Path::new(""), &skip)?;
    fs::rename(staging.keep(), &rec.home)
        .with_context(|| format!("creating instance home {}", rec.home.display()))?;
    durable::sync_dir(parent)?;
    Ok(())
}

/// Saves an instance's record (adoption; everything else saves it on `up`).
pub fn save(site: &Site, _lock: &SiteLock, rec: &InstanceRecord) -> Result<()> {
    durable::write_json(&record_path(site, &rec.name), rec)
}

/// Forgets an instance whose containers and volumes are gone (used when a
/// restore or upgrade that created it is undone).
pub fn remove_record(site: &Site, _lock: &SiteLock, name: &str) -> Result<()> {
    for path in [record_path(site, name), effective_file(site, name)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// True when a record for `name` exists.
pub fn exists(site: &Site, name: &str) -> bool {
    record_path(site, name).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_follow_compose() {
        assert_eq!(default_name("v1.0.0").unwrap(), "v100");
        assert!(default_name("...").is_err());
    }
}
