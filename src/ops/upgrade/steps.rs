//! Running the steps in order, journaling each; a failure after the old
//! instance stopped rolls back by itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::compose::env::read_env_text;
use crate::docker::Engine;
use crate::durable;
use crate::instance;
use crate::ops::backup::{self, BackupOptions};
use crate::ops::carry::{self, CarryReport};
use crate::ops::{Ctx, Target};
use crate::release;
use crate::repo::Repository;
use crate::site::now_rfc3339;

use super::{
    journal::{
        crash_point, journal, new_instance_served, next_step, save, unix_now, Journal, State, Step,
        Strategy,
    },
    migrate::{copy_volumes, migrate},
    pg_upgrade,
    plan::{Plan, UpgradeOptions},
    rollback::{clear_new, rollback_journal, snapshot_before_replacing},
};

/// Runs a planned upgrade from the start.
pub fn run(cx: &Ctx, repo: &Repository, plan: &Plan, opts: &UpgradeOptions) -> Result<Journal> {
    let site = cx.site;
    let previous = journal(site, &plan.old)?;
    let mut j = Journal {
        old: plan.old.clone(),
        new: plan.new.clone(),
        from: plan.from.clone(),
        to: plan.to.clone(),
        strategy: plan.strategy,
        state: State::Running,
        done: vec![Step::Preflight],
        pid: std::process::id(),
        started: now_rfc3339(),
        safety_snapshot: None,
        row_counts: None,
        downtime_started: None,
        downtime_secs: None,
        carry: None,
        error: None,
        migrate_attempted: false,
        precopy_since: None,
        new_row_counts: None,
        phases: Vec::new(),
        external_volumes: opts.external_volumes.clone(),
        pg_upgrade: plan.pg_upgrade.clone(),
    };
    // A failed earlier attempt may have left the new instance half made;
    // one that served (rolled back after it ran) is kept in a safety
    // snapshot first (`plan` refused it without --force).
    if let Some(p) = previous.filter(|p| p.new == plan.new && p.state != State::Done) {
        if new_instance_served(&p) {
            snapshot_before_replacing(cx, repo, &p)?;
        }
        clear_new(cx, &p.new)?;
    }
    save(site, &j)?;
    crash_point(Step::Preflight.name());
    drive(cx, repo, &mut j, opts)?;
    Ok(j)
}

/// Continues an interrupted upgrade from its first unfinished step.
pub fn resume(cx: &Ctx, repo: &Repository, old: &str, timeout: Duration) -> Result<Journal> {
    let Ctx { site, .. } = *cx;
    let mut j = journal(site, old)?.with_context(|| format!("no upgrade of {old} to resume"))?;
    if j.state != State::Running {
        bail!(
            "the upgrade of {old} to {} is not interrupted (it is {:?})",
            j.to,
            j.state
        );
    }
    j.pid = std::process::id();
    save(site, &j)?;
    let opts = UpgradeOptions {
        to: j.to.clone(),
        strategy: Some(j.strategy),
        as_name: Some(j.new.clone()),
        external_volumes: j.external_volumes.clone(),
        timeout,
        force: false,
    };
    drive(cx, repo, &mut j, &opts)?;
    Ok(j)
}

/// Runs the remaining steps; on failure after the old instance stopped,
/// rolls back and returns the error.
fn drive(cx: &Ctx, repo: &Repository, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
    let Ctx { site, .. } = *cx;
    while let Some(step) = next_step(j) {
        let result = run_step(cx, repo, j, step, opts);
        if let Err(e) = result {
            let msg = format!("{e:#}");
            j.error = Some(format!("step {} failed: {msg}", step.name()));
            if j.done.contains(&Step::StopOld) || step == Step::StopOld {
                let rolled = rollback_journal(cx, j, opts.timeout);
                return match rolled {
                    Ok(()) => Err(e.context(format!(
                        "upgrade of {} to {} failed at step {}; rolled back: {} runs release {} again with its data untouched",
                        j.old, j.to, step.name(), j.old, j.from
                    ))),
                    Err(r) => Err(e.context(format!("upgrade failed at step {} AND the rollback failed: {r:#}; run `upkeep rollback {}`", step.name(), j.old))),
                };
            }
            // The old instance was never stopped; remove what was prepared.
            clear_new(cx, &j.new)?;
            pg_upgrade::remove_scratch(cx.engine, &j.new)?;
            j.state = State::Failed;
            save(site, j)?;
            return Err(e.context(format!(
                "upgrade of {} stopped at step {} before the old instance was touched; it runs on",
                j.old,
                step.name()
            )));
        }
        j.done.push(step);
        save(site, j)?;
        crash_point(step.name());
    }
    j.state = State::Done;
    if j.downtime_secs.is_none() {
        j.downtime_secs = j.downtime_started.map(|t| unix_now() - t);
    }
    save(site, j)
}

