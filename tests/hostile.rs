//! Issue 12: hostile snapshots, bundles and key files, and crash leftovers.
//! Every input here is crafted the way an attacker (or a crash) would leave
//! it; upkeep must refuse it with a clear error and change nothing outside
//! the folder it was asked to write.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use upkeep::repo::backend::{local::LocalBackend, Backend, FileType};
use upkeep::repo::{RepoLocation, Repository, SnapshotMeta};

const PASSWORD: &str = "hostile-Test-pw.51c2";

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn local(dir: &Path) -> RepoLocation {
    RepoLocation::parse(dir.to_str().unwrap()).unwrap()
}

// ----- crafted tar archives -----

enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Link(&'a str, &'a str),
}

/// A tar whose names are written raw: `tar::Builder` would refuse or
/// normalise the absolute and `..` names an attacker writes.
fn crafted_tar(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match item {
            Item::File(name, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (name, data)
            }
            Item::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (name, b"")
            }
            Item::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                let field = &mut h.as_old_mut().linkname;
                field[..target.len()].copy_from_slice(target.as_bytes());
                (name, b"")
            }
        };
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let field = &mut h.as_old_mut().name;
        assert!(
            name.len() < field.len(),
            "{name} is too long for a raw name"
        );
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Runs restic with the password in a file (never on argv).
struct Restic {
    pwfile: PathBuf,
    _dir: tempfile::TempDir,
}

