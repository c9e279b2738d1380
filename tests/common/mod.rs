//! Shared harness for integration tests: real Docker Engine, real compose,
//! real Postgres in containers. Nothing here is mocked; if the engine is not
//! reachable every test fails with a message that says so.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PG_USER: &str = "graphistry";
pub const PG_DB: &str = "graphistry";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the sample bundles are, building images and bundles on first use.
/// `UPKEEP_BUNDLES` names bundles the runner has just built (scripts/test.sh
/// runs scripts/fixtures.sh once; nextest would otherwise run it, about a
/// second, in every test's process).
pub fn bundles() -> &'static Path {
    static BUNDLES: OnceLock<PathBuf> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        let v = Command::new("docker").arg("version").output();
        match v {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "the Docker Engine is not reachable; integration tests need it:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("the docker CLI cannot run ({e}); integration tests need Docker"),
        }
        if let Some(dir) = std::env::var_os("UPKEEP_BUNDLES").map(PathBuf::from) {
            if dir.join("upkeep-sample-v1.0.0").is_dir() {
                return dir;
            }
        }
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/fixtures.sh"))
            .status()
            .expect("running scripts/fixtures.sh");
        assert!(
            status.success(),
            "scripts/fixtures.sh failed: test images or bundles could not be built"
        );
        let dir = std::env::var_os("UPKEEP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/fixtures"))
            .join("bundles");
        assert!(
            dir.join("upkeep-sample-v1.0.0").is_dir(),
            "no bundles in {}",
            dir.display()
        );
        dir
    })
}

pub fn bundle(version: &str) -> PathBuf {
    bundles().join(format!("upkeep-sample-{version}"))
}

/// A name unique to this test process, usable as a compose project name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch site; removes the compose projects it was told about on drop.
pub struct TestSite {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    projects: std::sync::Mutex<Vec<String>>,
}

impl TestSite {
    pub fn new() -> TestSite {
        let base = repo_root().join("target/test-sites");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("site-")
            .tempdir_in(&base)
            .unwrap();
        let root = dir.path().to_path_buf();
        TestSite {
            _dir: dir,
            root,
            projects: Default::default(),
        }
    }

    /// Removes this project's containers, networks and volumes now and on drop.
    pub fn track(&self, project: &str) {
        purge_project(project);
        self.projects.lock().unwrap().push(project.to_string());
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upkeep"));
        cmd.arg("--site").arg(&self.root).args(args);
        cmd.env("UPKEEP_NO_PROGRESS", "1").stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running upkeep")
    }

    /// Runs upkeep and returns stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "upkeep {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs upkeep expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "upkeep {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("valid JSON output")
    }
}

impl TestSite {
    /// Installs the sample bundles `versions`.
    pub fn install(&self, versions: &[&str]) {
        for v in versions {
            self.ok(&["install", bundle(v).to_str().unwrap()]);
        }
    }

