//! A scratch folder for one input: the folder the code under test may write
//! (`inside`), and around it files it must never touch.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub inside: PathBuf,
    pub outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Sandbox {
    /// `root/inside/` (empty) and `root/outside/secret`, a file an escape would reach.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let root = dir.path().to_path_buf();
        let inside = root.join("inside");
        let outside = root.join("outside");
        fs::create_dir(&inside).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "must stay\n").unwrap();
        Sandbox {
            _dir: dir,
            root,
            inside,
            outside,
            before: BTreeMap::new(),
        }
    }

    /// Remembers everything outside `inside` (call once the scene is set).
    pub fn seal(&mut self) {
        self.before = listing(&self.root, Some(&self.inside));
    }

    /// Panics if anything outside `inside` changed.
    pub fn assert_outside_untouched(&self) {
        let after = listing(&self.root, Some(&self.inside));
        assert_eq!(self.before, after, "something outside the target folder changed");
    }
}

/// Every path below `root` (not below `skip`) with its kind, mode, size and content.
pub fn listing(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, skip: Option<&Path>, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let what = if meta.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&path).ok())
        } else if meta.is_dir() {
            format!("dir {:o}", meta.mode())
        } else {
            format!("file {:o} {:?}", meta.mode(), fs::read(&path).ok())
        };
        out.insert(rel, what);
        if meta.is_dir() && Some(path.as_path()) != skip {
            walk(root, &path, skip, out);
        }
    }
}
