//! Writing a snapshot: named byte streams are cut into chunks, deduplicated
//! against the index, compressed, encrypted and packed; `commit` then writes
//! the trees, the last packs, the index and finally the snapshot file, so a
//! snapshot is visible only once everything it references is durable.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use time::OffsetDateTime;

use super::backend::FileType;
use super::chunker::Chunker;
use super::error::{RepoError, Result};
use super::format::{BlobType, IndexFile, IndexPack, Node, SnapshotFile, Summary, Tree, MODE_DIR};
use super::id::Id;
use super::index::Index;
use super::lock::{Lock, LockKind};
use super::pack::{PackWriter, TARGET_SIZE};
use super::repository::{
    format_time, hostname, info, now, username, Repository, SnapshotInfo, StreamInfo,
    MANIFEST_STREAM,
};

/// Write an index file once this many new blobs are pending (restic's limit).
const INDEX_MAX_BLOBS: usize = 50_000;

/// What describes a snapshot besides its streams.
#[derive(Clone, Debug, Default)]
pub struct SnapshotMeta {
    /// Host name recorded in the snapshot; this machine's when `None`.
    pub hostname: Option<String>,
    /// Tags, e.g. `["instance=graphistry", "kind=backup"]`.
    pub tags: Vec<String>,
    /// restic's "paths" of the snapshot (used to group snapshots for `forget`);
    /// `["/upkeep"]` when empty.
    pub paths: Vec<String>,
    /// A JSON document stored with the snapshot as stream
    /// [`MANIFEST_STREAM`](super::MANIFEST_STREAM); read back with
    /// [`Repository::manifest`]. Can be set later with [`SnapshotWriter::set_manifest`].
    pub manifest: Option<String>,
    /// The snapshot's time; now when `None`.
    pub time: Option<OffsetDateTime>,
}

enum Entry {
    File(Box<Node>),
    Dir(BTreeMap<String, Entry>),
}

/// A snapshot being written; see [`Repository::begin_snapshot`].
pub struct SnapshotWriter<'r> {
    repo: &'r Repository,
    _lock: Option<Lock>,
    meta: SnapshotMeta,
    time: OffsetDateTime,
    idx: Arc<Index>,
    seen: HashSet<(Id, BlobType)>,
    data_pack: PackWriter,
    tree_pack: PackWriter,
    pending_index: Vec<IndexPack>,
    pending_blobs: usize,
    root: BTreeMap<String, Entry>,
    summary: Summary,
    progress: Option<Box<dyn Fn(u64) + 'r>>,
    bytes_done: u64,
    failed: Option<String>,
}

/// A chunk's id, the chunk, and its encoded form unless the index has it already.
type Prepared = (Id, Vec<u8>, Option<(Vec<u8>, Option<u32>)>);

fn prepare(repo: &Repository, idx: &Index, chunk: Vec<u8>) -> Prepared {
    let id = Id::hash(&chunk);
    let enc = (!idx.contains(&id, BlobType::Data)).then(|| repo.encode_blob(&chunk));
    (id, chunk, enc)
}

/// Checks a stream name and splits it into its path segments.
fn segments(name: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = name.split('/').collect();
    if name.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(RepoError::InvalidStreamName(name.into()));
    }
    Ok(parts)
}

impl Repository {
    /// Starts a snapshot: takes a shared lock (so a restic `prune` cannot run
    /// meanwhile) and returns a writer to add streams to.
    pub fn begin_snapshot(&self, meta: SnapshotMeta) -> Result<SnapshotWriter<'_>> {
        let lock = Lock::acquire(self, LockKind::Shared)?;
        self.writer(meta, Some(lock))
    }

    /// A writer holding `lock` (none for a repository being exported into a file).
    pub(crate) fn writer(
        &self,
        meta: SnapshotMeta,
        lock: Option<Lock>,
    ) -> Result<SnapshotWriter<'_>> {
        let idx = self.index()?;
        let time = meta.time.unwrap_or_else(now);
        Ok(SnapshotWriter {
            repo: self,
            _lock: lock,
            meta,
            time,
            idx,
            seen: HashSet::new(),
            data_pack: PackWriter::default(),
            tree_pack: PackWriter::default(),
            pending_index: Vec::new(),
            pending_blobs: 0,
            root: BTreeMap::new(),
            summary: Summary {
                backup_start: format_time(now()),
                ..Summary::default()
            },
            progress: None,
            bytes_done: 0,
            failed: None,
        })
    }
}

