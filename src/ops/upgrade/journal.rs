//! The upgrade's steps and its journal (`.upkeep/upgrades/<old>.json`):
//! what is done, what the downtime cost, and where a crash left it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::instance;
use crate::ops::carry::CarryReport;
use crate::postgres::RowCounts;
use crate::site::Site;

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
    /// `pg_upgrade --link` from a staging copy on the new volume, with the
    /// old release's binaries brought out of its image (across majors).
    #[serde(rename = "pg_upgrade")]
    PgUpgrade,
}

impl Strategy {
    /// The name `--strategy` takes and the journal records.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Copy => "copy",
            Strategy::Dump => "dump",
            Strategy::PgUpgrade => "pg_upgrade",
        }
    }

    /// Postgres's data is copied as files in the downtime (then checked
    /// by row counts against the stopped old server).
    pub fn copies_files(self) -> bool {
        self != Strategy::Dump
    }
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
    /// What `pg_upgrade` needs of the old cluster, read by the plan.
    #[serde(default)]
    pub pg_upgrade: Option<super::pg_upgrade::OldCluster>,
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
pub(super) fn journal_of(site: &Site, name: &str) -> Result<Journal> {
    if let Some(j) = journal(site, name)? {
        return Ok(j);
    }
    journals(site)?
        .into_iter()
        .find(|j| j.new == name)
        .with_context(|| format!("no upgrade of instance {name} is recorded"))
}

pub(super) fn save(site: &Site, j: &Journal) -> Result<()> {
    durable::write_json(&journal_path(site, &j.old), j)
}

/// Test hook: `UPKEEP_CRASH_AFTER=<step>` kills the process with SIGKILL
/// right after that step is journaled, exactly like `kill -9`.
pub(super) fn crash_point(step: &str) {
    if std::env::var("UPKEEP_CRASH_AFTER").is_ok_and(|s| s == step) {
        // SAFETY: sending a signal to ourselves has no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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

pub(super) fn next_step(j: &Journal) -> Option<Step> {
    STEPS.iter().copied().find(|s| !j.done.contains(s))
}

/// The new instance of `j` has run: rolled back after it started.
pub(super) fn new_instance_served(j: &Journal) -> bool {
    j.state == State::RolledBack && j.done.contains(&Step::StartNew)
}
