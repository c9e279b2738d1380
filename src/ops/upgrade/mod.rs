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
pub use plan::{plan, Plan, UpgradeOptions};
pub use rollback::{finished_rollback_warning, rollback};
pub use steps::{resume, run};
