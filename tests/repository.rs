//! Integration tests of the repository layer (`upkeep::repo`): round trips,
//! dedup, compatibility both ways with restic (Debian's `restic` 0.14 must be
//! installed), S3 against a moto server on loopback (python3 with venv), faults,
//! forget/prune, export/import, locks.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use upkeep::repo::{KeepPolicy, RepoError, RepoLocation, Repository, SnapshotMeta};

const PASSWORD: &str = "correct horse battery staple";

/// Deterministic pseudo-random bytes (incompressible).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn text_bytes(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(format!("INSERT INTO t VALUES ({i}, 'row number {i}');\n").as_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    total
}

fn local(dir: &Path) -> RepoLocation {
    RepoLocation::Local(dir.to_path_buf())
}

fn restore(repo: &Repository, snap: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = repo.restore_stream(snap, name, &mut out).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

/// Runs restic with the password in a file (never on argv); panics with its output on failure.
struct Restic {
    pwfile: PathBuf,
    _dir: tempfile::TempDir,
}

impl Restic {
    fn new() -> Restic {
        let ok = Command::new("restic")
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "restic is required for these tests: apt-get install -y restic"
        );
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        Restic { pwfile, _dir: dir }
    }

    fn cmd(&self, repo: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("restic");
        c.arg("-r").arg(repo).args(["--no-cache", "-q"]).args(args);
        c.env("RESTIC_PASSWORD_FILE", &self.pwfile)
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_REPOSITORY");
        c
    }

    fn run(&self, repo: &Path, args: &[&str]) -> Vec<u8> {
        let out = self.cmd(repo, args).output().unwrap();
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn run_stdin(&self, repo: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = self
            .cmd(repo, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&data).unwrap();
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

struct Fixture {
    config: Vec<u8>,
    volume: Vec<u8>,
    dump: Vec<u8>,
}

fn fixture() -> Fixture {
    Fixture {
        config: text_bytes(10_000),
        volume: random_bytes(12 * 1024 * 1024 + 12345, 7),
        dump: text_bytes(3 * 1024 * 1024),
    }
}

fn write_snapshot(repo: &Repository, f: &Fixture, tags: &[&str]) -> upkeep::repo::SnapshotInfo {
    let meta = SnapshotMeta {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        manifest: Some(r#"{"items":["config.tar"]}"#.into()),
        ..Default::default()
    };
    let mut w = repo.begin_snapshot(meta).unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    w.set_progress(|n| progress.store(n, std::sync::atomic::Ordering::Relaxed));
    assert_eq!(
        w.add_stream("config.tar", &mut &f.config[..]).unwrap().size,
        f.config.len() as u64
    );
    assert_eq!(
        w.add_stream("volumes/postgres_backups.tar", &mut &f.volume[..])
            .unwrap()
            .size,
        f.volume.len() as u64
    );
    assert_eq!(
        w.add_stream("postgres/graphistry.dump", &mut &f.dump[..])
            .unwrap()
            .size,
        f.dump.len() as u64
    );
    assert_eq!(
        w.add_stream("empty", &mut std::io::empty()).unwrap().size,
        0
    );
    assert_eq!(
        progress.load(std::sync::atomic::Ordering::Relaxed),
        (f.config.len() + f.volume.len() + f.dump.len()) as u64
    );
    w.commit().unwrap()
}

fn assert_restores(repo: &Repository, snap: &str, f: &Fixture) {
    assert_eq!(restore(repo, snap, "config.tar"), f.config);
    assert_eq!(
        restore(repo, snap, "volumes/postgres_backups.tar"),
        f.volume
    );
    assert_eq!(restore(repo, snap, "postgres/graphistry.dump"), f.dump);
    assert!(restore(repo, snap, "empty").is_empty());
}

/// Two streams added at once from two threads, sharing their first 6 MiB:
/// restic reads both back, and its check (reading all data) finds the
/// repository sound.
#[test]
fn concurrent_streams_are_restic_compatible() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let shared = random_bytes(6 << 20, 11);
    let dump = [&shared[..], &text_bytes(2 << 20)].concat();
    let tar = [&shared[..], &random_bytes(3 << 20, 12)].concat();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    std::thread::scope(|s| {
        let a = s.spawn(|| w.add_stream("postgres/db.dump", &mut &dump[..]));
        let b = s.spawn(|| w.add_stream("volumes/data.tar", &mut &tar[..]));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let snap = w.commit().unwrap();
    restic.run(&dir, &["check", "--read-data"]);
    for (name, data) in [("/postgres/db.dump", &dump), ("/volumes/data.tar", &tar)] {
        assert!(
            restic.run(&dir, &["dump", &snap.short_id, name]) == *data,
            "restic dump of {name} differs"
        );
    }
}

#[test]
fn round_trip_dedup_and_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let f = fixture();
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let s1 = write_snapshot(&repo, &f, &["instance=graphistry"]);
    assert_eq!(s1.tags, vec!["instance=graphistry"]);
    let manifest_len = r#"{"items":["config.tar"]}"#.len();
    assert_eq!(
        s1.total_bytes,
        Some((f.config.len() + f.volume.len() + f.dump.len() + manifest_len) as u64)
    );

    // a fresh handle reads it back, by short id, by prefix and as latest
    let repo = Repository::open(&local(&dir), PASSWORD).unwrap();
    assert_restores(&repo, &s1.short_id, &f);
    assert_restores(&repo, &s1.id[..5], &f);
    assert_eq!(
        repo.manifest("latest").unwrap().unwrap(),
        r#"{"items":["config.tar"]}"#
    );
    let mut names: Vec<(String, u64)> = repo
        .streams("latest")
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.size))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("config.tar".to_string(), f.config.len() as u64),
            ("empty".to_string(), 0),
            ("postgres/graphistry.dump".to_string(), f.dump.len() as u64),
            (
                "volumes/postgres_backups.tar".to_string(),
                f.volume.len() as u64
            ),
        ]
    );
    match repo.restore_stream("latest", "nope", &mut Vec::new()) {
        Err(RepoError::StreamNotFound { available, .. }) => {
            assert!(available.contains("config.tar"))
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        repo.snapshot("ffffffff"),
        Err(RepoError::SnapshotNotFound(_))
    ));

    // the same data again adds less than 1 %
    let before = dir_size(&dir);
    let s2 = write_snapshot(&repo, &f, &[]);
    let after = dir_size(&dir);
    assert!(
        after - before < before / 100,
        "second backup grew the repository from {before} to {after}"
    );
    assert_ne!(s1.id, s2.id);
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert_eq!(repo.snapshot("latest").unwrap().id, s2.id);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.snapshots, 2);

    // no lock is left behind
    assert_eq!(std::fs::read_dir(dir.join("locks")).unwrap().count(), 0);
}

