//! The downtime's part of the `pg_upgrade` strategy, and what waits until
//! the new instance serves.

use std::io::Read;

use anyhow::{bail, Context, Result};

use crate::docker::Engine;
use crate::ops::{Ctx, Target};
use crate::postgres::conf;

use super::super::journal::{crash_point, Journal};
use super::super::steps::phase;
use super::{binaries, OldCluster};

/// As root in the new image, on the new volume at /v: the staging folder
/// made the new image's `postgres` user's, before the downtime, so that
/// user can initialise the new cluster in it.
const OWN_STAGING: &str = r#"set -eu
W=/v/.upkeep-pg_upgrade
mkdir -p "$W"
chown postgres:postgres /v "$W"
"#;

/// As `postgres` in the new image, before the downtime: a new cluster
/// initialised beside the staging copy (initdb needs nothing of the old
/// one), marked ready only once initdb succeeded. `$1` new bindir, `$2`
/// install user, then initdb's options.
const INIT_NEW: &str = r#"set -u
N=$1 U=$2; shift 2
W=/v/.upkeep-pg_upgrade
cd /tmp || exit 1
rm -rf "$W/new" "$W/new.ready"
"$N/initdb" -D "$W/new" -U "$U" --auth=trust "$@" >/tmp/out 2>&1 || { echo "initdb failed:"; cat /tmp/out; exit 2; }
touch "$W/new.ready"
"#;

/// As root in the new image, on the new volume at /v: the staging copy
/// made the new image's `postgres` user's and private, and its pg_hba.conf
/// replaced (the copy is ours; pg_upgrade logs in over the socket).
const PREPARE: &str = r#"set -eu
W=/v/.upkeep-pg_upgrade
[ -f "$W/old/PG_VERSION" ] || { echo "no staging copy in $W/old"; exit 3; }
[ "$(stat -c %u "$W/old")" = "$(id -u postgres)" ] || chown -R postgres:postgres "$W/old"
chown postgres:postgres /v "$W"
chmod 700 /v "$W/old"
printf 'local all all trust\n' >"$W/old/pg_hba.conf"
"#;

/// As `postgres` in the new image: `pg_upgrade --link` into the new cluster
/// made before the downtime (initdb now if it is not ready: a redo empties
/// the volume), its checks having run before the downtime on a physical
/// copy (`--link` runs them again itself). The ready mark goes first: a
/// cluster pg_upgrade touched is never used again. It syncs the new cluster
/// itself. `$1` new bindir, `$2` install user, then initdb's options. On
/// failure, pg_upgrade's own reports.
const UPGRADE: &str = r#"set -u
N=$1 U=$2; shift 2
W=/v/.upkeep-pg_upgrade
cd /tmp || exit 1
report() {
  echo "pg_upgrade $1 failed:"; cat /tmp/out
  find "$W/new/pg_upgrade_output.d" -name '*.txt' 2>/dev/null | while read -r f; do echo "== ${f##*/}"; head -n 40 "$f"; done
  exit 2
}
if [ ! -f "$W/new.ready" ]; then
  rm -rf "$W/new"
  "$N/initdb" -D "$W/new" -U "$U" --auth=trust "$@" >/tmp/out 2>&1 || { echo "initdb failed:"; cat /tmp/out; exit 2; }
fi
rm -f "$W/new.ready"
set -- -b /upkeep-old/bin -B "$N" -d "$W/old" -D "$W/new" -U "$U" --socketdir=/tmp -p 50432 -P 50433 -j 2
"$N/pg_upgrade" "$@" --link >/tmp/out 2>&1 || report --link
"#;

/// Before the downtime, after the pre-copy: the new cluster initialised,
/// so the downtime runs only `pg_upgrade --link`.
pub(in crate::ops::upgrade) fn init_new_cluster(
    engine: &Engine,
    old: &Target,
    new: &Target,
    j: &Journal,
) -> Result<()> {
    let facts = j
        .pg_upgrade
        .as_ref()
        .context("the journal lacks the pg_upgrade preflight's facts")?;
    let (_, new_volume) = data_volumes(old, new)?;
    let new_image = new.helper_image(Some(&new.postgres()?.service))?;
    let started = std::time::Instant::now();
    helper(
        engine,
        &new_image,
        None,
        OWN_STAGING,
        &[],
        &[(new_volume.as_str(), "/v", false)],
    )?;
    facts
        .run_with_both(engine, &new_image, &new_volume, INIT_NEW)
        .context("initialising the new cluster for pg_upgrade")?;
    tracing::info!(
        "new Postgres {} cluster initialised before the downtime ({:.1}s)",
        facts.new_major,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// As root in the new image, the old volume read-only at /from: the new
/// cluster moved into the volume's root by rename, the staging copy
/// removed, the carried settings written, pg_hba.conf, pg_ident.conf and
/// the old folder's certificates and other .conf files copied (never
/// recovery signals or a backup label).
const INTO_PLACE: &str = r#"set -eu
W=/v/.upkeep-pg_upgrade C=/v/.upkeep-carry
[ -f "$W/new/PG_VERSION" ] || { echo "no upgraded cluster in $W/new"; exit 3; }
cd "$W/new"
for e in * .[!.]* ..?*; do
  if [ -e "$e" ] || [ -L "$e" ]; then mv "$e" /v/; fi
done
cd /
rm -rf "$W"
cat "$C/postgresql.conf" >>/v/postgresql.conf
cat "$C/postgresql.auto.conf" >/v/postgresql.auto.conf
rm -rf "$C"
for f in /from/pg_hba.conf /from/pg_ident.conf; do [ ! -f "$f" ] || cp -p "$f" /v/; done
for f in /from/*; do
  b=${f##*/}
  case "$b" in *.crt|*.key|*.pem|*.conf) [ -f "$f" ] && [ ! -e "/v/$b" ] && cp -p "$f" "/v/$b" ;; esac
