//! Repository commands: `snapshots`, `check`, `forget`, `export`, `import`, `key`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::output::{table, Output};
use crate::durable::human_bytes;
use crate::ops::repository::{self, RepoOptions};
use crate::repo::{KeepPolicy, Verdict};
use crate::site::Site;

/// Where the snapshots are and how to open them.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// Repository: a folder, or s3:http(s)://host[:port]/bucket[/prefix]
    /// (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY). Default: the site's backups/.
    #[arg(long = "repo", env = "UPKEEP_REPO", value_name = "URL")]
    pub url: Option<String>,
    /// File holding the repository password. Default: UPKEEP_PASSWORD, else the site's own.
    #[arg(long, env = "UPKEEP_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl RepoArgs {
    pub fn options(&self) -> RepoOptions {
        RepoOptions {
            url: self.url.clone(),
            password_file: self.password_file.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only snapshots of this instance.
    #[arg(long)]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also read and verify every byte of every pack.
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Also delete the data no snapshot uses any more.
    #[arg(long)]
    pub prune: bool,
    /// Print what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub snapshot: String,
    /// The single file to write (it must not exist).
    pub file: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A file written by `upkeep export`.
    pub file: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn snapshots(site: Option<&Site>, args: &SnapshotsArgs, out: &Output) -> Result<()> {
    let repo = repository::open(site, &args.repo.options(), false)?;
    let mut list = repo.snapshots()?;
    if let Some(name) = &args.instance {
        let tag = format!("instance={name}");
        list.retain(|s| s.tags.contains(&tag));
    }
    out.emit(&list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                vec![
                    s.short_id.clone(),
                    short_time(s.time),
                    s.hostname.clone(),
                    s.tags.join(","),
                    s.total_bytes.map(human_bytes).unwrap_or_default(),
                ]
            })
            .collect();
        table(&["ID", "TIME", "HOST", "TAGS", "SIZE"], &rows)
    })
}

/// `2026-11-25 01:12:20 UTC`: what a person reads in a listing.
fn short_time(t: time::OffsetDateTime) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.to_string())
}

pub fn check(site: Option<&Site>, args: &CheckArgs, out: &Output) -> Result<i32> {
    let repo = repository::open(site, &args.repo.options(), false)?;
    let report = repo.check(args.read_data)?;
    out.emit(&report, || {
        let mut text = format!(
            "{} snapshots, {} packs, {} blobs checked{}",
            report.snapshots,
            report.packs,
            report.blobs,
            if args.read_data {
                format!(", {} read", human_bytes(report.bytes_read))
            } else {
                String::new()
            }
        );
        for e in &report.errors {
            text += &format!("\nerror: {e}");
        }
        for d in &report.damaged {
            text += &format!(
                "\ndamaged: snapshot {} stream {}: {}",
                d.snapshot, d.stream, d.problem
            );
        }
        for u in &report.unreadable {
            text += &format!("\ncould not read: {u}");
        }
        text += match report.verdict() {
            Verdict::Sound => "\nno errors were found",
            Verdict::Damaged => {
                "\nthe repository is damaged: the streams named above cannot be restored intact"
            }
            Verdict::Unreadable => {
                "\nno damage was found, but the storage failed on what is listed above even \
                 after retries, so it was not checked: run `upkeep check` again when the \
                 storage answers"
            }
        };
        text
    })?;
    Ok(match report.verdict() {
        Verdict::Sound => 0,
        Verdict::Damaged => super::EXIT_DAMAGED,
        Verdict::Unreadable => super::EXIT_UNREADABLE,
    })
}

pub fn forget(site: Option<&Site>, args: &ForgetArgs, out: &Output) -> Result<()> {
    let policy = KeepPolicy {
        last: args.keep_last,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        ..Default::default()
    };
    if policy.is_empty() {
        bail!(
            "say what to keep: --keep-last N, --keep-daily N, --keep-weekly N or --keep-monthly N"
        );
    }
    let _lock = site.map(|s| s.lock("forget")).transpose()?;
    let repo = repository::open(site, &args.repo.options(), false)?;
    let report = if args.dry_run {
        repo.forget_plan(policy)?
    } else {
        repo.forget(policy, args.prune)?
    };
    out.emit(&report, || {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut text = format!(
            "keep {} snapshots, {verb} {}",
            report.kept.len(),
            report.removed.len()
        );
        for s in &report.removed {
            text += &format!(
                "\n  {} {} {}",
                s.short_id,
                short_time(s.time),
                s.tags.join(",")
            );
        }
        if let Some(p) = &report.prune {
            text += &format!("\nprune: {p:?}");
        }
        text
    })
}

pub fn export(site: Option<&Site>, args: &ExportArgs, out: &Output) -> Result<()> {
    let opts = args.repo.options();
    let repo = repository::open(site, &opts, false)?;
    let password = repository::password_for(site, &opts)?;
    let info = repo.export(&args.snapshot, &args.file, &password)?;
    out.emit(&info, || {
        format!(
            "exported snapshot {} to {} (same password as the repository)",
            info.short_id,
            args.file.display()
        )
    })
}

pub fn import(site: Option<&Site>, args: &ImportArgs, out: &Output) -> Result<()> {
    let _lock = site.map(|s| s.lock("import")).transpose()?;
    let opts = args.repo.options();
    let repo = repository::open(site, &opts, true)?;
    let password = repository::password_for(site, &opts)?;
    let list = repo.import(&args.file, &password)?;
    out.emit(&list, || {
        list.iter()
            .map(|s| format!("imported snapshot {}", s.short_id))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub fn key(site: &Site, out: &Output) -> Result<()> {
    let password = repository::site_password(site)?;
    eprintln!("warning: this password opens every backup of this site; store it somewhere safe and away from this machine");
    out.emit(&serde_json::json!({ "password": password }), || {
        password.clone()
    })
}