#[test]
fn wrong_password_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let loc = local(&tmp.path().join("repo"));
    Repository::init(&loc, PASSWORD).unwrap();
    let err = Repository::open(&loc, "not the password")
        .err()
        .expect("must fail");
    assert!(matches!(err, RepoError::WrongPassword { .. }));
    assert!(
        err.to_string().starts_with("wrong repository password: "),
        "{err}"
    );
    let err = Repository::open(&local(&tmp.path().join("none")), PASSWORD)
        .err()
        .unwrap();
    assert!(matches!(err, RepoError::NotARepository { .. }), "{err}");
    assert!(matches!(
        Repository::init(&loc, PASSWORD),
        Err(RepoError::AlreadyExists { .. })
    ));
}

#[test]
fn failed_stream_is_never_committed() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("pg_dump exited with status 1"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repository::init(&local(&tmp.path().join("repo")), PASSWORD).unwrap();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("ok", &mut &b"fine"[..]).unwrap();
    let err = w
        .add_stream("db.dump", &mut Failing(3 * 1024 * 1024))
        .unwrap_err();
    assert!(err.to_string().contains("pg_dump exited"), "{err}");
    assert!(w.commit().is_err());
    assert!(repo.snapshots().unwrap().is_empty());
    assert!(repo.check(true).unwrap().is_ok());
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    assert!(matches!(
        w.add_stream("a/../b", &mut std::io::empty()),
        Err(RepoError::InvalidStreamName(_))
    ));
    w.add_stream("a", &mut std::io::empty()).unwrap();
    assert!(matches!(
        w.add_stream("a", &mut std::io::empty()),
        Err(RepoError::DuplicateStream(_))
    ));
    w.commit().unwrap();
}

#[test]
fn restic_checks_and_reads_what_we_write() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let f = fixture();
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let s = write_snapshot(&repo, &f, &["t1"]);
    restic.run(&dir, &["check", "--read-data"]);
    assert_eq!(
        restic.run(
            &dir,
            &["dump", &s.short_id, "/volumes/postgres_backups.tar"]
        ),
        f.volume
    );
    assert_eq!(
        restic.run(&dir, &["dump", "latest", "/postgres/graphistry.dump"]),
        f.dump
    );
    assert_eq!(
        restic.run(&dir, &["dump", "latest", "/config.tar"]),
        f.config
    );
    assert!(restic.run(&dir, &["dump", "latest", "/empty"]).is_empty());
    let target = tmp.path().join("restored");
    restic.run(
        &dir,
        &["restore", &s.short_id, "--target", target.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(target.join("volumes/postgres_backups.tar")).unwrap(),
        f.volume
    );
    let listing = String::from_utf8(restic.run(&dir, &["snapshots", "--json"])).unwrap();
    assert!(
        listing.contains(&s.id) && listing.contains("\"t1\""),
        "{listing}"
    );

    // restic backs the same bytes up into our repository: our chunker cuts
    // where restic's does, so nothing new is stored
    let before = dir_size(&dir);
    restic.run_stdin(
        &dir,
        &["backup", "--stdin", "--stdin-filename", "again.tar"],
        &f.volume,
    );
    let after = dir_size(&dir);
    assert!(
        after - before < 64 * 1024,
        "restic added {} bytes for known data",
        after - before
    );
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert_eq!(restore(&repo, "latest", "again.tar"), f.volume);
    assert!(repo.check(true).unwrap().is_ok());
}

