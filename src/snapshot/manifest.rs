//! The manifest stored with every snapshot: enough to restore it elsewhere
//! and to verify the result (sizes, digests, row counts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::postgres::RowCounts;
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
    pub database: String,
    pub user: String,
    /// `logical` (pg_dump) or `physical` (data volume copied, server stopped).
    pub mode: String,
    /// Exact row counts of the tables whose count did not change while the
    /// dump ran; a restore must reproduce them.
    pub row_counts: RowCounts,
    /// Snapshots before the counts were taken in the dump's own MVCC
    /// snapshot listed the tables written to during the dump here (their
    /// counts are not verified on restore). Now always empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_during_backup: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Config,
    ComposeFile,
    Volume,
    PostgresDump,
    PostgresGlobals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub stream: String,
    pub kind: ItemKind,
    /// The volume key in the compose file, for volume items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn item(&self, kind: ItemKind) -> Option<&Item> {
        self.items.iter().find(|i| i.kind == kind)
    }

    pub fn volumes(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.kind == ItemKind::Volume)
    }
}
