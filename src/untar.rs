//! Tar unpacking that cannot touch anything outside its folder. Bundles and
//! snapshots' `config.tar` come from people upkeep does not trust (a vendor's
//! download, whoever holds a shared repository's password), so every entry is
//! checked before anything is removed or written: no absolute path, no `..`,
//! no parent that is a link, no device. Links are created, never followed;
//! files are created with their final mode, never widened by a later chmod;
//! setuid/setgid bits are dropped and `.env` files (they hold passwords) are
//! 0600. Every folder written into is fsynced at the end.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Why an archive (or a folder being copied) was refused; nothing was written
/// outside its folder.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    #[error("entry `{0}` is an absolute path; it must stay inside its folder, so it was refused")]
    AbsolutePath(String),
    #[error("entry `{0}` climbs out with `..`; it was refused")]
    ParentPath(String),
    #[error("entry `{0}` would be written through the link `{1}`; it was refused")]
    ThroughLink(String, String),
    #[error("link `{0}` points outside its folder (to `{1}`); it was refused")]
    EscapingLink(String, String),
    #[error("hard link `{0}` must point at a file earlier in the same archive, not `{1}`; it was refused")]
    ForeignHardLink(String, String),
    #[error("entry `{0}` is a device or other special file; it was refused")]
    SpecialFile(String),
    #[error("entry `{0}` would replace a folder by a file or link; it was refused")]
    FolderInTheWay(String),
    #[error("entry `{0}` needs `{1}` to be a folder, but it is a file; it was refused")]
    FileInTheWay(String, String),
    #[error("entry `{0}` appears twice or exists already; it was refused")]
    Exists(String),
}

/// What an archive may do to its folder.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Entries replace files and links already there (restoring config over a
    /// release's defaults); otherwise an existing entry is refused.
    pub replace: bool,
    /// Restore owners (only meaningful as root).
    pub owners: bool,
    /// Every link must resolve inside the folder (bundles). Restored config may
    /// keep an administrator's link elsewhere (e.g. to a certificate), since
    /// nothing is ever written or removed through a link.
    pub links_inside: bool,
    /// Drop world-write (a vendor's files); config keeps its administrator's modes.
    pub drop_world_write: bool,
}

/// The path made only of normal components, or why it is refused.
pub fn relative(path: &Path) -> Result<PathBuf, Unsafe> {
    let shown = || path.display().to_string();
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(Unsafe::ParentPath(shown())),
            Component::RootDir | Component::Prefix(_) => return Err(Unsafe::AbsolutePath(shown())),
        }
    }
    Ok(rel)
}

/// The mode upkeep writes for a file or folder shipped as `mode`: never
/// setuid, setgid or sticky, optionally never world-writable, and `.env`
/// (passwords) readable by its owner only.
pub fn safe_mode(rel: &Path, mode: u32, is_dir: bool, drop_world_write: bool) -> u32 {
    if !is_dir && rel.file_name().is_some_and(|n| n == ".env") {
        return 0o600;
    }
    let mode = mode & 0o777;
    if drop_world_write {
        mode & !0o002
    } else {
        mode
    }
}

/// Follows the link at `link` (relative to `root`) and any link its target
/// passes through, the way the kernel would, and fails if that ever leaves
/// `root` (or loops). Folders that do not exist yet count as folders.
pub fn check_link_resolves_inside(root: &Path, link: &Path) -> Result<(), Unsafe> {
    let target = fs::read_link(root.join(link)).unwrap_or_default();
    let escape = || Unsafe::EscapingLink(link.display().to_string(), target.display().to_string());
    let mut at: Vec<std::ffi::OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_front(&mut pending, &target).map_err(|()| escape())?;
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            at.pop().ok_or_else(escape)?;
            continue;
        }
        at.push(part);
        let here: PathBuf = at.iter().collect();
        if fs::symlink_metadata(root.join(&here)).is_ok_and(|m| m.file_type().is_symlink()) {
            // the kernel gives up after 40 links; so does this
            hops += 1;
            if hops > 40 {
                return Err(escape());
            }
            let next = fs::read_link(root.join(&here)).map_err(|_| escape())?;
            at.pop();
            push_front(&mut pending, &next).map_err(|()| escape())?;
        }
    }
    Ok(())
}

/// Queues the components of a link target (a stack: last pops first).
fn push_front(pending: &mut Vec<std::ffi::OsString>, target: &Path) -> Result<(), ()> {
    let mut parts = Vec::new();
    for c in target.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    pending.extend(parts.into_iter().rev());
    Ok(())
}

