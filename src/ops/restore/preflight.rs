//! Before a restore writes anything: the instance it would write, and the
//! refusals (an existing instance or leftover volumes without --force, a
//! shared external volume, a Postgres major or kind of copy the release
//! cannot take).

use anyhow::{bail, Result};

use super::RestoreOptions;
use crate::docker::Engine;
use crate::instance::{self, InstanceRecord};
use crate::ops::Target;
use crate::postgres;
use crate::site::Site;
use crate::snapshot::{ItemKind, Manifest};

/// The instance a restore would write, refused if it cannot hold `m`,
/// with the Postgres major its release runs.
pub(super) fn checked_target(
    site: &Site,
    engine: &Engine,
    m: &Manifest,
    opts: &RestoreOptions,
) -> Result<(InstanceRecord, Target, Option<u32>)> {
    let rec = instance::prepare(
        site,
        &opts.into,
        opts.as_name.as_deref(),
        &opts.external_volumes,
    )?;
    let target = Target::load(site, rec.clone())?;
    let target_major = check(engine, m, &target, opts.force)?;
    Ok((rec, target, target_major))
}

pub(super) fn refuse_existing(
    rec: &InstanceRecord,
    leftovers: &[String],
    opts: &RestoreOptions,
) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    if leftovers.is_empty() {
        bail!(
            "instance {} already exists; restoring into it replaces its data. Pass --force (a \
             safety snapshot of it is taken first) or restore under a new name with --as NAME",
            rec.name
        );
    }
    bail!(
        "volumes {} of {} already exist although no instance of that name is recorded (left by \
         an earlier instance); restoring would overwrite their data. Pass --force (a safety \
         snapshot of them is taken first) or restore under a new name with --as NAME",
        leftovers.join(", "),
        rec.name
    )
}

/// This site's volumes that a restore into `rec` would overwrite although no
/// instance record names them (another site's or nobody's are refused by the guard).
pub(super) fn leftover_volumes(
    site: &Site,
    engine: &Engine,
    rec: &InstanceRecord,
) -> Result<Vec<String>> {
    if instance::exists(site, &rec.name) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for v in rec.volumes.values() {
        if engine.volume(v)?.is_some() {
            out.push(v.clone());
        }
    }
    Ok(out)
}

/// Refuses a snapshot the target release cannot hold. Returns the Postgres
/// major of the release, when both it and the snapshot have Postgres.
fn check(engine: &Engine, m: &Manifest, target: &Target, force: bool) -> Result<Option<u32>> {
    m.profile.fits(&target.profile)?;
    for (key, name) in target.shared_external_volumes() {
        if !force && engine.volume(&name)?.is_some() {
            bail!(
                "release {} uses the external volume {name} ({key}), and it exists: it holds the \
                 data of the instance that uses it. upkeep neither shares an external volume \
                 between two copies nor overwrites one: restore with --force into the instance \
                 that uses it; or give this copy a volume of its own with --external-volume \
                 {key}={}_{key}; or, if nothing uses it any more, remove it (`docker volume rm \
                 {name}`) and restore again",
                target.rec.release,
                target.rec.name
            );
        }
    }
    let (Some(pg), Some(tpg)) = (&m.postgres, &target.profile.postgres) else {
        return Ok(None);
    };
    let image = target.helper_image(Some(&tpg.service))?;
    let target_major = postgres::image_major(engine, &image)?;
    if pg.major > target_major {
        bail!(
            "the snapshot holds Postgres {} data but release {} runs Postgres {target_major}: a \
             newer major version cannot be restored into an older server. Restore into a release \
             with Postgres {} or newer",
            pg.major,
            target.rec.release,
            pg.major
        );
    }
    if m.item(ItemKind::PostgresDump).is_none() {
        check_physical_only(m, target, pg.major, target_major)?;
    }
    Ok(Some(target_major))
}

/// A snapshot without dumps restores only into the same major, and its
/// pg_basebackup only into a data volume.
fn check_physical_only(m: &Manifest, target: &Target, major: u32, target_major: u32) -> Result<()> {
    let how = if m.item(ItemKind::PostgresBase).is_some() {
        "its pg_basebackup, taken with `backup --postgres physical`"
    } else {
        "its data folder, copied with the instance stopped"
    };
    if major != target_major {
        bail!(
            "the snapshot holds only a physical copy of Postgres {major} data ({how}) and release \
             {} runs Postgres {target_major}: restore into a release with Postgres {major} and \
             then `upkeep upgrade`",
            target.rec.release,
        );
    }
    if m.item(ItemKind::PostgresBase).is_some() && target.postgres_data_bind().is_some() {
        bail!(
            "the snapshot holds only a physical copy of Postgres {major} data ({how}) and release \
             {} keeps Postgres's data in a folder of the instance, not a volume: upkeep writes a \
             pg_basebackup only into a volume. Restore into a release that keeps it in a volume, \
             or back up with the dumps (`backup --postgres logical+physical`)",
            target.rec.release
        );
    }
    Ok(())
}
