//! Opening and creating repositories, reading and writing their files, and
//! the read side of snapshots: listing, resolving ids, reading streams.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::backend::{Backend, FileType};
use super::chunker::{random_polynomial, Tables};
use super::crypto::{Key, KeyFile};
use super::error::{RepoError, Result};
use super::format::{BlobType, Config, IndexFile, Node, SnapshotFile, Tree};
use super::id::Id;
use super::index::Index;
use super::location::RepoLocation;
use super::lock::{Lock, LockKind};
use super::pack;

/// [`Repository::save_unpacked`] for a writer's threads, which hold the
/// repository's parts rather than the repository.
pub(crate) fn store_unpacked(
    be: &dyn Backend,
    key: &Key,
    version: u32,
    t: FileType,
    json: &[u8],
) -> Result<Id> {
    let data = if version >= 2 {
        let mut v = vec![2u8];
        v.extend(zstd::bulk::compress(json, 3).map_err(|e| RepoError::io("zstd", e))?);
        v
    } else {
        json.to_vec()
    };
    let enc = key.encrypt(&data);
    let id = Id::hash(&enc);
    be.write(t, &id.to_hex(), &enc)?;
    Ok(id)
}

/// Larger files in `keys/` are not key files (restic's are under 1 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Name of the stream that holds a snapshot's manifest (see [`SnapshotMeta::manifest`](super::SnapshotMeta)).
pub const MANIFEST_STREAM: &str = "upkeep-manifest.json";

/// An open repository (restic format, version 2; version 1 is read too).
pub struct Repository {
    pub(crate) be: Arc<dyn Backend>,
    pub(crate) key: Key,
    pub(crate) config: Config,
    pub(crate) tables: Tables,
    index: Mutex<Option<Arc<Index>>>,
}

/// A snapshot as listed by [`Repository::snapshots`].
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Full id (64 hex digits).
    pub id: String,
    /// First 8 hex digits, as restic shows them.
    pub short_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub hostname: String,
    pub username: String,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    /// Bytes of all streams (from the snapshot's summary, when it has one).
    pub total_bytes: Option<u64>,
    /// Bytes this snapshot added to the repository after dedup and compression.
    pub added_bytes: Option<u64>,
    pub program_version: Option<String>,
}

/// A stream (a file in restic's view) of a snapshot.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name, e.g. `volumes/postgres_backups.tar`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("time formats as RFC 3339")
}

pub(crate) fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// This machine's host name (recorded in snapshots and locks).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub(crate) fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

/// restic's index, snapshot, key and lock files are at most a few MiB; a
/// file that inflates past this is refused instead of filling memory.
const MAX_UNPACKED_FILE: u64 = 64 << 20;

fn decompress_bounded(compressed: &[u8], what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let damaged =
        |e: std::io::Error| RepoError::Corrupt(format!("{what} does not decompress: {e}"));
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(compressed)
        .map_err(damaged)?
        .take(MAX_UNPACKED_FILE + 1)
        .read_to_end(&mut out)
        .map_err(damaged)?;
    if out.len() as u64 > MAX_UNPACKED_FILE {
        return Err(RepoError::Corrupt(format!(
            "{what} inflates to more than {} MiB",
            MAX_UNPACKED_FILE >> 20
        )));
    }
    Ok(out)
}

/// The JSON inside a decrypted repository file (index, snapshot, lock,
/// config): plain for version 1, a type byte and zstd for version 2.
pub(crate) fn decode_unpacked(plain: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    match plain.first() {
        Some(b'{') | Some(b'[') => Ok(plain),
        Some(2) => decompress_bounded(&plain[1..], what),
        _ => Err(RepoError::Unsupported(format!(
            "{what} has an unknown encoding"
        ))),
    }
}

fn refuse_empty(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(RepoError::Invalid(
            "the repository password is empty: an empty password protects nothing, give the real one".into(),
        ));
    }
    Ok(())
}

impl Repository {
    /// Opens the repository at `location` with `password`.
    pub fn open(location: &RepoLocation, password: &str) -> Result<Repository> {
        Repository::open_backend(location.backend()?.into(), password)
    }

    /// Creates a new, empty repository at `location` protected by `password`.
    /// Fails if one exists there.
    pub fn init(location: &RepoLocation, password: &str) -> Result<Repository> {
        Repository::init_backend(location.backend()?.into(), password, None)
    }

    /// Opens the repository at `location`, creating it first if there is none.
    pub fn open_or_init(location: &RepoLocation, password: &str) -> Result<Repository> {
        let be: Arc<dyn Backend> = location.backend()?.into();
        match be.read(FileType::Config, "config") {
            Ok(_) => Repository::open_backend(be, password),
            Err(RepoError::NotFound { .. }) => Repository::init_backend(be, password, None),
            Err(e) => Err(e),
        }
    }

