//! `check`: is every snapshot restorable? Verifies index files, that each pack
//! exists with the right size, (with `read_data`) every pack's hash and every
//! blob's content, and that every tree and data blob a snapshot references is
//! present and sound. Problems are named by snapshot and stream.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::backend::FileType;
use super::crypto::OVERHEAD;
use super::error::{RepoError, Result};
use super::format::{BlobType, IndexFile, SnapshotFile};
use super::id::Id;
use super::index::Index;
use super::lock::{Lock, LockKind};
use super::pack;
use super::repository::Repository;

/// A stream of a snapshot that cannot be restored intact.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Short id of the snapshot.
    pub snapshot: String,
    /// The stream's name (a folder's name followed by `/` when a whole folder is lost).
    pub stream: String,
    pub problem: String,
}

/// What [`Repository::check`] found.
#[derive(Serialize, Clone, Debug, Default)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    /// Bytes of pack data read and verified (0 without `read_data`).
    pub bytes_read: u64,
    /// Packs no index names: left by interrupted backups, harmless; `forget --prune` removes them.
    pub unreferenced_packs: usize,
    /// Every problem found, one sentence each.
    pub errors: Vec<String>,
    /// The streams those problems make unrestorable.
    pub damaged: Vec<Damage>,
}

impl CheckReport {
    /// No errors: every snapshot can be restored.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty() && self.damaged.is_empty()
    }
}

fn header_len(blobs: &[super::format::IndexBlob]) -> u64 {
    let entries: u64 = blobs
        .iter()
        .map(|b| {
            if b.uncompressed_length.is_some() {
                41
            } else {
                37
            }
        })
        .sum();
    entries + OVERHEAD as u64 + 4
}

impl Repository {
    /// Checks the repository; with `read_data`, also reads and verifies all pack data.
    pub fn check(&self, read_data: bool) -> Result<CheckReport> {
        self.check_with_progress(read_data, None)
    }

