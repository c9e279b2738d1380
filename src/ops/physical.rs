//! Physical snapshots of a running Postgres (`backup --physical`): the
//! server's `pg_basebackup` beside its logical dumps, and a restore into
//! the same major that writes that copy into the fresh data volume and lets
//! the server replay the WAL it holds, instead of loading the dumps.

use anyhow::{Context, Result};

use super::backup::add;
use super::restore::with_item;
use super::{Ctx, Target};
use crate::docker::Engine;
use crate::postgres::{self, RowCounts, Server};
use crate::repo::{Repository, SnapshotWriter};
use crate::snapshot::{self, DatabaseItem, Item, ItemKind, Manifest};

/// Checked before the dumps, so that a refused base backup costs nothing:
/// the cluster's xid snapshot, to tell afterwards whether anything wrote.
pub fn prepare(engine: &Engine, server: &Server) -> Result<String> {
    server.check_base_backup(engine)?;
    server.xid_snapshot(engine)
}

/// Streams the base backup into the snapshot, after the dumps. The dumps'
/// row counts hold for it when the cluster's xid snapshot is the one taken
/// before them (`before`): then nothing was written in between.
pub fn capture(
    engine: &Engine,
    writer: &SnapshotWriter<'_>,
    server: &Server,
    before: &str,
    databases: &[DatabaseItem],
) -> Result<(Item, Option<RowCounts>)> {
    let item = server
        .base_backup(engine)
        .and_then(|tar| {
            add(
                writer,
                snapshot::BASE_STREAM.into(),
                ItemKind::PostgresBase,
                None,
                tar,
            )
        })
        .map_err(|e| postgres::explain_refusal(e, &server.user))?;
    if server.xid_snapshot(engine)? != before {
        tracing::info!(
            "the cluster was written to during the backup: a restore of the physical copy \
             verifies which tables it holds, not their row counts"
        );
        return Ok((item, None));
    }
    let counts = databases
        .iter()
        .flat_map(|d| d.cluster_row_counts(&server.database))
        .collect();
    Ok((item, Some(counts)))
}

/// Where a restore takes the cluster from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No Postgres in the snapshot or the target.
    None,
    /// `pg_restore` of the dumps into a fresh cluster.
    Dump,
    /// The base backup, written into the data volume.
    Base,
    /// The data volume as copied with the server stopped.
    Files,
}

impl Source {
    /// The snapshot's stopped-server copy of the data folder is not written.
    pub fn skips_data_files(self) -> bool {
        matches!(self, Source::Dump | Source::Base)
    }

    pub fn word(self) -> Option<&'static str> {
        match self {
            Source::None => None,
            Source::Dump => Some("logical"),
            Source::Base | Source::Files => Some("physical"),
        }
    }
}

/// Which copy of the cluster a restore of `m` into `target`, whose release
/// runs Postgres `target_major`, uses, and why.
pub fn source(m: &Manifest, target: &Target, target_major: Option<u32>) -> (Source, String) {
    let (Some(pg), Some(target_major)) = (&m.postgres, target_major) else {
        return (Source::None, String::new());
    };
    let has_dump = m.item(ItemKind::PostgresDump).is_some();
    if m.item(ItemKind::PostgresBase).is_none() {
        return if has_dump {
            let why = format!("the snapshot holds Postgres {}'s logical dump", pg.major);
            (Source::Dump, why)
        } else {
            let why = format!(
                "the snapshot holds Postgres {}'s data folder, copied with the server stopped",
                pg.major
            );
            (Source::Files, why)
        };
    }
    let why = if target.postgres_data_bind().is_some() {
        format!(
            "release {} keeps Postgres's data in a folder of the instance, not a volume: the \
             logical dump is restored",
            target.rec.release
        )
    } else if target_major != pg.major {
        format!(
            "the physical copy is Postgres {} and release {} runs Postgres {target_major}: \
             across majors the logical dump is restored",
            pg.major, target.rec.release
        )
    } else {
        let why = format!(
            "Postgres {target_major} on both sides: the physical copy (pg_basebackup) is written \
             into the data volume and the server replays its WAL when it starts, no dump is loaded"
        );
        return (Source::Base, why);
    };
    (Source::Dump, why)
}

/// Writes the base backup into the target's (fresh) data volume, with its
/// root folder owned by the server's user and mode 0700.
pub fn write_base(
    cx: &Ctx,
    repo: &Repository,
    snapshot: &str,
    m: &Manifest,
    target: &Target,
) -> Result<()> {
    let pg = target.postgres()?;
    let item = m
        .item(ItemKind::PostgresBase)
        .context("the snapshot has no physical copy of Postgres")?;
    let volume = super::backup::volume_name(target, &pg.data_volume)
        .context("the release has no Postgres data volume")?;
    let image = target.helper_image(Some(&pg.service))?;
    with_item(repo, snapshot, item, |r| {
        cx.engine
            .write_volume(&volume, &image, postgres::with_root_entry(r)?)
    })
    .with_context(|| format!("writing Postgres's physical copy into volume {volume}"))
}

/// The row counts a restore of the physical copy must find, and the tables
/// it can only check are there (written to while the backup ran).
pub fn expected(m: &Manifest) -> (RowCounts, Vec<String>) {
    let Some(pg) = &m.postgres else {
        return Default::default();
    };
    if let Some(counts) = &pg.base_row_counts {
        return (counts.clone(), Vec::new());
    }
    let tables = pg
        .databases(m)
        .iter()
        .flat_map(|d| d.cluster_row_counts(&pg.database).into_keys())
        .collect();
    (RowCounts::new(), tables)
}
