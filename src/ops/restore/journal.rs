//! The journal of a restore in progress, and what clears an interrupted
//! one: only what it created is removed, and only if its instance never
//! started.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::compose::Compose;
use crate::docker::Engine;
use crate::durable;
use crate::instance::{self, InstanceRecord};
use crate::site::{Site, SiteLock};

/// Marks a restore in progress (`.upkeep/journals/NAME.restore.json`) and
/// what it created, so that clearing it after a crash removes nothing else.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Journal {
    pub(super) snapshot: String,
    pub(super) started: String,
    /// Volumes this restore created (written before it creates them);
    /// `None` in a journal of an upkeep that did not record them.
    #[serde(default)]
    pub(super) created_volumes: Option<Vec<String>>,
    /// The instance's containers were started: from then on it is an
    /// instance like any other, whose data only `--force` replaces.
    #[serde(default)]
    pub(super) instance_started: bool,
}

pub(super) fn journal_path(site: &Site, name: &str) -> std::path::PathBuf {
    site.journals_dir().join(format!("{name}.restore.json"))
}

/// Containers, volumes and record of an instance, for a forced replace
/// (after its safety snapshot) or to undo what an interrupted restore made.
pub(super) fn remove_instance(
    site: &Site,
    lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
) -> Result<()> {
    if instance::exists(site, &rec.name) {
        instance::down(site, lock, engine, compose, rec)?;
    }
    let guard = crate::ownership::Guard::new(site, engine)?;
    for volume in rec.volumes.values() {
        guard.check_volume(volume, &rec.name)?;
        engine.remove_volume(volume)?;
    }
    instance::remove_record(site, lock, &rec.name)
}

/// If a restore into `name` died before its instance started, removes what
/// it created (it held only the snapshot's data, still in the repository).
/// One whose instance started (it timed out later, or someone ran it since)
/// is an instance like any other: its journal is dropped and the restore
/// goes on to the existing-instance check (`--force` and a safety snapshot).
pub(super) fn clear_interrupted(
    site: &Site,
    lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    name: &str,
) -> Result<()> {
    let path = journal_path(site, name);
    let Some(j) = durable::read_json::<Journal>(&path)? else {
        return Ok(());
    };
    let short = &j.snapshot[..8.min(j.snapshot.len())];
    let has_run = engine
        .project_containers(name)?
        .iter()
        .any(|c| c.state != "created");
    let created = match (&j.created_volumes, j.instance_started || has_run) {
        (Some(created), false) => created.clone(),
        _ => {
            tracing::warn!(
                "a restore of snapshot {short} into {name} started {} did not finish, but {name} has run since (or the restore predates upkeep's record of what it created): it is kept as it is",
                j.started
            );
            std::fs::remove_file(&path).ok();
            return Ok(());
        }
    };
    tracing::warn!(
        "a restore of snapshot {short} into {name} started {} was interrupted; removing what it created ({}) and starting again",
        j.started,
        created.join(", ")
    );
    if let Ok(mut rec) = instance::load(site, name) {
        rec.volumes.retain(|_, v| created.contains(v));
        remove_instance(site, lock, engine, compose, &rec)?;
    }
    std::fs::remove_file(&path).ok();
    Ok(())
}
