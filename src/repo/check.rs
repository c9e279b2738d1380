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
    /// What could not be read (the storage failed even after retries), so
    /// could not be checked: not known to be damaged, not known to be sound.
    pub unreadable: Vec<String>,
}

/// What a check proved, worst first.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Some data is damaged or missing.
    Damaged,
    /// Nothing damaged was found, but some data could not be read.
    Unreadable,
    /// Every snapshot can be restored.
    Sound,
}

impl CheckReport {
    /// No errors and everything read: every snapshot can be restored.
    pub fn is_ok(&self) -> bool {
        self.verdict() == Verdict::Sound
    }

    pub fn verdict(&self) -> Verdict {
        if !self.errors.is_empty() || !self.damaged.is_empty() {
            Verdict::Damaged
        } else if !self.unreadable.is_empty() {
            Verdict::Unreadable
        } else {
            Verdict::Sound
        }
    }
}

/// Whether a missing blob proves damage: not when an index file could not be read.
struct Lookup<'a> {
    idx: &'a Index,
    bad: HashMap<(Id, BlobType), String>,
    unreadable: HashMap<(Id, BlobType), String>,
    index_complete: bool,
}

/// A problem with one blob: damage, or data that could not be read.
enum Problem {
    Damage(String),
    Unreadable(String),
}

impl Lookup<'_> {
    fn blob(&self, id: &Id, tpe: BlobType) -> Option<Problem> {
        if let Some(p) = self.bad.get(&(*id, tpe)) {
            return Some(Problem::Damage(p.clone()));
        }
        if let Some(p) = self.unreadable.get(&(*id, tpe)) {
            return Some(Problem::Unreadable(p.clone()));
        }
        if self.idx.contains(id, tpe) {
            return None;
        }
        let what = match tpe {
            BlobType::Tree => "tree",
            BlobType::Data => "data blob",
        };
        Some(if self.index_complete {
            Problem::Damage(format!("{what} {} is not in any index", id.short()))
        } else {
            Problem::Unreadable(format!(
                "{what} {} is in no index that could be read",
                id.short()
            ))
        })
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
        let mut index_complete = true;
        for (name, _) in self.be.list(FileType::Index)? {
            match self.load_json::<IndexFile>(FileType::Index, &name) {
                Ok(f) => files.push((Id::parse(&name).expect("id"), f)),
                Err(e) if e.is_unreadable() => {
                    index_complete = false;
                    rep.unreadable.push(format!("index file {name}: {e}"));
                }
                Err(e) => rep.errors.push(format!("index file {name}: {e}")),
            }
        }
        let idx = Index::from_files(files);
        rep.blobs = idx.len();

        // packs: presence and size, then (read_data) content
        let listed: HashMap<String, u64> = self.be.list(FileType::Pack)?.into_iter().collect();
        let mut bad: HashMap<(Id, BlobType), String> = HashMap::new();
        let mut unreadable: HashMap<(Id, BlobType), String> = HashMap::new();
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
                    let (list, map) = if e.is_unreadable() {
                        (&mut rep.unreadable, &mut unreadable)
                    } else {
                        (&mut rep.errors, &mut bad)
                    };
                    list.push(format!("pack {}: {e}", pid.short()));
                    for b in blobs {
                        map.insert((b.id, b.tpe), format!("pack {} unreadable", pid.short()));
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
        let lookup = Lookup {
            idx: &idx,
            bad,
            unreadable,
            index_complete,
        };
        for (name, _) in self.be.list(FileType::Snapshot)? {
            rep.snapshots += 1;
            let sid = Id::parse(&name).expect("id");
            let snap: SnapshotFile = match self.load_json(FileType::Snapshot, &name) {
                Ok(s) => s,
                Err(e) if e.is_unreadable() => {
                    rep.unreadable
                        .push(format!("snapshot file {}: {e}", sid.short()));
                    continue;
                }
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
            self.check_tree(&lookup, &sid, &snap.tree, "", &mut rep);
        }
        rep.errors.sort();
        rep.errors.dedup();
        rep.unreadable.sort();
        rep.unreadable.dedup();
        Ok(rep)
    }

    fn check_tree(
        &self,
        lookup: &Lookup,
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
        let tree = match lookup.blob(tree_id, BlobType::Tree) {
            Some(p) => Err(p),
            None => self.load_tree(lookup.idx, tree_id).map_err(|e| {
                if e.is_unreadable() {
                    Problem::Unreadable(e.to_string())
                } else {
                    Problem::Damage(e.to_string())
                }
            }),
        };
        let tree = match tree {
            Ok(t) => t,
            Err(p) => {
                rep.record(sid, &dir_name, "folder", p);
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
                    Some(sub) => self.check_tree(lookup, sid, sub, &p, rep),
                    None => rep.errors.push(format!(
                        "snapshot {}: folder {p} has no subtree",
                        sid.short()
                    )),
                },
                "file" => {
                    let Some(content) = &n.content else {
                        rep.errors.push(format!(
                            "snapshot {}: file {p} has no content list",
                            sid.short()
                        ));
                        continue;
                    };
                    if let Some(problem) = stream_problem(lookup, content, n.size) {
                        rep.record(sid, &p, "stream", problem);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The worst problem of a stream's blobs: damage if any is damaged, else
/// unreadable if any could not be read, else a size that does not add up.
fn stream_problem(lookup: &Lookup, content: &[Id], size: u64) -> Option<Problem> {
    let mut damage = Vec::new();
    let mut unread = Vec::new();
    let mut total = 0u64;
    for b in content {
        if let Some(loc) = lookup.idx.get(b, BlobType::Data) {
            total += loc.plain_len();
        }
        match lookup.blob(b, BlobType::Data) {
            Some(Problem::Damage(p)) => damage.push(p),
            Some(Problem::Unreadable(p)) => unread.push(p),
            None => {}
        }
    }
    damage.dedup();
    unread.dedup();
    if !damage.is_empty() {
        Some(Problem::Damage(damage.join("; ")))
    } else if !unread.is_empty() {
        Some(Problem::Unreadable(unread.join("; ")))
    } else if total != size {
        Some(Problem::Damage(format!(
            "size {size} does not match its blobs' {total} bytes"
        )))
    } else {
        None
    }
}

impl CheckReport {
    /// Records a problem with a folder or stream of snapshot `sid`.
    fn record(&mut self, sid: &Id, name: &str, what: &str, problem: Problem) {
        match problem {
            Problem::Damage(p) => {
                self.errors
                    .push(format!("snapshot {}: {what} {name}: {p}", sid.short()));
                self.damaged.push(Damage {
                    snapshot: sid.short(),
                    stream: name.to_string(),
                    problem: p,
                });
            }
            Problem::Unreadable(p) => self
                .unreadable
                .push(format!("snapshot {}: {what} {name}: {p}", sid.short())),
        }
    }
}
