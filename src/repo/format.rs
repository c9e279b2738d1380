//! The JSON documents of a restic repository (see restic's design document):
//! config, index files, trees, snapshots and locks.

use serde::{Deserialize, Serialize};

use super::id::Id;

/// `config`: the repository's version, id and chunker polynomial.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Config {
    pub version: u32,
    pub id: String,
    /// The chunker polynomial, as hex without a prefix.
    pub chunker_polynomial: String,
}

/// A blob's kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

/// One index file: which blobs are where in which packs.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct IndexFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<Id>,
    #[serde(default)]
    pub packs: Vec<IndexPack>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct IndexPack {
    pub id: Id,
    #[serde(default)]
    pub blobs: Vec<IndexBlob>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct IndexBlob {
    pub id: Id,
    #[serde(rename = "type")]
    pub tpe: BlobType,
    pub offset: u32,
    pub length: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_length: Option<u32>,
}

/// A folder: its entries, sorted by name.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Tree {
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// A file or folder in a tree. Only what restic needs and checks is modelled;
/// unknown fields of trees written by restic are ignored.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub tpe: String,
    #[serde(default)]
    pub mode: u32,
    #[serde(default = "epoch")]
    pub mtime: String,
    #[serde(default = "epoch")]
    pub atime: String,
    #[serde(default = "epoch")]
    pub ctime: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// File contents: data blob ids in order (`[]` for empty files, never `null`:
    /// restic's check rejects a file without a blob list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<Id>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

fn epoch() -> String {
    "1970-01-01T00:00:00Z".to_string()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Go's `os.ModeDir`, set in restic's mode field for folders.
pub const MODE_DIR: u32 = 1 << 31;

/// Totals recorded in a snapshot (restic ≥ 0.17 writes the same fields).
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct Summary {
    #[serde(default)]
    pub backup_start: String,
    #[serde(default)]
    pub backup_end: String,
    #[serde(default)]
    pub files_new: u64,
    #[serde(default)]
    pub files_changed: u64,
    #[serde(default)]
    pub files_unmodified: u64,
    #[serde(default)]
    pub dirs_new: u64,
    #[serde(default)]
    pub data_blobs: u64,
    #[serde(default)]
    pub tree_blobs: u64,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub data_added_packed: u64,
    #[serde(default)]
    pub total_files_processed: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
}

/// A snapshot file in `snapshots/`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SnapshotFile {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub tree: Id,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// A lock file in `locks/`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LockFile {
    pub time: String,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}