fn run_step(
    cx: &Ctx,
    repo: &Repository,
    j: &mut Journal,
    step: Step,
    opts: &UpgradeOptions,
) -> Result<()> {
    let Ctx { site, engine, .. } = *cx;
    let old = Target::load(site, instance::load(site, &j.old)?)?;
    match step {
        Step::Preflight => Ok(()),
        Step::SafetySnapshot => {
            let tags = vec!["safety".into(), format!("upgrade-to={}", j.to)];
            let o = BackupOptions {
                online: true,
                ..BackupOptions::safety(tags)
            };
            let report = backup::backup(cx, repo, &old, &o, None)?;
            j.safety_snapshot = Some(report.snapshot.id);
            Ok(())
        }
        Step::StopOld => stop_old(engine, &old, j),
        Step::CarryConfig => carry_config(cx, &old, j, opts),
        Step::PreCopy => pre_copy(cx, &old, j),
        Step::MigrateData => migrate(cx, &old, j, opts),
        Step::StartNew => start_new(cx, j, opts),
        Step::Verify => verify(cx, j, opts),
    }
}

/// Runs `f` and records how long it took as a phase of the downtime.
pub(super) fn phase<T>(j: &mut Journal, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = f()?;
    j.phases.push((name.to_string(), t.elapsed().as_secs_f64()));
    Ok(out)
}

/// Stops every service but Postgres, counts rows (no more writes), and for
/// the copy strategy stops Postgres too. Through the engine's API, all
/// containers of a group at once: a compose process would add its own
/// start-up time to the downtime.
fn stop_old(engine: &Engine, old: &Target, j: &mut Journal) -> Result<()> {
    let pg_service = old.profile.postgres.as_ref().map(|p| p.service.clone());
    if j.downtime_started.is_none() {
        j.downtime_started = Some(unix_now());
    }
    let containers = engine.project_containers(&old.rec.name)?;
    let running = |postgres: bool| -> Vec<String> {
        containers
            .iter()
            .filter(|c| {
                c.state == "running" && (Some(&c.service) == pg_service.as_ref()) == postgres
            })
            .map(|c| c.id.clone())
            .collect()
    };
    phase(j, "stop the old services", || {
        engine.stop_containers(&running(false))
    })?;
    // A dump counts the old rows while it dumps (nothing writes any more).
    if old.profile.postgres.is_some() && j.strategy.copies_files() {
        if let Some(server) = old.running_postgres(engine)? {
            let counts = phase(j, "count rows (old)", || server.cluster_row_counts(engine))?;
            j.row_counts = Some(counts);
        }
        phase(j, "stop the old Postgres", || {
            engine.stop_containers(&running(true))
        })?;
    }
    Ok(())
}

fn carry_config(cx: &Ctx, old: &Target, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
    let Ctx {
        site,
        lock,
        engine,
        compose,
    } = *cx;
    let new = instance::successor(site, &old.rec, &j.to, Some(&j.new), &j.external_volumes)?;
    instance::prepare_project(site, lock, engine, compose, &new)?;
    let mut report = CarryReport::default();
    let old_vendor_files = release::record(site, &old.rec.release)?
        .map(|r| r.files)
        .unwrap_or_default();
    let new_vendor_files = release::record(site, &j.to)?
        .map(|r| r.files)
        .unwrap_or_default();
    let old_env = read_env_text(&old.rec.home)?;
    let new_default = read_env_text(&site.release_dir(&j.to))?;
    let old_vendor_env = std::fs::read_to_string(release::vendor_env_path(site, &old.rec.release))
        .unwrap_or_default();
    let merged = carry::merge_env(&old_env, &old_vendor_env, &new_default, &mut report);
    durable::write_atomic(&new.home.join(".env"), merged.as_bytes(), 0o600)?;
    carry::carry_files(
        &old.rec.home,
        &new.home,
        &old.profile.config,
        &old_vendor_files,
        &new_vendor_files,
        &mut report,
    )?;
    for c in &report.conflicts {
        tracing::warn!("config conflict: {c}");
    }
    j.carry = Some(report);
    // A new Postgres initialises its cluster on first start: do that now,
    // before the downtime, in a server for the bulk load of the dump (it
    // publishes no port). Its own container only if that is not possible,
    // and not when it publishes a host port: the old instance holds that
    // port until it stops.
    if j.strategy == Strategy::Dump {
        let new = Target::load(site, new)?;
        if let Some(pg) = &new.profile.postgres {
            match new.start_load_twin(cx, opts.timeout) {
                Ok(Some(load)) => load.detach(),
                Ok(None) if !new.rec.ports.iter().any(|p| p.service == pg.service) => {
                    new.start_postgres_alone(cx, opts.timeout)?;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("the new Postgres could not start for the load ({e:#}); it will start in the downtime")
                }
            }
        }
    }
    Ok(())
}

