//! `upkeep upgrade INSTANCE --to VERSION`: plan → preflight → safety
//! snapshot → stop the old instance → carry config → migrate data → start
//! the new instance → verify. Any failure after the old instance stopped
//! rolls back by itself: the new instance is stopped and the old one, whose
//! folder and volumes were never modified, is started again. Every step is
//! journaled, so after a crash `--resume` continues and `rollback` returns.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::backup::{self, BackupOptions};
use super::carry::{self, CarryReport};
use super::pipe::pipe;
use super::{Ctx, Target};
use crate::compose::env::{parse_env, read_env_text};
use crate::docker::Engine;
use crate::durable;
use crate::instance::{self, InstanceRecord};
use crate::postgres::{self, RowCounts};
use crate::release;
use crate::repo::Repository;
use crate::site::{now_rfc3339, Site};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Preflight,
    SafetySnapshot,
    StopOld,
    CarryConfig,
    /// Volumes copied and the new containers created while the old
    /// instance still runs; the downtime then only copies what changed.
    PreCopy,
    MigrateData,
    StartNew,
    Verify,
}

/// Carrying config and preparing the new instance need no downtime, so they
/// come before the old instance stops.
/// A journal written before `PreCopy` existed lacks it: its next step is
/// then `PreCopy`, which copies the stopped volumes in full, as before.
pub const STEPS: [Step; 8] = [
    Step::Preflight,
    Step::SafetySnapshot,
    Step::CarryConfig,
    Step::PreCopy,
    Step::StopOld,
    Step::MigrateData,
    Step::StartNew,
    Step::Verify,
];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::SafetySnapshot => "safety-snapshot",
            Step::StopOld => "stop-old",
            Step::CarryConfig => "carry-config",
            Step::PreCopy => "pre-copy",
            Step::MigrateData => "migrate-data",
            Step::StartNew => "start-new",
            Step::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Copy the Postgres data volume as it is (same major, same image family).
    Copy,
    /// pg_dump from the old server, pg_restore into the new one.
    Dump,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Running,
    Done,
    RolledBack,
    Failed,
}

/// The upgrade's journal, `.upkeep/upgrades/<old>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub old: String,
    pub new: String,
    pub from: String,
    pub to: String,
    pub strategy: Strategy,
    pub state: State,
    pub done: Vec<Step>,
    pub pid: u32,
    pub started: String,
    pub safety_snapshot: Option<String>,
    /// Row counts of the old database once writes stopped.
    pub row_counts: Option<RowCounts>,
    /// Unix time (seconds) when the old instance stopped serving.
    pub downtime_started: Option<f64>,
    pub downtime_secs: Option<f64>,
    pub carry: Option<CarryReport>,
    pub error: Option<String>,
    /// Data migration has begun at least once (a resume starts it afresh).
    #[serde(default)]
    pub migrate_attempted: bool,
    /// Unix time (whole seconds, at or before the start) of the pre-copy:
    /// paths whose ctime is newer changed after it and are copied again.
    #[serde(default)]
    pub precopy_since: Option<i64>,
    /// Row counts of the new database once its data is in place.
    #[serde(default)]
    pub new_row_counts: Option<RowCounts>,
    /// Where the downtime went, in order: (phase, seconds).
    #[serde(default)]
    pub phases: Vec<(String, f64)>,
    /// Volumes of its own the new instance has for the release's external
    /// ones (`--external-volume`).
    #[serde(default)]
    pub external_volumes: instance::ExternalVolumes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub old: String,
    pub new: String,
    pub from: String,
    pub to: String,
    pub strategy: Strategy,
    pub why: String,
    pub steps: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    pub to: String,
    pub strategy: Option<Strategy>,
    pub as_name: Option<String>,
    /// Volumes of its own for the new release's external ones.
    pub external_volumes: instance::ExternalVolumes,
    pub timeout: Duration,
    /// Replace a new instance left by an earlier upgrade that was rolled
    /// back after it ran (a safety snapshot of it is taken first).
    pub force: bool,
}

fn journal_path(site: &Site, old: &str) -> std::path::PathBuf {
    site.state_dir()
        .join("upgrades")
        .join(format!("{old}.json"))
}

pub fn journal(site: &Site, old: &str) -> Result<Option<Journal>> {
    durable::read_json(&journal_path(site, old))
}