    /// Opens the repository stored in `be` (any [`Backend`], e.g. a wrapper
    /// around [`LocalBackend`](super::backend::local::LocalBackend) that
    /// counts or delays writes) with `password`.
    pub fn open_backend(be: Arc<dyn Backend>, password: &str) -> Result<Repository> {
        refuse_empty(password)?;
        let location = be.location();
        let raw_config = match be.read(FileType::Config, "config") {
            Ok(c) => c,
            Err(RepoError::NotFound { .. }) => return Err(RepoError::NotARepository { location }),
            Err(e) => return Err(e),
        };
        let key = Repository::find_key(be.as_ref(), password)?;
        let plain = key.decrypt(&raw_config).ok_or_else(|| {
            RepoError::Corrupt(
                "the config file does not decrypt with the repository's master key".into(),
            )
        })?;
        let config: Config = serde_json::from_slice(&decode_unpacked(plain, "config")?)
            .map_err(|e| RepoError::Corrupt(format!("config is not valid: {e}")))?;
        if config.version != 1 && config.version != 2 {
            return Err(RepoError::Unsupported(format!(
                "repository format version {} (this upkeep reads versions 1 and 2)",
                config.version
            )));
        }
        Repository::assemble(be, key, config)
    }

    /// A repository over `be` with its master key and decrypted config.
    fn assemble(be: Arc<dyn Backend>, key: Key, config: Config) -> Result<Repository> {
        let pol = u64::from_str_radix(&config.chunker_polynomial, 16)
            .map_err(|_| RepoError::Corrupt("config has an invalid chunker polynomial".into()))?;
        Ok(Repository {
            be,
            key,
            config,
            tables: Tables::new(pol),
            index: Mutex::new(None),
        })
    }