#[test]
fn we_read_what_restic_writes() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    restic.run(&dir, &["init"]);
    let data = random_bytes(5 * 1024 * 1024 + 3, 11);
    let mut input = data.clone();
    input.extend(text_bytes(2 * 1024 * 1024));
    restic.run_stdin(
        &dir,
        &[
            "backup",
            "--stdin",
            "--stdin-filename",
            "x",
            "--tag",
            "from-restic",
        ],
        &input,
    );
    let repo = Repository::open(&local(&dir), PASSWORD).unwrap();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].tags, vec!["from-restic"]);
    assert_eq!(repo.streams("latest").unwrap()[0].name, "x");
    assert_eq!(restore(&repo, &snaps[0].short_id, "x"), input);
    let report = repo.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
    // and we can add to it, and restic still checks it
    let f = fixture();
    write_snapshot(&repo, &f, &[]);
    restic.run(&dir, &["check", "--read-data"]);
    assert!(Repository::open(&local(&dir), "wrong").is_err());
}

#[test]
fn check_names_damaged_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let big = random_bytes(3 * 1024 * 1024, 3);
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("small.txt", &mut &b"hello"[..]).unwrap();
    w.add_stream("volumes/big.tar", &mut &big[..]).unwrap();
    let snap = w.commit().unwrap();
    assert!(repo.check(true).unwrap().is_ok());

    // the largest pack holds big.tar's data: flip one byte in its middle
    let mut packs: Vec<(u64, PathBuf)> = Vec::new();
    for sub in std::fs::read_dir(dir.join("data")).unwrap() {
        for p in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap();
            packs.push((p.metadata().unwrap().len(), p.path()));
        }
    }
    packs.sort();
    let (size, path) = packs.last().unwrap().clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(size / 2) as usize] ^= 0x40;
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, &bytes).unwrap();

    // without reading data, sizes still match; with it the stream is named
    assert!(repo.check(false).unwrap().is_ok());
    let report = repo.check(true).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].snapshot, snap.short_id);
    assert_eq!(report.damaged[0].stream, "volumes/big.tar");
    let err = repo
        .restore_stream("latest", "volumes/big.tar", &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("volumes/big.tar"), "{err}");
    assert_eq!(restore(&repo, "latest", "small.txt"), b"hello");

    // a truncated pack is found even without reading data
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let report = repo.check(false).unwrap();
    assert!(
        report.damaged.iter().any(|d| d.stream == "volumes/big.tar"),
        "{report:?}"
    );
}

#[test]
fn forget_and_prune() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let shared = random_bytes(2 * 1024 * 1024, 99);
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let own = random_bytes(4 * 1024 * 1024, 100 + i);
        let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        w.add_stream("shared", &mut &shared[..]).unwrap();
        w.add_stream("own", &mut &own[..]).unwrap();
        ids.push(w.commit().unwrap().id);
    }
    let before = dir_size(&dir);
    assert!(repo.forget(KeepPolicy::default(), false).is_err());
    let plan = repo
        .forget_plan(KeepPolicy {
            last: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(plan.removed.len(), 2);
    let rep = repo
        .forget(
            KeepPolicy {
                last: 1,
                ..Default::default()
            },
            true,
        )
        .unwrap();
    assert_eq!(rep.kept.len(), 1);
    assert_eq!(rep.kept[0].id, ids[2]);
    assert_eq!(rep.removed.len(), 2);
    let pr = rep.prune.unwrap();
    // two trees and the chunks of two 4 MiB streams (at least one each: chunks
    // are at most 8 MiB; how many depends on the repository's random polynomial)
    assert!(pr.bytes_deleted > 0 && pr.blobs_removed >= 4, "{pr:?}");
    let after = dir_size(&dir);
    assert!(
        after < before - 7 * 1024 * 1024,
        "prune freed too little: {before} -> {after}"
    );
    assert_eq!(restore(&repo, "latest", "shared"), shared);
    assert_eq!(
        restore(&repo, "latest", "own"),
        random_bytes(4 * 1024 * 1024, 102)
    );
    assert!(repo.check(true).unwrap().is_ok());
    restic.run(&dir, &["check", "--read-data"]);
    // pruning again finds nothing to do
    let pr = repo.prune().unwrap();
    assert_eq!(pr.packs_deleted, 0, "{pr:?}");
}

#[test]
fn export_import_one_file() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = Repository::init(&local(&tmp.path().join("a")), PASSWORD).unwrap();
    let f = fixture();
    write_snapshot(&a, &f, &["x"]);
    let s2 = write_snapshot(
        &a,
        &Fixture {
            config: b"other".to_vec(),
            volume: vec![],
            dump: vec![],
        },
        &[],
    );
    let file = tmp.path().join("snap.upkeep.tar");
    let exported = a.export(&s2.short_id, &file, "export-pw").unwrap();
    assert_eq!(exported.id.len(), 64);
    let ex = a
        .export(
            &a.snapshots().unwrap()[0].id,
            &tmp.path().join("first.tar"),
            "export-pw",
        )
        .unwrap();
    assert_eq!(ex.tags, vec!["x"]);
    assert!(
        a.export("latest", &file, "pw").is_err(),
        "must not overwrite"
    );

    // restic reads the extracted file
    let x = tmp.path().join("extracted");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tmp.path().join("first.tar"))
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "export-pw").unwrap();
    let out = Command::new("restic")
        .args(["--no-cache", "-q", "-r"])
        .arg(&x)
        .args(["dump", "latest", "/volumes/postgres_backups.tar"])
        .env("RESTIC_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, f.volume);
    drop(restic);

    // import into another repository with another password
    let b = Repository::init(&local(&tmp.path().join("b")), "other").unwrap();
    assert!(matches!(
        b.import(&tmp.path().join("first.tar"), "bad"),
        Err(RepoError::WrongPassword { .. })
    ));
    let imported = b
        .import(&tmp.path().join("first.tar"), "export-pw")
        .unwrap();
    assert_eq!(imported.len(), 1);
    assert_restores(&b, &imported[0].short_id, &f);
    assert_eq!(
        b.import(&tmp.path().join("first.tar"), "export-pw")
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b.snapshots().unwrap().len(),
        1,
        "importing twice must not duplicate"
    );
    assert!(b.check(true).unwrap().is_ok());
}

