//! Writing a snapshot: named byte streams are cut into chunks, deduplicated
//! against the index, compressed, encrypted and packed (by the threads of a
//! [`Pipeline`]); `commit` then writes the trees, the last packs, the index and
//! finally the snapshot file, so a snapshot is visible only once everything it
//! references is durable.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use time::OffsetDateTime;

use super::backend::FileType;
use super::chunker::Chunker;
use super::error::{RepoError, Result};
use super::format::{BlobType, Node, SnapshotFile, Summary, Tree, MODE_DIR};
use super::id::Id;
use super::index::Index;
use super::lock::{Lock, LockKind};
use super::pack::BlobEncoder;
use super::pipeline::{abandoned, InFlight, Pipeline};
use super::repository::{
    format_time, hostname, info, now, username, Repository, SnapshotInfo, StreamInfo,
    MANIFEST_STREAM,
};

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
    /// A stream being added: its name is taken.
    Pending,
    File(Box<Node>),
    Dir(BTreeMap<String, Entry>),
}

/// A snapshot being written; see [`Repository::begin_snapshot`].
///
/// Streams can be added from several threads at once (`add_stream` takes
/// `&self`); they share the writer's workers and its deduplication.
pub struct SnapshotWriter<'r> {
    repo: &'r Repository,
    // declared before the lock, so its threads have stopped writing when the
    // lock is released
    pipeline: Pipeline,
    lock: Option<Lock>,
    meta: SnapshotMeta,
    time: OffsetDateTime,
    /// For the blobs stored on the calling thread (trees, copied blobs).
    encoder: BlobEncoder,
    root: Mutex<BTreeMap<String, Entry>>,
    summary: Mutex<Summary>,
    progress: Option<Progress<'r>>,
    bytes_done: AtomicU64,
    failed: Mutex<Option<String>>,
}

/// A progress callback; streams added concurrently call it from their threads.
type Progress<'r> = Box<dyn Fn(u64) + Send + Sync + 'r>;

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
            pipeline: Pipeline::start(self, idx),
            lock,
            meta,
            time,
            encoder: BlobEncoder::new(self.config.version >= 2),
            root: Mutex::new(BTreeMap::new()),
            summary: Mutex::new(Summary {
                backup_start: format_time(now()),
                ..Summary::default()
            }),
            progress: None,
            bytes_done: AtomicU64::new(0),
            failed: Mutex::new(None),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("a stream's thread panicked")
}

impl<'r> SnapshotWriter<'r> {
    /// Calls `f` with the number of bytes read from all streams so far, after
    /// each chunk (from the threads adding streams).
    pub fn set_progress(&mut self, f: impl Fn(u64) + Send + Sync + 'r) {
        self.progress = Some(Box::new(f));
    }

    /// Sets (or replaces) the manifest stored at commit.
    pub fn set_manifest(&mut self, json: impl Into<String>) {
        self.meta.manifest = Some(json.into());
    }

    /// Reads `reader` to its end and stores it as stream `name` (path segments
    /// separated by `/`). Memory use does not depend on the stream's size.
    /// Several threads can add streams at once. If reading or storing fails,
    /// the error is returned and the snapshot can no longer be committed.
    pub fn add_stream(&self, name: &str, reader: &mut dyn Read) -> Result<StreamInfo> {
        if let Some(f) = &*lock(&self.failed) {
            return Err(abandoned(f));
        }
        let res = self.add_stream_inner(name, reader);
        if let Err(e) = &res {
            if !matches!(
                e,
                RepoError::InvalidStreamName(_) | RepoError::DuplicateStream(_)
            ) {
                lock(&self.failed).get_or_insert_with(|| e.to_string());
            }
        }
        res
    }

    fn add_stream_inner(&self, name: &str, reader: &mut dyn Read) -> Result<StreamInfo> {
        let parts = segments(name)?;
        self.reserve(name, &parts)?;
        let (content, size) = self.store_stream(name, reader)?;
        Ok(self.put(name, &parts, size, content, true))
    }

    /// Puts a stream's node where [`reserve`](Self::reserve) took its name,
    /// and counts it in the summary.
    fn put(
        &self,
        name: &str,
        parts: &[&str],
        size: u64,
        content: Vec<Id>,
        new: bool,
    ) -> StreamInfo {
        let node = self.file_node(parts[parts.len() - 1], size, content);
        self.place(parts, node);
        let mut summary = lock(&self.summary);
        if new {
            summary.files_new += 1;
        } else {
            summary.files_unmodified += 1;
        }
        summary.total_files_processed += 1;
        summary.total_bytes_processed += size;
        StreamInfo {
            name: name.into(),
            size,
        }
    }