impl Restic {
    fn new() -> Restic {
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, PASSWORD).unwrap();
        Restic { pwfile, _dir: dir }
    }

    fn run(&self, repo: &Path, args: &[&str], stdin: Option<&[u8]>) {
        let mut child = Command::new("restic")
            .arg("-r")
            .arg(repo)
            .args(["--no-cache", "-q"])
            .args(args)
            .env("RESTIC_PASSWORD_FILE", &self.pwfile)
            .env_remove("RESTIC_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("restic is required for these tests: apt-get install -y restic");
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ----- defect 1: a snapshot's config.tar deletes files on the host -----

/// A snapshot written by restic itself whose `config.tar` tries, in turn,
/// an absolute path, `..`, and a path through a link to reach a file outside
/// the instance's home. Restoring each is refused, the file outside survives,
/// and the home keeps its files byte for byte (nothing was removed first).
#[test]
fn hostile_snapshot_from_restic_deletes_nothing_outside_the_home() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let home = t.join("home");
    let outside = t.join("outside");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let victims = ["victim-abs", "victim-parent", "victim-link"];
    for v in victims {
        fs::write(outside.join(v), format!("{v} must survive\n")).unwrap();
    }
    fs::write(home.join(".env"), "DEFAULT=release\n").unwrap();
    fs::write(home.join("Caddyfile"), "release default\n").unwrap();

    let abs = outside.join("victim-abs").display().to_string();
    let out = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "absolute",
            crafted_tar(&[
                Item::File(".env", b"ATTACKER=1\n", 0o644),
                Item::File(&abs, b"replaced\n", 0o644),
            ]),
        ),
        (
            "parent",
            crafted_tar(&[
                Item::File("Caddyfile", b"attacker\n", 0o644),
                Item::File("../outside/victim-parent", b"replaced\n", 0o644),
            ]),
        ),
        (
            "through-link",
            crafted_tar(&[
                Item::File(".env", b"ATTACKER=1\n", 0o644),
                Item::Link("lnk", &out),
                Item::File("lnk/victim-link", b"replaced\n", 0o644),
            ]),
        ),
    ];
    let restic = Restic::new();
    let repo_dir = t.join("repo");
    restic.run(&repo_dir, &["init"], None);
    for (tag, tar) in &cases {
        restic.run(
            &repo_dir,
            &[
                "backup",
                "--stdin",
                "--stdin-filename",
                "config.tar",
                "--tag",
                tag,
            ],
            Some(tar),
        );
    }
    let repo = Repository::open(&local(&repo_dir), PASSWORD).unwrap();
    let snapshots = repo.snapshots().unwrap();
    assert_eq!(snapshots.len(), cases.len());
    for s in &snapshots {
        let mut tar = Vec::new();
        repo.restore_stream(&s.short_id, "config.tar", &mut tar)
            .unwrap();
        let res = upkeep::snapshot::config::restore(&tar[..], &home);
        let tag = &s.tags[0];
        let err = match res {
            Ok(paths) => panic!("case {tag}: the hostile config.tar was restored: {paths:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("refused"), "case {tag}: {err}");
        for v in victims {
            assert_eq!(
                fs::read_to_string(outside.join(v)).unwrap_or_default(),
                format!("{v} must survive\n"),
                "case {tag}: a file outside the home was touched"
            );
        }
        assert_eq!(
            fs::read_to_string(home.join(".env")).unwrap(),
            "DEFAULT=release\n",
            "case {tag}: the home was changed before the archive was refused"
        );
        assert_eq!(
            fs::read_to_string(home.join("Caddyfile")).unwrap(),
            "release default\n",
            "case {tag}"
        );
        assert!(!home.join("lnk").exists(), "case {tag}");
    }
}

/// Found by the config_restore fuzz target: an archive whose entries pass
/// every name check but cannot all be written, because one uses as a folder
/// what an earlier entry (`etc/ssl`, a file) or the home itself
/// (`etc/app.conf`) holds as a file. Refused before anything is written, so
/// the home keeps its files byte for byte.
#[test]
fn an_archive_that_uses_a_file_as_a_folder_is_refused_before_writing() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a file of the archive",
            crafted_tar(&[
                Item::File(".env", b"A=1\n", 0o600),
                Item::File("etc/ssl", b"", 0o755),
                Item::File("etc/ssl/server.key", b"key\n", 0o600),
            ]),
        ),
        (
            "a file of the home",
            crafted_tar(&[
                Item::File(".env", b"A=1\n", 0o600),
                Item::File("etc/app.conf/extra", b"x\n", 0o644),
            ]),
        ),
    ];
    for (case, tar) in &cases {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        fs::create_dir_all(home.join("etc")).unwrap();
        fs::write(home.join(".env"), "DEFAULT=1\n").unwrap();
        fs::write(home.join("etc/app.conf"), "default\n").unwrap();
        let err = match upkeep::snapshot::config::restore(&tar[..], &home) {
            Ok(paths) => panic!("{case}: restored {paths:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("is a file"), "{case}: {err}");
        assert!(
            err.contains("nothing in the instance folder was changed"),
            "{case}: {err}"
        );
        assert_eq!(
            fs::read_to_string(home.join(".env")).unwrap(),
            "DEFAULT=1\n",
            "{case}"
        );
        assert_eq!(
            fs::read_to_string(home.join("etc/app.conf")).unwrap(),
            "default\n",
            "{case}"
        );
        assert!(!home.join("etc/ssl").exists(), "{case}");
    }
}

// ----- defect 2: bundle link chains -----

/// `up` resolves to the release root but counts as six folders deep; a
/// second link that climbs out of it reaches the folder above the release
/// (the issue's `up/../../../../../../..` reaches `/` the same way), where a
/// host file waits for the `.env` link. Refused in both orders, as a tarball
/// and as a folder (`copy_tree`, used by `up --as`).
#[test]
fn bundle_link_chains_cannot_reach_host_files() {
    let deep = "a/b/c/d/e/f/up";
    let climb = "a/b/c/d/e/f/up/..";
    for order in ["up first", "climb first"] {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("host-secret"), "root:x:0:0\n").unwrap();
        let up = Item::Link(deep, "../../../../../..");
        let root_parent = Item::Link("root_parent", climb);
        let mut items = vec![
            Item::File("docker-compose.yml", b"services: {}\n", 0o644),
            Item::File("VERSION", b"v9\n", 0o644),
        ];
        if order == "up first" {
            items.extend([up, root_parent]);
        } else {
            items.extend([root_parent, up]);
        }
        items.push(Item::Link(".env", "root_parent/host-secret"));
        let bundle = tmp.path().join("bundle.tar");
        fs::write(&bundle, crafted_tar(&items)).unwrap();
        let dest = tmp.path().join("staging");
        fs::create_dir(&dest).unwrap();
        let res = upkeep::bundle::unpack(&bundle, &dest);
        assert!(
            res.is_err(),
            "{order}: the bundle's .env reads {:?}",
            fs::read_to_string(dest.join(".env"))
        );
        let err = format!("{:#}", res.unwrap_err());
        assert!(err.contains("points outside"), "{order}: {err}");
    }

    // the same chain in a folder bundle and in the copy `up --as` makes
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("release");
    fs::create_dir_all(src.join("a/b/c/d/e/f")).unwrap();
    fs::write(src.join("docker-compose.yml"), "services: {}\n").unwrap();
    fs::write(tmp.path().join("host-secret"), "root:x:0:0\n").unwrap();
    symlink("../../../../../..", src.join(deep)).unwrap();
    symlink(climb, src.join("root_parent")).unwrap();
    symlink("root_parent/host-secret", src.join(".env")).unwrap();
    let dest = tmp.path().join("copy");
    fs::create_dir(&dest).unwrap();
    let res = upkeep::bundle::copy_tree(&src, &dest, Path::new(""), &|_| true);
    assert!(
        res.is_err(),
        "copy_tree followed the chain out of the release"
    );
    let folder_dest = tmp.path().join("folder-staging");
    fs::create_dir(&folder_dest).unwrap();
    assert!(upkeep::bundle::unpack(&src, &folder_dest).is_err());
}