#[test]
fn locks_are_restic_compatible() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("a", &mut &b"data"[..]).unwrap();
    // restic prune must refuse to run over a backup in progress
    let out = restic.cmd(&dir, &["prune"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and so must our exclusive operations
    match repo.forget(
        KeepPolicy {
            last: 1,
            ..Default::default()
        },
        true,
    ) {
        Err(e @ RepoError::Locked { .. }) => {
            assert!(e.to_string().contains("restic unlock"), "{e}")
        }
        r => panic!("{r:?}"),
    }
    w.commit().unwrap();
    assert_eq!(std::fs::read_dir(dir.join("locks")).unwrap().count(), 0);

    // (stale locks of dead processes: see stale_locks_of_dead_processes_are_ignored)
    restic.run(&dir, &["check"]);
    repo.forget(
        KeepPolicy {
            last: 5,
            ..Default::default()
        },
        true,
    )
    .unwrap();
}

// ----- S3 (moto on loopback, from tests/common) -----

#[test]
fn s3_round_trip() {
    let moto = common::moto_server();
    // moto accepts any credentials; these are only set for this process
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let url = format!("s3:http://127.0.0.1:{}/upkeep-test/site/backups", moto.port);
    let loc = RepoLocation::parse(&url).unwrap();
    let repo = Repository::open_or_init(&loc, PASSWORD).unwrap();
    let f = fixture();
    let s = write_snapshot(&repo, &f, &["s3"]);
    let repo = Repository::open(&loc, PASSWORD).unwrap();
    assert_restores(&repo, &s.short_id, &f);
    assert!(repo.check(true).unwrap().is_ok());
    assert!(matches!(
        Repository::open(&loc, "wrong"),
        Err(RepoError::WrongPassword { .. })
    ));
    let other = RepoLocation::parse(&format!(
        "s3:http://127.0.0.1:{}/upkeep-test/elsewhere",
        moto.port
    ))
    .unwrap();
    assert!(matches!(
        Repository::open(&other, PASSWORD),
        Err(RepoError::NotARepository { .. })
    ));
    let rep = repo
        .forget(
            KeepPolicy {
                last: 1,
                ..Default::default()
            },
            true,
        )
        .unwrap();
    assert_eq!(rep.kept.len(), 1);
}

// ----- fault tests: kill -9 during a backup, disk full, stale locks -----
//
// The writer that gets killed is this test binary itself, re-executed with
// `fault_child --exact` and its orders in environment variables (the
// password in UPKEEP_PASSWORD, never on argv). It drives the library through a
// backend wrapper that can stop (sleep, then exit) at a chosen write, so the
// kill lands exactly between two steps of a backup; one point kills in real time
// while a pack is being written instead.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use upkeep::repo::backend::{local::LocalBackend, Backend, FileType};

/// Every wait for a child or a file is bounded by this.
const WAIT: Duration = Duration::from_secs(60);

/// Where the writer child stops and waits to be killed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pause {
    /// Never: runs to the end unless killed in real time.
    Never,
    /// Right after its lock file is written (nothing else written yet).
    AfterLock,
    /// Right after the first pack is written (more data still to come).
    AfterFirstPack,
    /// When the index is about to be written (all packs are written).
    BeforeIndex,
    /// When the snapshot file is about to be written (the index is written).
    BeforeSnapshot,
    /// Right after the snapshot file is written (the lock is not yet released).
    AfterSnapshot,
}

