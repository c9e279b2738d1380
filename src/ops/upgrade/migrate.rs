//! Moving the data in the downtime: volumes and bind-mounted folders
//! copied as files, Postgres copied or dumped and restored.

use std::io;

use anyhow::{Context, Result};

use crate::docker::Engine;
use crate::instance;
use crate::ops::pipe::pipe;
use crate::ops::{Ctx, Target};
use crate::postgres::{self, RowCounts};

use super::{
    journal::{crash_point, save, Journal, Strategy},
    pg_upgrade,
    plan::UpgradeOptions,
    rollback::reset_volumes,
    steps::phase,
};

/// Copies the data folders under the old home into the new one, in the
/// downtime (their services are stopped), through the engine: owners and
/// modes kept. The Postgres data folder of a dump is restored instead.
fn copy_binds(engine: &Engine, old: &Target, new: &Target, strategy: Strategy) -> Result<()> {
    let pg_bind = old.postgres_data_bind();
    let targets = new.data_binds();
    for bind in old.data_binds() {
        if strategy == Strategy::Dump && pg_bind.as_deref() == Some(bind.path.as_str()) {
            continue;
        }
        if !targets.iter().any(|t| t.path == bind.path) {
            tracing::warn!(
                "release {} mounts no {}; {} is left as it is",
                new.rec.release,
                bind.path,
                old.rec.home.join(&bind.path).display()
            );
            continue;
        }
        let image = old.helper_image(None)?;
        pipe(
            |w| {
                let mut tar = engine.read_host_path(&old.rec.home, &bind.path, &image)?;
                io::copy(&mut tar, w).with_context(|| {
                    format!("reading {}", old.rec.home.join(&bind.path).display())
                })?;
                Ok(())
            },
            |r| new.write_bind(engine, &bind.path, r),
        )?;
    }
    Ok(())
}

/// A volume copied as files: key, old volume, new volume, and the folder
/// of the new volume it goes into (`""`: its root).
type VolumeCopy = (String, String, String, &'static str);

/// Volumes copied as files: all but the Postgres data of a dump, which is
/// restored instead; that of `pg_upgrade` goes into its staging folder.
fn file_copied_volumes(old: &Target, new: &Target, strategy: Strategy) -> Vec<VolumeCopy> {
    let pg_key = old.profile.postgres.as_ref().map(|p| &p.data_volume);
    let mut out = Vec::new();
    for (key, from) in &old.data_volumes() {
        let is_pg = Some(key) == pg_key;
        if strategy == Strategy::Dump && is_pg {
            continue;
        }
        let sub = if strategy == Strategy::PgUpgrade && is_pg {
            pg_upgrade::STAGING
        } else {
            ""
        };
        match new.rec.volumes.get(key) {
            Some(to) => out.push((key.clone(), from.clone(), to.clone(), sub)),
            None => tracing::warn!(
                "release {} has no volume {key}; {from} is left as it is",
                new.rec.release
            ),
        }
    }
    out
}

/// Copies the volumes inside the engine, in one helper container: only what
/// changed since `since` when given (after a pre-copy), else in full; through
/// upkeep's own streams when the image lacks the tools.
pub(super) fn copy_volumes(
    engine: &Engine,
    old: &Target,
    new: &Target,
    strategy: Strategy,
    since: Option<i64>,
) -> Result<()> {
    let vols = file_copied_volumes(old, new, strategy);
    let Some((first, _, _, _)) = vols.first() else {
        return Ok(());
    };
    let image = new.helper_image(new.services_mounting(first).first().map(String::as_str))?;
    let pairs: Vec<(&str, &str, &str)> = vols
        .iter()
        .map(|(_, f, t, sub)| (f.as_str(), t.as_str(), *sub))
        .collect();
    if since.is_some() {
        match engine.copy_volumes_into(&pairs, &image, since) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("{e:#}; copying in full instead"),
        }
    }
    if let Err(e) = engine.copy_volumes_into(&pairs, &image, None) {
        if strategy == Strategy::PgUpgrade {
            return Err(e.context("pg_upgrade's staging copy needs sh, find, cp in the new image"));
        }
        tracing::warn!("{e:#}; copying through a tar stream instead");
        for (key, from, to, _) in &vols {
            let from_image =
                old.helper_image(old.services_mounting(key).first().map(String::as_str))?;
            reset_volume(engine, to)?;
            pipe(
                |w| copy_volume_out(engine, from, &from_image, w),
                |r| engine.write_volume(to, &image, r),
            )?;
        }
    }
    Ok(())
}

