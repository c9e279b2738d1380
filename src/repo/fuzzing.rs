//! Entry points for the fuzz targets in `fuzz/`: the readers of repository
//! files that anyone with write access to the storage can craft. Each takes
//! the bytes as they would arrive (after decryption, which a forger cannot
//! pass without the key, for the encrypted ones) and must neither panic nor
//! allocate without bound. Not an API: hidden from the documentation.

use std::path::Path;

use super::backend::tarfile::TarBackend;
use super::backend::{Backend, FileType};
use super::crypto::KeyFile;
use super::format::{IndexFile, SnapshotFile};
use super::id::Id;
use super::index::Index;
use super::repository::{decode_unpacked, info};

/// A file of `keys/`, parsed and opened with `password` (read before any
/// password is checked).
pub fn open_key_file(raw: &[u8], password: &str) {
    if let Ok(kf) = serde_json::from_slice::<KeyFile>(raw) {
        let _ = kf.open(password);
    }
}

/// A decrypted snapshot file, parsed and described as `snapshots` lists it.
pub fn read_snapshot(plain: &[u8]) {
    let Ok(json) = decode_unpacked(plain.to_vec(), "snapshot") else {
        return;
    };
    if let Ok(s) = serde_json::from_slice::<SnapshotFile>(&json) {
        let _ = info(&Id::hash(plain), &s);
    }
}

/// A decrypted index file, parsed and loaded into the in-memory index.
pub fn read_index(plain: &[u8]) {
    let Ok(json) = decode_unpacked(plain.to_vec(), "index") else {
        return;
    };
    if let Ok(f) = serde_json::from_slice::<IndexFile>(&json) {
        let idx = Index::from_files(vec![(Id::hash(plain), f)]);
        for blobs in idx.packs.values() {
            for b in blobs {
                let _ = idx.get(&b.id, b.tpe).map(|l| l.plain_len());
            }
        }
    }
}

/// An export file given to `import`: opened, listed and every file in it read.
pub fn read_export(path: &Path) {
    let Ok(tar) = TarBackend::open(path) else {
        return;
    };
    for t in [
        FileType::Config,
        FileType::Key,
        FileType::Lock,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
    ] {
        for (name, _) in tar.list(t).unwrap_or_default() {
            let _ = tar.read(t, &name);
            let _ = tar.read_range(t, &name, 1, 16);
        }
    }
    let _ = tar.read(FileType::Config, "config");
}
