//! `forget` (remove snapshots by a keep policy, like restic's) and `prune`
//! (remove the data no snapshot needs any more).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;

use super::backend::FileType;
use super::error::{RepoError, Result};
use super::format::{BlobType, IndexFile, IndexPack, SnapshotFile};
use super::id::Id;
use super::index::Index;
use super::lock::{Lock, LockKind};
use super::pack::{self, PackWriter, TARGET_SIZE};
use super::repository::{info, parse_time, Repository, SnapshotInfo};

/// Which snapshots to keep, per group of snapshots with the same host name and
/// paths (restic's default grouping). A zero count means "not used". A snapshot
/// is kept if any rule keeps it; rules count the newest snapshot of each
/// hour/day/week/month/year.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// What [`Repository::prune`] removed.
#[derive(Serialize, Clone, Debug, Default)]
pub struct PruneReport {
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub blobs_removed: usize,
    /// Bytes of pack files deleted.
    pub bytes_deleted: u64,
    /// Bytes of pack files written by repacking.
    pub bytes_written: u64,
    /// Unfinished files of interrupted backups deleted (their bytes count in `bytes_deleted`).
    pub temporary_files_deleted: usize,
}

/// What [`Repository::forget`] did.
#[derive(Serialize, Clone, Debug, Default)]
pub struct ForgetReport {
    pub kept: Vec<SnapshotInfo>,
    pub removed: Vec<SnapshotInfo>,
    pub prune: Option<PruneReport>,
}

/// Bucket keys of one time, for each rule.
fn buckets(t: OffsetDateTime) -> [i64; 5] {
    let (y, m, d, h) = (
        i64::from(t.year()),
        i64::from(u8::from(t.month())),
        i64::from(t.day()),
        i64::from(t.hour()),
    );
    let (wy, w, _) = t.to_iso_week_date();
    [
        ((y * 100 + m) * 100 + d) * 100 + h,
        (y * 100 + m) * 100 + d,
        i64::from(wy) * 100 + i64::from(w),
        y * 100 + m,
        y,
    ]
}

