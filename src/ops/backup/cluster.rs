//! Postgres in a snapshot: the dumps of every database with the row counts
//! each holds, the pg_basebackup, both, or (server stopped) the data
//! volume's major, as the backup's plan says.

use std::io::Read;

use anyhow::{bail, Context, Result};

use super::reuse::Last;
use super::{add, volume_name, Plan};
use crate::docker::Engine;
use crate::ops::{physical, Target};
use crate::postgres::{Database, Server};
use crate::repo::SnapshotWriter;
use crate::snapshot::{self, DatabaseItem, Item, ItemKind, PostgresItem};

/// Dumps the running Postgres server (roles, then the database), with the
/// row counts the dump holds; or, when it is stopped, describes the physical
/// copy of its data volume.
pub(super) fn capture_postgres(
    engine: &Engine,
    writer: &SnapshotWriter<'_>,
    t: &Target,
    plan: &Plan,
    last: Option<&Last>,
) -> Result<(Option<PostgresItem>, Vec<Item>)> {
    let Some(pg) = &t.profile.postgres else {
        return Ok((None, Vec::new()));
    };
    let (Some(container), Some(copies)) = (&plan.postgres_container, plan.copies_of_postgres)
    else {
        let major = pg_data_major(engine, t)?;
        let item = PostgresItem {
            service: pg.service.clone(),
            major,
            version: major.to_string(),
            database: String::new(),
            user: String::new(),
            mode: "physical".into(),
            row_counts: Default::default(),
            changed_during_backup: Vec::new(),
            databases: Vec::new(),
            base_row_counts: None,
            dump_fingerprint: None,
            dumps_from: None,
        };
        return Ok((Some(item), Vec::new()));
    };
    let server = Server::from_container(engine, container, pg)?;
    let facts = server.facts(engine)?;
    let before_base = if copies.base_backup() {
        Some(physical::prepare(engine, &server)?)
    } else {
        None
    };
    let Dumps {
        mut items,
        databases,
        fingerprint,
        from,
    } = if copies.dumps() {
        dump_or_reuse(engine, writer, &server, last)?
    } else {
        Dumps {
            databases: count_cluster(engine, &server)?,
            ..Dumps::default()
        }
    };
    let mut base_row_counts = None;
    if let Some(before) = &before_base {
        let (base, counts) = physical::capture(engine, writer, &server, before, &databases)?;
        items.push(base);
        base_row_counts = counts;
    }
    let item = PostgresItem {
        service: pg.service.clone(),
        major: facts.major,
        version: facts.version,
        database: server.database.clone(),
        user: server.user.clone(),
        mode: copies.mode().into(),
        row_counts: databases
            .iter()
            .find(|d| d.name("") == server.database)
            .map(|d| d.row_counts.clone())
            .unwrap_or_default(),
        changed_during_backup: Vec::new(),
        databases,
        base_row_counts,
        dump_fingerprint: fingerprint,
        dumps_from: from,
    };
    Ok((Some(item), items))
}

/// The dumps' part of a snapshot.
#[derive(Default)]
pub(super) struct Dumps {
    pub items: Vec<Item>,
    pub databases: Vec<DatabaseItem>,
    pub fingerprint: Option<String>,
    /// The earlier snapshot they were taken from.
    pub from: Option<String>,
}

/// The cluster's dumps: those of the instance's last snapshot when the
/// cluster is unchanged since (`postgres::unchanged`), else new ones.
fn dump_or_reuse(
    engine: &Engine,
    writer: &SnapshotWriter<'_>,
    server: &Server,
    last: Option<&Last>,
) -> Result<Dumps> {
    let databases = main_first(server.databases(engine)?, &server.database);
    let fingerprint = match server.change_fingerprint(engine, &databases) {
        Ok(Ok(f)) => Some(f),
        Ok(Err(why)) => {
            tracing::info!("Postgres is dumped on every backup: {why}");
            None
        }
        Err(e) => {
            tracing::info!("Postgres is dumped on every backup: its change fingerprint could not be read ({e:#})");
            None
        }
    };
    if let (Some(f), Some(last)) = (&fingerprint, last) {
        match last.reuse_dumps(writer, f, &databases) {
            Ok(Some(dumps)) => return Ok(dumps),
            Ok(None) => {}
            Err(e) => tracing::warn!("the last snapshot's dumps cannot be reused ({e:#}); dumping"),
        }
    }
    let (items, databases) = dump_cluster(engine, writer, server, databases)?;
    Ok(Dumps {
        items,
        databases,
        fingerprint,
        from: None,
    })
}