/// Links that stay inside, even through other links, are still accepted.
#[test]
fn bundle_links_that_stay_inside_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.tar");
    fs::write(
        &bundle,
        crafted_tar(&[
            Item::File("docker-compose.yml", b"services: {}\n", 0o644),
            Item::File("conf/real.conf", b"x\n", 0o644),
            Item::Link("current", "conf"),
            Item::Link("a/b/link", "../../current/real.conf"),
        ]),
    )
    .unwrap();
    let dest = tmp.path().join("staging");
    fs::create_dir(&dest).unwrap();
    let root = upkeep::bundle::unpack(&bundle, &dest).unwrap();
    assert_eq!(fs::read_to_string(root.join("a/b/link")).unwrap(), "x\n");
}

// ----- defect 3: modes -----

#[test]
fn bundle_modes_lose_setuid_and_world_write_and_env_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.tar");
    fs::write(
        &bundle,
        crafted_tar(&[
            Item::File("docker-compose.yml", b"services: {}\n", 0o666),
            Item::File(".env", b"POSTGRES_PASSWORD=s3cret\n", 0o666),
            Item::File("bin/tool", b"#!/bin/sh\n", 0o6755),
            Item::Dir("shared", 0o1777),
        ]),
    )
    .unwrap();
    let dest = tmp.path().join("staging");
    fs::create_dir(&dest).unwrap();
    let root = upkeep::bundle::unpack(&bundle, &dest).unwrap();
    assert_eq!(mode_of(&root.join(".env")), 0o600);
    assert_eq!(mode_of(&root.join("bin/tool")), 0o755);
    assert_eq!(mode_of(&root.join("docker-compose.yml")), 0o664);
    assert_eq!(mode_of(&root.join("shared")), 0o775);

    // a folder bundle is copied with the same rules
    let folder = tmp.path().join("folder");
    fs::create_dir_all(folder.join("bin")).unwrap();
    fs::write(folder.join("docker-compose.yml"), "services: {}\n").unwrap();
    fs::write(folder.join(".env"), "POSTGRES_PASSWORD=s3cret\n").unwrap();
    fs::set_permissions(folder.join(".env"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(folder.join("bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(folder.join("bin/tool"), fs::Permissions::from_mode(0o4777)).unwrap();
    let copy = tmp.path().join("copy");
    fs::create_dir(&copy).unwrap();
    upkeep::bundle::unpack(&folder, &copy).unwrap();
    assert_eq!(mode_of(&copy.join(".env")), 0o600);
    assert_eq!(mode_of(&copy.join("bin/tool")), 0o775);
}

/// The default instance runs in `releases/<v>/`, so the release's `.env`
/// (the Postgres password) is that instance's secret: 0600 once installed.
#[test]
fn installed_release_env_is_private() {
    let site = TestSite::new();
    let folder = site.root.join("incoming");
    fs::create_dir_all(&folder).unwrap();
    fs::write(
        folder.join("docker-compose.yml"),
        "services:\n  app:\n    image: upkeep-test/app:1\n",
    )
    .unwrap();
    fs::write(folder.join("VERSION"), "v0.0.12\n").unwrap();
    fs::write(folder.join(".env"), "POSTGRES_PASSWORD=s3cret\n").unwrap();
    fs::set_permissions(folder.join(".env"), fs::Permissions::from_mode(0o644)).unwrap();
    site.ok(&["install", folder.to_str().unwrap(), "--skip-load"]);
    let env = site.root.join("releases/v0.0.12/.env");
    assert_eq!(mode_of(&env), 0o600);
}

#[test]
fn exports_are_created_private() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&local(&tmp.path().join("repo")), PASSWORD).unwrap();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("config.tar", &mut &b"secret config"[..])
        .unwrap();
    let snap = w.commit().unwrap();
    // SAFETY: umask has no preconditions; 022 is the usual default
    let old = unsafe { libc::umask(0o022) };
    let file = tmp.path().join("export.tar");
    let res = repo.export(&snap.short_id, &file, PASSWORD);
    unsafe { libc::umask(old) };
    res.unwrap();
    assert_eq!(mode_of(&file), 0o600);
}

// ----- strace: what the kernel was asked to do -----
//
// Modes at creation and fsyncs cannot be seen afterwards, so these tests run
// the operation in a child (this test binary, re-executed with `traced_child
// --exact` and the operation in UPKEEP_HOSTILE_TRACED) under strace and read
// the system calls it made.

const TRACED: &str = "UPKEEP_HOSTILE_TRACED";

/// Runs operation `op` on the files in `dir` in a traced child; returns the trace.
fn traced(op: &str, dir: &Path) -> String {
    let trace = dir.join("strace.out");
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=openat,fsync,fdatasync,fchmod,chmod,fchmodat",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["traced_child", "--exact", "--test-threads=1", "--nocapture"])
        .env(TRACED, op)
        .env("UPKEEP_HOSTILE_DIR", dir)
        .status()
        .expect("strace is required for these tests: apt-get install -y strace");
    assert!(status.success(), "the traced {op} failed");
    fs::read_to_string(trace).unwrap()
}

/// The operations [`traced`] runs; does nothing when not run as that child.
#[test]
fn traced_child() {
    let Ok(op) = std::env::var(TRACED) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("UPKEEP_HOSTILE_DIR").unwrap());
    match op.as_str() {
        "config-restore" => {
            let tar = fs::read(dir.join("config.tar")).unwrap();
            upkeep::snapshot::config::restore(&tar[..], &dir.join("home")).unwrap();
        }
        "bundle-unpack" => {
            upkeep::bundle::unpack(&dir.join("bundle.tar"), &dir.join("staging")).unwrap();
        }
        "copy-exact" => {
            upkeep::ops::carry::copy_exact(&dir.join("from"), &dir.join("to/sub/file")).unwrap();
        }
        other => panic!("unknown traced operation {other}"),
    }
}

