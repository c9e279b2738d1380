//! `upkeep upgrade` and `upkeep rollback`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use super::output::Output;
use super::repository::RepoArgs;
use super::Session;
use crate::instance;
use crate::ops::repository;
use crate::ops::upgrade::{self, Journal, State, Strategy, UpgradeOptions};
use crate::ownership::explain_unknown;
use crate::site::Site;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    Auto,
    Copy,
    Dump,
    #[value(name = "pg_upgrade")]
    PgUpgrade,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Instance to upgrade.
    pub instance: String,
    /// Release to upgrade to (installed in releases/).
    #[arg(long, value_name = "VERSION", required_unless_present = "resume")]
    pub to: Option<String>,
    /// Continue an interrupted upgrade of INSTANCE.
    #[arg(long, conflicts_with_all = ["to", "dry_run", "strategy"])]
    pub resume: bool,
    /// How to move Postgres: copy its volume (same major), pg_upgrade --link
    /// (across majors), or dump and restore.
    #[arg(long, value_enum, default_value = "auto")]
    pub strategy: StrategyArg,
    /// Name of the new instance (default: the new release's default instance).
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub external: super::instance::ExternalVolumeArgs,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Replace a new instance left by an earlier upgrade that was rolled back
    /// after it ran (a safety snapshot of it is taken first).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Seconds to wait for containers to become ready.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The old (or new) instance of an upgrade.
    pub instance: String,
    /// Roll back a finished upgrade without asking (rows written to the new
    /// instance since stay only in its volumes).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub fn upgrade(site: &Site, args: &UpgradeArgs, out: &Output) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    if args.resume {
        let session = Session::open(site, &format!("upgrade --resume {}", args.instance))?;
        let repo = repository::open(Some(site), &args.repo.options(), true)?;
        let j = upgrade::resume(&session.cx(), &repo, &args.instance, timeout)?;
        return report(&j, out);
    }
    let opts = UpgradeOptions {
        to: args.to.clone().expect("clap requires --to"),
        strategy: match args.strategy {
            StrategyArg::Auto => None,
            StrategyArg::Copy => Some(Strategy::Copy),
            StrategyArg::Dump => Some(Strategy::Dump),
            StrategyArg::PgUpgrade => Some(Strategy::PgUpgrade),
        },
        as_name: args.as_name.clone(),
        external_volumes: args.external.chosen(),
        timeout,
        force: args.force,
    };
    let session = Session::open(site, &format!("upgrade {} --to {}", args.instance, opts.to))?;
    super::load_instance(site, session.cx().engine, &args.instance)?;
    let (plan, _, _) = upgrade::plan(site, session.cx().engine, &args.instance, &opts)?;
    if args.dry_run || !out.json {
        let text = {
            let mut t = format!(
                "upgrade {} ({}) → {} ({}), strategy {}: {}",
                plan.old,
                plan.from,
                plan.new,
                plan.to,
                plan.strategy.name(),
                plan.why
            );
            for (i, s) in plan.steps.iter().enumerate() {
                t += &format!("\n  {}. {s}", i + 1);
            }
            for w in &plan.warnings {
                t += &format!("\n  note: {w}");
            }
            t
        };
        if args.dry_run {
            upgrade::discard_plan(session.cx().engine, &plan)?;
            return out.emit(&plan, || text);
        }
        eprintln!("{text}");
    }
    let confirmed = args.yes || confirm()?;
    if !confirmed {
        upgrade::discard_plan(session.cx().engine, &plan)?;
        bail!("upgrade cancelled; nothing was changed");
    }
    let repo = repository::open(Some(site), &args.repo.options(), true)?;
    let j = upgrade::run(&session.cx(), &repo, &plan, &opts)?;
    report(&j, out)
}

fn confirm() -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        eprintln!("this upgrade stops the instance: pass --yes to run it without a terminal to confirm on");
        return Ok(false);
    }
    eprint!("proceed? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn report(j: &Journal, out: &Output) -> Result<()> {
    out.emit(j, || {
        let mut t = format!("upgraded {} ({}) to {} ({})", j.old, j.from, j.new, j.to);
        if let Some(d) = j.downtime_secs {
            t += &format!("\ndowntime: {d:.1}s");
        }
        for (what, secs) in &j.phases {
            t += &format!("\n  {secs:6.2}s  {what}");
        }
        if let Some(c) = &j.carry {
            if !c.env_added.is_empty() {
                t += &format!(
                    "\nnew .env keys with their defaults: {}",
                    c.env_added.join(", ")
                );
            }
            if !c.env_carried.is_empty() {
                t += &format!("\nyour .env values carried: {}", c.env_carried.join(", "));
            }
            if !c.env_dropped.is_empty() {
                t += &format!(
                    "\n.env keys the new release no longer has, kept at the end of .env: {}",
                    c.env_dropped.join(", ")
                );
            }
            for x in &c.conflicts {
                t += &format!("\nconflict: {x}");
            }
        }
        t += &format!(
            "\nthe old instance {} is stopped and unchanged; `upkeep rollback {}` returns to it",
            j.old, j.new
        );
        t
    })
}

pub fn rollback(site: &Site, args: &RollbackArgs, out: &Output) -> Result<()> {
    let session = Session::open(site, &format!("rollback {}", args.instance))?;
    let journals: Vec<_> = upgrade::journals(site)?
        .into_iter()
        .filter(|j| j.old == args.instance || j.new == args.instance)
        .collect();
    // Another site's instance, or one made by hand, is named as such; an
    // unknown name gets rollback's own "no upgrade recorded".
    if journals.is_empty() && !instance::exists(site, &args.instance) {
        if let Some(e) = explain_unknown(site, session.cx().engine, &args.instance) {
            return Err(e);
        }
    }
    let finished = journals.into_iter().find(|j| j.state == State::Done);
    let mut yes = args.yes;
    if let (Some(j), false) = (&finished, yes) {
        if std::io::stdin().is_terminal() {
            eprintln!("{}", upgrade::finished_rollback_warning(j));
            yes = confirm()?;
            if !yes {
                bail!("rollback cancelled; nothing was changed");
            }
        }
    }
    let j = upgrade::rollback(
        &session.cx(),
        &args.instance,
        Duration::from_secs(args.timeout),
        yes,
    )?;
    out.emit(&j, || {
        format!(
            "rolled back: {} runs release {} again; {} is stopped",
            j.old, j.from, j.new
        )
    })
}
