//! Command-line interface: argument definitions and one file per command
//! group. Each command calls the library and prints text or `--json`.

mod backup;
mod instance;
mod output;
mod release;
mod repository;
mod upgrade;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::compose::Compose;
use crate::docker::Engine;
use crate::ops::{services, Ctx};
use crate::site::{Site, SiteLock};

/// What a command that changes things works with: the site lock held, the
/// engine and compose connected, and services that an interrupted run left
/// stopped started again.
pub(crate) struct Session<'s> {
    site: &'s Site,
    lock: SiteLock,
    engine: Engine,
    compose: Compose,
}

impl<'s> Session<'s> {
    pub(crate) fn open(site: &'s Site, command: &str) -> Result<Session<'s>> {
        let lock = site.lock(command)?;
        let engine = Engine::connect()?;
        engine.set_owner_labels(crate::ownership::engine_labels(site));
        let compose = Compose::lazy();
        services::recover(site, &engine, &compose)?;
        Ok(Session {
            site,
            lock,
            engine,
            compose,
        })
    }

    /// For a command that runs compose soon: compose is found meanwhile.
    pub(crate) fn with_compose_soon(self) -> Self {
        self.compose.prefetch();
        self
    }

    pub(crate) fn cx(&self) -> Ctx<'_> {
        Ctx {
            site: self.site,
            lock: &self.lock,
            engine: &self.engine,
            compose: &self.compose,
        }
    }
}

/// An instance's record; for a name this site does not know but the engine
/// runs, says whose it is and what to do (adopt it, or `--as`).
pub(crate) fn load_instance(
    site: &Site,
    engine: &Engine,
    name: &str,
) -> Result<crate::instance::InstanceRecord> {
    crate::instance::load(site, name)
        .map_err(|e| crate::ownership::explain_unknown(site, engine, name).unwrap_or(e))
}

/// Exit status for "another run holds the site lock" (or the repository's).
pub const EXIT_BUSY: i32 = 75;
/// Exit status of `check` when it proved damage (sysexits' EX_DATAERR).
pub const EXIT_DAMAGED: i32 = 65;
/// Exit status when the repository's storage could not be read, even after
/// retries (sysexits' EX_IOERR): nothing is known to be damaged.
pub const EXIT_UNREADABLE: i32 = 74;

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Install, run, back up, restore and upgrade self-hosted docker-compose applications",
    long_about = None
)]
pub struct Cli {
    /// The install root (holds releases/); default: found by walking up from
    /// the current folder.
    #[arg(long, global = true, env = "UPKEEP_SITE", value_name = "DIR")]
    pub site: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install a vendor bundle (folder, .tar, .tar.gz, .tar.zst) into releases/<version>/ and load its images.
    Install(release::InstallArgs),
    /// List installed releases, their images and instances.
    Releases,
    /// Start an instance of a release (the release's default copy, or another with --as).
    Up(instance::UpArgs),
    /// Take over an install made by hand or by plain compose in releases/<version>/.
    Adopt(instance::AdoptArgs),
    /// Stop an instance's containers (volumes and containers are kept).
    Stop(instance::NameArgs),
    /// Remove an instance's containers and networks (volumes are kept).
    Down(instance::NameArgs),
    /// Show instances: containers, health, volumes and ports.
    Status(instance::StatusArgs),
    /// Show what a backup of an instance captures (its profile).
    Profile(backup::ProfileArgs),
    /// Back up an instance into a snapshot: config, volumes, Postgres.
    Backup(backup::BackupArgs),
    /// Restore a snapshot into a release, as a new instance (or --force over one).
    Restore(backup::RestoreArgs),
    /// List snapshots in the repository.
    Snapshots(repository::SnapshotsArgs),
    /// Verify the repository's structure (and with --read-data every byte).
    Check(repository::CheckArgs),
    /// Remove snapshots by a retention policy (and with --prune their data).
    Forget(repository::ForgetArgs),
    /// Write one snapshot into a single self-contained file.
    Export(repository::ExportArgs),
    /// Read snapshots from a file written by `upkeep export`.
    Import(repository::ImportArgs),
    /// Print the site's repository password (keep a copy elsewhere).
    Key,
    /// Upgrade an instance to another release: plan, safety snapshot, migrate, verify, roll back on failure.
    Upgrade(upgrade::UpgradeArgs),
    /// Return to the old instance of an upgrade (interrupted, failed or finished).
    Rollback(upgrade::RollbackArgs),
}

/// Runs the parsed command; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let site = || Site::locate(cli.site.as_deref(), &cwd);
    // A repository named with --repo needs no site: a fresh host (disaster
    // recovery) has none yet.
    let repo_site = |repo: &repository::RepoArgs| match site() {
        Ok(s) => Ok(Some(s)),
        Err(_) if repo.url.is_some() && cli.site.is_none() => Ok(None),
        Err(e) => Err(e),
    };
    let out = output::Output { json: cli.json };
    match &cli.command {
        Command::Install(args) => release::install(&site()?, args, &out),
        Command::Releases => release::releases(&site()?, &out),
        Command::Up(args) => instance::up(&site()?, args, &out),
        Command::Adopt(args) => instance::adopt(&site()?, args, &out),
        Command::Stop(args) => instance::stop(&site()?, args, &out),
        Command::Down(args) => instance::down(&site()?, args, &out),
        Command::Status(args) => instance::status(&site()?, args, &out),
        Command::Profile(args) => backup::profile(&site()?, args, &out),
        Command::Backup(args) => backup::backup(&site()?, args, &out),
        Command::Restore(args) => backup::restore(&site()?, args, &out),
        Command::Snapshots(args) => {
            repository::snapshots(repo_site(&args.repo)?.as_ref(), args, &out)
        }
        Command::Check(args) => {
            return repository::check(repo_site(&args.repo)?.as_ref(), args, &out)
        }
        Command::Forget(args) => repository::forget(repo_site(&args.repo)?.as_ref(), args, &out),
        Command::Export(args) => repository::export(repo_site(&args.repo)?.as_ref(), args, &out),
        Command::Import(args) => repository::import(repo_site(&args.repo)?.as_ref(), args, &out),
        Command::Key => repository::key(&site()?, &out),
        Command::Upgrade(args) => upgrade::upgrade(&site()?, args, &out),
        Command::Rollback(args) => upgrade::rollback(&site()?, args, &out),
    }?;
    Ok(0)
}

/// Exit status for an error: busy and unreadable storage get their own so
/// scripts can retry.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let repo_error = || {
        err.chain()
            .find_map(|e| e.downcast_ref::<crate::repo::RepoError>())
    };
    if err
        .chain()
        .any(|e| e.downcast_ref::<crate::site::Busy>().is_some())
        || matches!(repo_error(), Some(crate::repo::RepoError::Locked { .. }))
    {
        EXIT_BUSY
    } else if repo_error().is_some_and(|e| e.is_unreadable()) {
        EXIT_UNREADABLE
    } else {
        1
    }
}