    /// A fresh repository in `dir` without a key file: unit tests skip the
    /// scrypt derivation, which takes seconds in a debug build.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> Repository {
        let be = Arc::new(super::backend::local::LocalBackend::new(dir));
        be.create().unwrap();
        let config = Config {
            version: 2,
            id: Id::random().to_hex(),
            chunker_polynomial: format!("{:x}", random_polynomial()),
        };
        Repository::assemble(be, Key::random(), config).unwrap()
    }

    fn find_key(be: &dyn Backend, password: &str) -> Result<Key> {
        let keys = be.list(FileType::Key)?;
        if keys.is_empty() {
            return Err(RepoError::Corrupt(format!(
                "{} has no key files",
                be.location()
            )));
        }
        for (name, size) in keys {
            // key files are a few hundred bytes; a huge one is not read into memory
            if size > MAX_KEY_FILE {
                tracing::warn!("skipping key file {name}: {size} bytes is not a key file");
                continue;
            }
            let raw = be.read(FileType::Key, &name)?;
            let Ok(kf) = serde_json::from_slice::<KeyFile>(&raw) else {
                continue;
            };
            if let Some(k) = kf.open(password)? {
                return Ok(k);
            }
        }
        Err(RepoError::WrongPassword {
            location: be.location(),
        })
    }

    /// Creates a repository on `be`; with `like`, reuses that repository's
    /// chunker polynomial (for exports).
    pub(crate) fn init_backend(
        be: Arc<dyn Backend>,
        password: &str,
        like: Option<&Repository>,
    ) -> Result<Repository> {
        refuse_empty(password)?;
        match be.read(FileType::Config, "config") {
            Ok(_) => {
                return Err(RepoError::AlreadyExists {
                    location: be.location(),
                })
            }
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        be.create()?;
        // a fresh master key always; an export keeps its source's chunker polynomial
        let key = Key::random();
        let chunker_polynomial = match like {
            Some(r) => r.config.chunker_polynomial.clone(),
            None => format!("{:x}", random_polynomial()),
        };
        let config = Config {
            version: 2,
            id: Id::random().to_hex(),
            chunker_polynomial,
        };
        let kf = KeyFile::new(
            &key,
            password,
            &hostname(),
            &username(),
            &format_time(now()),
        )?;
        let kf = serde_json::to_vec(&kf).expect("serializable");
        be.write(FileType::Key, &Id::hash(&kf).to_hex(), &kf)?;
        let cfg = key.encrypt(&serde_json::to_vec(&config).expect("serializable"));
        be.write(FileType::Config, "config", &cfg)?;
        Repository::assemble(be, key, config)
    }

    /// Where the repository is, for messages.
    pub fn location(&self) -> String {
        self.be.location()
    }

    /// The repository's id (from its config).
    pub fn id(&self) -> &str {
        &self.config.id
    }

    // ----- files -----

    /// Encrypts (and, from version 2 on, compresses) a JSON document and stores it.
    pub(crate) fn save_unpacked(&self, t: FileType, json: &[u8]) -> Result<Id> {
        store_unpacked(&*self.be, &self.key, self.config.version, t, json)
    }

    /// Reads, verifies and decrypts a JSON document.
    pub(crate) fn load_unpacked(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let enc = self.be.read(t, name)?;
        let what = t.path(name);
        if Id::hash(&enc).to_hex() != name {
            return Err(RepoError::Corrupt(format!(
                "{what} is damaged (its content does not match its name)"
            )));
        }
        let plain = self
            .key
            .decrypt(&enc)
            .ok_or_else(|| RepoError::Corrupt(format!("{what} does not decrypt")))?;
        decode_unpacked(plain, &what)
    }

    pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        t: FileType,
        name: &str,
    ) -> Result<T> {
        let raw = self.load_unpacked(t, name)?;
        serde_json::from_slice(&raw)
            .map_err(|e| RepoError::Corrupt(format!("{} is not valid: {e}", t.path(name))))
    }

    // ----- blobs -----

    /// The index, loaded on first use.
    pub(crate) fn index(&self) -> Result<Arc<Index>> {
        let mut guard = self.index.lock().expect("index lock");
        if let Some(i) = &*guard {
            return Ok(i.clone());
        }
        let mut files = Vec::new();
        for (name, _) in self.be.list(FileType::Index)? {
            let f: IndexFile = self.load_json(FileType::Index, &name)?;
            files.push((Id::parse(&name).expect("listed names are ids"), f));
        }
        let idx = Arc::new(Index::from_files(files));
        *guard = Some(idx.clone());
        Ok(idx)
    }

    /// Forgets the cached index (after writing new index files).
    pub(crate) fn reset_index(&self) {
        *self.index.lock().expect("index lock") = None;
    }

    pub(crate) fn read_blob(&self, idx: &Index, tpe: BlobType, id: &Id) -> Result<Vec<u8>> {
        let loc = idx
            .get(id, tpe)
            .ok_or_else(|| RepoError::Corrupt(format!("{tpe:?} blob {id} is not in any index")))?;
        let raw = self.be.read_range(
            FileType::Pack,
            &loc.pack.to_hex(),
            u64::from(loc.offset),
            loc.length,
        )?;
        pack::decode_blob(&self.key, &loc.as_index_blob(*id, tpe), &raw)
    }

    pub(crate) fn load_tree(&self, idx: &Index, id: &Id) -> Result<Tree> {
        let raw = self.read_blob(idx, BlobType::Tree, id)?;
        serde_json::from_slice(&raw)
            .map_err(|e| RepoError::Corrupt(format!("tree {id} is not valid: {e}")))
    }

    // ----- snapshots -----

    /// All snapshot files, oldest first.
    pub(crate) fn load_snapshots(&self) -> Result<Vec<(Id, SnapshotFile)>> {
        let mut out = Vec::new();
        for (name, _) in self.be.list(FileType::Snapshot)? {
            let s: SnapshotFile = self.load_json(FileType::Snapshot, &name)?;
            out.push((Id::parse(&name).expect("listed names are ids"), s));
        }
        out.sort_by_key(|(id, s)| {
            (
                parse_time(&s.time).unwrap_or(OffsetDateTime::UNIX_EPOCH),
                *id,
            )
        });
        Ok(out)
    }

    /// The snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self
            .load_snapshots()?
            .iter()
            .map(|(id, s)| info(id, s))
            .collect())
    }

    /// Finds a snapshot by id, unique id prefix (e.g. the 8-digit short id) or `latest`.
    pub(crate) fn resolve(&self, spec: &str) -> Result<(Id, SnapshotFile)> {
        let spec = spec.trim();
        if spec == "latest" {
            return self
                .load_snapshots()?
                .pop()
                .ok_or_else(|| RepoError::SnapshotNotFound(spec.into()));
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::SnapshotNotFound(spec.into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<String> = self
            .be
            .list(FileType::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&spec_l))
            .collect();
        match matches.as_slice() {
            [] => Err(RepoError::SnapshotNotFound(spec.into())),
            [one] => {
                let s = self.load_json(FileType::Snapshot, one)?;
                Ok((Id::parse(one).expect("id"), s))
            }
            _ => Err(RepoError::AmbiguousSnapshot(spec.into())),
        }
    }

    /// One snapshot's description.
    pub fn snapshot(&self, snapshot: &str) -> Result<SnapshotInfo> {
        let (id, s) = self.resolve(snapshot)?;
        Ok(info(&id, &s))
    }

    /// The streams of a snapshot (all files of its tree, by path), without the manifest.
    pub fn streams(&self, snapshot: &str) -> Result<Vec<StreamInfo>> {
        let (_, s) = self.resolve(snapshot)?;
        let idx = self.index()?;
        let mut out = Vec::new();
        self.walk_files(&idx, &s.tree, "", &mut |path, node| {
            if path != MANIFEST_STREAM {
                out.push(StreamInfo {
                    name: path.to_string(),
                    size: node.size,
                });
            }
        })?;
        Ok(out)
    }

    /// Calls `f` with the path and node of every file below tree `id`.
    pub(crate) fn walk_files(
        &self,
        idx: &Index,
        id: &Id,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Node),
    ) -> Result<()> {
        let tree = self.load_tree(idx, id)?;
        for n in &tree.nodes {
            let path = if prefix.is_empty() {
                n.name.clone()
            } else {
                format!("{prefix}/{}", n.name)
            };
            match (n.tpe.as_str(), n.subtree) {
                ("dir", Some(sub)) => self.walk_files(idx, &sub, &path, f)?,
                ("file", _) => f(&path, n),
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn find_node(
        &self,
        idx: &Index,
        snap_id: &Id,
        s: &SnapshotFile,
        name: &str,
    ) -> Result<Node> {
        let mut tree = s.tree;
        let parts: Vec<&str> = name.trim_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let t = self.load_tree(idx, &tree)?;
            let node = t.nodes.into_iter().find(|n| n.name == *part);
            match node {
                Some(n) if i + 1 == parts.len() && n.tpe == "file" => return Ok(n),
                Some(n) if n.tpe == "dir" && n.subtree.is_some() => {
                    tree = n.subtree.expect("checked")
                }
                _ => break,
            }
        }
        let mut names = Vec::new();
        self.walk_files(idx, &s.tree, "", &mut |p, _| names.push(p.to_string()))?;
        Err(RepoError::StreamNotFound {
            snapshot: snap_id.short(),
            name: name.into(),
            available: names.join(", "),
        })
    }

    /// Writes stream `name` of `snapshot` to `out`; returns its size.
    pub fn restore_stream(&self, snapshot: &str, name: &str, out: &mut dyn Write) -> Result<u64> {
        self.restore_stream_with_progress(snapshot, name, out, None)
    }

    /// [`restore_stream`](Self::restore_stream), calling `progress` with the bytes
    /// written so far after each chunk.
    pub fn restore_stream_with_progress(
        &self,
        snapshot: &str,
        name: &str,
        out: &mut dyn Write,
        progress: Option<&dyn Fn(u64)>,
    ) -> Result<u64> {
        let _lock = Lock::acquire(self, LockKind::Shared)?;
        let (id, s) = self.resolve(snapshot)?;
        let idx = self.index()?;
        let node = self.find_node(&idx, &id, &s, name)?;
        let mut written = 0u64;
        for blob in node.content.as_deref().unwrap_or_default() {
            let data = self
                .read_blob(&idx, BlobType::Data, blob)
                .map_err(|e| match e {
                    RepoError::Corrupt(m) => RepoError::Corrupt(format!(
                        "stream {name:?} of snapshot {}: {m}",
                        id.short()
                    )),
                    e => e,
                })?;
            out.write_all(&data).map_err(RepoError::Sink)?;
            written += data.len() as u64;
            if let Some(p) = progress {
                p(written);
            }
        }
        out.flush().map_err(RepoError::Sink)?;
        if written != node.size {
            return Err(RepoError::Corrupt(format!(
                "stream {name:?} of snapshot {} has {written} bytes, its metadata says {}",
                id.short(),
                node.size
            )));
        }
        Ok(written)
    }

    /// The manifest stored with a snapshot, if it has one.
    pub fn manifest(&self, snapshot: &str) -> Result<Option<String>> {
        let mut buf = Vec::new();
        match self.restore_stream(snapshot, MANIFEST_STREAM, &mut buf) {
            Ok(_) => Ok(Some(String::from_utf8_lossy(&buf).into_owned())),
            Err(RepoError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub(crate) fn info(id: &Id, s: &SnapshotFile) -> SnapshotInfo {
    SnapshotInfo {
        id: id.to_hex(),
        short_id: id.short(),
        time: parse_time(&s.time).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        hostname: s.hostname.clone(),
        username: s.username.clone(),
        tags: s.tags.clone(),
        paths: s.paths.clone(),
        total_bytes: s.summary.as_ref().map(|x| x.total_bytes_processed),
        added_bytes: s.summary.as_ref().map(|x| x.data_added_packed),
        program_version: s.program_version.clone(),
    }
}