impl<'r> SnapshotWriter<'r> {
    /// Calls `f` with the number of bytes read from all streams so far, after each chunk.
    pub fn set_progress(&mut self, f: impl Fn(u64) + 'r) {
        self.progress = Some(Box::new(f));
    }

    /// Sets (or replaces) the manifest stored at commit.
    pub fn set_manifest(&mut self, json: impl Into<String>) {
        self.meta.manifest = Some(json.into());
    }

    /// Reads `reader` to its end and stores it as stream `name` (path segments
    /// separated by `/`). Memory use does not depend on the stream's size. If
    /// reading fails, the error is returned and the snapshot can no longer be committed.
    pub fn add_stream(&mut self, name: &str, reader: &mut dyn Read) -> Result<StreamInfo> {
        if let Some(f) = &self.failed {
            return Err(RepoError::Invalid(format!(
                "snapshot abandoned after an earlier error: {f}"
            )));
        }
        let res = self.add_stream_inner(name, reader);
        if let Err(e) = &res {
            if !matches!(
                e,
                RepoError::InvalidStreamName(_) | RepoError::DuplicateStream(_)
            ) {
                self.failed = Some(e.to_string());
            }
        }
        res
    }

    fn add_stream_inner(&mut self, name: &str, reader: &mut dyn Read) -> Result<StreamInfo> {
        let parts = segments(name)?;
        // find the folder, refusing a name already used (as a file or a folder)
        {
            let mut dir = &self.root;
            for (i, p) in parts.iter().enumerate() {
                match dir.get(*p) {
                    None => break,
                    Some(Entry::Dir(d)) if i + 1 < parts.len() => dir = d,
                    Some(_) => return Err(RepoError::DuplicateStream(name.into())),
                }
            }
        }
        // chunking runs on this thread while the previous chunk is hashed,
        // compressed and encrypted on a second one
        let repo: &'r Repository = self.repo;
        let idx = self.idx.clone();
        let mut chunker = Chunker::new(reader, &repo.tables);
        let mut content = Vec::new();
        let mut size = 0u64;
        std::thread::scope(|s| -> Result<()> {
            let mut pending: Option<std::thread::ScopedJoinHandle<'_, Prepared>> = None;
            let mut spare = Vec::new();
            loop {
                let mut chunk = std::mem::take(&mut spare);
                let more = chunker
                    .next_chunk(&mut chunk)
                    .map_err(|e| RepoError::Source {
                        name: name.into(),
                        source: e,
                    });
                if let Some(h) = pending.take() {
                    let (id, plain, enc) = h.join().expect("blob worker panicked");
                    self.store_data(id, &plain, enc)?;
                    content.push(id);
                    size += plain.len() as u64;
                    self.bytes_done += plain.len() as u64;
                    if let Some(p) = &self.progress {
                        p(self.bytes_done);
                    }
                    spare = plain;
                }
                if !more? {
                    return Ok(());
                }
                let idx = &*idx;
                pending = Some(s.spawn(move || prepare(repo, idx, chunk)));
            }
        })?;
        let t = format_time(self.time);
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let leaf = parts[parts.len() - 1].to_string();
        let node = Node {
            name: leaf.clone(),
            tpe: "file".into(),
            mode: 0o600,
            mtime: t.clone(),
            atime: t.clone(),
            ctime: t,
            uid,
            gid,
            user: String::new(),
            size,
            links: 1,
            content: Some(content),
            subtree: None,
        };
        let mut dir = &mut self.root;
        for p in &parts[..parts.len() - 1] {
            let e = dir
                .entry(p.to_string())
                .or_insert_with(|| Entry::Dir(BTreeMap::new()));
            match e {
                Entry::Dir(d) => dir = d,
                Entry::File(_) => return Err(RepoError::DuplicateStream(name.into())),
            }
        }
        dir.insert(leaf, Entry::File(Box::new(node)));
        self.summary.files_new += 1;
        self.summary.total_files_processed += 1;
        self.summary.total_bytes_processed += size;
        Ok(StreamInfo {
            name: name.into(),
            size,
        })
    }