fn fsynced(trace: &str, path: &Path) -> bool {
    let needle = format!("<{}>)", path.display());
    trace
        .lines()
        .any(|l| (l.contains(" fsync(") || l.contains(" fdatasync(")) && l.contains(&needle))
}

/// A TLS key in a restored config is created 0600: never 0644 for a moment
/// before a chmod. The folders written into are fsynced.
#[test]
fn restored_config_files_are_created_with_their_mode_and_folders_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir_all(dir.join("home")).unwrap();
    fs::write(dir.join("home/.env"), "DEFAULT=1\n").unwrap();
    fs::write(
        dir.join("config.tar"),
        crafted_tar(&[
            Item::File(".env", b"A=1\n", 0o600),
            Item::Dir("etc", 0o755),
            Item::Dir("etc/ssl", 0o700),
            Item::File(
                "etc/ssl/server.key",
                b"-----BEGIN PRIVATE KEY-----\n",
                0o600,
            ),
        ]),
    )
    .unwrap();
    let trace = traced("config-restore", dir);
    let key = dir.join("home/etc/ssl/server.key");
    let created: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(" openat(") && l.contains("O_CREAT") && l.contains("server.key"))
        .collect();
    assert_eq!(created.len(), 1, "{trace}");
    assert!(
        created[0].contains(", 0600)"),
        "server.key was created with a wider mode: {}",
        created[0]
    );
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(fs::read_to_string(dir.join("home/.env")).unwrap(), "A=1\n");
    for folder in ["home", "home/etc", "home/etc/ssl"] {
        assert!(
            fsynced(&trace, &dir.join(folder)),
            "{folder} not fsynced:\n{trace}"
        );
    }
    assert!(fsynced(&trace, &key), "server.key not fsynced");
}

