//! Who owns what on the engine. Everything upkeep creates carries its
//! site's labels (site id, site root, instance); what an install made by
//! hand left there carries none, and volumes cannot be relabelled, so what
//! a site took over with `upkeep adopt` (or made before sites had ids) is
//! listed in its state instead (`.upkeep/owned.json`). Before a command
//! starts, stops, removes, writes or deletes anything, it asks here, and
//! anything owned by another site or by nobody is refused with the way out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::docker::Engine;
use crate::durable;
use crate::instance::InstanceRecord;
use crate::site::{Site, SiteLock, STATE_DIR};

/// The id of the site that created a container, network or volume.
pub const SITE_LABEL: &str = "org.upkeep.site";
/// That site's root folder, so a refusal can say where to go instead.
pub const ROOT_LABEL: &str = "org.upkeep.site-root";
/// The instance it belongs to.
pub const INSTANCE_LABEL: &str = "org.upkeep.instance";
const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";

/// Who owns one thing on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    ThisSite,
    OtherSite {
        id: String,
        root: String,
    },
    /// Made by hand or by plain compose (from `working_dir`, if known).
    Nobody {
        working_dir: Option<String>,
    },
}

/// What this site owns that carries no label of its own.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Compose projects whose containers were made outside upkeep.
    #[serde(default)]
    pub projects: BTreeSet<String>,
    /// Docker volumes made outside upkeep (or by an upkeep without site ids).
    #[serde(default)]
    pub volumes: BTreeSet<String>,
}

fn claims_path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("owned.json")
}

/// The site's claims on what carries no label of its own.
pub fn claims(site: &Site) -> Result<Claims> {
    Ok(durable::read_json(&claims_path(site.root()))?.unwrap_or_default())
}

/// Adds projects and volumes to the site's claims (adoption).
pub fn claim(site: &Site, _lock: &SiteLock, projects: &[String], volumes: &[String]) -> Result<()> {
    let mut c = claims(site)?;
    c.projects.extend(projects.iter().cloned());
    c.volumes.extend(volumes.iter().cloned());
    durable::write_json(&claims_path(site.root()), &c)
}

/// A site made by an upkeep without site ids: what its instance records
/// name was made by it, so it is claimed before the site gets its id.
pub(crate) fn claim_legacy(root: &Path) -> Result<()> {
    #[derive(Deserialize)]
    struct Legacy {
        name: String,
        #[serde(default)]
        volumes: BTreeMap<String, String>,
    }
    let dir = root.join(STATE_DIR).join("instances");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut c: Claims = durable::read_json(&claims_path(root))?.unwrap_or_default();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Ok(Some(rec)) = durable::read_json::<Legacy>(&path) {
            c.projects.insert(rec.name);
            c.volumes.extend(rec.volumes.into_values());
        }
    }
    if c.projects.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "this site predates site ids: claiming what its records name ({} instances)",
        c.projects.len()
    );
    durable::write_json(&claims_path(root), &c)
}

/// The labels that mark something as this site's, for `instance`.
pub fn labels(site: &Site, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SITE_LABEL.to_string(), site.id().to_string()),
        (ROOT_LABEL.to_string(), site.root().display().to_string()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
    ])
}

/// Labels for what upkeep creates through the API itself (helpers, stand-ins).
pub fn engine_labels(site: &Site) -> HashMap<String, String> {
    HashMap::from([
        (SITE_LABEL.to_string(), site.id().to_string()),
        (ROOT_LABEL.to_string(), site.root().display().to_string()),
    ])
}

/// Checks ownership against the engine, with the site's claims loaded once.
pub struct Guard<'a> {
    site: &'a Site,
    engine: &'a Engine,
    claims: Claims,
}