/// Before the downtime: copies the volumes that will be copied as files
/// while the old instance still runs (the copy may be torn; the delta pass
/// in the downtime redoes every path changed since), and creates the new
/// instance's containers and networks, so the downtime only copies what
/// changed and starts containers.
fn pre_copy(cx: &Ctx, old: &Target, j: &mut Journal) -> Result<()> {
    let Ctx {
        site,
        engine,
        compose,
        ..
    } = *cx;
    let new = Target::load(site, instance::load(site, &j.new)?)?;
    // Pages the running server has only in memory (a dump of the safety
    // snapshot sets hint bits on every page it reads) would be written by
    // its shutdown checkpoint, in the downtime, and make whole relation
    // files count as changed. A checkpoint now writes them before the copy.
    if j.strategy.copies_files() {
        if let Some(server) = old.running_postgres(engine)? {
            if let Err(e) = server.query(engine, "CHECKPOINT") {
                tracing::warn!("CHECKPOINT before the pre-copy failed ({e:#}); the downtime's copy may be longer");
            }
        }
    }
    // Whole seconds at or before now; a write in the same tick of the
    // kernel's coarse clock as this moment could carry a ctime that is not
    // newer, so the copy starts a few ticks later.
    if j.strategy == Strategy::PgUpgrade {
        pg_upgrade::check_before_downtime(cx, old, &new, j)?;
        crash_point("pre-copy:check");
    }
    let since = unix_now().floor() as i64;
    std::thread::sleep(Duration::from_millis(50));
    copy_volumes(engine, old, &new, j.strategy, None)?;
    if j.strategy == Strategy::PgUpgrade {
        pg_upgrade::init_new_cluster(engine, old, &new, j)?;
    }
    j.precopy_since = Some(since);
    instance::create_containers(site, compose, &new.rec, &[])
}

/// Starts the new instance's containers in dependency order and, while
/// the other services start, counts the new database's rows.
fn start_new(cx: &Ctx, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
    let new = Target::load(cx.site, instance::load(cx.site, &j.new)?)?;
    let count =
        j.row_counts.is_some() && j.new_row_counts.is_none() && new.profile.postgres.is_some();
    let counts = phase(j, "start the new instance ∥ count rows (new)", || {
        new.start_counting(cx, count, opts.timeout)
    })?;
    if counts.is_some() {
        j.new_row_counts = counts;
    }
    Ok(())
}

/// Row counts equal (downtime ends), then Docker's own view of the new
/// instance: every container running and, by its health check as Docker
/// runs it, healthy.
fn verify(cx: &Ctx, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
    let Ctx { site, engine, .. } = *cx;
    let new = Target::load(site, instance::load(site, &j.new)?)?;
    if let (Some(expected), Some(_)) = (&j.row_counts, &new.profile.postgres) {
        let got = match &j.new_row_counts {
            Some(c) => c.clone(),
            None => {
                let server = new
                    .running_postgres(engine)?
                    .context("the new Postgres is not running")?;
                server.wait_ready(engine, opts.timeout)?;
                server.cluster_row_counts(engine)?
            }
        };
        if &got != expected {
            let diff: Vec<String> = expected
                .iter()
                .filter(|(t, n)| got.get(*t) != Some(n))
                .map(|(t, n)| {
                    format!(
                        "{t}: {n} before, {} after",
                        got.get(t)
                            .map(|m| m.to_string())
                            .unwrap_or("missing".into())
                    )
                })
                .collect();
            bail!("row counts differ after the upgrade: {}", diff.join("; "));
        }
    }
    j.downtime_secs = j.downtime_started.map(|t| unix_now() - t);
    phase(
        j,
        "after the downtime: Docker reports every container healthy",
        || instance::wait_ready(site, engine, &new.rec, opts.timeout),
    )?;
    if j.strategy == Strategy::PgUpgrade {
        pg_upgrade::after_start(cx, &new, j);
    }
    Ok(())
}
