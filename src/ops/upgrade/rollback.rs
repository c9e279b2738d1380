//! Returning to the old instance, and clearing what an attempt made.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::instance::{self, InstanceRecord};
use crate::ops::backup::{self, BackupOptions};
use crate::ops::{Ctx, Target};
use crate::repo::Repository;

use super::journal::{journal_of, save, Journal, State};

/// Down the new instance and empty its volumes (only volumes this upgrade created).
pub(super) fn reset_volumes(cx: &Ctx, new: &InstanceRecord) -> Result<()> {
    let Ctx {
        site,
        lock,
        engine,
        compose,
    } = *cx;
    let guard = crate::ownership::Guard::new(site, engine)?;
    guard.check_instance(new)?;
    engine.remove_twins(&new.name)?;
    if instance::exists(site, &new.name) && !engine.project_containers(&new.name)?.is_empty() {
        instance::down(site, lock, engine, compose, new)?;
    }
    for v in new.volumes.values() {
        engine.remove_volume(v)?;
    }
    Ok(())
}

/// A safety snapshot of the new instance of an earlier upgrade, before an
/// upgrade again replaces it.
pub(super) fn snapshot_before_replacing(cx: &Ctx, repo: &Repository, j: &Journal) -> Result<()> {
    let target = Target::load(cx.site, instance::load(cx.site, &j.new)?)?;
    let opts = BackupOptions::safety(vec![
        "safety".into(),
        format!("before-upgrade-again={}", j.new),
    ]);
    let report = backup::backup(cx, repo, &target, &opts, None)?;
    tracing::warn!(
        "safety snapshot {} of {} taken before replacing it",
        report.snapshot.short_id,
        j.new
    );
    Ok(())
}

/// Removes what an earlier, failed attempt created for the new instance.
pub(super) fn clear_new(cx: &Ctx, name: &str) -> Result<()> {
    let Ctx { site, lock, .. } = *cx;
    if let Ok(rec) = instance::load(site, name) {
        tracing::warn!(
            "removing instance {name} left by an earlier upgrade attempt that did not finish"
        );
        reset_volumes(cx, &rec)?;
        instance::remove_record(site, lock, name)?;
    }
    Ok(())
}

pub(super) fn rollback_journal(cx: &Ctx, j: &mut Journal, timeout: Duration) -> Result<()> {
    let Ctx {
        site,
        lock,
        engine,
        compose,
    } = *cx;
    if let Ok(new) = instance::load(site, &j.new) {
        instance::down(site, lock, engine, compose, &new)?;
    }
    let old = instance::load(site, &j.old)?;
    for v in old.volumes.values() {
        if engine.volume(v)?.is_none() {
            bail!("volume {v} of {} is gone; cannot roll back", j.old);
        }
    }
    instance::up(site, lock, engine, compose, &old, timeout)?;
    super::pg_upgrade::remove_scratch(engine, &j.new)?;
    j.state = State::RolledBack;
    save(site, j)
}

/// What rolling back a finished upgrade means for the data written since.
pub fn finished_rollback_warning(j: &Journal) -> String {
    format!(
        "the upgrade of {} to {} ({}) finished: rolling back returns to {} with its data as it was when the upgrade stopped it. Rows written to {} since then stay only in {}'s volumes (kept, not deleted). Pass --yes to roll back",
        j.old, j.new, j.to, j.old, j.new, j.new
    )
}

/// `upkeep rollback NAME`: back to the old instance, after a crash or a
/// finished upgrade, while the old instance's volumes exist.
pub fn rollback(cx: &Ctx, name: &str, timeout: Duration, yes: bool) -> Result<Journal> {
    let Ctx { site, engine, .. } = *cx;
    let mut j = journal_of(site, name)?;
    let guard = crate::ownership::Guard::new(site, engine)?;
    guard.check_instance(&instance::load(site, &j.old)?)?;
    if let Ok(new) = instance::load(site, &j.new) {
        guard.check_instance(&new)?;
    }
    if j.state == State::Done && !yes {
        bail!("{}", finished_rollback_warning(&j));
    }
    if j.state == State::RolledBack {
        bail!(
            "the upgrade of {} to {} was already rolled back",
            j.old,
            j.to
        );
    }
    let started = Instant::now();
    rollback_journal(cx, &mut j, timeout)?;
    tracing::info!("rolled back in {:.1}s", started.elapsed().as_secs_f64());
    Ok(j)
}