    /// Adds streams `names` of the earlier snapshot `from` to this one under
    /// the same names, by reference to the blobs that snapshot stored: none
    /// is read again. All or none: every stream is found and every blob is
    /// in the repository before any name is taken.
    pub fn reuse_streams(&self, from: &str, names: &[String]) -> Result<Vec<StreamInfo>> {
        if let Some(f) = &*lock(&self.failed) {
            return Err(abandoned(f));
        }
        let (id, s) = self.repo.resolve(from)?;
        let idx = self.repo.index()?;
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let parts = segments(name)?;
            let node = self.repo.find_node(&idx, &id, &s, name)?;
            let content = node.content.clone().unwrap_or_default();
            if let Some(missing) = content
                .iter()
                .find(|b| !self.pipeline.has(BlobType::Data, b))
            {
                return Err(RepoError::Corrupt(format!(
                    "stream {name:?} of snapshot {} needs blob {} the repository lacks",
                    id.short(),
                    missing.short()
                )));
            }
            nodes.push((name, parts, node.size, content));
        }
        let mut out = Vec::with_capacity(nodes.len());
        for (name, parts, size, content) in nodes {
            self.reserve(name, &parts)?;
            out.push(self.put(name, &parts, size, content, false));
        }
        Ok(out)
    }

    /// Takes the name `parts` for a stream, refusing one already used (as a
    /// stream or a folder) or below a stream.
    fn reserve(&self, name: &str, parts: &[&str]) -> Result<()> {
        let mut root = lock(&self.root);
        let mut dir = &mut *root;
        let (leaf, folders) = parts.split_last().expect("a name has a segment");
        for p in folders {
            match dir
                .entry(p.to_string())
                .or_insert_with(|| Entry::Dir(BTreeMap::new()))
            {
                Entry::Dir(d) => dir = d,
                _ => return Err(RepoError::DuplicateStream(name.into())),
            }
        }
        if dir.contains_key(*leaf) {
            return Err(RepoError::DuplicateStream(name.into()));
        }
        dir.insert(leaf.to_string(), Entry::Pending);
        Ok(())
    }

    /// Puts `node` where [`reserve`](Self::reserve) took its name.
    fn place(&self, parts: &[&str], node: Node) {
        let mut root = lock(&self.root);
        let mut dir = &mut *root;
        let (leaf, folders) = parts.split_last().expect("a name has a segment");
        for p in folders {
            match dir.get_mut(*p) {
                Some(Entry::Dir(d)) => dir = d,
                _ => unreachable!("reserved folders stay folders"),
            }
        }
        dir.insert(leaf.to_string(), Entry::File(Box::new(node)));
    }

    /// Cuts `reader` into chunks on this thread while the pipeline's workers
    /// store the previous ones; returns the chunks' ids in stream order and
    /// the stream's size, once the packs holding them are written.
    fn store_stream(&self, name: &str, reader: &mut dyn Read) -> Result<(Vec<Id>, u64)> {
        let mut chunker = Chunker::new(reader, &self.repo.tables);
        let mut in_flight = VecDeque::new();
        let mut spare = Vec::new();
        let mut content = Vec::new();
        let mut size = 0u64;
        let read = loop {
            // after a pack failed, reading on would be wasted
            if self.pipeline.failed() {
                break Ok(());
            }
            if let Err(e) = self.ensure_locked() {
                break Err(e);
            }
            let mut chunk = spare.pop().unwrap_or_default();
            match chunker.next_chunk(&mut chunk) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => {
                    break Err(RepoError::Source {
                        name: name.into(),
                        source: e,
                    })
                }
            }
            in_flight.push_back(self.pipeline.submit(chunk));
            if in_flight.len() >= self.pipeline.window() {
                let first = in_flight.pop_front().expect("in flight");
                spare.push(self.collect(first, &mut content, &mut size));
            }
        };
        for c in in_flight {
            self.collect(c, &mut content, &mut size);
        }
        read?;
        self.pipeline.wait()?;
        Ok((content, size))
    }

    /// Waits for a chunk in flight, records its id, reports progress and
    /// returns the chunk's buffer for reuse.
    fn collect(&self, c: InFlight, content: &mut Vec<Id>, size: &mut u64) -> Vec<u8> {
        let (id, chunk) = c.wait();
        let n = chunk.len() as u64;
        content.push(id);
        *size += n;
        let done = self.bytes_done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(p) = &self.progress {
            p(done);
        }
        chunk
    }

    /// The tree node of a stream.
    fn file_node(&self, name: &str, size: u64, content: Vec<Id>) -> Node {
        let t = format_time(self.time);
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Node {
            name: name.to_string(),
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
        }
    }

    fn add_blob(&mut self, tpe: BlobType, id: Id, plain: &[u8]) {
        self.pipeline.store(&mut self.encoder, tpe, id, plain);
    }

    fn save_dir(&mut self, entries: BTreeMap<String, Entry>) -> Result<Id> {
        let t = format_time(self.time);
        let mut nodes = Vec::with_capacity(entries.len());
        for (name, e) in entries {
            match e {
                Entry::File(n) => nodes.push(*n),
                Entry::Pending => {
                    return Err(RepoError::Invalid(format!(
                        "snapshot not saved: stream {name} was not finished"
                    )))
                }
                Entry::Dir(d) => {
                    let sub = self.save_dir(d)?;
                    lock(&self.summary).dirs_new += 1;
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
        self.add_blob(BlobType::Tree, id, &json);
        Ok(id)
    }

    /// Makes the snapshot durable and visible: writes the manifest, trees, the
    /// remaining packs, the index, and last the snapshot file.
    pub fn commit(mut self) -> Result<SnapshotInfo> {
        if let Some(f) = &*lock(&self.failed) {
            return Err(RepoError::Invalid(format!(
                "snapshot not saved: a stream failed: {f}"
            )));
        }
        if let Some(m) = self.meta.manifest.take() {
            self.add_stream(MANIFEST_STREAM, &mut m.as_bytes())?;
        }
        let root = std::mem::take(&mut *lock(&self.root));
        self.pipeline.flush(BlobType::Data);
        let tree = self.save_dir(root)?;
        self.ensure_locked()?;
        self.finish_packs()?;
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
            summary: Some(self.summary()),
        };
        self.ensure_locked()?;
        let id = self.repo.save_unpacked(
            FileType::Snapshot,
            &serde_json::to_vec(&snap).expect("serializable"),
        )?;
        Ok(info(&id, &snap))
    }

    /// Fails once the repository lock is lost (see [`Lock::ensure_held`]).
    fn ensure_locked(&self) -> Result<()> {
        self.lock.as_ref().map_or(Ok(()), Lock::ensure_held)
    }

    /// The summary recorded in the snapshot.
    fn summary(&self) -> Summary {
        let added = self.pipeline.added();
        Summary {
            backup_end: format_time(now()),
            data_blobs: added.data_blobs,
            tree_blobs: added.tree_blobs,
            data_added: added.data_added,
            data_added_packed: added.data_added_packed,
            ..lock(&self.summary).clone()
        }
    }

    fn finish_packs(&mut self) -> Result<()> {
        let res = self.pipeline.finish();
        self.repo.reset_index();
        res
    }

    /// Copies tree `tree` of `src` with everything below it (skipping what this
    /// repository already has).
    pub(crate) fn copy_tree(&mut self, src: &Repository, src_idx: &Index, tree: &Id) -> Result<()> {
        self.ensure_locked()?;
        if self.pipeline.has(BlobType::Tree, tree) {
            return Ok(());
        }
        let raw = src.read_blob(src_idx, BlobType::Tree, tree)?;
        let t: Tree = serde_json::from_slice(&raw)
            .map_err(|e| RepoError::Corrupt(format!("tree {tree} is not valid: {e}")))?;
        for n in &t.nodes {
            for b in n.content.iter().flatten() {
                if self.pipeline.has(BlobType::Data, b) {
                    continue;
                }
                self.pipeline.check()?;
                let data = src.read_blob(src_idx, BlobType::Data, b)?;
                let done = self
                    .bytes_done
                    .fetch_add(data.len() as u64, Ordering::Relaxed)
                    + data.len() as u64;
                self.add_blob(BlobType::Data, *b, &data);
                if let Some(p) = &self.progress {
                    p(done);
                }
            }
            if let Some(sub) = &n.subtree {
                self.copy_tree(src, src_idx, sub)?;
            }
        }
        self.add_blob(BlobType::Tree, *tree, &raw);
        Ok(())
    }

    /// Writes the copied data and then `snap` (as it was in the source repository).
    pub(crate) fn commit_copy(mut self, snap: &SnapshotFile) -> Result<SnapshotInfo> {
        self.ensure_locked()?;
        self.finish_packs()?;
        self.ensure_locked()?;
        let id = self.repo.save_unpacked(
            FileType::Snapshot,
            &serde_json::to_vec(snap).expect("serializable"),
        )?;
        Ok(info(&id, snap))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::chunker::Chunker;
    use super::*;

    /// Deterministic incompressible bytes: SHA-256 in counter mode.
    fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
        (0u64..)
            .flat_map(|i| Id::hash(&[&[seed][..], &i.to_le_bytes()].concat()).0)
            .take(len)
            .collect()
    }

    /// Reads in small pieces, so concurrent streams interleave chunk by chunk.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(64 * 1024);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn chunk_ids(repo: &Repository, data: &[u8]) -> Vec<Id> {
        let mut c = Chunker::new(data, &repo.tables);
        let mut chunk = Vec::new();
        let mut ids = Vec::new();
        while c.next_chunk(&mut chunk).unwrap() {
            ids.push(Id::hash(&chunk));
        }
        ids
    }

    #[test]
    fn concurrent_streams_share_dedup_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::for_tests(tmp.path());
        // the same 6 MiB at the start of both streams: their first chunks are identical
        let shared = pseudo_random(6 << 20, 1);
        let a = [&shared[..], &pseudo_random(1 << 20, 2)].concat();
        let b = [&shared[..], &pseudo_random(2 << 20, 3)].concat();
        let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        let progress = AtomicU64::new(0);
        w.set_progress(|n| {
            progress.fetch_max(n, Ordering::Relaxed);
        });
        let (ra, rb) = std::thread::scope(|s| {
            let w = &w;
            let ta = s.spawn(|| w.add_stream("db/a.dump", &mut Trickle(&a)));
            let tb = s.spawn(|| w.add_stream("volumes/b.tar", &mut Trickle(&b)));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!(ra.unwrap().size, a.len() as u64);
        assert_eq!(rb.unwrap().size, b.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), (a.len() + b.len()) as u64);
        let snap = w.commit().unwrap();

        for (name, data) in [("db/a.dump", &a), ("volumes/b.tar", &b)] {
            let mut out = Vec::new();
            repo.restore_stream(&snap.id, name, &mut out).unwrap();
            assert!(out == *data, "{name} differs");
        }
        // every distinct chunk is stored exactly once
        let (ia, ib) = (chunk_ids(&repo, &a), chunk_ids(&repo, &b));
        let distinct: HashSet<Id> = ia.iter().chain(&ib).copied().collect();
        assert!(
            distinct.len() < ia.len() + ib.len(),
            "the streams share no chunk"
        );
        let idx = repo.index().unwrap();
        let stored: Vec<Id> = idx
            .packs
            .values()
            .flatten()
            .filter(|b| b.tpe == BlobType::Data)
            .map(|b| b.id)
            .collect();
        assert_eq!(stored.len(), distinct.len());
        assert_eq!(stored.into_iter().collect::<HashSet<_>>(), distinct);
        assert!(repo.check(true).unwrap().is_ok());
    }

    #[test]
    fn a_name_taken_by_a_running_stream_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::for_tests(tmp.path());
        let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        w.reserve("a/b", &["a", "b"]).unwrap();
        for name in ["a/b", "a", "a/b/c"] {
            let err = w.add_stream(name, &mut std::io::empty()).unwrap_err();
            assert!(
                matches!(err, RepoError::DuplicateStream(_)),
                "{name}: {err}"
            );
        }
        w.add_stream("a/c", &mut std::io::empty()).unwrap();
    }

    #[test]
    fn reused_streams_read_back_without_storing_anything_and_all_or_none() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::for_tests(tmp.path());
        let dump = pseudo_random(3 << 20, 4);
        let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        w.add_stream("postgres/a.dump", &mut &dump[..]).unwrap();
        w.add_stream("postgres/b.dump", &mut &b"small"[..]).unwrap();
        let first = w.commit().unwrap();

        let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        // one name missing: nothing is taken, the writer stays usable
        let names = ["postgres/a.dump".to_string(), "postgres/c.dump".to_string()];
        let err = w.reuse_streams(&first.id, &names).unwrap_err();
        assert!(matches!(err, RepoError::StreamNotFound { .. }), "{err}");
        let names = ["postgres/a.dump".to_string(), "postgres/b.dump".to_string()];
        let got = w.reuse_streams(&first.id, &names).unwrap();
        assert_eq!(got[0].size, dump.len() as u64);
        w.add_stream("volumes/v.tar", &mut &b"new"[..]).unwrap();
        let second = w.commit().unwrap();
        // only its small stream and its trees were stored
        let added = second.added_bytes.unwrap();
        assert!(added < 64 << 10, "{added} bytes added");
        assert!(first.added_bytes.unwrap() > 3 << 20);
        let mut out = Vec::new();
        repo.restore_stream(&second.id, "postgres/a.dump", &mut out)
            .unwrap();
        assert!(out == dump, "the reused stream differs");
        out.clear();
        repo.restore_stream(&second.id, "postgres/b.dump", &mut out)
            .unwrap();
        assert_eq!(out, b"small");
        assert!(repo.check(true).unwrap().is_ok());
    }
}
