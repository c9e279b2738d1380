//! Where repository files are stored: a local folder, S3-compatible object
//! storage, or (for export/import) one tar file. All speak restic's layout:
//! `config`, `keys/`, `locks/`, `snapshots/`, `index/`, `data/xx/`.

pub mod local;
pub mod s3;
pub mod tarfile;

use super::error::Result;

/// The kinds of files in a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Key,
    Lock,
    Snapshot,
    Index,
    Pack,
}

impl FileType {
    /// The folder of this kind of file (empty for `config`).
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Lock => "locks",
            FileType::Snapshot => "snapshots",
            FileType::Index => "index",
            FileType::Pack => "data",
        }
    }

    /// The path of file `name` relative to the repository root.
    pub fn path(self, name: &str) -> String {
        match self {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{}", &name[..2.min(name.len())], name),
            t => format!("{}/{}", t.dir(), name),
        }
    }
}

/// Storage of repository files. `write` returns only once the file is durable;
/// files are written whole and never modified.
pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Prepares an empty repository (folders, bucket check).
    fn create(&self) -> Result<()>;
    /// Names and sizes of the files of one kind (names are ids; others are skipped).
    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>>;
    /// A whole file. A missing file is [`RepoError::NotFound`](super::error::RepoError::NotFound).
    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>>;
    /// `len` bytes from `offset`.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>>;
    /// Stores a whole file durably.
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// Deletes a file (missing is fine).
    fn remove(&self, t: FileType, name: &str) -> Result<()>;
    /// Deletes what interrupted writes left behind (a local folder's
    /// `<id>-tmp-<random>` files of packs, index and snapshot files) and returns
    /// how many files and bytes that freed. Only safe under an exclusive lock,
    /// when no writer can be running. Backends whose writes are atomic have none.
    fn remove_temporaries(&self) -> Result<(usize, u64)> {
        Ok((0, 0))
    }
}

/// Whether `name` is the temporary name of an unfinished write of file `<id>`
/// (`<id>-tmp-<random>`, as upkeep and restic's local backend name them).
pub(crate) fn is_temporary(name: &str) -> bool {
    name.len() > 69
        && name.is_char_boundary(64)
        && is_id(&name[..64])
        && name[64..].starts_with("-tmp-")
}

/// Whether `name` looks like a file id (64 hex digits).
pub(crate) fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}