    /// [`check`](Self::check), calling `progress` with the pack bytes read so far.
    pub fn check_with_progress(
        &self,
        read_data: bool,
        progress: Option<&dyn Fn(u64)>,
    ) -> Result<CheckReport> {
        let _lock = Lock::acquire(self, LockKind::Shared)?;
        let mut rep = CheckReport::default();

        // index files, one by one so that a damaged one is reported, not fatal
        let mut files = Vec::new();
        for (name, _) in self.be.list(FileType::Index)? {
            match self.load_json::<IndexFile>(FileType::Index, &name) {
                Ok(f) => files.push((Id::parse(&name).expect("id"), f)),
                Err(e) => rep.errors.push(format!("index file {name}: {e}")),
            }
        }
        let idx = Index::from_files(files);
        rep.blobs = idx.len();

        // packs: presence and size, then (read_data) content
        let listed: HashMap<String, u64> = self.be.list(FileType::Pack)?.into_iter().collect();
        let mut bad: HashMap<(Id, BlobType), String> = HashMap::new();
        let mut packs: Vec<(&Id, &Vec<super::format::IndexBlob>)> = idx.packs.iter().collect();
        packs.sort_by_key(|(id, _)| **id);
        rep.packs = packs.len();
        for (pid, blobs) in packs {
            let name = pid.to_hex();
            let expected =
                blobs.iter().map(|b| u64::from(b.length)).sum::<u64>() + header_len(blobs);
            let problem = match listed.get(&name) {
                None => Some("is missing".to_string()),
                Some(&size) if size != expected => {
                    Some(format!("has {size} bytes, the index says {expected}"))
                }
                _ => None,
            };
            if let Some(p) = problem {
                rep.errors.push(format!("pack {} {p}", pid.short()));
                for b in blobs {
                    bad.insert((b.id, b.tpe), format!("pack {} {p}", pid.short()));
                }
                continue;
            }
            if !read_data {
                continue;
            }
            let data = match self.be.read(FileType::Pack, &name) {
                Ok(d) => d,
                Err(e) => {
                    rep.errors.push(format!("pack {}: {e}", pid.short()));
                    for b in blobs {
                        bad.insert((b.id, b.tpe), format!("pack {} unreadable", pid.short()));
                    }
                    continue;
                }
            };
            rep.bytes_read += data.len() as u64;
            if let Some(p) = progress {
                p(rep.bytes_read);
            }
            if Id::hash(&data) != *pid {
                rep.errors.push(format!(
                    "pack {} is damaged: its content does not match its name",
                    pid.short()
                ));
            }
            match pack::parse_header(&self.key, &data, data.len() as u64) {
                Ok(header) => {
                    let in_header: HashSet<(Id, BlobType)> =
                        header.iter().map(|b| (b.id, b.tpe)).collect();
                    for b in blobs {
                        if !in_header.contains(&(b.id, b.tpe)) {
                            rep.errors.push(format!(
                                "pack {}: blob {} is in the index but not in the pack",
                                pid.short(),
                                b.id.short()
                            ));
                            bad.insert(
                                (b.id, b.tpe),
                                format!("blob missing from pack {}", pid.short()),
                            );
                        }
                    }
                }
                Err(e) => rep.errors.push(format!("pack {}: {e}", pid.short())),
            }
            for b in blobs {
                let (start, end) = (b.offset as usize, b.offset as usize + b.length as usize);
                let res = if end <= data.len() {
                    pack::decode_blob(&self.key, b, &data[start..end])
                } else {
                    Err(RepoError::Corrupt(
                        "blob lies beyond the end of its pack".into(),
                    ))
                };
                if let Err(e) = res {
                    let msg = match e {
                        RepoError::Corrupt(m) => m,
                        e => e.to_string(),
                    };
                    rep.errors.push(format!("pack {}: {msg}", pid.short()));
                    bad.insert((b.id, b.tpe), format!("{msg} (pack {})", pid.short()));
                }
            }
        }
        rep.unreferenced_packs = listed
            .keys()
            .filter(|n| !Id::parse(n).is_some_and(|id| idx.packs.contains_key(&id)))
            .count();

        // snapshots: every tree and data blob they reference
        for (name, _) in self.be.list(FileType::Snapshot)? {
            rep.snapshots += 1;
            let sid = Id::parse(&name).expect("id");
            let snap: SnapshotFile = match self.load_json(FileType::Snapshot, &name) {
                Ok(s) => s,
                Err(e) => {
                    rep.errors
                        .push(format!("snapshot file {}: {e}", sid.short()));
                    rep.damaged.push(Damage {
                        snapshot: sid.short(),
                        stream: "/".into(),
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            self.check_tree(&idx, &bad, &sid, &snap.tree, "", &mut rep);
        }
        rep.errors.sort();
        rep.errors.dedup();
        Ok(rep)
    }

    fn check_tree(
        &self,
        idx: &Index,
        bad: &HashMap<(Id, BlobType), String>,
        sid: &Id,
        tree_id: &Id,
        path: &str,
        rep: &mut CheckReport,
    ) {
        let dir_name = if path.is_empty() {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        let problem = if let Some(p) = bad.get(&(*tree_id, BlobType::Tree)) {
            Some(p.clone())
        } else if !idx.contains(tree_id, BlobType::Tree) {
            Some(format!("tree {} is not in any index", tree_id.short()))
        } else {
            None
        };
        let tree = match problem {
            Some(p) => Err(p),
            None => self.load_tree(idx, tree_id).map_err(|e| e.to_string()),
        };
        let tree = match tree {
            Ok(t) => t,
            Err(p) => {
                rep.errors
                    .push(format!("snapshot {}: folder {dir_name}: {p}", sid.short()));
                rep.damaged.push(Damage {
                    snapshot: sid.short(),
                    stream: dir_name,
                    problem: p,
                });
                return;
            }
        };
        for n in &tree.nodes {
            let p = if path.is_empty() {
                n.name.clone()
            } else {
                format!("{path}/{}", n.name)
            };
            match n.tpe.as_str() {
                "dir" => match &n.subtree {
                    Some(sub) => self.check_tree(idx, bad, sid, sub, &p, rep),
                    None => rep.errors.push(format!(
                        "snapshot {}: folder {p} has no subtree",
                        sid.short()
                    )),
                },
                "file" => {
                    let mut problems = Vec::new();
                    let mut total = 0u64;
                    let Some(content) = &n.content else {
                        rep.errors.push(format!(
                            "snapshot {}: file {p} has no content list",
                            sid.short()
                        ));
                        continue;
                    };
                    for b in content {
                        match idx.get(b, BlobType::Data) {
                            None => problems
                                .push(format!("data blob {} is not in any index", b.short())),
                            Some(loc) => {
                                total += loc.plain_len();
                                if let Some(why) = bad.get(&(*b, BlobType::Data)) {
                                    problems.push(why.clone());
                                }
                            }
                        }
                    }
                    if problems.is_empty() && total != n.size {
                        problems.push(format!(
                            "size {} does not match its blobs' {total} bytes",
                            n.size
                        ));
                    }
                    if !problems.is_empty() {
                        problems.dedup();
                        let problem = problems.join("; ");
                        rep.errors
                            .push(format!("snapshot {}: stream {p}: {problem}", sid.short()));
                        rep.damaged.push(Damage {
                            snapshot: sid.short(),
                            stream: p,
                            problem,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}