/// Unpacks `reader` into the folder `dest` under `rules`; returns the
/// entries' relative paths. A refused entry stops the unpacking (what came
/// before it stays: unpack into a staging folder, or [`check`] first).
pub fn unpack(reader: impl Read, dest: &Path, rules: &Rules) -> Result<Vec<PathBuf>> {
    let mut run = Unpacking::new(dest, *rules);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("the archive is damaged or truncated")?;
        if let Some(plan) = run.plan(&entry)? {
            run.apply(&mut entry, plan)?;
        }
    }
    run.finish()
}

/// Checks every entry of `reader` against `dest` and `rules` without writing
/// anything, so that a refused archive changes nothing.
pub fn check(reader: impl Read, dest: &Path, rules: &Rules) -> Result<()> {
    let mut run = Unpacking::new(dest, *rules);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the archive")? {
        let entry = entry.context("the archive is damaged or truncated")?;
        run.plan(&entry)?;
    }
    Ok(())
}

enum Action {
    Dir,
    File,
    Symlink(PathBuf),
    HardLink(PathBuf),
}

struct Plan {
    rel: PathBuf,
    action: Action,
    mode: u32,
    mtime: Option<SystemTime>,
    owner: Option<(u32, u32)>,
}

struct Unpacking<'d> {
    dest: &'d Path,
    rules: Rules,
    /// Links and files of this archive so far (a later entry may not go
    /// through a link; a hard link may only point at one of its files).
    links: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
    folders: HashSet<PathBuf>,
    /// Folders' modes and times, set at the end (a read-only folder would
    /// refuse its own entries otherwise).
    dirs: Vec<(PathBuf, u32, Option<SystemTime>)>,
    /// Folders whose entries changed, fsynced at the end.
    touched: BTreeSet<PathBuf>,
    written: Vec<PathBuf>,
}

impl<'d> Unpacking<'d> {
    fn new(dest: &'d Path, rules: Rules) -> Self {
        Unpacking {
            dest,
            rules,
            links: HashSet::new(),
            files: HashSet::new(),
            folders: HashSet::new(),
            dirs: Vec::new(),
            touched: BTreeSet::new(),
            written: Vec::new(),
        }
    }