impl<'a> Guard<'a> {
    pub fn new(site: &'a Site, engine: &'a Engine) -> Result<Guard<'a>> {
        Ok(Guard {
            site,
            engine,
            claims: claims(site)?,
        })
    }

    fn owner(&self, labels: &HashMap<String, String>, claimed: bool) -> Owner {
        match labels.get(SITE_LABEL) {
            Some(id) if id == self.site.id() => Owner::ThisSite,
            Some(id) => Owner::OtherSite {
                id: id.clone(),
                root: labels
                    .get(ROOT_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
            },
            None if claimed => Owner::ThisSite,
            None => Owner::Nobody {
                working_dir: labels.get(COMPOSE_WORKING_DIR).cloned(),
            },
        }
    }

    /// Who owns volume `name`; `None` when it does not exist.
    pub fn volume_owner(&self, name: &str) -> Result<Option<Owner>> {
        Ok(self
            .engine
            .volume(name)?
            .map(|v| self.owner(&v.labels, self.claims.volumes.contains(name))))
    }

    /// Who owns the containers of compose project `project` (the first one
    /// not this site's, if any); `None` when it has no containers.
    pub fn project_owner(&self, project: &str) -> Result<Option<Owner>> {
        let claimed = self.claims.projects.contains(project);
        let mut owners = self
            .engine
            .project_labels(project)?
            .into_iter()
            .map(|labels| self.owner(&labels, claimed))
            .peekable();
        if owners.peek().is_none() {
            return Ok(None);
        }
        Ok(Some(
            owners
                .find(|o| *o != Owner::ThisSite)
                .unwrap_or(Owner::ThisSite),
        ))
    }

    /// Refuses when volume `name` exists and is not this site's.
    pub fn check_volume(&self, name: &str, project: &str) -> Result<()> {
        match self.volume_owner(name)? {
            None | Some(Owner::ThisSite) => Ok(()),
            Some(owner) => Err(self.refusal(&format!("volume {name}"), project, &owner)),
        }
    }

    /// Refuses when volume `name` belongs to another site (adoption takes
    /// what nobody owns, never another site's).
    pub fn check_volume_not_foreign(&self, name: &str, project: &str) -> Result<()> {
        match self.volume_owner(name)? {
            Some(owner @ Owner::OtherSite { .. }) => {
                Err(self.refusal(&format!("volume {name}"), project, &owner))
            }
            _ => Ok(()),
        }
    }

    /// Refuses when compose project `project` has containers that are not this site's.
    pub fn check_project(&self, project: &str) -> Result<()> {
        match self.project_owner(project)? {
            None | Some(Owner::ThisSite) => Ok(()),
            Some(owner) => {
                Err(self.refusal(&format!("compose project {project}"), project, &owner))
            }
        }
    }

    /// Refuses unless the instance's containers and existing volumes are all this site's.
    pub fn check_instance(&self, rec: &InstanceRecord) -> Result<()> {
        self.check_project(&rec.name)?;
        for volume in rec.volumes.values() {
            self.check_volume(volume, &rec.name)?;
        }
        Ok(())
    }

    /// Why `thing` is left alone, and what to do instead.
    pub fn refusal(&self, thing: &str, project: &str, owner: &Owner) -> anyhow::Error {
        match owner {
            Owner::ThisSite => anyhow!("{thing} belongs to this site"),
            Owner::OtherSite { id, root } => anyhow!(
                "{thing} belongs to the upkeep site at {root} (site id {id}), not to this one \
                 ({}): upkeep leaves it alone. Manage it from that site, or run a copy of your \
                 own here under another name with `--as NAME`",
                self.site.root().display()
            ),
            Owner::Nobody { working_dir } => anyhow!(
                "{thing} was not made by upkeep in this site (made by hand or by plain compose{}): \
                 upkeep leaves it alone. To manage that install with upkeep, run `upkeep adopt \
                 {project}`; to run a separate copy instead, use `--as NAME`",
                working_dir
                    .as_ref()
                    .map(|d| format!(", from {d}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// An explanation for a name this site has no record of, when the engine
/// has a compose project of that name.
pub fn explain_unknown(site: &Site, engine: &Engine, name: &str) -> Option<anyhow::Error> {
    let guard = Guard::new(site, engine).ok()?;
    match guard.project_owner(name).ok()?? {
        Owner::ThisSite => None,
        owner => Some(guard.refusal(&format!("compose project {name}"), name, &owner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_site_claims_what_its_records_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR).join("instances");
        fs::create_dir_all(&state).unwrap();
        fs::write(
            state.join("v100.json"),
            r#"{"name":"v100","release":"v1.0.0","home":"/x","volumes":{"data":"v100_data"},"ports":[],"created_at":"t"}"#,
        )
        .unwrap();
        let site = Site::create(dir.path()).unwrap();
        let c = claims(&site).unwrap();
        assert!(c.projects.contains("v100"));
        assert!(c.volumes.contains("v100_data"));
        // A new site claims nothing.
        let fresh = tempfile::tempdir().unwrap();
        let fresh = Site::create(fresh.path()).unwrap();
        assert!(claims(&fresh).unwrap().projects.is_empty());
    }
}