done
chown postgres:postgres /v /v/postgresql.conf /v/postgresql.auto.conf
chmod 700 /v
chmod 600 /v/postgresql.conf /v/postgresql.auto.conf
sync -f /v 2>/dev/null || sync
"#;

/// The downtime's part: the staging copy is complete (the caller copied
/// what changed); pg_upgrade, then the new cluster into place.
pub(in crate::ops::upgrade) fn migrate(
    cx: &Ctx,
    old: &Target,
    new: &Target,
    j: &mut Journal,
) -> Result<()> {
    let engine = cx.engine;
    let facts = j
        .pg_upgrade
        .clone()
        .context("the journal lacks the pg_upgrade preflight's facts")?;
    let (old_volume, new_volume) = data_volumes(old, new)?;
    let new_image = new.helper_image(Some(&new.postgres()?.service))?;
    let old_image = old.helper_image(Some(&old.postgres()?.service))?;
    // A resume may find the scratch volume gone (removed by hand).
    let lost = engine.volume(&facts.scratch_volume)?.is_none();
    if lost {
        tracing::warn!(
            "the scratch volume {} is gone: bringing the old binaries out again",
            facts.scratch_volume
        );
    }
    if let Err(why) = if lost {
        binaries::prepare(
            engine,
            &facts.scratch_volume,
            &new.rec.name,
            &old_image,
            facts.old_major,
            &new_image,
            &facts.new_bindir,
        )?
    } else {
        Ok(())
    } {
        bail!("{why}; roll back and run again with --strategy dump");
    }
    let at_v = [(new_volume.as_str(), "/v", false)];
    phase(j, "pg_upgrade --link into a new cluster", || {
        helper(engine, &new_image, None, PREPARE, &[], &at_v)?;
        facts
            .run_with_both(engine, &new_image, &new_volume, UPGRADE)
            .context("pg_upgrade refused the old cluster; the upgrade rolls back: run it again with --strategy dump")
    })?;
    crash_point("migrate-data:pg_upgrade");
    let notes = phase(
        j,
        "move the new cluster into place, carry pg_hba.conf and settings",
        || {
            let notes = write_carried(engine, &facts, &old_volume, &new_volume, &new_image)?;
            let mounts = [
                (new_volume.as_str(), "/v", false),
                (old_volume.as_str(), "/from", true),
            ];
            helper(engine, &new_image, None, INTO_PLACE, &[], &mounts)?;
            Ok(notes)
        },
    )?;
    for n in notes {
        tracing::warn!("setting not carried to Postgres {}: {n}", facts.new_major);
    }
    Ok(())
}

/// Empties the new Postgres data volume (its containers, created in the
/// pre-copy, keep it mounted, so it is not removed) for a redo.
pub(in crate::ops::upgrade) fn empty_new_volume(engine: &Engine, new: &Target) -> Result<()> {
    let pg = new.postgres()?;
    let volume =
        new.rec.volumes.get(&pg.data_volume).with_context(|| {
            format!("instance {} has no volume {}", new.rec.name, pg.data_volume)
        })?;
    let image = new.helper_image(Some(&pg.service))?;
    helper(
        engine,
        &image,
        None,
        "cd /v && find . ! -name . -prune -exec rm -rf {} +",
        &[],
        &[(volume.as_str(), "/v", false)],
    )
    .with_context(|| format!("emptying volume {volume} for a fresh copy"))
}

/// The old and new Postgres data volumes.
pub(super) fn data_volumes(old: &Target, new: &Target) -> Result<(String, String)> {
    let key = &old.postgres()?.data_volume;
    let from = old.data_volumes().get(key).cloned();
    let to = new.rec.volumes.get(&new.postgres()?.data_volume).cloned();
    match (from, to) {
        (Some(f), Some(t)) => Ok((f, t)),
        _ => bail!("the Postgres data volume {key} is missing on one side"),
    }
}