impl Pause {
    fn parse(s: &str) -> Pause {
        match s {
            "never" => Pause::Never,
            "after-lock" => Pause::AfterLock,
            "after-first-pack" => Pause::AfterFirstPack,
            "before-index" => Pause::BeforeIndex,
            "before-snapshot" => Pause::BeforeSnapshot,
            "after-snapshot" => Pause::AfterSnapshot,
            _ => panic!("unknown pause point {s:?}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Pause::Never => "never",
            Pause::AfterLock => "after-lock",
            Pause::AfterFirstPack => "after-first-pack",
            Pause::BeforeIndex => "before-index",
            Pause::BeforeSnapshot => "before-snapshot",
            Pause::AfterSnapshot => "after-snapshot",
        }
    }
}

/// A local backend that stops the process at one write: it creates the marker
/// file, then sleeps until killed (and exits after 120 s if it never is).
struct PausingBackend {
    inner: LocalBackend,
    pause: Pause,
    marker: PathBuf,
    packs: AtomicUsize,
}

impl PausingBackend {
    fn stop_here(&self) -> ! {
        std::fs::write(&self.marker, self.pause.name()).unwrap();
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("fault_child: never killed; giving up");
        std::process::exit(3);
    }
}

impl Backend for PausingBackend {
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
        match (t, self.pause) {
            (FileType::Index, Pause::BeforeIndex) | (FileType::Snapshot, Pause::BeforeSnapshot) => {
                self.stop_here()
            }
            _ => {}
        }
        self.inner.write(t, name, data)?;
        let first_pack = t == FileType::Pack && self.packs.fetch_add(1, Ordering::SeqCst) == 0;
        match (t, self.pause) {
            (FileType::Lock, Pause::AfterLock) | (FileType::Snapshot, Pause::AfterSnapshot) => {
                self.stop_here()
            }
            (FileType::Pack, Pause::AfterFirstPack) if first_pack => self.stop_here(),
            _ => Ok(()),
        }
    }
    fn remove(&self, t: FileType, name: &str) -> upkeep::repo::Result<()> {
        self.inner.remove(t, name)
    }
    fn remove_temporaries(&self) -> upkeep::repo::Result<(usize, u64)> {
        self.inner.remove_temporaries()
    }
}

/// The writer the fault tests kill: a backup of `mib` MiB of seeded random
/// data (or a prune) through a backend that stops where `pause` says.
fn run_writer(
    repo_dir: &Path,
    password: &str,
    op: &str,
    pause: Pause,
    marker: PathBuf,
    seed: u64,
    mib: usize,
) -> Repository {
    let be = PausingBackend {
        inner: LocalBackend::new(repo_dir),
        pause,
        marker,
        packs: AtomicUsize::new(0),
    };
    let repo = Repository::open_backend(Arc::new(be), password).unwrap();
    match op {
        "backup" => {
            let data = random_bytes(mib * 1024 * 1024, seed);
            let w = repo
                .begin_snapshot(SnapshotMeta {
                    tags: vec!["killed".into()],
                    ..Default::default()
                })
                .unwrap();
            w.add_stream("config.tar", &mut &b"config"[..]).unwrap();
            w.add_stream("volumes/data.tar", &mut &data[..]).unwrap();
            w.commit().unwrap();
        }
        "prune" => {
            repo.prune().unwrap();
        }
        op => panic!("unknown operation {op:?}"),
    }
    repo
}