    fn store_data(
        &mut self,
        id: Id,
        plain: &[u8],
        enc: Option<(Vec<u8>, Option<u32>)>,
    ) -> Result<()> {
        let Some((enc, uncompressed)) = enc else {
            return Ok(());
        };
        if !self.seen.insert((id, BlobType::Data)) {
            return Ok(());
        }
        self.summary.data_blobs += 1;
        self.summary.data_added += plain.len() as u64;
        self.data_pack.add(BlobType::Data, id, &enc, uncompressed);
        if self.data_pack.size() >= TARGET_SIZE {
            self.flush_pack(BlobType::Data)?;
        }
        Ok(())
    }

    fn add_blob(&mut self, tpe: BlobType, id: Id, plain: &[u8]) -> Result<()> {
        if self.idx.contains(&id, tpe) || !self.seen.insert((id, tpe)) {
            return Ok(());
        }
        let (enc, uncompressed) = self.repo.encode_blob(plain);
        match tpe {
            BlobType::Data => {
                self.summary.data_blobs += 1;
                self.data_pack.add(tpe, id, &enc, uncompressed);
            }
            BlobType::Tree => {
                self.summary.tree_blobs += 1;
                self.tree_pack.add(tpe, id, &enc, uncompressed);
            }
        }
        self.summary.data_added += plain.len() as u64;
        if self.data_pack.size() >= TARGET_SIZE {
            self.flush_pack(BlobType::Data)?;
        }
        if self.tree_pack.size() >= TARGET_SIZE {
            self.flush_pack(BlobType::Tree)?;
        }
        Ok(())
    }

    fn flush_pack(&mut self, tpe: BlobType) -> Result<()> {
        if tpe == BlobType::Tree {
            // trees go to the index only after the data they reference
            self.flush_pack(BlobType::Data)?;
        }
        let pack = std::mem::take(match tpe {
            BlobType::Data => &mut self.data_pack,
            BlobType::Tree => &mut self.tree_pack,
        });
        if pack.is_empty() {
            return Ok(());
        }
        let (id, bytes, blobs) = pack.finish(&self.repo.key);
        self.repo.be.write(FileType::Pack, &id.to_hex(), &bytes)?;
        self.summary.data_added_packed += bytes.len() as u64;
        self.pending_blobs += blobs.len();
        self.pending_index.push(IndexPack { id, blobs });
        if self.pending_blobs >= INDEX_MAX_BLOBS {
            self.flush_index()?;
        }
        Ok(())
    }

    fn flush_index(&mut self) -> Result<()> {
        if self.pending_index.is_empty() {
            return Ok(());
        }
        let f = IndexFile {
            supersedes: Vec::new(),
            packs: std::mem::take(&mut self.pending_index),
        };
        self.repo.save_unpacked(
            FileType::Index,
            &serde_json::to_vec(&f).expect("serializable"),
        )?;
        self.pending_blobs = 0;
        Ok(())
    }