/// Splits snapshots (any order) into kept and removed, newest first.
fn apply_policy(p: &KeepPolicy, snaps: &[(Id, SnapshotFile)]) -> (Vec<Id>, Vec<Id>) {
    type Group = (String, Vec<String>);
    let mut groups: BTreeMap<Group, Vec<(OffsetDateTime, Id)>> = BTreeMap::new();
    for (id, s) in snaps {
        let mut paths = s.paths.clone();
        paths.sort();
        let t = parse_time(&s.time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        groups
            .entry((s.hostname.clone(), paths))
            .or_default()
            .push((t, *id));
    }
    let (mut keep, mut remove) = (Vec::new(), Vec::new());
    for (_, mut list) in groups {
        list.sort_by(|a, b| b.cmp(a));
        let counts = [p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
        let mut left = counts;
        let mut last: [Option<i64>; 5] = [None; 5];
        let mut last_left = p.last;
        for (t, id) in list {
            let mut kept = false;
            if last_left > 0 {
                last_left -= 1;
                kept = true;
            }
            let b = buckets(t);
            for i in 0..5 {
                if left[i] > 0 && last[i] != Some(b[i]) {
                    last[i] = Some(b[i]);
                    left[i] -= 1;
                    kept = true;
                }
            }
            if kept {
                keep.push(id);
            } else {
                remove.push(id);
            }
        }
    }
    (keep, remove)
}

impl Repository {
    /// Removes the snapshots `policy` does not keep, then with `prune` the data
    /// only they needed. Refuses an empty policy.
    pub fn forget(&self, policy: KeepPolicy, prune: bool) -> Result<ForgetReport> {
        if policy.is_empty() {
            return Err(RepoError::Invalid(
                "no keep rule given (e.g. --keep-last 7): refusing to remove every snapshot".into(),
            ));
        }
        let lock = Lock::acquire(self, LockKind::Exclusive)?;
        let snaps = self.load_snapshots()?;
        let (keep, remove) = apply_policy(&policy, &snaps);
        let by_id: HashMap<Id, &SnapshotFile> = snaps.iter().map(|(i, s)| (*i, s)).collect();
        let mut rep = ForgetReport {
            kept: keep.iter().map(|i| info(i, by_id[i])).collect(),
            removed: remove.iter().map(|i| info(i, by_id[i])).collect(),
            prune: None,
        };
        for id in &remove {
            self.be.remove(FileType::Snapshot, &id.to_hex())?;
        }
        if prune {
            rep.prune = Some(self.prune_locked(&lock)?);
        }
        Ok(rep)
    }

    /// What [`forget`](Self::forget) would keep and remove, changing nothing.
    pub fn forget_plan(&self, policy: KeepPolicy) -> Result<ForgetReport> {
        let snaps = self.load_snapshots()?;
        let (keep, remove) = apply_policy(&policy, &snaps);
        let by_id: HashMap<Id, &SnapshotFile> = snaps.iter().map(|(i, s)| (*i, s)).collect();
        Ok(ForgetReport {
            kept: keep.iter().map(|i| info(i, by_id[i])).collect(),
            removed: if policy.is_empty() {
                Vec::new()
            } else {
                remove.iter().map(|i| info(i, by_id[i])).collect()
            },
            prune: None,
        })
    }

    /// Removes the given snapshots (ids, prefixes or `latest`).
    pub fn remove_snapshots(&self, snapshots: &[&str], prune: bool) -> Result<ForgetReport> {
        let lock = Lock::acquire(self, LockKind::Exclusive)?;
        let mut rep = ForgetReport::default();
        let resolved = snapshots
            .iter()
            .map(|s| self.resolve(s))
            .collect::<Result<Vec<_>>>()?;
        for (id, s) in resolved {
            self.be.remove(FileType::Snapshot, &id.to_hex())?;
            rep.removed.push(info(&id, &s));
        }
        rep.kept = self.snapshots()?;
        if prune {
            rep.prune = Some(self.prune_locked(&lock)?);
        }
        Ok(rep)
    }

    /// Removes data no snapshot references: deletes unused packs and repacks
    /// partly used ones. Takes an exclusive lock.
    pub fn prune(&self) -> Result<PruneReport> {
        let lock = Lock::acquire(self, LockKind::Exclusive)?;
        self.prune_locked(&lock)
    }

    fn prune_locked(&self, lock: &Lock) -> Result<PruneReport> {
        let mut rep = PruneReport::default();
        // the exclusive lock means no writer runs: unfinished files are garbage
        (rep.temporary_files_deleted, rep.bytes_deleted) = self.be.remove_temporaries()?;
        self.reset_index();
        let idx = self.index()?;
        // everything the remaining snapshots need
        let mut used: HashSet<(Id, BlobType)> = HashSet::new();
        for (_, s) in self.load_snapshots()? {
            self.mark_used(&idx, &s.tree, &mut used)?;
        }
        let mut keep_packs: Vec<IndexPack> = Vec::new();
        let mut delete: Vec<Id> = Vec::new();
        let mut repack: Vec<(Id, Vec<super::format::IndexBlob>)> = Vec::new();
        for (pid, blobs) in &idx.packs {
            // a blob counts for the pack the index resolves it to (duplicates elsewhere are unused)
            let is_used = |b: &super::format::IndexBlob| {
                used.contains(&(b.id, b.tpe))
                    && idx
                        .get(&b.id, b.tpe)
                        .is_some_and(|l| l.pack == *pid && l.offset == b.offset)
            };
            let n_used = blobs.iter().filter(|b| is_used(b)).count();
            if n_used == blobs.len() {
                keep_packs.push(IndexPack {
                    id: *pid,
                    blobs: blobs.clone(),
                });
            } else {
                rep.blobs_removed += blobs.len() - n_used;
                if n_used > 0 {
                    repack.push((*pid, blobs.iter().filter(|b| is_used(b)).cloned().collect()));
                }
                delete.push(*pid);
            }
        }
        // copy the used blobs of partly used packs (verified, still encrypted) into new packs
        let mut new_packs = Vec::new();
        let mut writers = [PackWriter::default(), PackWriter::default()];
        for (pid, blobs) in &repack {
            let name = pid.to_hex();
            for b in blobs {
                let raw =
                    self.be
                        .read_range(FileType::Pack, &name, u64::from(b.offset), b.length)?;
                pack::decode_blob(&self.key, b, &raw).map_err(|e| {
                    RepoError::Corrupt(format!(
                        "{e} while repacking pack {}; prune stopped, nothing was deleted",
                        pid.short()
                    ))
                })?;
                let w = &mut writers[usize::from(b.tpe == BlobType::Tree)];
                w.add(b.tpe, b.id, &raw, b.uncompressed_length);
                if w.size() >= TARGET_SIZE {
                    new_packs.push(self.write_pack(std::mem::take(w), &mut rep)?);
                }
            }
            rep.packs_repacked += 1;
        }
        for w in writers {
            if !w.is_empty() {
                new_packs.push(self.write_pack(w, &mut rep)?);
            }
        }
        let listed = self.be.list(FileType::Pack)?;
        let unreferenced: Vec<(String, u64)> = listed
            .iter()
            .filter(|(n, _)| !Id::parse(n).is_some_and(|id| idx.packs.contains_key(&id)))
            .filter(|(n, _)| !new_packs.iter().any(|p: &IndexPack| p.id.to_hex() == *n))
            .cloned()
            .collect();
        if delete.is_empty() && unreferenced.is_empty() && repack.is_empty() {
            return Ok(rep);
        }
        // one new index superseding all old ones, then delete old index files and packs
        // (only while our exclusive lock is still fresh: a writer may wait for it to go stale)
        lock.ensure_held()?;
        keep_packs.extend(new_packs);
        let mut old_files = idx.files.clone();
        let listed_index: Vec<Id> = self
            .be
            .list(FileType::Index)?
            .iter()
            .filter_map(|(n, _)| Id::parse(n))
            .collect();
        for f in listed_index {
            if !old_files.contains(&f) {
                old_files.push(f);
            }
        }
        let file = IndexFile {
            supersedes: old_files.clone(),
            packs: keep_packs,
        };
        self.save_unpacked(
            FileType::Index,
            &serde_json::to_vec(&file).expect("serializable"),
        )?;
        for f in &old_files {
            self.be.remove(FileType::Index, &f.to_hex())?;
        }
        let sizes: HashMap<&str, u64> = listed.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        for pid in &delete {
            let name = pid.to_hex();
            rep.bytes_deleted += sizes.get(name.as_str()).copied().unwrap_or(0);
            self.be.remove(FileType::Pack, &name)?;
            rep.packs_deleted += 1;
        }
        for (name, size) in unreferenced {
            self.be.remove(FileType::Pack, &name)?;
            rep.bytes_deleted += size;
            rep.packs_deleted += 1;
        }
        self.reset_index();
        Ok(rep)
    }

    fn write_pack(&self, w: PackWriter, rep: &mut PruneReport) -> Result<IndexPack> {
        let (id, bytes, blobs) = w.finish(&self.key);
        self.be.write(FileType::Pack, &id.to_hex(), &bytes)?;
        rep.bytes_written += bytes.len() as u64;
        Ok(IndexPack { id, blobs })
    }

    fn mark_used(&self, idx: &Index, tree: &Id, used: &mut HashSet<(Id, BlobType)>) -> Result<()> {
        if !used.insert((*tree, BlobType::Tree)) {
            return Ok(());
        }
        let t = self.load_tree(idx, tree).map_err(|e| {
            RepoError::Corrupt(format!(
                "{e}; prune stopped, nothing was deleted (run `upkeep check`)"
            ))
        })?;
        for n in &t.nodes {
            if let Some(c) = &n.content {
                used.extend(c.iter().map(|b| (*b, BlobType::Data)));
            }
            if let Some(sub) = &n.subtree {
                self.mark_used(idx, sub, used)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn snap(t: &str) -> SnapshotFile {
        SnapshotFile {
            time: t.into(),
            parent: None,
            tree: Id::default(),
            paths: vec!["/upkeep".into()],
            hostname: "h".into(),
            username: String::new(),
            uid: 0,
            gid: 0,
            tags: vec![],
            program_version: None,
            summary: None,
        }
    }

    #[test]
    fn policy_keeps_newest_per_bucket() {
        let times = [
            "2024-01-01T10:00:00Z",
            "2024-01-01T12:00:00Z",
            "2024-01-02T10:00:00Z",
            "2024-01-03T10:00:00Z",
            "2024-02-01T10:00:00Z",
        ];
        let snaps: Vec<(Id, SnapshotFile)> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (Id([i as u8; 32]), snap(t)))
            .collect();
        let (keep, remove) = apply_policy(
            &KeepPolicy {
                last: 1,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(keep, vec![Id([4; 32])]);
        assert_eq!(remove.len(), 4);
        let (keep, _) = apply_policy(
            &KeepPolicy {
                daily: 3,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(keep, vec![Id([4; 32]), Id([3; 32]), Id([2; 32])]);
        let (keep, _) = apply_policy(
            &KeepPolicy {
                monthly: 5,
                ..Default::default()
            },
            &snaps,
        );
        assert_eq!(keep, vec![Id([4; 32]), Id([3; 32])]);
        let _ = datetime!(2024-01-01 0:00 UTC);
    }
}