#[test]
fn unpacked_bundles_are_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("staging")).unwrap();
    fs::write(
        dir.join("bundle.tar"),
        crafted_tar(&[
            Item::File("rel/docker-compose.yml", b"services: {}\n", 0o644),
            Item::File("rel/etc/app.conf", b"x\n", 0o644),
        ]),
    )
    .unwrap();
    let trace = traced("bundle-unpack", dir);
    for folder in ["staging", "staging/rel", "staging/rel/etc"] {
        assert!(
            fsynced(&trace, &dir.join(folder)),
            "{folder} not fsynced:\n{trace}"
        );
    }
}

/// carry-config's copy renames a temporary into place: the folder is synced after.
#[test]
fn carried_config_files_are_renamed_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("from"), "admin's Caddyfile\n").unwrap();
    let trace = traced("copy-exact", dir);
    assert_eq!(
        fs::read_to_string(dir.join("to/sub/file")).unwrap(),
        "admin's Caddyfile\n"
    );
    assert!(fsynced(&trace, &dir.join("to/sub")), "{trace}");
}

// ----- defect 4: crafted key files, empty passwords -----

fn key_file_json(n: u64, r: u64, p: u64) -> String {
    let salt = "A".repeat(88);
    let data = "A".repeat(200);
    format!(
        r#"{{"created":"2026-01-01T00:00:00Z","username":"x","hostname":"x","kdf":"scrypt","N":{n},"r":{r},"p":{p},"salt":"{salt}","data":"{data}"}}"#
    )
}

