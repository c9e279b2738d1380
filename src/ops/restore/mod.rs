//! `upkeep restore SNAPSHOT --into VERSION [--as NAME]`: a snapshot into a
//! new instance of a release (on this host or another), or into an existing
//! one with `--force` after a safety snapshot. Config is written exactly,
//! volumes are recreated with compose's labels, Postgres is started for a
//! bulk load (`ops::bulk_load`) and `pg_restore`d, or, into the same major,
//! gets its physical copy (`ops::physical`); then everything starts and row
//! counts are checked against the manifest meanwhile. A journal marks a
//! restore in progress: if it dies, the next restore into the same name
//! clears what the dead one created and retries.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

mod journal;
mod preflight;

use journal::{clear_interrupted, journal_path, remove_instance, Journal};
use preflight::{checked_target, leftover_volumes, refuse_existing};

use super::backup::{self, BackupOptions};
use super::physical::{self, Source};
use super::pipe::{pipe, Draining};
use super::{Ctx, Target};
use crate::docker::Engine;
use crate::durable::{self, DigestingWriter};
use crate::instance::{self, InstanceStatus};
use crate::postgres;
use crate::repo::Repository;
use crate::site::{now_rfc3339, Site};
use crate::snapshot::{self, Item, ItemKind, Manifest};
use crate::timeline::{Phase, Timeline};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub into: String,
    pub as_name: Option<String>,
    /// Volumes of its own for the release's external ones (`--external-volume`).
    pub external_volumes: instance::ExternalVolumes,
    /// Replace an existing instance (a safety snapshot is taken first).
    pub force: bool,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: String,
    pub instance: InstanceStatus,
    pub tables_verified: usize,
    /// Tables written to while the backup ran: their counts cannot be checked.
    pub tables_unverified: Vec<String>,
    pub safety_snapshot: Option<String>,
    /// `logical` (the dumps were loaded) or `physical` (the data folder
    /// was written as backed up); absent without Postgres.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_from: Option<&'static str>,
    /// Where the time went (phases may overlap).
    pub timeline: Vec<Phase>,
}

/// The manifest of `snapshot`, or why it cannot be restored.
pub fn manifest(repo: &Repository, snapshot: &str) -> Result<(String, Manifest)> {
    let info = repo.snapshot(snapshot)?;
    let text = repo.manifest(&info.id)?.with_context(|| {
        format!(
            "snapshot {} has no upkeep manifest: it was not written by `upkeep backup`",
            info.short_id
        )
    })?;
    let m: Manifest =
        serde_json::from_str(&text).context("the snapshot's manifest is not readable")?;
    Ok((info.id, m))
}

/// The steps a restore would take, after the same checks, changing nothing.
pub fn plan(
    site: &Site,
    engine: &Engine,
    repo: &Repository,
    snapshot: &str,
    opts: &RestoreOptions,
) -> Result<Vec<String>> {
    let (id, m) = manifest(repo, snapshot)?;
    let (rec, target, target_major) = checked_target(site, engine, &m, opts)?;
    let mut steps = Vec::new();
    let leftovers = leftover_volumes(site, engine, &rec)?;
    if instance::exists(site, &rec.name) || !leftovers.is_empty() {
        refuse_existing(&rec, &leftovers, opts)?;
        steps.push(format!(
            "take a safety snapshot of instance {}, then remove its containers and volumes",
            rec.name
        ));
    }
    steps.push(format!(
        "write config files of snapshot {} into {}",
        &id[..8],
        rec.home.display()
    ));
    for item in m.volumes() {
        let key = item.volume.as_deref().unwrap_or_default();
        if let Some(name) = rec.volumes.get(key) {
            steps.push(format!(
                "recreate volume {name} and fill it ({})",
                durable::human_bytes(item.size)
            ));
        }
    }
    for (_, name) in target.shared_external_volumes() {
        steps.push(format!(
            "create external volume {name} (the release expects it; upkeep never removes it) and \
             fill it from the snapshot if it holds it"
        ));
    }
    for item in m.binds() {
        let path = item.path.as_deref().unwrap_or_default();
        steps.push(format!(
            "write {} with its owners and modes ({})",
            rec.home.join(path).display(),
            durable::human_bytes(item.size)
        ));
    }
    let (source, why) = physical::source(&m, &target, target_major);
    if source == Source::Base {
        steps.push(format!(
            "write Postgres's physical copy into its data volume ({why})"
        ));
    }
    if let Some(pg) = m.postgres.as_ref().filter(|_| source == Source::Dump) {
        let databases: Vec<String> = pg
            .databases(&m)
            .iter()
            .map(|d| d.name(&pg.database).to_string())
            .collect();
        if !databases.is_empty() {
            steps.push(format!(
                "start {} for a bulk load (WAL minimal, in a stand-in container), restore its roles \
                 and pg_restore each database ({}) with its properties, in one transaction each \
                 ({why})",
                pg.service,
                databases.join(", "),
            ));
        }
    }
    steps.push(format!(
        "start instance {} and verify row counts meanwhile",
        rec.name
    ));
    Ok(steps)
}