    /// What `entry` would do, or why it is refused; `None` for entries that
    /// carry only metadata.
    fn plan<R: Read>(&mut self, entry: &tar::Entry<R>) -> Result<Option<Plan>> {
        let raw = entry.path().context("an entry has an unreadable name")?;
        let shown = raw.display().to_string();
        let rel = relative(&raw)?;
        let header = entry.header();
        let kind = header.entry_type();
        let action = match kind {
            tar::EntryType::Directory => Action::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Action::File,
            tar::EntryType::Symlink => {
                let target = link_target(entry, &shown)?;
                if self.rules.links_inside && target.has_root() {
                    return Err(Unsafe::EscapingLink(shown, target.display().to_string()).into());
                }
                Action::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = link_target(entry, &shown)?;
                let target_rel = relative(&target)?;
                if !self.files.contains(&target_rel) {
                    return Err(Unsafe::ForeignHardLink(shown, target.display().to_string()).into());
                }
                Action::HardLink(target_rel)
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(None),
            _ => return Err(Unsafe::SpecialFile(shown).into()),
        };
        if rel.as_os_str().is_empty() {
            // `./` itself: the folder exists already
            return Ok(None);
        }
        for parent in rel.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if self.links.contains(parent) || is_link(&self.dest.join(parent)) {
                return Err(Unsafe::ThroughLink(shown, parent.display().to_string()).into());
            }
            if self.is_file_here(parent) {
                return Err(Unsafe::FileInTheWay(shown, parent.display().to_string()).into());
            }
        }
        let is_dir = matches!(action, Action::Dir);
        match fs::symlink_metadata(self.dest.join(&rel)) {
            Ok(m) if m.is_dir() && !is_dir => return Err(Unsafe::FolderInTheWay(shown).into()),
            Ok(m) if m.is_dir() => {}
            Ok(_) if !self.rules.replace => return Err(Unsafe::Exists(shown).into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("looking at {shown}")),
        }
        if !self.rules.replace && (self.files.contains(&rel) || self.links.contains(&rel)) {
            return Err(Unsafe::Exists(shown).into());
        }
        if !is_dir && self.folders.contains(&rel) {
            return Err(Unsafe::FolderInTheWay(shown).into());
        }
        for parent in rel.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                self.folders.insert(parent.to_path_buf());
            }
        }
        match action {
            Action::Symlink(_) => {
                self.files.remove(&rel);
                self.links.insert(rel.clone());
            }
            Action::File => {
                self.links.remove(&rel);
                self.files.insert(rel.clone());
            }
            Action::Dir => {
                self.links.remove(&rel);
                self.files.remove(&rel);
                self.folders.insert(rel.clone());
            }
            Action::HardLink(_) => {
                self.links.remove(&rel);
                self.files.insert(rel.clone());
            }
        }
        let mode = header.mode().unwrap_or(if is_dir { 0o755 } else { 0o644 });
        let owner = match (self.rules.owners, header.uid(), header.gid()) {
            (true, Ok(u), Ok(g)) => Some((u as u32, g as u32)),
            _ => None,
        };
        Ok(Some(Plan {
            mode: safe_mode(&rel, mode, is_dir, self.rules.drop_world_write),
            rel,
            action,
            mtime: header
                .mtime()
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            owner,
        }))
    }

    /// `rel` will be a file when the entries so far are written: one of
    /// them, or one already in the folder that no entry made a folder.
    fn is_file_here(&self, rel: &Path) -> bool {
        self.files.contains(rel)
            || (!self.folders.contains(rel)
                && fs::symlink_metadata(self.dest.join(rel)).is_ok_and(|m| !m.is_dir()))
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>, plan: Plan) -> Result<()> {
        let path = self.dest.join(&plan.rel);
        let shown = plan.rel.display().to_string();
        self.create_parents(&plan.rel)?;
        let existing = fs::symlink_metadata(&path).ok();
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            // checked by plan: a file or link of ours to replace, never followed
            fs::remove_file(&path).with_context(|| format!("replacing {shown}"))?;
        }
        match &plan.action {
            Action::Dir => {
                if existing.is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&path).with_context(|| format!("creating {shown}"))?;
                }
                self.dirs.push((plan.rel.clone(), plan.mode, plan.mtime));
            }
            Action::File => {
                write_file(&path, entry, &plan).with_context(|| format!("writing {shown}"))?
            }
            Action::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path)
                    .with_context(|| format!("creating link {shown}"))?;
                if let Some((u, g)) = plan.owner {
                    std::os::unix::fs::lchown(&path, Some(u), Some(g))?;
                }
            }
            Action::HardLink(target) => fs::hard_link(self.dest.join(target), &path)
                .with_context(|| format!("creating hard link {shown}"))?,
        }
        self.touched
            .insert(path.parent().unwrap_or(self.dest).to_path_buf());
        self.written.push(plan.rel);
        Ok(())
    }

    /// Creates the missing folders above `rel` (plan made sure none is a link).
    fn create_parents(&mut self, rel: &Path) -> Result<()> {
        let mut missing: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .take_while(|p| !p.as_os_str().is_empty())
            .filter(|p| fs::symlink_metadata(self.dest.join(p)).is_err())
            .collect();
        missing.reverse();
        for p in missing {
            let dir = self.dest.join(p);
            fs::create_dir(&dir).with_context(|| format!("creating {}", p.display()))?;
            self.touched
                .insert(dir.parent().unwrap_or(self.dest).to_path_buf());
        }
        Ok(())
    }

    /// Folder modes and times, the link check, and fsync of every folder written into.
    fn finish(mut self) -> Result<Vec<PathBuf>> {
        for (rel, mode, mtime) in self.dirs.iter().rev() {
            let dir = self.dest.join(rel);
            fs::set_permissions(&dir, fs::Permissions::from_mode(*mode))
                .with_context(|| format!("setting the mode of {}", rel.display()))?;
            if let Some(t) = mtime {
                // best effort: a folder's time is cosmetic
                let _ = File::open(&dir).and_then(|f| f.set_modified(*t));
            }
            self.touched.insert(dir);
        }
        if self.rules.links_inside {
            for link in &self.links {
                check_link_resolves_inside(self.dest, link)?;
            }
        }
        self.touched.insert(self.dest.to_path_buf());
        for dir in &self.touched {
            crate::durable::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
        }
        Ok(self.written)
    }
}

fn link_target<R: Read>(entry: &tar::Entry<R>, shown: &str) -> Result<PathBuf> {
    Ok(entry
        .link_name()?
        .with_context(|| format!("link {shown} has no target"))?
        .into_owned())
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates the file with its final mode before any byte is in it, and never
/// through a link.
fn write_file(path: &Path, data: &mut impl Read, plan: &Plan) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if let Some((u, g)) = plan.owner {
        std::os::unix::fs::fchown(&f, Some(u), Some(g))?;
    }
    // after the chown, which would clear setuid bits; mode() was filtered by the umask
    f.set_permissions(fs::Permissions::from_mode(plan.mode))?;
    io::copy(data, &mut f)?;
    if let Some(t) = plan.mtime {
        f.set_modified(t)?;
    }
    f.sync_all()
}