/// N = 2^40 made opening the repository try to allocate a PiB and abort,
/// before any password was checked. Each cost past restic's is refused, quickly.
#[test]
fn crafted_key_file_is_refused_before_scrypt_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    drop(Repository::init(&local(&dir), PASSWORD).unwrap());
    for (n, r, p) in [
        (1u64 << 40, 8, 1),
        (1 << 15, 1 << 20, 1),
        (1 << 15, 8, 1 << 30),
    ] {
        for e in fs::read_dir(dir.join("keys")).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        fs::write(
            dir.join("keys").join("ab".repeat(32)),
            key_file_json(n, r, p),
        )
        .unwrap();
        let t0 = Instant::now();
        let err = match Repository::open(&local(&dir), PASSWORD) {
            Ok(_) => panic!("the crafted key file (N={n}, r={r}, p={p}) opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("scrypt"), "N={n}, r={r}, p={p}: {err}");
        assert!(t0.elapsed() < Duration::from_secs(5), "scrypt ran");
    }
}

#[test]
fn empty_passwords_are_refused() {
    let site = TestSite::new();
    let dir = site.root.join("repo");
    drop(Repository::init(&local(&dir), PASSWORD).unwrap());
    let empty = site.root.join("empty-password");
    fs::write(&empty, "").unwrap();
    let err = site.fails(&[
        "snapshots",
        "--repo",
        dir.to_str().unwrap(),
        "--password-file",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("is empty"), "{err}");
    let out = site
        .command(&["snapshots", "--repo", dir.to_str().unwrap()])
        .env("UPKEEP_PASSWORD", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty"), "{err}");
}

// ----- defect 5: a lock that cannot be refreshed stops the writer -----

/// A local repository whose lock files can be written only `allowed` times
/// (the first lock, then the refreshes fail, as when the storage goes away).
struct FailingLockWrites {
    inner: LocalBackend,
    lock_writes: AtomicUsize,
    allowed: usize,
}

impl Backend for FailingLockWrites {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> upkeep::repo::Result<()> {
        self.inner.create()
    }
    fn list(&self, t: FileType) -> upkeep::repo::Result<Vec<(String, u64)>> {
        self.inner.list(t)
    }
    fn read(&self, t: FileType, name: &str) -> upkeep::repo::Result<Vec<u8>> {
        self.inner.read(t, name)
    }
    fn read_range(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u32,
    ) -> upkeep::repo::Result<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> upkeep::repo::Result<()> {
        if t == FileType::Lock && self.lock_writes.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(upkeep::repo::RepoError::Backend {
                location: self.location(),
                op: "write",
                path: name.into(),
                message: "connection refused (test)".into(),
            });
        }
        self.inner.write(t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> upkeep::repo::Result<()> {
        self.inner.remove(t, name)
    }
}

/// A stream that takes its time: 256 KiB every 250 ms.
struct Slow {
    left: usize,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(250));
        let n = buf.len().min(256 << 10).min(self.left);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (self.left.wrapping_mul(31) ^ i) as u8;
        }
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_writer_whose_lock_cannot_be_refreshed_stops_and_saves_nothing() {
    // refresh every second: lost after 4 s without a successful refresh
    std::env::set_var("UPKEEP_LOCK_REFRESH_SECS", "1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    drop(Repository::init(&local(&dir), PASSWORD).unwrap());
    let be = Arc::new(FailingLockWrites {
        inner: LocalBackend::new(&dir),
        lock_writes: AtomicUsize::new(0),
        allowed: 1,
    });
    let repo = Repository::open_backend(be.clone(), PASSWORD).unwrap();
    let t0 = Instant::now();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    let added = w.add_stream("volumes/big.tar", &mut Slow { left: 48 << 20 });
    let res = added.and_then(|_| w.commit().map(|_| ()));
    let err = match res {
        Ok(()) => panic!("the snapshot was committed although its lock had gone stale"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("could not be refreshed"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the writer went on for {:?}",
        t0.elapsed()
    );
    assert!(
        be.lock_writes.load(Ordering::SeqCst) > 2,
        "refreshes were retried"
    );
    assert_eq!(fs::read_dir(dir.join("snapshots")).unwrap().count(), 0);
}

// ----- defect 6: transient storage errors are retried, then "could not read" -----

/// An HTTP proxy in front of moto that answers reads of index files with an
/// error status: the next `count` times, or always.
struct FlakyProxy {
    port: u16,
    status: Arc<AtomicUsize>,
    remaining: Arc<AtomicUsize>,
    always: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
}

impl FlakyProxy {
    fn start(upstream: u16) -> FlakyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = FlakyProxy {
            port,
            status: Arc::new(AtomicUsize::new(503)),
            remaining: Arc::new(AtomicUsize::new(0)),
            always: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicUsize::new(0)),
        };
        let (status, remaining, always, failed) = (
            proxy.status.clone(),
            proxy.remaining.clone(),
            proxy.always.clone(),
            proxy.failed.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (status, remaining, always, failed) = (
                    status.clone(),
                    remaining.clone(),
                    always.clone(),
                    failed.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, |head: &str| {
                        let index_read = head.starts_with("GET ") && head.contains("/index/");
                        let fail = index_read
                            && (always.load(Ordering::SeqCst)
                                || remaining
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        n.checked_sub(1)
                                    })
                                    .is_ok());
                        if fail {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        fail.then(|| status.load(Ordering::SeqCst) as u16)
                    });
                });
            }
        });
        proxy
    }

    fn fail_next(&self, status: u16, count: usize) {
        self.status.store(usize::from(status), Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        self.remaining.store(count, Ordering::SeqCst);
    }
}