/// Streams `item` of `snapshot` into `consume` through a pipe (the
/// repository writes on a second thread), checking size and digest
/// against the manifest once both sides are done.
pub(super) fn with_item<T>(
    repo: &Repository,
    snapshot: &str,
    item: &Item,
    consume: impl FnOnce(Draining) -> Result<T>,
) -> Result<T> {
    let ((size, sha256), result) = pipe(
        |w| {
            let mut out = DigestingWriter::new(w);
            repo.restore_stream(snapshot, &item.stream, &mut out)
                .with_context(|| format!("reading {} from the repository", item.stream))?;
            Ok(out.finish())
        },
        consume,
    )?;
    if size != item.size || sha256 != item.sha256 {
        bail!(
            "{} does not match the manifest ({size} bytes, sha256 {sha256}; expected {} bytes, {}): \
             the repository is damaged, run `upkeep check --read-data`",
            item.stream,
            item.size,
            item.sha256
        );
    }
    Ok(result)
}

pub fn restore(
    cx: &Ctx,
    repo: &Repository,
    snapshot: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let Ctx {
        site,
        lock,
        engine,
        compose,
    } = *cx;
    let timeline = Timeline::new("restore");
    let (id, m) = timeline.phase("read the manifest", || manifest(repo, snapshot))?;
    let name_hint = opts
        .as_name
        .clone()
        .map(Ok)
        .unwrap_or_else(|| instance::default_name(&opts.into))?;
    let (rec, target, target_major, leftovers) =
        timeline.phase("checks (release, ownership, leftovers)", || {
            clear_interrupted(site, lock, engine, compose, &name_hint)?;
            let (rec, target, target_major) = checked_target(site, engine, &m, opts)?;
            crate::ownership::Guard::new(site, engine)?.check_instance(&rec)?;
            let leftovers = leftover_volumes(site, engine, &rec)?;
            anyhow::Ok((rec, target, target_major, leftovers))
        })?;
    let mut safety_snapshot = None;
    if instance::exists(site, &rec.name) || !leftovers.is_empty() {
        refuse_existing(&rec, &leftovers, opts)?;
        let opts = BackupOptions::safety(vec![
            "safety".into(),
            format!("before-restore={}", &id[..8]),
        ]);
        let report = timeline
            .phase("safety snapshot", || {
                backup::backup(cx, repo, &target, &opts, None)
            })
            .with_context(|| {
                format!(
                    "taking the safety snapshot of {} before replacing it",
                    rec.name
                )
            })?;
        safety_snapshot = Some(report.snapshot.id);
        timeline.phase("remove the instance it replaces", || {
            remove_instance(site, lock, engine, compose, &rec)
        })?;
    }
    let mut journal = Journal {
        snapshot: id.clone(),
        started: now_rfc3339(),
        created_volumes: Some(rec.volumes.values().cloned().collect()),
        instance_started: false,
    };
    durable::write_json(&journal_path(site, &rec.name), &journal)?;

    // Config first: the restored .env holds the credentials Postgres starts
    // with. Compose reads the file when it creates the containers, which
    // is also where it checks the generated compose file.
    let home_existed = rec.home.exists();
    let config = m
        .item(ItemKind::Config)
        .context("the snapshot has no config archive")?;
    timeline.phase("prepare the project and write config", || {
        instance::prepare_project_unchecked(site, lock, engine, compose, &rec)?;
        with_item(repo, &id, config, |r| {
            snapshot::config::restore(r, &rec.home).map(|_| ())
        })
    })?;
    if !home_existed {
        tracing::info!("created instance home {}", rec.home.display());
    }
    let (source, why) = physical::source(&m, &target, target_major);
    tracing::info!(
        "Postgres from the {} copy: {why}",
        source.word().unwrap_or("no")
    );
    let has_dump = source == Source::Dump;
    create_external_volumes(engine, &target)?;
    let (early, alongside) = volume_order(&m, &target, source.skips_data_files());
    // Volumes Postgres does not read are filled while the containers are
    // created and Postgres restores.
    let t = &timeline;
    let expected = std::thread::scope(|s| {
        let volumes = s.spawn(|| {
            t.phase("write the volumes Postgres does not read", || {
                write_volumes(cx, repo, &id, &target, &alongside)
            })
        });
        let created = s.spawn(|| {
            t.phase("compose creates the containers", || {
                instance::create_containers(site, compose, &rec, &[])
            })
        });
        let loaded = t
            .phase("write the volumes Postgres reads", || {
                write_volumes(cx, repo, &id, &target, &early)
            })
            .and_then(|()| {
                t.phase("write bind-mounted data", || {
                    write_binds(cx, repo, &id, &m, &target, source.skips_data_files())
                })
            })
            .and_then(|()| match source {
                Source::Base => t.phase("write the physical copy into the data volume", || {
                    physical::write_base(cx, repo, &id, &m, &target)
                }),
                _ => Ok(()),
            })
            .and_then(|()| {
                created.join().expect("compose thread panicked")?;
                if !has_dump {
                    return Ok(Default::default());
                }
                t.phase("load Postgres (roles, then each database)", || {
                    load_postgres(cx, repo, &id, &m, &target, opts.timeout, t)
                })
            });
        volumes.join().expect("volume writer panicked")?;
        loaded
    })?;
    journal.instance_started = true;
    durable::write_json(&journal_path(site, &rec.name), &journal)?;
    let (expected, mut tables_unverified) = match source {
        Source::Base => physical::expected(&m),
        _ => (expected, Vec::new()),
    };
    let count = source.skips_data_files() && m.postgres.is_some();
    let counts = timeline.phase("start the instance ∥ count rows", || {
        target.start_counting(cx, count, opts.timeout)
    })?;
    let tables_verified = match counts {
        Some(counts) => {
            verify_present(&tables_unverified, &counts)?;
            verify_counts(&expected, &counts)?
        }
        None => 0,
    };
    tables_unverified.extend(
        m.postgres
            .iter()
            .flat_map(|p| p.changed_during_backup.iter().cloned()),
    );
    let status = timeline.phase("wait until every container is ready", || {
        instance::wait_ready(site, engine, &rec, opts.timeout)
    })?;
    std::fs::remove_file(journal_path(site, &rec.name)).ok();
    tracing::info!("restore took {:.1}s", timeline.elapsed());
    Ok(RestoreReport {
        snapshot: id,
        instance: status,
        tables_verified,
        tables_unverified,
        safety_snapshot,
        postgres_from: source.word(),
        timeline: timeline.phases(),
    })
}