    fn save_dir(&mut self, entries: BTreeMap<String, Entry>) -> Result<Id> {
        let t = format_time(self.time);
        let mut nodes = Vec::with_capacity(entries.len());
        for (name, e) in entries {
            match e {
                Entry::File(n) => nodes.push(*n),
                Entry::Dir(d) => {
                    let sub = self.save_dir(d)?;
                    self.summary.dirs_new += 1;
                    nodes.push(Node {
                        name,
                        tpe: "dir".into(),
                        mode: MODE_DIR | 0o700,
                        mtime: t.clone(),
                        atime: t.clone(),
                        ctime: t.clone(),
                        uid: 0,
                        gid: 0,
                        user: String::new(),
                        size: 0,
                        links: 0,
                        content: None,
                        subtree: Some(sub),
                    });
                }
            }
        }
        let mut json = serde_json::to_vec(&Tree { nodes }).expect("serializable");
        json.push(b'\n');
        let id = Id::hash(&json);
        self.add_blob(BlobType::Tree, id, &json)?;
        Ok(id)
    }

    /// Makes the snapshot durable and visible: writes the manifest, trees, the
    /// remaining packs, the index, and last the snapshot file.
    pub fn commit(mut self) -> Result<SnapshotInfo> {
        if let Some(f) = &self.failed {
            return Err(RepoError::Invalid(format!(
                "snapshot not saved: a stream failed: {f}"
            )));
        }
        if let Some(m) = self.meta.manifest.take() {
            self.add_stream(MANIFEST_STREAM, &mut m.as_bytes())?;
        }
        let root = std::mem::take(&mut self.root);
        self.flush_pack(BlobType::Data)?;
        let tree = self.save_dir(root)?;
        self.finish_packs()?;
        self.summary.backup_end = format_time(now());
        let paths = if self.meta.paths.is_empty() {
            vec!["/upkeep".to_string()]
        } else {
            self.meta.paths.clone()
        };
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let snap = SnapshotFile {
            time: format_time(self.time),
            parent: None,
            tree,
            paths,
            hostname: self.meta.hostname.clone().unwrap_or_else(hostname),
            username: username(),
            uid,
            gid,
            tags: self.meta.tags.clone(),
            program_version: Some(format!("upkeep {}", env!("CARGO_PKG_VERSION"))),
            summary: Some(self.summary.clone()),
        };
        let id = self.repo.save_unpacked(
            FileType::Snapshot,
            &serde_json::to_vec(&snap).expect("serializable"),
        )?;
        Ok(info(&id, &snap))
    }

    fn finish_packs(&mut self) -> Result<()> {
        self.flush_pack(BlobType::Data)?;
        self.flush_pack(BlobType::Tree)?;
        self.flush_index()?;
        self.repo.reset_index();
        Ok(())
    }

    /// Copies tree `tree` of `src` with everything below it (skipping what this
    /// repository already has).
    pub(crate) fn copy_tree(&mut self, src: &Repository, src_idx: &Index, tree: &Id) -> Result<()> {
        if self.idx.contains(tree, BlobType::Tree) || self.seen.contains(&(*tree, BlobType::Tree)) {
            return Ok(());
        }
        let raw = src.read_blob(src_idx, BlobType::Tree, tree)?;
        let t: Tree = serde_json::from_slice(&raw)
            .map_err(|e| RepoError::Corrupt(format!("tree {tree} is not valid: {e}")))?;
        for n in &t.nodes {
            for b in n.content.iter().flatten() {
                if self.idx.contains(b, BlobType::Data) || self.seen.contains(&(*b, BlobType::Data))
                {
                    continue;
                }
                let data = src.read_blob(src_idx, BlobType::Data, b)?;
                self.bytes_done += data.len() as u64;
                self.add_blob(BlobType::Data, *b, &data)?;
                if let Some(p) = &self.progress {
                    p(self.bytes_done);
                }
            }
            if let Some(sub) = &n.subtree {
                self.copy_tree(src, src_idx, sub)?;
            }
        }
        self.add_blob(BlobType::Tree, *tree, &raw)
    }

    /// Writes the copied data and then `snap` (as it was in the source repository).
    pub(crate) fn commit_copy(mut self, snap: &SnapshotFile) -> Result<SnapshotInfo> {
        self.finish_packs()?;
        let id = self.repo.save_unpacked(
            FileType::Snapshot,
            &serde_json::to_vec(snap).expect("serializable"),
        )?;
        Ok(info(&id, snap))
    }
}