/// One request per connection: answered with an error status when `fail`
/// says so, else forwarded to moto and its answer relayed.
fn serve(
    mut conn: std::net::TcpStream,
    upstream: u16,
    fail: impl Fn(&str) -> Option<u16>,
) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(conn.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
        if end {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if let Some(status) = fail(&head) {
        let text = "<Error><Code>SlowDown</Code><Message>try again</Message></Error>";
        write!(
            conn,
            "HTTP/1.1 {status} Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
        return Ok(());
    }
    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream))?;
    let head = head.trim_end_matches("\r\n").to_string();
    write!(up, "{head}\r\nConnection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    // tell the client not to reuse the connection
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let answer_head = String::from_utf8_lossy(&answer[..split]);
    let kept: Vec<&str> = answer_head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    write!(conn, "{}\r\nConnection: close", kept.join("\r\n"))?;
    conn.write_all(&answer[split..])?;
    Ok(())
}

/// Five 503s, then 429s and 408s were "damaged: tree not in any index" and
/// exit 1. They are retried; an index that stays unreadable is reported as
/// such (its own exit status), not as damage.
#[test]
fn check_retries_s3_and_tells_unreadable_from_damaged() {
    let moto = moto_server();
    // moto accepts any credentials; set for this process and the CLI it runs
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let proxy = FlakyProxy::start(moto.port);
    let url = format!(
        "s3:http://127.0.0.1:{}/{}/repo",
        proxy.port,
        unique("hostile")
    );
    let loc = RepoLocation::parse(&url).unwrap();
    let repo = Repository::open_or_init(&loc, PASSWORD).unwrap();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("config.tar", &mut &b"config"[..]).unwrap();
    w.commit().unwrap();
    assert!(repo.check(false).unwrap().is_ok());

    for (status, count) in [(503, 5), (429, 3), (408, 2)] {
        proxy.fail_next(status, count);
        let report = repo.check(false).unwrap();
        assert_eq!(proxy.failed.load(Ordering::SeqCst), count, "HTTP {status}");
        assert!(report.is_ok(), "after {count} × HTTP {status}: {report:?}");
    }

    proxy.always.store(true, Ordering::SeqCst);
    proxy.status.store(503, Ordering::SeqCst);
    let site = TestSite::new();
    let pw = site.root.join("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let out = site.run(&[
        "check",
        "--repo",
        &url,
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(74), "{text}");
    assert!(text.contains("could not read: index file"), "{text}");
    assert!(!text.contains("damaged"), "{text}");
    let report = repo.check(false).unwrap();
    assert!(!report.is_ok(), "an unread index passed: {report:?}");
    assert!(
        report.damaged.is_empty() && report.errors.is_empty(),
        "unreadable storage was called damage: {report:?}"
    );
}

/// Proven damage has its own exit status, apart from errors and unreadable storage.
#[test]
fn check_exit_status_names_damage() {
    let site = TestSite::new();
    let dir = site.root.join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("config.tar", &mut &b"config"[..]).unwrap();
    w.commit().unwrap();
    let pw = site.root.join("pw");
    fs::write(&pw, PASSWORD).unwrap();
    let args = [
        "check",
        "--repo",
        dir.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ];
    assert_eq!(site.run(&args).status.code(), Some(0));
    for sub in fs::read_dir(dir.join("data")).unwrap() {
        for pack in fs::read_dir(sub.unwrap().path()).unwrap() {
            fs::remove_file(pack.unwrap().path()).unwrap();
        }
    }
    let out = site.run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(65), "{text}");
    assert!(text.contains("damaged: snapshot"), "{text}");
}

