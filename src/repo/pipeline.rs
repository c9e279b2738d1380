//! A snapshot writer's threads. A stream's own thread cuts it into chunks; a
//! small pool of workers hashes them, checks them against the index and the
//! blobs already stored, compresses and encrypts the new ones and appends them
//! to the pack being filled; a pack-writer thread finishes full packs (header,
//! hash, write, fsync) and records them for the index. So chunking, encoding
//! and pack I/O overlap, like restic's savers, and several streams can share
//! one pipeline (and its deduplication) at once.
//!
//! Memory is bounded by counts, never by a stream's size: each stream has at
//! most [`Pipeline::window`] chunks in flight, and besides the pack being
//! filled at most one full pack waits while another is written.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::backend::{Backend, FileType};
use super::crypto::Key;
use super::error::{RepoError, Result};
use super::format::{BlobType, IndexFile, IndexPack};
use super::id::Id;
use super::index::Index;
use super::pack::{BlobEncoder, PackWriter, TARGET_SIZE};
use super::repository::{store_unpacked, Repository};

/// Write an index file once this many new blobs are pending (restic's limit).
const INDEX_MAX_BLOBS: usize = 50_000;

/// More workers than this would only add chunks in flight (memory), not speed:
/// a stream's own thread chunks at a few hundred MiB/s.
const MAX_WORKERS: usize = 8;

/// Finished pack buffers kept for reuse.
const SPARE_PACK_BUFFERS: usize = 2;

/// A chunk for the workers, and where its id (and the chunk, for reuse) goes.
struct Job {
    chunk: Vec<u8>,
    reply: SyncSender<(Id, Vec<u8>)>,
}

/// A chunk handed to the workers; [`InFlight::wait`] yields its id and the chunk.
pub(crate) struct InFlight(Receiver<(Id, Vec<u8>)>);

impl InFlight {
    /// The chunk's id and the chunk, once a worker has stored it.
    pub fn wait(self) -> (Id, Vec<u8>) {
        self.0.recv().expect("blob worker panicked")
    }
}

/// What the snapshot added, for its summary.
#[derive(Clone, Copy, Default)]
pub(crate) struct Added {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of the new blobs.
    pub data_added: u64,
    /// Bytes of the packs written.
    pub data_added_packed: u64,
}

/// The packs being filled and the queue to the pack writer.
struct Packing {
    data: PackWriter,
    tree: PackWriter,
    /// `None` once the pipeline is shutting down.
    queue: Option<SyncSender<PackWriter>>,
    /// Packs handed to the pack writer so far.
    queued: u64,
    added: Added,
}

/// The pack writer's side: progress, the first failure, the pending index.
#[derive(Default)]
struct Written {
    /// Packs the pack writer is done with (written, or dropped after a failure).
    done: u64,
    /// The first failure, until a caller takes it; its message stays.
    error: Option<RepoError>,
    error_msg: Option<String>,
    /// The writer was dropped without committing: queued packs are not written.
    discard: bool,
    index: Vec<IndexPack>,
    index_blobs: usize,
    packed_bytes: u64,
}

struct Shared {
    be: Arc<dyn Backend>,
    key: Key,
    version: u32,
    idx: Arc<Index>,
    seen: Mutex<HashSet<(Id, BlobType)>>,
    packing: Mutex<Packing>,
    written: Mutex<Written>,
    /// Signalled whenever `written.done` grows.
    progress: Condvar,
    failed: AtomicBool,
    spare_packs: Mutex<Vec<Vec<u8>>>,
}