/// Every journal of the site (for `status`).
pub fn journals(site: &Site) -> Result<Vec<Journal>> {
    let dir = site.state_dir().join("upgrades");
    let mut out = Vec::new();
    // a crash while a journal was saved leaves its temporary: not a journal
    let names = durable::names_without_leftovers(&dir).unwrap_or_default();
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        if let Some(j) = durable::read_json::<Journal>(&dir.join(name))? {
            out.push(j);
        }
    }
    Ok(out)
}

/// The journal of the upgrade that involves `name`, as old or new instance.
fn journal_of(site: &Site, name: &str) -> Result<Journal> {
    if let Some(j) = journal(site, name)? {
        return Ok(j);
    }
    journals(site)?
        .into_iter()
        .find(|j| j.new == name)
        .with_context(|| format!("no upgrade of instance {name} is recorded"))
}

fn save(site: &Site, j: &Journal) -> Result<()> {
    durable::write_json(&journal_path(site, &j.old), j)
}

/// Test hook: `UPKEEP_CRASH_AFTER=<step>` kills the process with SIGKILL
/// right after that step is journaled, exactly like `kill -9`.
fn crash_point(step: &str) {
    if std::env::var("UPKEEP_CRASH_AFTER").is_ok_and(|s| s == step) {
        // SAFETY: sending a signal to ourselves has no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Image repository without its tag: `acme/postgres:15` → `acme/postgres`.
fn image_family(image: &str) -> &str {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// Plans the upgrade and runs every check that changes nothing.
pub fn plan(
    site: &Site,
    engine: &Engine,
    old_name: &str,
    opts: &UpgradeOptions,
) -> Result<(Plan, Target, Target)> {
    let old = Target::load(site, instance::load(site, old_name)?)?;
    if let Some(j) = journal(site, old_name)? {
        match j.state {
            State::Running => bail!(
                "an upgrade of {old_name} to {} was interrupted at step {}: run `upkeep upgrade --resume {old_name}` or `upkeep rollback {old_name}`",
                j.to,
                next_step(&j).map(Step::name).unwrap_or("verify")
            ),
            State::Done if j.to == opts.to => bail!("{old_name} was already upgraded to {} as instance {}", j.to, j.new),
            _ => {}
        }
    }
    if old.rec.release == opts.to {
        bail!("instance {old_name} already runs release {}", opts.to);
    }
    release::release_dir(site, &opts.to)?;
    let new_rec = instance::successor(
        site,
        &old.rec,
        &opts.to,
        opts.as_name.as_deref(),
        &opts.external_volumes,
    )?;
    if instance::exists(site, &new_rec.name)
        && journal(site, old_name)?.is_none_or(|j| j.new != new_rec.name)
    {
        bail!(
            "instance {} already exists; choose another name with --as NAME",
            new_rec.name
        );
    }
    let guard = crate::ownership::Guard::new(site, engine)?;
    guard.check_instance(&old.rec)?;
    guard.check_instance(&new_rec)?;
    let mut warnings = instance::naming_notes(site, &new_rec)?;
    if let Some(previous) = journal(site, old_name)?.filter(|p| p.new == new_rec.name) {
        if new_instance_served(&previous) {
            if !opts.force {
                bail!(
                    "instance {} was started by an earlier upgrade of {old_name} that was rolled back afterwards: its volumes may hold rows written while it ran. Upgrading again replaces them: pass --force (a safety snapshot of {} is taken first), or upgrade under another name with --as NAME",
                    new_rec.name,
                    new_rec.name
                );
            }
            warnings.push(format!(
                "{} (left by the earlier, rolled-back upgrade) is replaced: a safety snapshot of it is taken first",
                new_rec.name
            ));
        }
    }
    let new = Target::load(site, new_rec)?;
    refuse_shared_volumes(&old, &new)?;
    let missing: Vec<String> = new
        .images
        .values()
        .filter(|i| !engine.image_exists(i).unwrap_or(false))
        .cloned()
        .collect();
    if !missing.is_empty() {
        bail!(
            "images of release {} are missing: {}; reinstall its bundle",
            opts.to,
            missing.join(", ")
        );
    }
    if release::compose_edited(site, &old.rec.release)? {
        warnings.push(format!(
            "the vendor docker-compose.yml of {} was edited by hand; those edits are not carried (the safety snapshot keeps the edited file)",
            old.rec.release
        ));
    }
    let (strategy, why) = choose_strategy(engine, &old, &new, opts.strategy)?;
    check_space(site, engine, &old)?;
    warnings.extend(env_changes(site, &old, &new)?);
    let new_ports: Vec<String> = new
        .rec
        .ports
        .iter()
        .map(|p| format!("{}:{}", p.service, p.host_port))
        .collect();
    let steps = vec![
        format!("preflight: release {} installed with its images; Postgres versions checked; disk space checked", opts.to),
        format!("safety snapshot of {} (logical, online)", old.rec.name),
        format!(
            "carry config from {} into {} (new defaults where you changed nothing) and prepare {} (volumes{}), while {} still runs",
            old.rec.home.display(),
            new.rec.home.display(),
            new.rec.name,
            if strategy == Strategy::Dump { "; its Postgres initialised" } else { "" },
            old.rec.name
        ),
        format!(
            "pre-copy {} into the new volumes while {} still runs, and create {}'s containers",
            match strategy {
                Strategy::Copy => "every volume",
                Strategy::Dump => "the volumes other than Postgres's data",
            },
            old.rec.name,
            new.rec.name
        ),
        format!("stop {} (downtime starts): its services, then Postgres once its rows are counted", old.rec.name),
        match strategy {
            Strategy::Copy => "copy what changed since the pre-copy (Postgres data as files)".to_string(),
            Strategy::Dump => "dump Postgres from the old server and restore it into the new one; copy what changed in the other volumes".to_string(),
        },
        format!("start {} on release {} (ports {})", new.rec.name, opts.to, new_ports.join(", ")),
        "verify: containers ready, Postgres answering, row counts equal (downtime ends)".into(),
    ];
    let plan = Plan {
        old: old.rec.name.clone(),
        new: new.rec.name.clone(),
        from: old.rec.release.clone(),
        to: opts.to.clone(),
        strategy,
        why,
        steps,
        warnings,
    };
    Ok((plan, old, new))
}

/// The new volumes need room in Docker's data root, and the safety snapshot
/// in the site's repository (compressed and deduplicated, it is smaller
/// than the volumes; their size is the safe bound).
fn check_space(site: &Site, engine: &Engine, old: &Target) -> Result<()> {
    let sizes = engine.volume_bytes();
    let needed: u64 = old
        .data_volumes()
        .values()
        .filter_map(|v| sizes.get(v))
        .sum();
    let root = engine.data_root()?;
    let mut places = vec![(root.clone(), "Docker's data root (the new volumes)")];
    let repo = super::repository::default_location(site);
    if repo.exists() {
        places.push((
            repo.display().to_string(),
            "the backup repository (the safety snapshot)",
        ));
    }
    for (path, what) in places {
        match durable::free_bytes(std::path::Path::new(&path)) {
            Ok(free) if free < needed => bail!(
                "{what} at {path} has {} free but the upgrade needs about {}: free space first (nothing was changed)",
                durable::human_bytes(free),
                durable::human_bytes(needed)
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot check free space of {path}: {e}"),
        }
    }
    Ok(())
}

fn choose_strategy(
    engine: &Engine,
    old: &Target,
    new: &Target,
    forced: Option<Strategy>,
) -> Result<(Strategy, String)> {
    let (Some(opg), Some(npg)) = (&old.profile.postgres, &new.profile.postgres) else {
        return Ok((
            Strategy::Copy,
            "no Postgres service: volumes are copied".into(),
        ));
    };
    let volume = opg.data_bind.as_ref().unwrap_or(&opg.data_volume);
    let old_major = backup::pg_data_major(engine, old)?;
    let new_image = new.helper_image(Some(&npg.service))?;
    let new_major = postgres::image_major(engine, &new_image)?;
    let old_image = old.helper_image(Some(&opg.service))?;
    if new_major < old_major {
        bail!("release {} runs Postgres {new_major}, older than the {old_major} that wrote {volume}: Postgres cannot move to an older major version", new.rec.release);
    }
    let same_family = image_family(&old_image) == image_family(&new_image);
    let copy_ok = old_major == new_major && same_family;
    match forced {
        Some(Strategy::Copy) if !copy_ok => bail!(
            "--strategy copy needs the same Postgres major and image family on both sides; {volume} holds Postgres {old_major} ({old_image}) and release {} runs {new_major} ({new_image}): use --strategy dump",
            new.rec.release
        ),
        Some(s) => Ok((s, "chosen with --strategy".into())),
        None if copy_ok => Ok((Strategy::Copy, format!("Postgres {old_major} on both sides, same image family: the data volume is copied as it is"))),
        None => Ok((
            Strategy::Dump,
            format!("Postgres {old_major} → {new_major}{}: dump and restore", if same_family { "" } else { " (another image family)" }),
        )),
    }
}

/// Keys the new release's `.env` adds or drops, for the plan.
fn env_changes(site: &Site, old: &Target, new: &Target) -> Result<Vec<String>> {
    let old_vendor = vendor_env(site, &old.rec.release)?;
    let new_default =
        parse_env(&std::fs::read_to_string(new.release_dir.join(".env")).unwrap_or_default());
    let mut notes = Vec::new();
    for k in new_default.keys().filter(|k| !old_vendor.contains_key(*k)) {
        notes.push(format!("the new release adds .env key {k} (default kept)"));
    }
    for k in old_vendor.keys().filter(|k| !new_default.contains_key(*k)) {
        notes.push(format!("the new release drops .env key {k}"));
    }
    Ok(notes)
}

fn vendor_env(site: &Site, version: &str) -> Result<crate::compose::env::EnvMap> {
    let path = release::vendor_env_path(site, version);
    Ok(parse_env(
        &std::fs::read_to_string(path).unwrap_or_default(),
    ))
}

/// One line on an upgrade for `status`.
pub fn describe(j: &Journal) -> String {
    let alive =
        std::path::Path::new(&format!("/proc/{}", j.pid)).exists() && j.pid != std::process::id();
    match j.state {
        State::Running if alive => format!("{} → {} in progress (step {})", j.old, j.new, next_step(j).map(Step::name).unwrap_or("verify")),
        State::Running => format!(
            "{} → {} INTERRUPTED before step {}: run `upkeep upgrade --resume {}` or `upkeep rollback {}`",
            j.old,
            j.new,
            next_step(j).map(Step::name).unwrap_or("verify"),
            j.old,
            j.old
        ),
        State::Done => format!("{} ({}) was upgraded to {} ({}); `upkeep rollback {}` returns to the old one", j.old, j.from, j.new, j.to, j.new),
        State::RolledBack => format!("upgrade {} → {} was rolled back{}", j.old, j.to, j.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()),
        State::Failed => format!("upgrade {} → {} failed before changing anything{}", j.old, j.to, j.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()),
    }
}

fn next_step(j: &Journal) -> Option<Step> {
    STEPS.iter().copied().find(|s| !j.done.contains(s))
}

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
            let o = BackupOptions {
                tags: vec!["safety".into(), format!("upgrade-to={}", j.to)],
                online: true,
                physical: false,
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
        Step::Verify => verify(site, engine, j, opts),
    }
}

/// Runs `f` and records how long it took as a phase of the downtime.
fn phase<T>(j: &mut Journal, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
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
    if old.profile.postgres.is_some() && j.strategy == Strategy::Copy {
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
    if j.strategy == Strategy::Copy {
        if let Some(server) = old.running_postgres(engine)? {
            if let Err(e) = server.query(engine, "CHECKPOINT") {
                tracing::warn!("CHECKPOINT before the pre-copy failed ({e:#}); the downtime's copy may be longer");
            }
        }
    }
    // Whole seconds at or before now; a write in the same tick of the
    // kernel's coarse clock as this moment could carry a ctime that is not
    // newer, so the copy starts a few ticks later.
    let since = unix_now().floor() as i64;
    std::thread::sleep(Duration::from_millis(50));
    copy_volumes(engine, old, &new, j.strategy, None)?;
    j.precopy_since = Some(since);
    instance::create_containers(site, compose, &new.rec, &[])
}

/// The new instance must not mount a volume of the old one: a Postgres
/// initialised or restored into it would write over the data the rollback
/// needs. Only an external volume can be shared so (the vendor fixes its
/// name), or one the administrator named with `--external-volume`.
fn refuse_shared_volumes(old: &Target, new: &Target) -> Result<()> {
    let old_volumes = old.data_volumes();
    let shared: Vec<(String, String)> = new
        .data_volumes()
        .into_iter()
        .filter(|(_, name)| old_volumes.values().any(|v| v == name))
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = shared.iter().map(|(k, v)| format!("{k} → {v}")).collect();
    let flags: Vec<String> = shared
        .iter()
        .map(|(k, _)| format!("--external-volume {k}={}_{k}", new.rec.name))
        .collect();
    bail!(
        "instance {} would share volumes with {} ({}), and the old data the rollback needs would \
         be written over. Give {} volumes of its own with {} (upkeep creates and fills them; the \
         old ones are left as they are)",
        new.rec.name,
        old.rec.name,
        listed.join(", "),
        new.rec.name,
        flags.join(" ")
    )
}

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

/// Volumes copied as files (key, old volume, new volume): all but the
/// Postgres data of a dump, which is restored instead.
fn file_copied_volumes(
    old: &Target,
    new: &Target,
    strategy: Strategy,
) -> Vec<(String, String, String)> {
    let pg_key = old.profile.postgres.as_ref().map(|p| &p.data_volume);
    let mut out = Vec::new();
    for (key, from) in &old.data_volumes() {
        if strategy == Strategy::Dump && Some(key) == pg_key {
            continue;
        }
        match new.rec.volumes.get(key) {
            Some(to) => out.push((key.clone(), from.clone(), to.clone())),
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
fn copy_volumes(
    engine: &Engine,
    old: &Target,
    new: &Target,
    strategy: Strategy,
    since: Option<i64>,
) -> Result<()> {
    let vols = file_copied_volumes(old, new, strategy);
    let Some((first, _, _)) = vols.first() else {
        return Ok(());
    };
    let image = new.helper_image(new.services_mounting(first).first().map(String::as_str))?;
    let pairs: Vec<(&str, &str)> = vols
        .iter()
        .map(|(_, f, t)| (f.as_str(), t.as_str()))
        .collect();
    if since.is_some() {
        match engine.copy_volumes(&pairs, &image, since) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!("{e:#}; copying in full instead"),
        }
    }
    if let Err(e) = engine.copy_volumes(&pairs, &image, None) {
        tracing::warn!("{e:#}; copying through a tar stream instead");
        for (key, from, to) in &vols {
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

fn migrate(cx: &Ctx, old: &Target, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
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
    j.migrate_attempted = true;
    j.new_row_counts = None;
    save(site, j)?;
    let since = if redo { None } else { j.precopy_since };
    if let (Strategy::Dump, Some(_), Some(_)) =
        (j.strategy, &old.profile.postgres, &new.profile.postgres)
    {
        return migrate_by_dump(cx, old, &new, j, since, opts);
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

/// Row counts equal (downtime ends), then Docker's own view of the new
/// instance: every container running and, by its health check as Docker
/// runs it, healthy.
fn verify(site: &Site, engine: &Engine, j: &mut Journal, opts: &UpgradeOptions) -> Result<()> {
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
    Ok(())
}

/// Down the new instance and empty its volumes (only volumes this upgrade created).
fn reset_volumes(cx: &Ctx, new: &InstanceRecord) -> Result<()> {
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

/// The new instance of `j` has run: rolled back after it started.
fn new_instance_served(j: &Journal) -> bool {
    j.state == State::RolledBack && j.done.contains(&Step::StartNew)
}

/// A safety snapshot of the new instance of an earlier upgrade, before an
/// upgrade again replaces it.
fn snapshot_before_replacing(cx: &Ctx, repo: &Repository, j: &Journal) -> Result<()> {
    let target = Target::load(cx.site, instance::load(cx.site, &j.new)?)?;
    let opts = BackupOptions {
        tags: vec!["safety".into(), format!("before-upgrade-again={}", j.new)],
        ..Default::default()
    };
    let report = backup::backup(cx, repo, &target, &opts, None)?;
    tracing::warn!(
        "safety snapshot {} of {} taken before replacing it",
        report.snapshot.short_id,
        j.new
    );
    Ok(())
}

/// Removes what an earlier, failed attempt created for the new instance.
fn clear_new(cx: &Ctx, name: &str) -> Result<()> {
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

fn rollback_journal(cx: &Ctx, j: &mut Journal, timeout: Duration) -> Result<()> {
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
