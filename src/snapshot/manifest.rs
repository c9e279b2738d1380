//! The manifest stored with every snapshot: enough to restore it elsewhere
//! and to verify the result (sizes, digests, row counts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::postgres::{Database, RowCounts};
use crate::profile::Profile;

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub host: String,
    pub instance: String,
    pub release: String,
    pub profile: Profile,
    /// SHA-256 of the vendor compose file as it was at backup time.
    pub compose_sha256: String,
    /// The administrator had edited the vendor compose file (captured as a stream).
    pub compose_edited: bool,
    /// Service → image reference and content id.
    pub images: BTreeMap<String, ImageRef>,
    pub postgres: Option<PostgresItem>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRef {
    pub reference: String,
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostgresItem {
    pub service: String,
    pub major: u32,
    pub version: String,
    /// The database the instance's environment names (`POSTGRES_DB`).
    pub database: String,
    pub user: String,
    /// `logical` (pg_dump), `physical` (data volume copied, server
    /// stopped) or `logical+physical` (pg_dump and pg_basebackup, online).
    pub mode: String,
    /// Exact row counts of `database`'s tables, as its dump holds them.
    /// Kept beside `databases` so that a release that knows only one
    /// database still restores and verifies that one.
    pub row_counts: RowCounts,
    /// Every database of the cluster that was dumped, `database` first.
    /// Absent from manifests written before the whole cluster was dumped:
    /// then `database` alone was, see [`PostgresItem::databases`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseItem>,
    /// Snapshots before the counts were taken in the dump's own MVCC
    /// snapshot listed the tables written to during the dump here (their
    /// counts are not verified on restore). Now always empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_during_backup: Vec<String>,
    /// Row counts of every database (keyed as `postgres::cluster_key`)
    /// that hold for the physical copy: those of the dumps, when no
    /// transaction wrote between them and the end of `pg_basebackup`.
    /// `None`: something wrote meanwhile, or there is no physical copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_row_counts: Option<RowCounts>,
    /// What showed, before the dumps, whether the cluster changed
    /// (`postgres::unchanged`): a later backup that finds the same reuses
    /// the dumps. `None`: none could be taken (a standby, an unlogged
    /// table), or no dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_fingerprint: Option<String>,
    /// The earlier snapshot whose dumps (and row counts) this one holds,
    /// the cluster being unchanged since; `None`: dumped by this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumps_from: Option<String>,
}

/// One database of the cluster, and its dump.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseItem {
    /// The snapshot's stream holding its `pg_dump -Fc`; empty in a
    /// physical-only snapshot, which has no dump.
    #[serde(default)]
    pub stream: String,
    /// `None` for the one database of an older manifest: restored into the
    /// target's own database, which its image creates.
    pub properties: Option<Database>,
    pub row_counts: RowCounts,
}

impl DatabaseItem {
    /// The database's name; `fallback` (the target's own) for an older manifest's.
    pub fn name<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.properties
            .as_ref()
            .map_or(fallback, |p| p.name.as_str())
    }

    /// Its tables' row counts keyed for the whole cluster
    /// (`postgres::cluster_key`), as restores and upgrades compare them.
    pub fn cluster_row_counts(&self, fallback: &str) -> RowCounts {
        let name = self.name(fallback);
        self.row_counts
            .iter()
            .map(|(t, n)| (crate::postgres::cluster_key(name, t), *n))
            .collect()
    }
}

impl PostgresItem {
    /// The databases the snapshot holds a dump of; for a manifest written
    /// before every database was dumped, its one database.
    pub fn databases(&self, m: &Manifest) -> Vec<DatabaseItem> {
        if !self.databases.is_empty() {
            return self.databases.clone();
        }
        m.item(ItemKind::PostgresDump)
            .map(|dump| DatabaseItem {
                stream: dump.stream.clone(),
                properties: None,
                row_counts: self.row_counts.clone(),
            })
            .into_iter()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Config,
    ComposeFile,
    Volume,
    PostgresDump,
    PostgresGlobals,
    /// The running server's data folder, as `pg_basebackup` streams it.
    PostgresBase,
    /// A folder or file under the instance's home that services mount.
    Bind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub stream: String,
    pub kind: ItemKind,
    /// The volume key in the compose file, for volume items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The volume is `external` (the vendor's installer creates it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Relative to the instance's home, for bind items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// For a volume: the digest of its listing (every path's metadata)
    /// just before it was read; a later backup whose listing is the same
    /// reuses the stream. `None`: no listing, or a path changed in the
    /// seconds before it (a change in the same clock tick could hide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_sha256: Option<String>,
    /// The earlier snapshot whose stream this item reuses, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

impl Manifest {
    pub fn item(&self, kind: ItemKind) -> Option<&Item> {
        self.items.iter().find(|i| i.kind == kind)
    }

    /// The item stored as `stream`.
    pub fn stream(&self, stream: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.stream == stream)
    }

    pub fn volumes(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.kind == ItemKind::Volume)
    }

    pub fn binds(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.kind == ItemKind::Bind)
    }
}
