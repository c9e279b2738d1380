//! `upkeep adopt NAME`: take over an install made by hand or by plain
//! compose (the reference page's `docker-compose -p NAME up -d` in
//! `releases/<version>/`). Compose's labels on its containers say where it
//! runs from; their mounts name its real volumes (whatever `name:` a hand
//! edit gave them) and their bindings its real host ports. Adoption writes
//! only upkeep's own state: the containers, volumes and vendor files stay
//! as they are until the administrator asks for a change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::Ctx;
use crate::bundle;
use crate::compose::ComposeFile;
use crate::docker::{ComposeContainer, Engine};
use crate::instance::{self, InstanceRecord, PortAssignment};
use crate::ownership::{self, Guard, Owner};
use crate::release::{self, HandUnpacked};
use crate::site::{now_rfc3339, Site};

const PROJECT: &str = "com.docker.compose.project";
const SERVICE: &str = "com.docker.compose.service";
const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
const VOLUME_KEY: &str = "com.docker.compose.volume";

/// A compose project on the engine that runs from this site's folders but
/// that upkeep does not manage.
#[derive(Debug, Clone, Serialize)]
pub struct Unmanaged {
    pub project: String,
    pub working_dir: PathBuf,
    /// The release folder it runs from, when it is one.
    pub release: Option<String>,
    pub containers: Vec<String>,
    /// `running` when any container runs, else `stopped`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Adopted {
    pub instance: InstanceRecord,
    /// The release folder was unpacked by hand and is now recorded too.
    pub release: Option<HandUnpacked>,
    pub notes: Vec<String>,
}

