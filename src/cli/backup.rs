//! `upkeep backup`, `upkeep restore` and `upkeep profile`.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::instance::ExternalVolumeArgs;
use super::output::{table, Output};
use super::repository::RepoArgs;
use super::Session;
use crate::docker::Engine;
use crate::instance;
use crate::ops::backup::{self, BackupOptions};
use crate::ops::restore::{self, RestoreOptions};
use crate::ops::{repository, Target};
use crate::profile::PostgresCopies;
use crate::progress::bytes_spinner;
use crate::site::Site;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Instance to back up (see `upkeep status`).
    pub instance: String,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Extra tag for the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Copy volumes without stopping the services that use them.
    #[arg(long)]
    pub online: bool,
    /// Also stream a physical copy of the running Postgres (pg_basebackup,
    /// online); a restore into the same major uses it instead of the dumps.
    /// The same as `--postgres logical+physical`.
    #[arg(long, conflicts_with = "postgres")]
    pub physical: bool,
    /// Which copies of a running Postgres to take: `logical` (pg_dump of
    /// every database, and the roles), `logical+physical` (and
    /// pg_basebackup) or `physical` (pg_basebackup alone: it restores only
    /// into a release with the same Postgres major). Default: the profile's
    /// `[postgres] backup`, else `logical`.
    #[arg(long, value_name = "COPIES")]
    pub postgres: Option<PostgresCopies>,
    /// Dump Postgres and read every volume even when unchanged since the
    /// instance's last snapshot (by default that snapshot's copies are
    /// then reused, not taken again).
    #[arg(long)]
    pub no_reuse: bool,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or prefix, or `latest`).
    pub snapshot: String,
    /// Release to restore into (installed in releases/).
    #[arg(long, value_name = "VERSION")]
    pub into: String,
    /// Instance name; default: the release's default instance.
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub external: ExternalVolumeArgs,
    /// Replace an existing instance (a safety snapshot of it is taken first).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Seconds to wait for containers to become ready.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Instance whose profile to show.
    pub instance: String,
}

pub fn backup(site: &Site, args: &BackupArgs, out: &Output) -> Result<()> {
    let opts = BackupOptions {
        tags: args.tags.clone(),
        online: args.online,
        copies: if args.physical {
            Some(PostgresCopies::LogicalAndPhysical)
        } else {
            args.postgres
        },
        no_reuse: args.no_reuse,
    };
    if args.dry_run {
        let t = Target::load(site, instance::load(site, &args.instance)?)?;
        let steps = backup::dry_run(site, &Engine::connect()?, &t, &opts)?;
        return out.emit(&steps, || {
            let mut text = format!("backup of {} would:", t.rec.name);
            for (i, s) in steps.iter().enumerate() {
                text += &format!("\n  {}. {}", i + 1, s.what);
                if !s.stops.is_empty() {
                    text += &format!(" (stopping {} meanwhile)", s.stops.join(", "));
                }
            }
            text
        });
    }
    let session = Session::open(site, &format!("backup {}", args.instance))?;
    let rec = super::load_instance(site, session.cx().engine, &args.instance)?;
    crate::ownership::Guard::new(site, session.cx().engine)?.check_instance(&rec)?;
    let t = Target::load(site, rec)?;
    let repo = repository::open(Some(site), &args.repo.options(), true)?;
    let bar = bytes_spinner(&format!("backing up {}", t.rec.name));
    let tick = |n: u64| bar.set_position(n);
    let report = backup::backup(&session.cx(), &repo, &t, &opts, Some(&tick))?;
    bar.finish_and_clear();
    out.emit(&report, || {
        let m = &report.manifest;
        let rows: Vec<Vec<String>> = m
            .items
            .iter()
            .map(|i| vec![i.stream.clone(), crate::durable::human_bytes(i.size), i.sha256[..12].to_string()])
            .collect();
        let mut text = format!("snapshot {} of instance {} (release {})\n", report.snapshot.short_id, m.instance, m.release);
        text += &table(&["STREAM", "SIZE", "SHA256"], &rows);
        if let Some(pg) = &m.postgres {
            text += &format!("\nPostgres {} ({})", pg.major, pg.mode);
            if let Some(from) = &pg.dumps_from {
                text += &format!(
                    "\n  unchanged since snapshot {}: its dumps are reused, not taken again (--no-reuse takes them)",
                    short(from)
                );
            }
            for db in pg.databases(m) {
                text += &format!("\n  database {}: {} tables", db.name(&pg.database), db.row_counts.len());
            }
        }
        for (i, from) in m.items.iter().filter_map(|i| Some((i, i.reused_from.as_deref()?))) {
            text += &format!(
                "\nvolume {} unchanged since snapshot {}: not read again (--no-reuse reads it)",
                i.volume.as_deref().unwrap_or(&i.stream),
                short(from)
            );
        }
        if m.compose_edited {
            text += "\nnote: the vendor docker-compose.yml was edited by hand; the edited file is in the snapshot";
        }
        text
    })
}

