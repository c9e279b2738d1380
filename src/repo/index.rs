//! The in-memory index: where every blob is, built from the `index/` files.

use std::collections::{HashMap, HashSet};

use super::format::{BlobType, IndexBlob, IndexFile};
use super::id::Id;

/// Where one blob is stored.
#[derive(Clone, Copy, Debug)]
pub struct Location {
    pub pack: Id,
    pub offset: u32,
    pub length: u32,
    pub uncompressed_length: Option<u32>,
}

impl Location {
    pub fn as_index_blob(&self, id: Id, tpe: BlobType) -> IndexBlob {
        IndexBlob {
            id,
            tpe,
            offset: self.offset,
            length: self.length,
            uncompressed_length: self.uncompressed_length,
        }
    }

    /// The blob's plaintext size.
    pub fn plain_len(&self) -> u64 {
        match self.uncompressed_length {
            Some(n) => u64::from(n),
            None => u64::from(self.length).saturating_sub(super::crypto::OVERHEAD as u64),
        }
    }
}

/// All blobs of a repository.
#[derive(Default)]
pub struct Index {
    blobs: HashMap<(Id, BlobType), Location>,
    /// The index files this was built from.
    pub files: Vec<Id>,
    /// Packs named by the index, with the blobs each holds.
    pub packs: HashMap<Id, Vec<IndexBlob>>,
}

impl Index {
    /// Builds the index from `(file id, content)`, skipping superseded files.
    pub fn from_files(files: Vec<(Id, IndexFile)>) -> Index {
        let superseded: HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut idx = Index::default();
        for (id, f) in files {
            if superseded.contains(&id) {
                continue;
            }
            idx.files.push(id);
            for p in f.packs {
                idx.add_pack(p.id, &p.blobs);
            }
        }
        idx
    }

    pub fn add_pack(&mut self, pack: Id, blobs: &[IndexBlob]) {
        for b in blobs {
            self.blobs.entry((b.id, b.tpe)).or_insert(Location {
                pack,
                offset: b.offset,
                length: b.length,
                uncompressed_length: b.uncompressed_length,
            });
        }
        self.packs.entry(pack).or_default().extend_from_slice(blobs);
    }

    pub fn get(&self, id: &Id, tpe: BlobType) -> Option<&Location> {
        self.blobs.get(&(*id, tpe))
    }

    pub fn contains(&self, id: &Id, tpe: BlobType) -> bool {
        self.blobs.contains_key(&(*id, tpe))
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }
}