/// The roles, then a dump of every database with the row counts it holds.
fn dump_cluster(
    engine: &Engine,
    writer: &SnapshotWriter<'_>,
    server: &Server,
    databases: Vec<Database>,
) -> Result<(Vec<Item>, Vec<DatabaseItem>)> {
    let globals = add(
        writer,
        snapshot::GLOBALS_STREAM.into(),
        ItemKind::PostgresGlobals,
        None,
        server.dump_globals(engine)?,
    )?;
    let mut items = vec![globals];
    let mut dumped = Vec::new();
    for db in databases {
        let stream = snapshot::dump_stream(&db.name);
        let (dump, row_counts) = server.on(&db.name).dump_counted(engine, |dump| {
            add(writer, stream.clone(), ItemKind::PostgresDump, None, dump)
        })?;
        items.push(dump);
        dumped.push(DatabaseItem {
            stream,
            properties: Some(db),
            row_counts,
        });
    }
    Ok((items, dumped))
}

/// Every database with its row counts, for a physical-only snapshot: what
/// its restore verifies (the counts hold if nothing wrote until the base
/// backup ended; see [`physical::capture`]).
fn count_cluster(engine: &Engine, server: &Server) -> Result<Vec<DatabaseItem>> {
    main_first(server.databases(engine)?, &server.database)
        .into_iter()
        .map(|db| {
            let row_counts = server
                .on(&db.name)
                .row_counts(engine)
                .with_context(|| format!("counting the rows of database {}", db.name))?;
            Ok(DatabaseItem {
                stream: String::new(),
                properties: Some(db),
                row_counts,
            })
        })
        .collect()
}

/// The cluster's databases with the instance's own first: a release that
/// restores only one database takes the first dump.
fn main_first(mut databases: Vec<Database>, main: &str) -> Vec<Database> {
    databases.sort_by_key(|d| d.name != main);
    databases
}

/// The major version in the Postgres data folder's `PG_VERSION` (read
/// alone, not the whole folder), wherever the folder is.
pub fn pg_data_major(engine: &Engine, t: &Target) -> Result<u32> {
    let pg = t.postgres()?;
    let image = t.helper_image(Some(&pg.service))?;
    let (what, tar) = if let Some(path) = t.postgres_data_bind() {
        let what = t.rec.home.join(&path).display().to_string();
        (
            what,
            engine.read_host_path(&t.rec.home, &format!("{path}/PG_VERSION"), &image)?,
        )
    } else if let Some(volume) = volume_name(t, &pg.data_volume) {
        let tar = engine.read_volume_path(&volume, &image, "PG_VERSION")?;
        (format!("volume {volume}"), tar)
    } else {
        bail!(
            "the data folder of Postgres (service {}), {}, is outside the instance's folder: \
             upkeep cannot read it",
            pg.service,
            pg.data_bind.as_deref().unwrap_or(&pg.data_volume)
        );
    };
    let not_pg = || format!("{what} holds no PG_VERSION: it is not a Postgres data directory");
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().with_context(not_pg)?;
    let mut entry = entries.next().with_context(not_pg)?.with_context(not_pg)?;
    let mut text = String::new();
    entry.read_to_string(&mut text)?;
    text.trim()
        .parse()
        .with_context(|| format!("PG_VERSION in {what} says `{}`", text.trim()))
}