// ----- defect 7: crash leftovers -----

fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A journal's temporary left by a kill -9 made `status` and `rollback`
/// fail (every file there was parsed as a journal). Skipped and removed.
#[test]
fn journal_temporaries_left_by_a_crash_are_skipped_and_removed() {
    let site = TestSite::new();
    let dir = site.root.join(".upkeep/upgrades");
    fs::create_dir_all(&dir).unwrap();
    let leftover = dir.join(format!(".app.json.tmp-{}", dead_pid()));
    fs::write(&leftover, "{\"old\": \"app\", \"new\": \"app-v2\", \"st").unwrap();
    site.ok(&["status"]);
    let err = site.fails(&["rollback", "app"]);
    assert!(
        err.contains("no upgrade of instance app is recorded"),
        "{err}"
    );
    assert!(!leftover.exists(), "the leftover was not cleaned up");
}

// ----- defect 8: a failed consumer stops its producer -----

/// pg_restore failing on the first bytes used to leave the rest of the
/// stream to be produced (decrypted, dumped) and read away before the
/// error came back.
#[test]
fn a_failed_consumer_stops_the_producer_at_once() {
    let produced = AtomicU64::new(0);
    let res: anyhow::Result<((), ())> = upkeep::ops::pipe::pipe(
        |w| {
            let block = vec![7u8; 1 << 16];
            for _ in 0..(1 << 14) {
                w.write_all(&block)?;
                produced.fetch_add(block.len() as u64, Ordering::SeqCst);
            }
            Ok(())
        },
        |mut r| {
            let mut first = [0u8; 4096];
            r.read_exact(&mut first)?;
            anyhow::bail!("pg_restore: input file does not appear to be a valid archive")
        },
    );
    let err = format!("{:#}", res.expect_err("the consumer failed"));
    assert!(err.contains("pg_restore"), "{err}");
    let n = produced.load(Ordering::SeqCst);
    assert!(n < 16 << 20, "the producer went on for {n} bytes");
}

// ----- defect 9: secrets in debug logs -----

/// A backup and a restore at -vv (and at UPKEEP_LOG=trace, which reaches the
/// Docker client's request bodies) print neither the database password nor
/// the repository's.
#[test]
fn debug_logs_hold_no_secrets() {
    const PG_PASSWORD: &str = "Upk33p-fixture_pw.4c7e91";
    let site = TestSite::new();
    let (src, dst) = (unique("vvsrc"), unique("vvdst"));
    site.track(&src);
    site.track(&dst);
    site.ok(&["install", bundle("v1.0.0").to_str().unwrap()]);
    site.ok(&["up", "v1.0.0", "--as", &src]);
    psql(&src, "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");
    let runs: [(&[&str], Option<&str>); 3] = [
        (&["-vv", "backup", &src], None),
        (&["backup", &src, "--no-reuse"], Some("trace")),
        (
            &["-vv", "restore", "latest", "--into", "v1.0.0", "--as", &dst],
            None,
        ),
    ];
    for (args, log) in runs {
        let mut cmd = site.command(args);
        if let Some(level) = log {
            cmd.env("UPKEEP_LOG", level);
        }
        let out = cmd.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {all}");
        let repo_password = fs::read_to_string(site.root.join(".upkeep/repository.password"))
            .unwrap()
            .trim()
            .to_string();
        for secret in [PG_PASSWORD, repo_password.as_str()] {
            assert!(
                !all.contains(secret),
                "{args:?} (UPKEEP_LOG={log:?}) printed a secret"
            );
        }
        // -v shows where a restore's time goes, phase by phase.
        if args.contains(&"restore") {
            for phase in [
                "read the manifest",
                "load Postgres (roles, then each database)",
            ] {
                assert!(
                    all.contains("restore timeline: +") && all.contains(&format!("{phase} took")),
                    "no timeline line for {phase}: {all}"
                );
            }
        }
    }
    destroy(&src);
    destroy(&dst);
}
