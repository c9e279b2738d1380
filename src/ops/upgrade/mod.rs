//! `upkeep upgrade INSTANCE --to VERSION`: plan → preflight → safety
//! snapshot → stop the old instance → carry config → migrate data → start
//! the new instance → verify. Any failure after the old instance stopped
//! rolls back by itself: the new instance is stopped and the old one, whose
//! folder and volumes were never modified, is started again. Every step is
//! journaled, so after a crash `--resume` continues and `rollback` returns.
//!
//! `plan` checks, `steps` runs the steps and keeps `journal`, `migrate`
//! moves the data in the downtime, `rollback` goes back.

mod journal;
mod migrate;
mod pg_upgrade;
mod plan;
mod rollback;
mod steps;

pub use journal::{describe, journal, journals, Journal, State, Step, Strategy, STEPS};
pub use pg_upgrade::OldCluster;

/// Undoes what planning made (the `pg_upgrade` preflight's scratch
/// volume) when the plan is not run: `--dry-run`, or cancelled.
pub fn discard_plan(engine: &crate::docker::Engine, plan: &Plan) -> anyhow::Result<()> {
    match &plan.pg_upgrade {
        Some(_) => pg_upgrade::remove_scratch(engine, &plan.new),
        None => Ok(()),
    }
}
pub use plan::{plan, Plan, UpgradeOptions};
pub use rollback::{finished_rollback_warning, rollback};
pub use steps::{resume, run};