/// The snapshot's volume items to restore, split into those to write before
/// Postgres starts (it mounts them) and those to write while it restores.
/// The Postgres data volume's files are skipped when the cluster comes from
/// a dump (a fresh server is initialised) or from its physical copy.
fn volume_order<'m>(
    m: &'m Manifest,
    target: &Target,
    skip_pg_data: bool,
) -> (Vec<&'m Item>, Vec<&'m Item>) {
    let pg = target.profile.postgres.as_ref();
    let items = m.volumes().filter(|item| {
        let key = item.volume.as_deref().unwrap_or_default();
        !(skip_pg_data && pg.is_some_and(|p| p.data_volume == key))
    });
    items.partition(|item| {
        let key = item.volume.as_deref().unwrap_or_default();
        let read_by_postgres =
            pg.is_some_and(|p| target.services_mounting(key).contains(&p.service));
        read_by_postgres && !target.profile.is_passive(key)
    })
}

/// Creates the release's external volumes, which compose expects to find
/// (`check` refused any that exists). Mounting a missing volume in a helper
/// container creates it, without compose's labels: it is not the project's.
fn create_external_volumes(engine: &Engine, target: &Target) -> Result<()> {
    for (_, name) in target.shared_external_volumes() {
        if engine.volume(&name)?.is_none() {
            let empty_tar = std::io::Cursor::new(vec![0u8; 1024]);
            engine.write_volume(&name, &target.helper_image(None)?, empty_tar)?;
            tracing::warn!(
                "created the external volume {name}, which release {} expects",
                target.rec.release
            );
        }
    }
    Ok(())
}