/// Two roles. Spawned by the fault tests with `UPKEEP_FAULT_*` orders, it is
/// the writer they kill. Run as a plain test, it checks that same writer
/// end to end: its snapshot commits and restores byte-identical.
#[test]
fn fault_child() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    if let Ok(repo) = std::env::var("UPKEEP_FAULT_REPO") {
        run_writer(
            Path::new(&repo),
            &var("UPKEEP_PASSWORD"),
            &var("UPKEEP_FAULT_OP"),
            Pause::parse(&var("UPKEEP_FAULT_PAUSE")),
            PathBuf::from(var("UPKEEP_FAULT_MARKER")),
            var("UPKEEP_FAULT_SEED").parse().unwrap(),
            var("UPKEEP_FAULT_MIB").parse().unwrap(),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    Repository::init(&RepoLocation::Local(repo_dir.clone()), PASSWORD).unwrap();
    let repo = run_writer(
        &repo_dir,
        PASSWORD,
        "backup",
        Pause::Never,
        dir.path().join("marker"),
        7,
        2,
    );
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let mut out = Vec::new();
    repo.restore_stream(&snaps[0].id, "volumes/data.tar", &mut out)
        .unwrap();
    assert_eq!(out, random_bytes(2 * 1024 * 1024, 7));
    assert!(repo.check(true).unwrap().is_ok());
}

/// A writer child; killed (SIGKILL) and reaped when dropped.
struct Writer {
    child: Child,
    log: PathBuf,
    marker: PathBuf,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Writer {
    fn spawn(repo: &Path, work: &Path, op: &str, pause: Pause, seed: u64, mib: usize) -> Writer {
        let tag = format!("{op}-{}-{seed}", pause.name());
        let log = work.join(format!("{tag}.log"));
        let marker = work.join(format!("{tag}.paused"));
        let out = File::create(&log).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["fault_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("UPKEEP_FAULT_REPO", repo)
            .env("UPKEEP_PASSWORD", PASSWORD)
            .env("UPKEEP_FAULT_OP", op)
            .env("UPKEEP_FAULT_PAUSE", pause.name())
            .env("UPKEEP_FAULT_MARKER", &marker)
            .env("UPKEEP_FAULT_SEED", seed.to_string())
            .env("UPKEEP_FAULT_MIB", mib.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Writer { child, log, marker }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most [`WAIT`]) until `cond` holds; fails loudly, with the
    /// child's output, if it times out or if the child ends first.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if cond() {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "the writer ended ({st}) before {what}; its output:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {what}; the writer's output:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_paused(&mut self) {
        let marker = self.marker.clone();
        self.wait_until("its pause point", || marker.exists());
    }

    /// SIGKILL, and proof that the signal (not the child's own end) stopped it.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        let st = self.child.wait().unwrap();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "the writer was not killed but ended ({st}):\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// Names of the files in `dir` (none if it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// (complete packs, temporary files) under `data/`.
fn data_files(repo: &Path) -> (usize, usize) {
    let (mut packs, mut tmps) = (0, 0);
    for sub in names_in(&repo.join("data")) {
        for n in names_in(&repo.join("data").join(sub)) {
            if n.contains("-tmp-") {
                tmps += 1;
            } else {
                packs += 1;
            }
        }
    }
    (packs, tmps)
}

/// Every file under `dir` whose name marks an unfinished write.
fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(tmp_files(&e.path()));
        } else if e.file_name().to_string_lossy().contains("-tmp-") {
            out.push(e.path());
        }
    }
    out
}

/// A base snapshot taken before the faults: it must survive them intact.
fn base_snapshot(repo: &Repository) -> (String, Vec<u8>) {
    let base = random_bytes(1024 * 1024 + 17, 4242);
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("config.tar", &mut &b"base config"[..])
        .unwrap();
    w.add_stream("volumes/base.tar", &mut &base[..]).unwrap();
    (w.commit().unwrap().id, base)
}

fn assert_base_intact(repo: &Repository, id: &str, base: &[u8], when: &str) {
    assert_eq!(
        restore(repo, id, "volumes/base.tar"),
        base,
        "{when}: the base snapshot no longer restores its bytes"
    );
    assert_eq!(restore(repo, id, "config.tar"), b"base config");
}

#[test]
fn kill9_during_backup_leaves_a_clean_repository() {
    struct Point {
        what: &'static str,
        pause: Pause,
        /// poll `data/` and kill as soon as a pack (or its temporary file) appears
        real_time: bool,
        /// the writer's lock file must be left behind
        lock_left: bool,
        /// the snapshot was complete when killed (only at the very end)
        committed: bool,
    }
    let points = [
        Point {
            what: "right after start",
            pause: Pause::Never,
            real_time: false,
            lock_left: false,
            committed: false,
        },
        Point {
            what: "lock taken, nothing written yet",
            pause: Pause::AfterLock,
            real_time: false,
            lock_left: true,
            committed: false,
        },
        Point {
            what: "while the first pack is being written (real time)",
            pause: Pause::Never,
            real_time: true,
            lock_left: true,
            committed: false,
        },
        Point {
            what: "first pack written, more data pending",
            pause: Pause::AfterFirstPack,
            real_time: false,
            lock_left: true,
            committed: false,
        },
        Point {
            what: "all packs written, index not yet",
            pause: Pause::BeforeIndex,
            real_time: false,
            lock_left: true,
            committed: false,
        },
        Point {
            what: "index written, snapshot not yet",
            pause: Pause::BeforeSnapshot,
            real_time: false,
            lock_left: true,
            committed: false,
        },
        Point {
            what: "snapshot written, lock not yet released",
            pause: Pause::AfterSnapshot,
            real_time: false,
            lock_left: true,
            committed: true,
        },
    ];
    // 20 MiB of incompressible data: one 16 MiB pack is written while the
    // stream is read, the rest at commit
    const MIB: usize = 20;
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    // one repository for all the kills: its base snapshot must survive them all
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let (base_id, base) = base_snapshot(&repo);
    drop(repo);
    for (i, p) in points.iter().enumerate() {
        let started = Instant::now();
        let seed = 1000 + i as u64;
        let (packs_before, _) = data_files(&dir);

        // the writer, killed at its point
        let mut w = Writer::spawn(&dir, tmp.path(), "backup", p.pause, seed, MIB);
        if p.real_time {
            w.wait_until("a new file in data/", || {
                data_files(&dir) != (packs_before, 0)
            });
        } else if p.pause != Pause::Never {
            w.wait_paused();
        }
        w.kill9();
        let (packs, tmps) = data_files(&dir);
        let locks = names_in(&dir.join("locks"));
        eprintln!(
            "killed {}: {} new pack(s), {tmps} temporary file(s), {} lock(s), {} index file(s)",
            p.what,
            packs - packs_before,
            locks.len(),
            names_in(&dir.join("index")).len()
        );
        if p.lock_left {
            assert_eq!(locks.len(), 1, "{}: the killed writer's lock", p.what);
        }

        // check is clean (leftover packs are only counted), and taking its
        // lock removed the dead writer's one
        let repo = Repository::open(&local(&dir), PASSWORD).unwrap();
        let report = repo.check(true).unwrap();
        assert!(report.is_ok(), "{}: {report:?}", p.what);
        assert!(
            names_in(&dir.join("locks")).is_empty(),
            "{}: the dead writer's lock was not removed",
            p.what
        );
        // restic 0.14's check takes an exclusive lock: it runs because the stale lock is gone
        restic.run(&dir, &["check"]);

        // the interrupted snapshot is absent (present only if it was complete)
        let snaps = repo.snapshots().unwrap();
        let killed: Vec<String> = snaps
            .iter()
            .filter(|s| s.tags == vec!["killed".to_string()])
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(snaps.len(), 1 + killed.len());
        assert_eq!(killed.len(), usize::from(p.committed), "{}", p.what);
        assert_eq!(snaps[0].id, base_id);
        assert_base_intact(&repo, &base_id, &base, p.what);
        let data = random_bytes(MIB * 1024 * 1024, seed);
        for id in &killed {
            assert!(restic.run(&dir, &["dump", id, "/volumes/data.tar"]) == data);
        }

        // the next backup of the same data succeeds (deduplicating against
        // whatever the killed writer indexed), and restic reads it back
        let next = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
        next.add_stream("volumes/data.tar", &mut &data[..]).unwrap();
        let s = next.commit().unwrap();
        assert!(
            restic.run(&dir, &["dump", &s.id, "/volumes/data.tar"]) == data,
            "{}: the next backup does not restore its bytes",
            p.what
        );
        restic.run(&dir, &["check", "--read-data"]);

        // an exclusive operation is not blocked either: drop this round's
        // snapshots and prune the leftovers, back to the base snapshot alone
        let mut specs = vec![s.id.as_str()];
        specs.extend(killed.iter().map(String::as_str));
        let pruned = repo.remove_snapshots(&specs, true).unwrap().prune.unwrap();
        assert_eq!(pruned.temporary_files_deleted, tmps, "{}", p.what);
        assert!(
            tmp_files(&dir).is_empty(),
            "{}: {:?}",
            p.what,
            tmp_files(&dir)
        );
        let report = repo.check(false).unwrap();
        assert!(report.is_ok(), "{}: after prune: {report:?}", p.what);
        assert_eq!(report.unreferenced_packs, 0, "{}", p.what);
        assert_eq!(report.snapshots, 1);
        assert_base_intact(&repo, &base_id, &base, p.what);
        eprintln!("  verified in {:.1} s", started.elapsed().as_secs_f64());
    }
    let report = Repository::open(&local(&dir), PASSWORD)
        .unwrap()
        .check(true)
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    restic.run(&dir, &["check", "--read-data"]);
}

/// A tmpfs mounted by the test; unmounted when dropped (also on panic).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs { dir },
            Ok(o) => panic!(
                "the disk-full test mounts a {size} tmpfs and needs root (CAP_SYS_ADMIN) for it; \
                 `mount -t tmpfs` failed (uid {}): {}",
                // SAFETY: no preconditions.
                unsafe { libc::getuid() },
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("the disk-full test needs `mount` (util-linux) and root: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // busy (a panic mid-write): detach it so nothing stays mounted
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

fn assert_no_space_error(e: &RepoError, when: &str) {
    let msg = e.to_string();
    assert!(
        matches!(e, RepoError::Backend { .. })
            && msg.contains("No space left on device")
            && msg.contains("free some space or use another repository"),
        "{when}: not a clear disk-full error: {msg}"
    );
}

#[test]
fn disk_full_is_a_clean_error() {
    let restic = Restic::new();
    // packs are cut at the first chunk that takes them to 16 MiB, and chunks
    // are at most 8 MiB: a pack has 16 to 24 MiB. With 24 to 32 MiB free, the
    // first pack of a big stream fits and the second cannot.
    let fs = Tmpfs::mount("30m");
    let dir = fs.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let (base_id, base) = base_snapshot(&repo);
    let after_base = free_bytes(fs.path());
    assert!(
        (24 << 20) + (1 << 20) < after_base && after_base < 32 << 20,
        "the test needs 25 to 32 MiB free after the base snapshot, not {after_base} bytes"
    );

    let assert_clean = |when: &str, unreferenced: usize| {
        assert!(tmp_files(&dir).is_empty(), "{when}: {:?}", tmp_files(&dir));
        assert!(names_in(&dir.join("locks")).is_empty(), "{when}: lock left");
        let snaps = repo.snapshots().unwrap();
        assert_eq!(snaps.len(), 1, "{when}: a partial snapshot is visible");
        let report = repo.check(true).unwrap();
        assert!(report.is_ok(), "{when}: {report:?}");
        assert_eq!(report.unreferenced_packs, unreferenced, "{when}");
        assert_base_intact(&repo, &base_id, &base, when);
    };

    // 40 MiB: the first pack fits, the second (at least 16 MiB, all cut while
    // the stream is read) fails
    let big = random_bytes(40 * 1024 * 1024, 77);
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    let err = w
        .add_stream("volumes/big.tar", &mut &big[..])
        .expect_err("40 MiB cannot fit in 30");
    assert_no_space_error(&err, "while adding a stream");
    eprintln!("disk full while adding a stream: {err}");
    assert!(w.commit().is_err(), "a failed snapshot must not commit");
    drop(big);
    assert_clean("after the failed stream", 1);

    // 1 MiB more than is free (and less than a pack): the whole stream is read,
    // its pack fails at commit
    let free = free_bytes(fs.path()) as usize;
    let rest = random_bytes(free + (1 << 20), 78);
    assert!(
        rest.len() < 16 << 20,
        "{free} bytes free after the first failure"
    );
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("volumes/rest.tar", &mut &rest[..]).unwrap();
    let err = w.commit().expect_err("more than is free cannot fit");
    assert_no_space_error(&err, "at commit");
    eprintln!("disk full at commit: {err}");
    assert_clean("after the failed commit", 1);

    // pruning the leftovers frees the space; the same backup then succeeds
    let pr = repo.prune().unwrap();
    assert_eq!(pr.packs_deleted, 1, "{pr:?}");
    assert_eq!(pr.temporary_files_deleted, 0, "{pr:?}");
    assert!(free_bytes(fs.path()) >= after_base - 64 * 1024);
    let w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("volumes/rest.tar", &mut &rest[..]).unwrap();
    let s = w.commit().unwrap();
    assert_eq!(restore(&repo, &s.short_id, "volumes/rest.tar"), rest);
    assert_base_intact(&repo, &base_id, &base, "after the retried backup");
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    restic.run(&dir, &["check", "--read-data"]);
    drop(repo);
    drop(fs);
}

#[test]
fn stale_locks_of_dead_processes_are_ignored() {
    let restic = Restic::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let repo = Repository::init(&local(&dir), PASSWORD).unwrap();
    let host = upkeep::repo::hostname();
    let expect_locked = |r: Result<(), RepoError>, pid: u32, exclusive: bool, what: &str| match r {
        Err(e @ RepoError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("@{host} (pid {pid})"))
                    && msg.contains(if exclusive {
                        "an exclusive lock"
                    } else {
                        "by a lock"
                    }),
                "{what}: the error does not name the holder: {msg}"
            );
        }
        r => panic!("{what}: expected a Locked error, got {r:?}"),
    };

    // a live writer's shared lock: blocks prune (naming it), not another backup
    let mut w = Writer::spawn(&dir, tmp.path(), "backup", Pause::AfterLock, 1, 1);
    w.wait_paused();
    expect_locked(
        repo.prune().map(drop),
        w.pid(),
        false,
        "prune vs a live backup",
    );
    let b = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    b.add_stream("a", &mut &b"a"[..]).unwrap();
    b.commit().unwrap();
    // killed: its lock stays behind; restic 0.14 does not skip it...
    w.kill9();
    assert_eq!(names_in(&dir.join("locks")).len(), 1);
    let out = restic.cmd(&dir, &["prune"]).output().unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already locked"),
        "restic 0.14 was expected to refuse a stale lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...upkeep does (same host, dead pid) and deletes it, so restic runs again
    repo.prune().unwrap();
    assert!(names_in(&dir.join("locks")).is_empty());
    restic.run(&dir, &["prune"]);

    // a live prune's exclusive lock blocks a backup, naming it; once killed, it does not
    let mut w = Writer::spawn(&dir, tmp.path(), "prune", Pause::AfterLock, 2, 1);
    w.wait_paused();
    expect_locked(
        repo.begin_snapshot(SnapshotMeta::default()).map(drop),
        w.pid(),
        true,
        "backup vs a live prune",
    );
    w.kill9();
    let b = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    b.add_stream("b", &mut &b"b"[..]).unwrap();
    b.commit().unwrap();
    assert!(names_in(&dir.join("locks")).is_empty());

    // the same with restic's own lock: a `restic backup --stdin` waiting for input
    let mut r = restic
        .cmd(&dir, &["backup", "--stdin", "--stdin-filename", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = r.id();
    let deadline = Instant::now() + WAIT;
    // restic 0.14 creates its lock file under its final name and then writes
    // it: an empty file is skipped as an interrupted upload, so wait for content.
    let lock_written = || {
        names_in(&dir.join("locks"))
            .iter()
            .any(|n| std::fs::metadata(dir.join("locks").join(n)).is_ok_and(|m| m.len() > 0))
    };
    while !lock_written() {
        assert!(r.try_wait().unwrap().is_none(), "restic backup ended early");
        assert!(
            Instant::now() < deadline,
            "restic took no lock within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    expect_locked(
        repo.prune().map(drop),
        pid,
        false,
        "prune vs a live restic backup",
    );
    r.kill().unwrap();
    assert_eq!(r.wait().unwrap().signal(), Some(libc::SIGKILL));
    repo.prune().unwrap();
    assert!(names_in(&dir.join("locks")).is_empty());
    restic.run(&dir, &["check"]);
    assert_eq!(repo.snapshots().unwrap().len(), 2);
}
