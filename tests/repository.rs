//! Integration tests of the repository layer (`upkeep::repo`): round trips,
//! dedup, compatibility both ways with restic (Debian's `restic` 0.14 must be
//! installed), S3 against a moto server on loopback (python3 with venv), faults,
//! forget/prune, export/import, locks.

use std::io::Read;
use std::net::TcpListener;
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
    let progress = std::cell::Cell::new(0u64);
    w.set_progress(|n| progress.set(n));
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
        progress.get(),
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
    let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
    w.add_stream("ok", &mut &b"fine"[..]).unwrap();
    let err = w
        .add_stream("db.dump", &mut Failing(3 * 1024 * 1024))
        .unwrap_err();
    assert!(err.to_string().contains("pg_dump exited"), "{err}");
    assert!(w.commit().is_err());
    assert!(repo.snapshots().unwrap().is_empty());
    assert!(repo.check(true).unwrap().is_ok());
    let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
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
    let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
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
        let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
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
    assert!(pr.bytes_deleted > 0 && pr.blobs_removed >= 8, "{pr:?}");
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
    let mut w = repo.begin_snapshot(SnapshotMeta::default()).unwrap();
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

    // a lock left by a dead process on this host is stale
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let _ = dead_pid;
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

// ----- S3 (moto on loopback) -----

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> Moto {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv");
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        let st = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 is required for the S3 tests");
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "moto[s3,server]", "flask", "flask-cors"])
            .status()
            .unwrap();
        assert!(st.success(), "pip install moto failed");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    moto
}

#[test]
fn s3_round_trip() {
    let moto = moto_server();
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