/// The error of a snapshot's later steps after `earlier` failed it.
pub(crate) fn abandoned(earlier: &str) -> RepoError {
    RepoError::Invalid(format!(
        "snapshot abandoned after an earlier error: {earlier}"
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("a writer thread panicked")
}

impl Shared {
    /// Stores a blob unless the repository or this pipeline has it already.
    fn store(&self, enc: &mut BlobEncoder, tpe: BlobType, id: Id, plain: &[u8]) {
        if self.idx.contains(&id, tpe) || !lock(&self.seen).insert((id, tpe)) {
            return;
        }
        let (blob, uncompressed) = enc.encode(&self.key, plain);
        let mut p = lock(&self.packing);
        match tpe {
            BlobType::Data => {
                p.added.data_blobs += 1;
                p.data.add(tpe, id, blob, uncompressed);
            }
            BlobType::Tree => {
                p.added.tree_blobs += 1;
                p.tree.add(tpe, id, blob, uncompressed);
            }
        }
        p.added.data_added += plain.len() as u64;
        if p.data.size() >= TARGET_SIZE {
            self.rotate(&mut p, BlobType::Data);
        }
        if p.tree.size() >= TARGET_SIZE {
            self.rotate(&mut p, BlobType::Tree);
        }
    }

    /// Hands the pack of `tpe` being filled to the pack writer. Called with
    /// the packing lock held, so packs are queued in the order they are counted.
    fn rotate(&self, p: &mut Packing, tpe: BlobType) {
        if tpe == BlobType::Tree {
            // trees go to the index only after the data they reference
            self.rotate(p, BlobType::Data);
        }
        let slot = match tpe {
            BlobType::Data => &mut p.data,
            BlobType::Tree => &mut p.tree,
        };
        if slot.is_empty() {
            return;
        }
        let next = match tpe {
            BlobType::Data => {
                PackWriter::with_buffer(lock(&self.spare_packs).pop().unwrap_or_default())
            }
            // trees are few: their packs rarely fill
            BlobType::Tree => PackWriter::default(),
        };
        let full = std::mem::replace(slot, next);
        if let Some(q) = &p.queue {
            // fails only if the pack writer panicked, which its guard reports
            if q.send(full).is_ok() {
                p.queued += 1;
            }
        }
    }

    fn fail(&self, w: &mut Written, e: RepoError) {
        if w.error_msg.is_none() {
            w.error_msg = Some(e.to_string());
            w.error = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The first failure: the error itself for the first caller, a reference to
    /// it for the others.
    fn take_error(&self, w: &mut Written) -> RepoError {
        w.error
            .take()
            .unwrap_or_else(|| abandoned(w.error_msg.as_deref().unwrap_or("unknown")))
    }

    fn write_pack(&self, pack: PackWriter) -> Result<()> {
        let (id, mut bytes, blobs) = pack.finish(&self.key);
        self.be.write(FileType::Pack, &id.to_hex(), &bytes)?;
        let len = bytes.len() as u64;
        bytes.clear();
        let mut spare = lock(&self.spare_packs);
        if spare.len() < SPARE_PACK_BUFFERS {
            spare.push(bytes);
        }
        drop(spare);
        let due = {
            let mut w = lock(&self.written);
            w.packed_bytes += len;
            w.index_blobs += blobs.len();
            w.index.push(IndexPack { id, blobs });
            (w.index_blobs >= INDEX_MAX_BLOBS).then(|| {
                w.index_blobs = 0;
                std::mem::take(&mut w.index)
            })
        };
        match due {
            Some(packs) => self.save_index(packs),
            None => Ok(()),
        }
    }

    /// Writes an index file naming `packs`, which are all durable already.
    fn save_index(&self, packs: Vec<IndexPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let f = IndexFile {
            supersedes: Vec::new(),
            packs,
        };
        let json = serde_json::to_vec(&f).expect("serializable");
        store_unpacked(&*self.be, &self.key, self.version, FileType::Index, &json)?;
        Ok(())
    }
}

/// Ends the wait of every caller if the pack writer thread panics.
struct PackerGuard<'a>(&'a Shared);

impl Drop for PackerGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut w = lock_ignoring_poison(&self.0.written);
            let e = RepoError::Invalid("the pack writer thread panicked".into());
            self.0.fail(&mut w, e);
            w.done = u64::MAX;
            self.0.progress.notify_all();
        }
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_packs(shared: &Shared, packs: Receiver<PackWriter>) {
    let _guard = PackerGuard(shared);
    for pack in packs {
        let skip = shared.failed.load(Ordering::SeqCst) || lock(&shared.written).discard;
        let res = if skip {
            Ok(())
        } else {
            shared.write_pack(pack)
        };
        let mut w = lock(&shared.written);
        if let Err(e) = res {
            shared.fail(&mut w, e);
        }
        w.done += 1;
        shared.progress.notify_all();
    }
}

fn work(shared: &Shared, jobs: &Mutex<Receiver<Job>>) {
    let mut enc = BlobEncoder::new(shared.version >= 2);
    loop {
        // the lock is held while waiting: the other idle workers queue behind it
        let job = match lock(jobs).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let id = Id::hash(&job.chunk);
        shared.store(&mut enc, BlobType::Data, id, &job.chunk);
        // the stream may have stopped waiting (it panicked): nothing to do then
        let _ = job.reply.send((id, job.chunk));
    }
}

/// The threads and shared state of one snapshot writer.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<()>>,
    window: usize,
}

impl Pipeline {
    /// Starts the workers and the pack writer for writing into `repo`, whose
    /// index (as the snapshot starts) is `idx`.
    pub fn start(repo: &Repository, idx: Arc<Index>) -> Pipeline {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, MAX_WORKERS);
        let (pack_tx, pack_rx) = sync_channel::<PackWriter>(1);
        let shared = Arc::new(Shared {
            be: repo.be.clone(),
            key: repo.key.clone(),
            version: repo.config.version,
            idx,
            seen: Mutex::new(HashSet::new()),
            packing: Mutex::new(Packing {
                data: PackWriter::with_buffer(Vec::new()),
                tree: PackWriter::default(),
                queue: Some(pack_tx),
                queued: 0,
                added: Added::default(),
            }),
            written: Mutex::new(Written::default()),
            progress: Condvar::new(),
            failed: AtomicBool::new(false),
            spare_packs: Mutex::new(Vec::new()),
        });
        let (job_tx, job_rx) = sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("cannot start a snapshot writer thread")
        };
        let workers = (0..workers)
            .map(|i| {
                let (s, j) = (shared.clone(), job_rx.clone());
                spawn(format!("upkeep-blobs-{i}"), Box::new(move || work(&s, &j)))
            })
            .collect::<Vec<_>>();
        let s = shared.clone();
        let packer = spawn(
            "upkeep-packs".into(),
            Box::new(move || write_packs(&s, pack_rx)),
        );
        Pipeline {
            shared,
            jobs: Some(job_tx),
            // enough to keep every worker busy while the stream's thread cuts
            // the next chunks
            window: workers.len() + 2,
            workers,
            packer: Some(packer),
        }
    }

    /// How many chunks one stream should have in flight at most.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Hands a chunk to the workers (waits while they have enough queued).
    pub fn submit(&self, chunk: Vec<u8>) -> InFlight {
        let (reply, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .expect("pipeline running")
            .send(Job { chunk, reply })
            .expect("blob workers ended");
        InFlight(rx)
    }

    /// Stores a blob on the calling thread (trees, copied blobs).
    pub fn store(&self, enc: &mut BlobEncoder, tpe: BlobType, id: Id, plain: &[u8]) {
        self.shared.store(enc, tpe, id, plain);
    }

    /// Whether the repository or this pipeline has the blob already.
    pub fn has(&self, tpe: BlobType, id: &Id) -> bool {
        self.shared.idx.contains(id, tpe) || lock(&self.shared.seen).contains(&(*id, tpe))
    }

    /// Hands the pack of `tpe` being filled to the pack writer.
    pub fn flush(&self, tpe: BlobType) {
        self.shared.rotate(&mut lock(&self.shared.packing), tpe);
    }

    /// Whether the pack writer failed.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// The pack writer's failure, if it failed (without waiting).
    pub fn check(&self) -> Result<()> {
        if !self.failed() {
            return Ok(());
        }
        let mut w = lock(&self.shared.written);
        Err(self.shared.take_error(&mut w))
    }

    /// Waits until every pack queued so far is written (or the pack writer failed).
    pub fn wait(&self) -> Result<()> {
        let target = lock(&self.shared.packing).queued;
        let mut w = lock(&self.shared.written);
        while w.done < target {
            w = self
                .shared
                .progress
                .wait(w)
                .expect("a writer thread panicked");
        }
        drop(w);
        self.check()
    }

    /// Writes the last packs and then the index naming every pack not yet in one.
    pub fn finish(&self) -> Result<()> {
        self.flush(BlobType::Tree);
        self.wait()?;
        let packs = std::mem::take(&mut lock(&self.shared.written).index);
        self.shared.save_index(packs)
    }

    /// What was added so far.
    pub fn added(&self) -> Added {
        let mut a = lock(&self.shared.packing).added;
        a.data_added_packed = lock(&self.shared.written).packed_bytes;
        a
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // closing the job queue ends the workers once it is empty
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // after a commit nothing is queued; otherwise the snapshot is abandoned
        // and its remaining packs would never be indexed
        lock_ignoring_poison(&self.shared.written).discard = true;
        lock_ignoring_poison(&self.shared.packing).queue = None;
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}