    /// Waits (60 s at most) until the site lock file names a holder running `what`.
    pub fn wait_for_holder(&self, what: &str) {
        let lock = self.root.join(".upkeep/lock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&lock)
            .unwrap_or_default()
            .contains(what)
        {
            assert!(
                Instant::now() < deadline,
                "no command took the lock for `{what}`"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        for p in self.projects.lock().unwrap().iter() {
            purge_project(p);
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes everything Docker holds for a compose project (test cleanup).
pub fn purge_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    let listed = docker(&["ps", "-aq", "--filter", &filter]);
    for id in twins(project)
        .iter()
        .map(String::as_str)
        .chain(listed.split_whitespace())
    {
        docker(&["rm", "-f", "-v", id]);
    }
    for id in docker(&["network", "ls", "-q", "--filter", &filter]).split_whitespace() {
        docker(&["network", "rm", id]);
    }
    for name in docker(&["volume", "ls", "-q", "--filter", &filter]).split_whitespace() {
        docker(&["volume", "rm", "-f", name]);
    }
}

/// Containers (running or not) standing in for `project`'s during a restore's bulk load.
pub fn twins(project: &str) -> Vec<String> {
    let filter = format!("label=org.upkeep.twin-of={project}");
    docker(&["ps", "-aq", "--filter", &filter])
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The container id of `service` in compose project `project`.
pub fn container(project: &str, service: &str) -> String {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    let id = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        !id.is_empty(),
        "no running {service} container in project {project}"
    );
    id
}

/// Runs SQL as the app's user over the container's local socket (no password
/// on any command line) and returns psql's unaligned output.
pub fn psql(project: &str, sql: &str) -> String {
    psql_in(project, PG_DB, sql)
}

/// [`psql`] in another database of the cluster.
pub fn psql_in(project: &str, database: &str, sql: &str) -> String {
    let id = container(project, "postgres");
    let out = Command::new("docker")
        .args([
            "exec",
            "-u",
            "postgres",
            &id,
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            PG_USER,
            "-d",
            database,
            "-XtAc",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql in {project}/{database} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

pub fn volume_label(name: &str, label: &str) -> String {
    docker(&[
        "volume",
        "inspect",
        "-f",
        &format!("{{{{index .Labels \"{label}\"}}}}"),
        name,
    ])
    .trim()
    .to_string()
}

/// GET / on 127.0.0.1:port, retried for up to 30 s.
pub fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_get(port) {
            Ok(body) if body.starts_with("HTTP/1") => return body,
            other if Instant::now() > deadline => {
                panic!("no HTTP answer on port {port}: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn try_get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

pub fn sha256(path: &Path) -> String {
    upkeep::durable::sha256_file(path).unwrap()
}

/// Every path below `root` with its kind, mode and content digest: equal
/// listings mean nothing was added, removed or changed.
pub fn tree_listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.push(format!("d {rel} {mode:o}"));
                walk(root, &p, out);
            } else if meta.is_file() {
                out.push(format!("f {rel} {mode:o} {}", sha256(&p)));
            } else {
                out.push(format!("l {rel}"));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A real S3-compatible server (moto) on a free loopback port; stopped on drop.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto_server from a venv under target/ (installed from PyPI on first use).
pub fn moto_server() -> Moto {
    let venv = repo_root().join("target/moto-venv");
    let bin = venv.join("bin/moto_server");
    {
        // a file lock, not a mutex: test runners such as nextest run each
        // test in its own process, and two pip installs into one venv clash
        let lock = std::fs::File::create(repo_root().join("target/moto-venv.lock")).unwrap();
        lock.lock().expect("locking target/moto-venv.lock");
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
            assert!(
                st.success(),
                "pip install moto failed: the S3 tests need PyPI"
            );
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
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
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    moto
}

/// A digest of every row of a table, to compare databases exactly.
pub fn table_digest(project: &str, table: &str) -> String {
    psql(project, &format!("SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"))
}

/// `path  sha256  mode  owner` of every file in a volume, read by a throwaway
/// container of the test Postgres image.
pub fn volume_listing(volume: &str) -> String {
    let out = Command::new("docker")
        .args([
            "run", "--rm", "--entrypoint", "sh", "-v", &format!("{volume}:/v:ro"), "upkeep-test/postgres:15", "-c",
            "cd /v && find . -type f | sort | while read -r f; do echo \"$f $(sha256sum < \"$f\" | cut -c1-64) $(stat -c '%a %u:%g' \"$f\")\"; done",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "listing volume {volume}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes an instance's containers and volumes behind upkeep's back, as a
/// disaster would.
pub fn destroy(project: &str) {
    purge_project(project);
}

/// A copy of sample bundle `version` that says it is `as_version` (VERSION
/// and SHA256SUMS rewritten, the compose file passed through `edit`), so a
/// test's default instance has a project name unique to the run. The image
/// archive is hard-linked, not copied.
pub fn bundle_as(
    version: &str,
    as_version: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let src = bundle(version);
    let base = repo_root().join("target/test-bundles");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("b-")
        .tempdir_in(&base)
        .unwrap();
    let dst = dir.path().join(format!("upkeep-sample-{as_version}"));
    let status = Command::new("cp")
        .arg("-al")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    // Hard links share the sample's bytes: unlink before writing.
    let rewrite = |path: &Path, text: String| {
        std::fs::remove_file(path).unwrap();
        std::fs::write(path, text).unwrap();
    };
    rewrite(&dst.join("VERSION"), format!("{as_version}\n"));
    let compose = dst.join("docker-compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    rewrite(&compose, edit(text));
    let sums: String = std::fs::read_to_string(dst.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|line| {
            let (_, file) = line.split_once("  ").unwrap();
            format!("{}  {file}\n", sha256(&dst.join(file)))
        })
        .collect();
    rewrite(&dst.join("SHA256SUMS"), sums);
    (dir, dst)
}

/// A release version unique to this run (its default instance's project
/// name is too), e.g. `v1.0.0-u123x4`: tests never create `v100`.
pub fn unique_version(version: &str) -> String {
    format!("{version}-{}", unique("u"))
}

/// The compose project name compose gives a release folder (its default instance).
pub fn default_project(version: &str) -> String {
    version
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// The compose CLI the run uses (`UPKEEP_COMPOSE=v1|v2`, else v2 when it works),
/// for tests that do by hand what an administrator does.
pub fn compose_cli() -> Command {
    let v2 = match std::env::var("UPKEEP_COMPOSE").as_deref() {
        Ok("v1") => false,
        Ok("v2") => true,
        _ => Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success()),
    };
    if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// Runs a compose command in `dir` by hand; panics with its output on failure.
pub fn compose_by_hand(dir: &Path, args: &[&str]) {
    let out = compose_cli()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running compose");
    assert!(
        out.status.success(),
        "compose {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