/// Compose projects, running or stopped, whose working folder or compose
/// files are in this site's `releases/` or instance homes, that no record
/// names and no other site owns.
pub fn discover(site: &Site, engine: &Engine) -> Result<Vec<Unmanaged>> {
    let guard = Guard::new(site, engine)?;
    let known: BTreeSet<String> = instance::list(site)?.into_iter().map(|r| r.name).collect();
    let mut by_project: BTreeMap<String, Vec<ComposeContainer>> = BTreeMap::new();
    for c in engine.compose_containers()? {
        if let Some(p) = c.label(PROJECT) {
            by_project.entry(p.to_string()).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    for (project, containers) in by_project {
        if known.contains(&project) {
            continue;
        }
        let Some(dir) = site_folder_of(site, &containers) else {
            continue;
        };
        if matches!(
            guard.project_owner(&project)?,
            Some(Owner::OtherSite { .. })
        ) {
            continue;
        }
        out.push(Unmanaged {
            release: release_of(site, &dir),
            state: if containers.iter().any(|c| c.state == "running") {
                "running".into()
            } else {
                "stopped".into()
            },
            containers: containers.iter().map(|c| c.name.clone()).collect(),
            project,
            working_dir: dir,
        });
    }
    Ok(out)
}

/// The working folder of a project when it (or one of its compose files)
/// lies inside this site's releases or instance homes.
fn site_folder_of(site: &Site, containers: &[ComposeContainer]) -> Option<PathBuf> {
    let inside =
        |p: &Path| p.starts_with(site.releases_dir()) || p.starts_with(site.instance_homes_dir());
    containers.iter().find_map(|c| {
        let dir = PathBuf::from(c.label(WORKING_DIR)?);
        let files = c.label(CONFIG_FILES).unwrap_or_default();
        (inside(&dir) || files.split(',').any(|f| inside(&dir.join(f)))).then_some(dir)
    })
}

/// `releases/<version>` → version.
fn release_of(site: &Site, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(site.releases_dir()).ok()?;
    let mut parts = rel.components();
    let version = parts.next()?.as_os_str().to_string_lossy().into_owned();
    parts.next().is_none().then_some(version)
}

/// Takes over compose project `name`: records it with its real project
/// name, volumes, host ports and release, and claims what carries no label.
pub fn adopt(cx: &Ctx, name: &str, bundle_path: Option<&Path>) -> Result<Adopted> {
    let Ctx {
        site, lock, engine, ..
    } = *cx;
    if instance::exists(site, name) {
        bail!("instance {name} is already managed by upkeep in this site (see `upkeep status {name}`)");
    }
    let containers: Vec<ComposeContainer> = engine
        .compose_containers()?
        .into_iter()
        .filter(|c| c.label(PROJECT) == Some(name))
        .collect();
    if containers.is_empty() {
        bail!(
            "the engine has no containers of a compose project named {name}: start it once the \
             way it was installed (e.g. `docker-compose -p {name} up -d` in its release folder), \
             or see `docker ps -a` for the project names compose used"
        );
    }
    let guard = Guard::new(site, engine)?;
    if let Some(owner @ Owner::OtherSite { .. }) = guard.project_owner(name)? {
        return Err(guard.refusal(&format!("compose project {name}"), name, &owner));
    }
    let home = PathBuf::from(
        containers[0]
            .label(WORKING_DIR)
            .context("its containers carry no compose working folder label")?,
    );
    let version = release_of(site, &home).with_context(|| {
        format!(
            "compose project {name} runs from {}, which is not a release folder of this site \
             ({}/<version>/): run `upkeep adopt` in the site that holds it",
            home.display(),
            site.releases_dir().display()
        )
    })?;
    let release_dir = release::release_dir(site, &version)?;
    let compose_path = bundle::compose_file_in(&release_dir)
        .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
    check_config_files(name, &containers, &home, &compose_path)?;
    // As compose resolves it for that project, with the .env in its folder.
    let vendor = ComposeFile::resolve(
        &crate::compose::Compose::default(),
        &crate::compose::runner::Project::new(name, &home, &compose_path),
    )?;
    let volumes = real_volumes(engine, name, &containers, &vendor)?;
    for volume in volumes.values() {
        guard.check_volume_not_foreign(volume, name)?;
    }
    let ports = real_ports(&containers, &vendor)?;
    let now = now_rfc3339();
    let rec = InstanceRecord {
        name: name.to_string(),
        release: version.clone(),
        home,
        volumes,
        ports,
        created_at: now.clone(),
        adopted_at: Some(now),
    };
    let mut notes = Vec::new();
    let recorded = release::record(site, &version)?;
    let by_hand = recorded
        .as_ref()
        .is_none_or(|r| r.bundle == release::UNPACKED_BY_HAND);
    let release = match (recorded, bundle_path) {
        (Some(_), Some(_)) if !by_hand => {
            notes.push(format!(
                "release {version} was installed by upkeep: its bundle digests are already recorded, --bundle is not used"
            ));
            None
        }
        (Some(_), None) => None,
        _ => {
            let r = release::record_hand_unpacked(site, lock, &version, bundle_path)?;
            if r.unverified {
                notes.push(format!(
                    "release {version} was unpacked by hand: without the vendor's bundle, hand edits of \
                     its docker-compose.yml cannot be detected (its files are recorded as they are now). \
                     Run `upkeep adopt {name} --bundle FILE` on the next adoption to compare, or keep \
                     the vendor's bundle at hand for upgrades"
                ));
            }
            for f in &r.edited {
                notes.push(format!("{f} differs from the bundle: edited by hand"));
            }
            Some(r)
        }
    };
    let existing: Vec<String> = rec
        .volumes
        .values()
        .filter(|v| engine.volume(v).ok().flatten().is_some())
        .cloned()
        .collect();
    ownership::claim(site, lock, &[name.to_string()], &existing)?;
    instance::save(site, lock, &rec)?;
    Ok(Adopted {
        instance: rec,
        release,
        notes,
    })
}

/// upkeep runs the vendor's compose file alone: a project started with
/// other files too (an override, `-f extra.yml`) would lose their settings.
fn check_config_files(
    name: &str,
    containers: &[ComposeContainer],
    home: &Path,
    vendor: &Path,
) -> Result<()> {
    for c in containers {
        let files = c.label(CONFIG_FILES).unwrap_or_default();
        // Compose v1 records the paths as given (relative to its folder).
        let others: Vec<&str> = files
            .split(',')
            .filter(|f| !f.is_empty() && home.join(f) != vendor)
            .collect();
        if !others.is_empty() {
            bail!(
                "compose project {name} was started with more compose files than the vendor's {} \
                 ({}): upkeep runs the vendor file alone, so their settings would be lost. Fold \
                 them into the release (or remove them) and start it again, then adopt",
                vendor.display(),
                others.join(", ")
            );
        }
    }
    Ok(())
}

/// Volume key → the volume the containers really mount; for a key no
/// container mounts, the name compose would give it.
fn real_volumes(
    engine: &Engine,
    project: &str,
    containers: &[ComposeContainer],
    vendor: &ComposeFile,
) -> Result<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for c in containers {
        let service = c.label(SERVICE).unwrap_or_default();
        for (volume, target) in &c.volumes {
            let labelled = engine
                .volume(volume)?
                .and_then(|v| v.labels.get(VOLUME_KEY).cloned());
            let key = labelled
                .filter(|k| vendor.volume_keys().contains(k))
                .or_else(|| {
                    vendor.volume_keys().into_iter().find(|k| {
                        vendor
                            .volume_mounts(k)
                            .iter()
                            .any(|(s, t)| s == service && t == target)
                    })
                });
            let Some(key) = key else { continue };
            if let Some(seen) = out.get(&key).filter(|seen| *seen != volume) {
                bail!(
                    "the containers of {project} mount two volumes for {key}: {seen} and {volume}; \
                     bring the project down and up again with one compose file, then adopt"
                );
            }
            out.insert(key, volume.clone());
        }
    }
    for key in vendor.volume_keys() {
        if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(key) {
            let name = vendor
                .volume_name(slot.key())
                .unwrap_or_else(|| format!("{project}_{}", slot.key()));
            slot.insert(name);
        }
    }
    Ok(out)
}

/// The host ports the containers really publish, matched to the vendor's
/// published ports by service and container port.
fn real_ports(
    containers: &[ComposeContainer],
    vendor: &ComposeFile,
) -> Result<Vec<PortAssignment>> {
    let mut out = Vec::new();
    for port in vendor.published_ports()? {
        let Some(vendor_port) = port.published else {
            continue;
        };
        let target: u16 = port.target.parse().unwrap_or(0);
        let proto = port.protocol.clone().unwrap_or_else(|| "tcp".into());
        let bound = containers
            .iter()
            .filter(|c| c.label(SERVICE) == Some(port.service.as_str()))
            .flat_map(|c| c.ports.iter())
            .find(|(private, _, _, p)| *private == target && *p == proto);
        out.push(PortAssignment {
            service: port.service.clone(),
            index: port.index,
            host_ip: port.host_ip.clone(),
            vendor_port,
            host_port: bound
                .map(|(_, public, _, _)| *public)
                .unwrap_or(vendor_port),
        });
    }
    Ok(out)
}
