//! `pg_upgrade --check` before the downtime. It refuses a cluster that was
//! not shut down cleanly, and the staging copy of a running server is not;
//! so the check runs on a consistent physical copy of the running server
//! (`pg_basebackup`, as `backup --physical` takes it) on the new volume,
//! started once by the old binaries to finish its recovery and stopped
//! cleanly, then removed. A refusal stops the upgrade before the old
//! instance is touched.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::ops::pipe::pipe;
use crate::ops::{Ctx, Target};
use crate::postgres;

use super::super::journal::Journal;
use super::run::{data_volumes, helper};
use super::OldCluster;

/// Where the check copy and its new cluster live on the new volume.
const CHECK: &str = ".upkeep-pg_upgrade/check";

/// As root: an empty folder for the copy.
const MAKE_ROOM: &str = r#"set -eu
W=/v/.upkeep-pg_upgrade
rm -rf "$W/check" "$W/checknew"
mkdir -p "$W/check"
"#;

/// As root: the copy made the new image's `postgres` user's and private,
/// logged in to over the socket only.
const OWN: &str = r#"set -eu
W=/v/.upkeep-pg_upgrade
chown -R postgres:postgres "$W"
chmod 700 "$W/check"
printf 'local all all trust\n' >"$W/check/pg_hba.conf"
"#;

/// As `postgres`: the copy recovered and shut down by the old binaries (no
/// TCP, no archiving), a new cluster beside it, `pg_upgrade --check`, both
/// removed whatever the outcome. `$1` new bindir, `$2` install user, then
/// initdb's options.
const CHECK_SCRIPT: &str = r#"set -u
N=$1 U=$2; shift 2
W=/v/.upkeep-pg_upgrade O=/upkeep-old/bin
cd /tmp || exit 1
clean() { rm -rf "$W/check" "$W/checknew"; }
fail() { echo "$1"; cat /tmp/out; find "$W/checknew/pg_upgrade_output.d" -name '*.txt' 2>/dev/null | while read -r f; do echo "== ${f##*/}"; head -n 40 "$f"; done; clean; exit 2; }
"$O/pg_ctl" -D "$W/check" -w -t 600 -l /tmp/out \
  -o "-c listen_addresses= -c unix_socket_directories=/tmp -c port=50431 -c archive_mode=off" start >/dev/null 2>&1 ||
  fail "the old Postgres could not start on the physical copy:"
"$O/pg_ctl" -D "$W/check" -w -t 600 -m fast stop >/tmp/out 2>&1 || fail "the old Postgres did not stop:"
"$N/initdb" -D "$W/checknew" -U "$U" --auth=trust "$@" >/tmp/out 2>&1 || fail "initdb failed:"
"$N/pg_upgrade" -b "$O" -B "$N" -d "$W/check" -D "$W/checknew" -U "$U" --socketdir=/tmp -p 50432 -P 50433 --check >/tmp/out 2>&1 ||
  fail "pg_upgrade --check refused the cluster:"
clean
"#;

/// Runs the check on a physical copy of the running old server.
pub(in crate::ops::upgrade) fn check_before_downtime(
    cx: &Ctx,
    old: &Target,
    new: &Target,
    j: &Journal,
) -> Result<()> {
    let engine = cx.engine;
    let facts: &OldCluster = j
        .pg_upgrade
        .as_ref()
        .context("the journal lacks the pg_upgrade preflight's facts")?;
    let server = old
        .running_postgres(engine)?
        .with_context(|| format!("the old Postgres of {} is not running", old.rec.name))?;
    let (_, new_volume) = data_volumes(old, new)?;
    let image = new.helper_image(Some(&new.postgres()?.service))?;
    let at_v = [(new_volume.as_str(), "/v", false)];
    let started = Instant::now();
    helper(engine, &image, None, MAKE_ROOM, &[], &at_v)?;
    pipe(
        |w| {
            let mut tar = server.base_backup(engine)?;
            std::io::copy(&mut tar, w).context("reading pg_basebackup's tar")?;
            Ok(())
        },
        |r| engine.write_volume_at(&new_volume, CHECK, &image, r),
    )
    .map_err(|e| postgres::explain_refusal(e, &server.user))
    .context("a physical copy of the old server for pg_upgrade --check")?;
    helper(engine, &image, None, OWN, &[], &at_v)?;
    facts
        .run_with_both(engine, &image, &new_volume, CHECK_SCRIPT)
        .context(
            "pg_upgrade cannot upgrade this cluster (nothing was changed; the old instance runs on): \
             fix what it reports, or run the upgrade again with --strategy dump",
        )?;
    tracing::info!(
        "pg_upgrade --check passed on a physical copy of the running server ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