/// A snapshot id's short form.
fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

pub fn restore(site: &Site, args: &RestoreArgs, out: &Output) -> Result<()> {
    let opts = RestoreOptions {
        into: args.into.clone(),
        as_name: args.as_name.clone(),
        external_volumes: args.external.chosen(),
        force: args.force,
        timeout: Duration::from_secs(args.timeout),
    };
    if args.dry_run {
        let repo = repository::open(Some(site), &args.repo.options(), false)?;
        let steps = restore::plan(site, &Engine::connect()?, &repo, &args.snapshot, &opts)?;
        return out.emit(&steps, || {
            let mut text = format!("restore of {} would:", args.snapshot);
            for (i, s) in steps.iter().enumerate() {
                text += &format!("\n  {}. {s}", i + 1);
            }
            text
        });
    }
    let session = Session::open(
        site,
        &format!("restore {} --into {}", args.snapshot, args.into),
    )?
    .with_compose_soon();
    let repo = repository::open(Some(site), &args.repo.options(), false)?;
    let report = restore::restore(&session.cx(), &repo, &args.snapshot, &opts)?;
    out.emit(&report, || {
        let mut text = format!(
            "restored snapshot {} into instance {} (release {}): {}",
            short(&report.snapshot),
            report.instance.name,
            report.instance.release,
            report.instance.state
        );
        if let Some(from) = report.postgres_from {
            text += &format!("\nPostgres restored from the snapshot's {from} copy");
        }
        if report.tables_verified > 0 {
            text += &format!(
                "\nrow counts of {} tables match the snapshot",
                report.tables_verified
            );
        }
        if !report.tables_unverified.is_empty() {
            text += &format!(
                "\nnot verified (written to while the backup ran): {}",
                report.tables_unverified.join(", ")
            );
        }
        if let Some(s) = &report.safety_snapshot {
            text += &format!("\nsafety snapshot of the replaced instance: {}", short(s));
        }
        if let Some(slowest) = report
            .timeline
            .iter()
            .max_by(|a, b| a.secs.total_cmp(&b.secs))
        {
            text += &format!(
                "\nslowest phase: {} ({:.1}s; -v shows every phase)",
                slowest.name, slowest.secs
            );
        }
        text
    })
}

pub fn profile(site: &Site, args: &ProfileArgs, out: &Output) -> Result<()> {
    let t = Target::load(site, instance::load(site, &args.instance)?)?;
    out.emit(&t.profile, || {
        let mut text = format!(
            "profile {} for instance {} (home {})\nconfig:",
            t.profile.name,
            t.rec.name,
            t.rec.home.display()
        );
        for p in &t.profile.config {
            let present = if t.rec.home.join(p).exists() {
                ""
            } else {
                " (absent, skipped)"
            };
            text += &format!("\n  {p}{present}");
        }
        text += "\nvolumes:";
        for (key, name) in &t.rec.volumes {
            let pg = t
                .profile
                .postgres
                .as_ref()
                .filter(|pg| &pg.data_volume == key);
            let how = how_backed_up(pg, t.profile.is_passive(key));
            text += &format!("\n  {key} → {name}{how}");
        }
        for (key, name) in t.shared_external_volumes() {
            text += &format!(
                "\n  {key} → {name} (external: backed up, never created or removed by a copy)"
            );
        }
        let pg_bind = t.postgres_data_bind();
        text += "\nfolders under the home mounted as data:";
        for bind in t.data_binds() {
            let pg = t
                .profile
                .postgres
                .as_ref()
                .filter(|_| pg_bind.as_deref() == Some(bind.path.as_str()));
            let how = how_backed_up(pg, t.profile.is_passive(&bind.path));
            text += &format!("\n  {} ← {}{how}", bind.path, bind.services.join(", "));
        }
        for host in t.host_binds() {
            text += &format!(
                "\nnot backed up: {} ({}): {}",
                host.source, host.service, host.reason
            );
        }
        match &t.profile.postgres {
            Some(pg) => {
                text += &format!(
                    "\npostgres: service {}, data in {}, credentials from ${}/${}/${}",
                    pg.service,
                    pg.data_bind.as_ref().unwrap_or(&pg.data_volume),
                    pg.user_var,
                    pg.password_var,
                    pg.db_var
                )
            }
            None => text += "\npostgres: none",
        }
        text
    })
}

/// How `upkeep backup` copies a volume or folder: `pg` when it holds the
/// data of the profile's Postgres.
fn how_backed_up(pg: Option<&crate::profile::PostgresProfile>, passive: bool) -> String {
    match pg {
        Some(pg) => format!(" (Postgres data: {} while running)", pg.backup.tools()),
        None if passive => " (passive: copied without stopping the services that mount it)".into(),
        None => " (the services that mount it are stopped while it is copied)".into(),
    }
}
