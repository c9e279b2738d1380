//! Planning an upgrade: every check that changes nothing (release and
//! images present, Postgres majors, strategy, disk space, shared volumes).

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::compose::env::parse_env;
use crate::docker::Engine;
use crate::durable;
use crate::instance;
use crate::ops::backup::{self};
use crate::ops::Target;
use crate::postgres::{self};
use crate::release;
use crate::site::Site;

use super::journal::{journal, new_instance_served, next_step, State, Step, Strategy};
use super::pg_upgrade::{self, OldCluster};

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
    /// What the `pg_upgrade` strategy read of the old cluster.
    #[serde(skip)]
    pub pg_upgrade: Option<OldCluster>,
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
    let (strategy, why, pg_upgrade) = choose_strategy(engine, &old, &new, opts.strategy)?;
    if let Some(c) = &pg_upgrade {
        warnings.extend(c.collation_notes.iter().cloned());
    }
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
                Strategy::PgUpgrade => "every volume (Postgres's data into a staging folder of the new volume, after pg_upgrade --check on a physical copy of the running server; the new cluster initialised beside it)",
            },
            old.rec.name,
            new.rec.name
        ),
        format!("stop {} (downtime starts): its services, then Postgres once its rows are counted", old.rec.name),
        match strategy {
            Strategy::Copy => "copy what changed since the pre-copy (Postgres data as files)".to_string(),
            Strategy::Dump => "dump Postgres from the old server and restore it into the new one; copy what changed in the other volumes".to_string(),
            Strategy::PgUpgrade => "copy what changed since the pre-copy; pg_upgrade --link from the staging copy into the new cluster, moved into place with the old settings the new Postgres knows".to_string(),
        },
        format!("start {} on release {} (ports {})", new.rec.name, opts.to, new_ports.join(", ")),
        "verify: containers ready, Postgres answering, row counts equal (downtime ends)".into(),
    ];
    let mut steps = steps;
    if strategy == Strategy::PgUpgrade {
        steps.push("after the downtime: indexes on collations whose version changed rebuilt (REINDEX CONCURRENTLY), then vacuumdb --all --analyze-in-stages".into());
    }
    let plan = Plan {
        old: old.rec.name.clone(),
        new: new.rec.name.clone(),
        from: old.rec.release.clone(),
        to: opts.to.clone(),
        strategy,
        why,
        steps,
        warnings,
        pg_upgrade,
    };
    Ok((plan, old, new))
}

/// The new volumes need room in Docker's data root, and the safety snapshot
/// in the site's repository (compressed and deduplicated, it is smaller
/// than the volumes; their size is the safe bound).
fn check_space(site: &Site, engine: &Engine, old: &Target) -> Result<()> {
    let needed = match old.volume_usage(engine) {
        Ok(sizes) => sizes.values().sum(),
        Err(e) => {
            tracing::warn!(
                "cannot measure the volumes of {} ({e:#}): free space not checked",
                old.rec.name
            );
            return Ok(());
        }
    };
    let root = engine.data_root()?;
    let mut places = vec![(root.clone(), "Docker's data root (the new volumes)")];
    let repo = crate::ops::repository::default_location(site);
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

/// The strategy, why, and for `pg_upgrade` what its preflight read.
type Chosen = (Strategy, String, Option<OldCluster>);

fn choose_strategy(
    engine: &Engine,
    old: &Target,
    new: &Target,
    forced: Option<Strategy>,
) -> Result<Chosen> {
    let (Some(opg), Some(npg)) = (&old.profile.postgres, &new.profile.postgres) else {
        return Ok((
            Strategy::Copy,
            "no Postgres service: volumes are copied".into(),
            None,
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
    let majors = format!("Postgres {old_major} → {new_major}");
    let upgradable = || pg_upgrade::preflight(engine, old, new, (old_major, new_major));
    match forced {
        Some(Strategy::Copy) if !copy_ok => bail!(
            "--strategy copy needs the same Postgres major and image family on both sides; {volume} holds Postgres {old_major} ({old_image}) and release {} runs {new_major} ({new_image}): use --strategy dump",
            new.rec.release
        ),
        Some(Strategy::PgUpgrade) if old_major == new_major => bail!(
            "--strategy pg_upgrade moves a cluster to a newer major; both sides run Postgres {old_major}: use --strategy copy or dump"
        ),
        Some(Strategy::PgUpgrade) => match upgradable()? {
            Ok(c) => Ok((Strategy::PgUpgrade, "chosen with --strategy".into(), Some(c))),
            Err(why) => bail!("--strategy pg_upgrade cannot run: {why}. Use --strategy dump (nothing was changed)"),
        },
        Some(s) => Ok((s, "chosen with --strategy".into(), None)),
        None if copy_ok => Ok((Strategy::Copy, format!("Postgres {old_major} on both sides, same image family: the data volume is copied as it is"), None)),
        None if old_major < new_major => match upgradable()? {
            Ok(c) => Ok((
                Strategy::PgUpgrade,
                format!("{majors}: pg_upgrade --link with the old release's own Postgres {old_major} binaries, whose preflight passed (they run in {new_image})"),
                Some(c),
            )),
            Err(why) => Ok((
                Strategy::Dump,
                format!("{majors}: dump and restore, because pg_upgrade cannot run here: {why}"),
                None,
            )),
        },
        None => Ok((
            Strategy::Dump,
            format!("{majors}{}: dump and restore", if same_family { "" } else { " (another image family)" }),
            None,
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
    let (listed, flags) = instance::own_volume_advice(&new.rec.name, &shared);
    bail!(
        "instance {} would share volumes with {} ({listed}), and the old data the rollback needs \
         would be written over. Give {} volumes of its own with {flags} (upkeep creates and fills \
         them; the old ones are left as they are)",
        new.rec.name,
        old.rec.name,
        new.rec.name
    )
}