pub(super) fn migrate(
    cx: &Ctx,
    old: &Target,
    j: &mut Journal,
    opts: &UpgradeOptions,
) -> Result<()> {
    let Ctx {
        site,
        lock,
        engine,
        compose,
    } = *cx;
    let new = Target::load(site, instance::load(site, &j.new)?)?;
    let redo = j.migrate_attempted;
    // A half-done restore (crash) is redone into a fresh cluster; a
    // half-done file copy is redone in full (the full copy empties first).
    if redo && j.strategy == Strategy::Dump {
        reset_volumes(cx, &new.rec)?;
        instance::prepare_project(site, lock, engine, compose, &new.rec)?;
    }
    // The staging copy may be half-linked and the volume's root half
    // filled: a redo starts from an empty volume and copies in full.
    if redo && j.strategy == Strategy::PgUpgrade {
        pg_upgrade::empty_new_volume(engine, &new)?;
    }
    j.migrate_attempted = true;
    j.new_row_counts = None;
    save(site, j)?;
    let since = if redo { None } else { j.precopy_since };
    if let (Strategy::Dump, Some(_), Some(_)) =
        (j.strategy, &old.profile.postgres, &new.profile.postgres)
    {
        return migrate_by_dump(cx, old, &new, j, since, opts);
    }
    if j.strategy == Strategy::PgUpgrade {
        return migrate_by_pg_upgrade(cx, old, &new, j, since);
    }
    crash_point("migrate-data:postgres");
    let what = if since.is_some() {
        "copy what changed since the pre-copy"
    } else {
        "copy the volumes"
    };
    let strategy = j.strategy;
    phase(j, what, || {
        copy_volumes(engine, old, &new, strategy, since)?;
        copy_binds(engine, old, &new, strategy)
    })
}

/// The staging copy completed with what changed (the other volumes too),
/// then `pg_upgrade`.
fn migrate_by_pg_upgrade(
    cx: &Ctx,
    old: &Target,
    new: &Target,
    j: &mut Journal,
    since: Option<i64>,
) -> Result<()> {
    let engine = cx.engine;
    let what = if since.is_some() {
        "copy what changed since the pre-copy (Postgres into its staging folder)"
    } else {
        "copy the volumes (Postgres into its staging folder)"
    };
    phase(j, what, || {
        copy_volumes(engine, old, new, Strategy::PgUpgrade, since)?;
        copy_binds(engine, old, new, Strategy::PgUpgrade)
    })?;
    crash_point("migrate-data:staging");
    pg_upgrade::migrate(cx, old, new, j)
}

/// Dump and restore Postgres; then, at once, stop the old Postgres and copy
/// the other volumes (Postgres mounts them too), and count the new rows.
fn migrate_by_dump(
    cx: &Ctx,
    old: &Target,
    new: &Target,
    j: &mut Journal,
    since: Option<i64>,
    opts: &UpgradeOptions,
) -> Result<()> {
    let engine = cx.engine;
    // A resumed upgrade redoes the dump after the old server was stopped:
    // it starts again, alone (the old instance's services stay stopped).
    let src = match old.running_postgres(engine)? {
        Some(server) => server,
        None => old.start_postgres_alone(cx, opts.timeout)?,
    };
    // Prepared before the downtime (carry-config), unless that was not possible.
    let load = new.postgres_for_load(cx, opts.timeout)?;
    let dst = &load.server;
    let old_counts = phase(
        j,
        "pg_dump piped into pg_restore, database by database ∥ count rows (old)",
        || {
            pipe(
                |w| copy_exec(src.dump_globals(engine)?, w),
                |mut r| dst.restore_globals(engine, &mut r),
            )?;
            let mut all = RowCounts::new();
            for db in src.databases(engine)? {
                dst.make_database(engine, &db)?;
                let (_, counts) = src.on(&db.name).dump_counted(engine, |dump| {
                    pipe(
                        |w| copy_exec(dump, w),
                        |mut r| load.restore_into(&db.name, &mut r),
                    )
                })?;
                all.extend(
                    counts
                        .into_iter()
                        .map(|(t, n)| (postgres::cluster_key(&db.name, &t), n)),
                );
            }
            Ok(all)
        },
    )?;
    j.row_counts = Some(old_counts);
    let pg_ids: Vec<String> = vec![src.container.clone()];
    let strategy = j.strategy;
    let counts = phase(
        j,
        "stop the old Postgres, copy the other volumes ∥ count rows (new), end the load",
        || {
            std::thread::scope(|s| {
                let files = s.spawn(|| {
                    engine.stop_containers(&pg_ids)?;
                    copy_volumes(engine, old, new, strategy, since)?;
                    copy_binds(engine, old, new, strategy)
                });
                let counts = load.server.cluster_row_counts(engine);
                let loaded = counts.and_then(|c| load.finish().map(|()| c));
                files.join().expect("volume copy thread panicked")?;
                loaded
            })
        },
    )?;
    j.new_row_counts = Some(counts);
    crash_point("migrate-data:postgres");
    Ok(())
}

fn copy_exec(mut reader: impl io::Read, w: &mut io::PipeWriter) -> Result<()> {
    io::copy(&mut reader, w)?;
    Ok(())
}

fn copy_volume_out(
    engine: &Engine,
    volume: &str,
    image: &str,
    w: &mut io::PipeWriter,
) -> Result<()> {
    let mut archive = engine.read_volume(volume, image)?;
    io::copy(&mut archive, w).with_context(|| format!("reading volume {volume}"))?;
    Ok(())
}

/// Empties a volume this upgrade created, for a second try at filling it.
fn reset_volume(engine: &Engine, volume: &str) -> Result<()> {
    let labels = engine.volume(volume)?.map(|v| v.labels).unwrap_or_default();
    let (project, key, version) = (
        labels
            .get("com.docker.compose.project")
            .cloned()
            .unwrap_or_default(),
        labels
            .get("com.docker.compose.volume")
            .cloned()
            .unwrap_or_default(),
        labels
            .get("com.docker.compose.version")
            .cloned()
            .unwrap_or_default(),
    );
    engine.remove_volume(volume)?;
    engine.ensure_compose_volume(volume, &project, &key, &version)?;
    Ok(())
}