/// Writes the snapshot's folders and files under the home into the
/// target's home, through the engine (owners and modes as backed up), before
/// the services that mount them start. The Postgres data folder is left
/// out when the cluster comes from elsewhere, as its volume would be.
fn write_binds(
    cx: &Ctx,
    repo: &Repository,
    snapshot: &str,
    m: &Manifest,
    target: &Target,
    skip_pg_data: bool,
) -> Result<()> {
    let pg_bind = target.postgres_data_bind();
    let mounted = target.data_binds();
    for item in m.binds() {
        let path = item.path.clone().unwrap_or_default();
        if skip_pg_data && pg_bind.as_deref() == Some(path.as_str()) {
            continue;
        }
        if !mounted.iter().any(|b| b.path == path) {
            tracing::warn!(
                "release {} mounts no {path}; that data of the snapshot is not restored",
                target.rec.release
            );
            continue;
        }
        with_item(repo, snapshot, item, |r| {
            target.write_bind(cx.engine, &path, r)
        })?;
    }
    Ok(())
}

/// Recreates and fills volumes from the snapshot, one after the other.
fn write_volumes(
    cx: &Ctx,
    repo: &Repository,
    snapshot: &str,
    target: &Target,
    items: &[&Item],
) -> Result<()> {
    for item in items {
        let key = item.volume.clone().unwrap_or_default();
        let Some(volume) = backup::volume_name(target, &key) else {
            tracing::warn!(
                "release {} has no volume {key}; its data is not restored",
                target.rec.release
            );
            continue;
        };
        let image =
            target.helper_image(target.services_mounting(&key).first().map(String::as_str))?;
        with_item(repo, snapshot, item, |r| {
            cx.engine.write_volume(&volume, &image, r)
        })?;
    }
    Ok(())
}

/// Starts Postgres for a bulk load, restores roles and every database of
/// the snapshot (each made with its properties, then filled), and stops it
/// again (the instance's container starts on the data afterwards). Returns
/// the row counts to verify, keyed as `postgres::cluster_key` does.
fn load_postgres(
    cx: &Ctx,
    repo: &Repository,
    snapshot: &str,
    m: &Manifest,
    target: &Target,
    timeout: Duration,
    timeline: &Timeline,
) -> Result<postgres::RowCounts> {
    let Some(pg) = m.postgres.as_ref() else {
        return Ok(Default::default());
    };
    let engine = cx.engine;
    let load = timeline.phase("start Postgres for the bulk load", || {
        target.postgres_for_load(cx, timeout)
    })?;
    if let Some(globals) = m.item(ItemKind::PostgresGlobals) {
        timeline.phase("restore the roles", || {
            with_item(repo, snapshot, globals, |mut r| {
                load.server.restore_globals(engine, &mut r)
            })
        })?;
    }
    let mut expected = postgres::RowCounts::new();
    for db in pg.databases(m) {
        let name = db.name(&load.server.database).to_string();
        if let Some(properties) = &db.properties {
            load.server.make_database(engine, properties)?;
        }
        let dump = m.stream(&db.stream).with_context(|| {
            format!(
                "the manifest lists database {name} but the snapshot has no {}",
                db.stream
            )
        })?;
        timeline
            .phase(&format!("pg_restore database {name}"), || {
                with_item(repo, snapshot, dump, |mut r| {
                    load.restore_into(&name, &mut r)
                })
            })
            .with_context(|| format!("restoring database {name}"))?;
        expected.extend(db.cluster_row_counts(&load.server.database));
    }
    timeline.phase("end the bulk load", || load.finish())?;
    Ok(expected)
}

/// Tables whose counts cannot be compared are at least there after restore.
fn verify_present(tables: &[String], got: &postgres::RowCounts) -> Result<()> {
    match tables.iter().find(|t| !got.contains_key(*t)) {
        Some(t) => bail!("verification failed: table {t} is missing after restore"),
        None => Ok(()),
    }
}

/// Every table of the snapshot has the same number of rows after restore.
fn verify_counts(expected: &postgres::RowCounts, got: &postgres::RowCounts) -> Result<usize> {
    for (table, n) in expected {
        match got.get(table) {
            Some(m) if m == n => {}
            Some(m) => bail!("verification failed: table {table} has {m} rows after restore, the snapshot had {n}"),
            None => bail!("verification failed: table {table} is missing after restore"),
        }
    }
    Ok(expected.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_match_table_by_table() {
        let a: postgres::RowCounts = [("public.t".to_string(), 3)].into();
        assert_eq!(verify_counts(&a, &a).unwrap(), 1);
        let b: postgres::RowCounts = [("public.t".to_string(), 2)].into();
        assert!(verify_counts(&a, &b)
            .unwrap_err()
            .to_string()
            .contains("has 2 rows"));
        assert!(verify_counts(&a, &Default::default()).is_err());
        assert!(verify_present(&["public.t".to_string()], &b).is_ok());
        assert!(verify_present(&["public.u".to_string()], &b).is_err());
    }
}