pub(super) fn helper(
    engine: &Engine,
    image: &str,
    user: Option<&str>,
    script: &str,
    args: &[String],
    mounts: &[(&str, &str, bool)],
) -> Result<()> {
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend(args.iter().map(String::as_str));
    let (code, out) = engine.run_as(image, user, &cmd, mounts)?;
    if code != 0 {
        bail!("{}", out.trim());
    }
    Ok(())
}

/// The old cluster's settings the new server knows, as files in
/// `.upkeep-carry/` of the new volume for [`INTO_PLACE`]; notes on the rest.
fn write_carried(
    engine: &Engine,
    facts: &OldCluster,
    old_volume: &str,
    new_volume: &str,
    image: &str,
) -> Result<Vec<String>> {
    let known = |n: &str| facts.new_settings.iter().any(|k| k == n);
    let mut notes = Vec::new();
    let mut files = Vec::new();
    for (name, header) in [
        (
            "postgresql.conf",
            format!("\n# carried by upkeep from the Postgres {} cluster\n", facts.old_major),
        ),
        (
            "postgresql.auto.conf",
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n".to_string(),
        ),
    ] {
        let text = read_volume_file(engine, old_volume, image, name)?;
        let carried = conf::carry_settings(&text, name, known);
        notes.extend(carried.dropped);
        files.push((name, format!("{header}{}", carried.text)));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (name, text) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, format!(".upkeep-carry/{name}"), text.as_bytes())?;
    }
    let bytes = tar.into_inner()?;
    engine.write_volume(new_volume, image, std::io::Cursor::new(bytes))?;
    Ok(notes)
}

/// A small text file at the root of a volume ("" when it has none). Any
/// other failure to read it is an error: carrying an empty configuration
/// because the engine hiccuped would silently drop the administrator's
/// settings.
fn read_volume_file(engine: &Engine, volume: &str, image: &str, name: &str) -> Result<String> {
    const LIMIT: u64 = 4 << 20;
    let context = || format!("reading {name} of volume {volume}");
    let archive = engine.read_volume_path(volume, image, name)?;
    let mut tar = tar::Archive::new(archive);
    let first = match tar.entries().with_context(context)?.next() {
        None => return Ok(String::new()),
        Some(Err(e)) if crate::docker::is_missing_path(&e) => return Ok(String::new()),
        Some(entry) => entry.with_context(context)?,
    };
    if !first.header().entry_type().is_file() {
        bail!("{name} of volume {volume} is not a regular file");
    }
    let mut text = String::new();
    first
        .take(LIMIT)
        .read_to_string(&mut text)
        .with_context(|| format!("{name} of volume {volume} is not text"))?;
    Ok(text)
}

/// After the downtime, while the new instance serves: indexes on
/// collations whose version changed with the new image's C library or
/// ICU are rebuilt (`REINDEX … CONCURRENTLY`) and the versions refreshed;
/// then `vacuumdb --all --analyze-in-stages` (pg_upgrade carries no
/// statistics). A failure is reported, never rolled back: the data is in
/// place and verified.
pub(in crate::ops::upgrade) fn after_start(cx: &Ctx, new: &Target, j: &mut Journal) {
    let engine = cx.engine;
    let server = match new.running_postgres(engine) {
        Ok(Some(s)) => s,
        _ => {
            tracing::warn!("the new Postgres is not running: collation check and ANALYZE skipped; run `vacuumdb --all --analyze-in-stages` in it");
            return;
        }
    };
    let fixed = phase(
        j,
        "after the downtime: indexes on collations whose version changed rebuilt",
        || server.refresh_collations(engine),
    );
    match fixed {
        Ok(done) if !done.is_empty() => tracing::warn!(
            "collation versions changed with the new image; rebuilt: {}",
            done.join(", ")
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "checking collation versions failed ({e:#}): run REINDEX on indexes over text in each database of {}",
            new.rec.name
        ),
    }
    if let Err(e) = phase(
        j,
        "after the downtime: vacuumdb --all --analyze-in-stages",
        || server.analyze_in_stages(engine),
    ) {
        tracing::warn!("ANALYZE after pg_upgrade failed ({e:#}): run `vacuumdb --all --analyze-in-stages` in {}'s Postgres", new.rec.name);
    }
    if let Err(e) = super::remove_scratch(engine, &new.rec.name) {
        tracing::warn!("could not remove the scratch volume: {e:#}");
    }
}

impl OldCluster {
    /// Runs one of the `postgres` user's scripts in the new image, with the
    /// new volume at /v and the old binaries at [`binaries::MOUNT`]: `$1`
    /// the new bindir, `$2` the install user, then initdb's options.
    pub(super) fn run_with_both(
        &self,
        engine: &Engine,
        image: &str,
        new_volume: &str,
        script: &str,
    ) -> Result<()> {
        let mut args = vec![self.new_bindir.clone(), self.install_user.clone()];
        args.extend(self.initdb_options());
        let mounts = [
            (new_volume, "/v", false),
            (self.scratch_volume.as_str(), binaries::MOUNT, true),
        ];
        helper(engine, image, Some("postgres"), script, &args, &mounts)
    }
}
