//! Issue 5: one-command upgrades with automatic rollback and resume, on the
//! real engine with real Postgres 15 and 17.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::*;

fn setup(site: &TestSite, versions: &[&str], old: &str, rows: u32) -> String {
    for v in versions {
        let b = bundle(v);
        site.ok(&["install", b.to_str().unwrap()]);
    }
    site.ok(&["up", "v1.0.0", "--as", old]);
    psql(
        old,
        &format!(
            "CREATE TABLE items(id int primary key, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g"
        ),
    );
    // An administrator's own setting, which must survive the upgrade.
    let env = site.root.join("instances").join(old).join(".env");
    std::fs::write(
        &env,
        std::fs::read_to_string(&env).unwrap() + "SITE_OWNER=ops-team\n",
    )
    .unwrap();
    table_digest(old, "items")
}

fn journal(site: &TestSite, old: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(
        site.root
            .join(".upkeep/upgrades")
            .join(format!("{old}.json")),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The instance's state, or `absent` when upkeep has no such instance.
fn state(site: &TestSite, name: &str) -> String {
    let out = site.run(&["status", name, "--json"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no instance named"), "status {name}: {err}");
        return "absent".into();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["state"].as_str().unwrap().to_string()
}

#[test]
fn same_major_upgrade_copies_and_cross_major_upgrade_dumps() {
    let site = TestSite::new();
    let (old, new, newer) = (unique("upold"), unique("upnew"), unique("up17"));
    for p in [&old, &new, &newer] {
        site.track(p);
    }
    let digest = setup(&site, &["v1.0.0", "v1.1.0", "v2.0.0"], &old, 20_000);
    let old_home = site.root.join("instances").join(&old);
    let old_files = tree_listing(&old_home);
    let old_backups = volume_listing(&format!("{old}_postgres_backups"));
    let old_port = site.json(&["status", &old])[0]["ports"][0]["host_port"]
        .as_u64()
        .unwrap();

    let plan = site.ok(&["upgrade", &old, "--to", "v1.1.0", "--as", &new, "--dry-run"]);
    assert!(
        plan.contains("strategy copy") && plan.contains("APP_FEATURE_X"),
        "{plan}"
    );
    assert_eq!(state(&site, &old), "running", "--dry-run changes nothing");

    let run = site.run(&["upgrade", &old, "--to", "v1.1.0", "--as", &new, "--yes"]);
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    );
    assert!(run.status.success(), "{err}");
    assert!(
        !err.contains("tar stream instead") && !err.contains("in full instead"),
        "volumes are pre-copied and then brought up to date inside the engine: {err}"
    );
    assert!(out.contains("downtime"), "{out}");
    assert_eq!(journal(&site, &old)["strategy"], "copy");
    assert_eq!(table_digest(&new, "items"), digest);
    assert_eq!(state(&site, &new), "running");
    assert_eq!(state(&site, &old), "stopped");
    // The new instance took over the old one's host port and serves the new release.
    let st = site.json(&["status", &new]);
    assert_eq!(st[0]["ports"][0]["host_port"].as_u64().unwrap(), old_port);
    let page = http_get(old_port as u16);
    assert!(
        page.contains("v1.1.0") && page.contains("feature_x: on"),
        "{page}"
    );
    let env = std::fs::read_to_string(site.root.join("instances").join(&new).join(".env")).unwrap();
    assert!(
        env.contains("SITE_OWNER=ops-team") && env.contains("APP_FEATURE_X=on"),
        "{env}"
    );
    // The old instance's folder and second volume are exactly as they were.
    assert_eq!(tree_listing(&old_home), old_files);
    assert_eq!(
        volume_listing(&format!("{old}_postgres_backups")),
        old_backups
    );

    // Postgres 15 → 17 of the upgraded instance: dump and restore (auto
    // chooses pg_upgrade here, tested in tests/databases.rs).
    let out = site.ok(&[
        "upgrade",
        &new,
        "--to",
        "v2.0.0",
        "--as",
        &newer,
        "--yes",
        "--strategy",
        "dump",
    ]);
    assert!(out.contains("upgraded"), "{out}");
    assert_eq!(journal(&site, &new)["strategy"], "dump");
    assert_eq!(&psql(&newer, "SHOW server_version_num")[..2], "17");
    assert_eq!(table_digest(&newer, "items"), digest);
    // The dump was loaded in a stand-in with WAL minimal, now gone.
    assert_eq!(twins(&newer), Vec::<String>::new());
    assert_eq!(psql(&newer, "SHOW wal_level"), "replica");

    // Rollback after a successful upgrade asks first: rows written since
    // stay only in the new instance's volumes.
    let refused = site.fails(&["rollback", &newer]);
    assert!(
        refused.contains("--yes") && refused.contains("stay only in"),
        "{refused}"
    );
    assert_eq!(state(&site, &newer), "running");
    // With --yes it returns to the old instance and its data.
    site.ok(&["rollback", &newer, "--yes"]);
    assert_eq!(state(&site, &new), "running");
    assert_eq!(state(&site, &newer), "down");
    assert_eq!(table_digest(&new, "items"), digest);
}

#[test]
fn an_upgrade_that_fails_rolls_back_by_itself() {
    let site = TestSite::new();
    let (old, new) = (unique("fold"), unique("fnew"));
    site.track(&old);
    site.track(&new);
    let digest = setup(&site, &["v1.0.0", "v2.0.1-broken"], &old, 5_000);
    let err = site.fails(&[
        "upgrade",
        &old,
        "--to",
        "v2.0.1-broken",
        "--as",
        &new,
        "--yes",
        "--timeout",
        "60",
    ]);
    assert!(
        err.contains("rolled back") && err.contains("start-new"),
        "{err}"
    );
    assert_eq!(
        state(&site, &old),
        "running",
        "the old instance serves again"
    );
    assert_eq!(table_digest(&old, "items"), digest);
    let port = site.json(&["status", &old])[0]["ports"][0]["host_port"]
        .as_u64()
        .unwrap();
    assert!(http_get(port as u16).contains("v1.0.0"));
    assert_eq!(journal(&site, &old)["state"], "rolled-back");
    let status = site.ok(&["status", &old]);
    assert!(status.contains("rolled back"), "{status}");
}

/// A 1 MiB file system, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a 1 MiB tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// The preflight measures the instance's own volumes (tens of MiB of
/// Postgres) and refuses when the repository's file system cannot hold the
/// safety snapshot, before anything is stopped or made.
#[test]
fn an_upgrade_without_room_for_its_snapshot_is_refused_before_any_change() {
    let site = TestSite::new();
    let (old, new) = (unique("roomold"), unique("roomnew"));
    site.track(&old);
    site.track(&new);
    let digest = setup(&site, &["v1.0.0", "v1.1.0"], &old, 100);
    let _small = SmallFs::mount(&site.root.join("backups"));
    let err = site.fails(&["upgrade", &old, "--to", "v1.1.0", "--as", &new, "--yes"]);
    assert!(
        err.contains("the backup repository")
            && err.contains("MiB")
            && err.contains("free space first"),
        "{err}"
    );
    assert_eq!(state(&site, &old), "running");
    assert_eq!(state(&site, &new), "absent");
    assert!(!volume_exists(&format!("{new}_postgres_data")));
    assert_eq!(table_digest(&old, "items"), digest);
}

// The upgrade's steps, each killed once, in three tests that a runner can
// run side by side (one sequence of twelve crashes took over 12 minutes).
// The step's position in the whole list decides resume or rollback, so each
// step is recovered the same way however the list is cut.
const COPY_STEPS: [&str; 9] = [
    "preflight",
    "safety-snapshot",
    "stop-old",
    "carry-config",
    "pre-copy",
    "migrate-data:postgres",
    "migrate-data",
    "start-new",
    "verify",
];

/// Upgrades a fresh v1.0.0 instance to `to`, killed after each of
/// `steps[range]` in turn, each followed by a resume or a rollback and then
/// by `after(site, old, step)`. Returns the site and the old and new names.
fn crash_at_each(
    prefix: &str,
    (to, extra): (&str, &[&str]),
    steps: &[&str],
    range: std::ops::Range<usize>,
    after: impl Fn(&TestSite, &str, &str),
) -> (TestSite, String, String) {
    let site = TestSite::new();
    let (old, new) = (
        unique(&format!("{prefix}old")),
        unique(&format!("{prefix}new")),
    );
    site.track(&old);
    site.track(&new);
    let digest = setup(&site, &["v1.0.0", to], &old, 5_000);
    for i in range {
        crash_then_recover(
            &site,
            (&old, &new, to),
            &digest,
            steps[i],
            extra,
            i % 2 == 0,
        );
        after(&site, &old, steps[i]);
    }
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));
    (site, old, new)
}

#[test]
fn kill_9_at_each_early_step_then_resume_or_rollback_loses_nothing() {
    crash_at_each("kea", ("v1.1.0", &[]), &COPY_STEPS, 0..5, |_, _, _| {});
}

#[test]
fn kill_9_at_each_late_step_then_resume_or_rollback_loses_nothing() {
    crash_at_each(
        "kla",
        ("v1.1.0", &[]),
        &COPY_STEPS,
        5..COPY_STEPS.len(),
        |_, _, _| {},
    );
}

/// A dump's new Postgres loads in a stand-in started before the downtime
/// (carry-config), which a resume takes over and a rollback removes.
#[test]
fn kill_9_in_a_dump_then_resume_or_rollback_loses_nothing() {
    let steps = ["carry-config", "pre-copy", "migrate-data:postgres"];
    let dump = ("v1.1.0", &["--strategy", "dump"][..]);
    crash_at_each("kdu", dump, &steps, 0..steps.len(), |_, _, _| {});
}

// After the check on a physical copy, after the pre-copy, after the staging
// copy is complete, after pg_upgrade linked it, and after the new cluster is
// in place (the step's end). The old volume as it was once the old Postgres
// stopped is what every rollback finds.
const PG_UPGRADE_STEPS: [&str; 5] = [
    "pre-copy:check",
    "pre-copy",
    "migrate-data:staging",
    "migrate-data:pg_upgrade",
    "migrate-data",
];

fn crash_a_pg_upgrade(prefix: &str, range: std::ops::Range<usize>) {
    let every_step = |site: &TestSite, old: &str, step: &str| {
        assert_eq!(journal(site, old)["strategy"], "pg_upgrade", "step {step}");
        assert_eq!(psql(old, "SHOW server_version_num").get(..2), Some("15"));
    };
    let steps = &PG_UPGRADE_STEPS;
    let (_site, old, new) = crash_at_each(prefix, ("v2.0.0", &[]), steps, range, every_step);
    assert!(
        !volume_exists(&format!("{new}_upkeep-pg-old")),
        "no scratch volume is left"
    );
    assert!(volume_exists(&format!("{old}_postgres_data")));
}

#[test]
fn kill_9_before_pg_upgrade_links_then_resume_or_rollback_loses_nothing() {
    crash_a_pg_upgrade("pgke", 0..3);
}

#[test]
fn kill_9_after_pg_upgrade_links_then_resume_or_rollback_loses_nothing() {
    crash_a_pg_upgrade("pgkl", 3..PG_UPGRADE_STEPS.len());
}

/// Upgrades `old` to `to` as `new` with `extra` arguments, killed after
/// `step`; then resumes (and rolls back after) or rolls back, and checks
/// that the survivor runs with the data and nothing else runs.
fn crash_then_recover(
    site: &TestSite,
    (old, new, to): (&String, &String, &str),
    digest: &str,
    step: &str,
    extra: &[&str],
    resume: bool,
) {
    let mut args = vec![
        "upgrade",
        old.as_str(),
        "--to",
        to,
        "--as",
        new.as_str(),
        "--yes",
        // Each round upgrades again into the `new` of the last one, which a
        // resumed round ran before its rollback: replacing it needs --force
        // (and takes a safety snapshot of it first).
        "--force",
    ];
    args.extend_from_slice(extra);
    let mut cmd = site.command(&args);
    cmd.env("UPKEEP_CRASH_AFTER", step);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "step {step}: the process was to die by SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = site.ok(&["status", old]);
    if step != "verify" {
        assert!(
            status.contains("INTERRUPTED"),
            "step {step}: status shows the interrupted upgrade:\n{status}"
        );
    }
    let (survivor, retired) = if resume {
        // After `verify` every step is done: the resume only records it.
        let out = site.run(&["upgrade", "--resume", old]);
        assert!(
            out.status.success(),
            "step {step}: resume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (new, old)
    } else {
        site.ok(&["rollback", old]);
        (old, new)
    };
    assert_eq!(
        state(site, survivor),
        "running",
        "step {step}: {survivor} runs"
    );
    assert_ne!(
        state(site, retired),
        "running",
        "step {step}: {retired} is not running"
    );
    assert_eq!(
        twins(new),
        Vec::<String>::new(),
        "step {step}: no stand-in is left"
    );
    assert_eq!(
        table_digest(survivor, "items"),
        digest,
        "step {step}: same data"
    );
    if survivor == new {
        site.ok(&["rollback", new, "--yes"]);
        assert_eq!(
            table_digest(old, "items"),
            digest,
            "step {step}: rollback after resume"
        );
    }
}

/// Volumes made by a test, removed when it ends however it ends.
struct Volumes(Vec<String>);

impl Drop for Volumes {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

/// Runs a shell script in a throwaway container with `volume` at /v.
fn in_volume(volume: &str, script: &str) {
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            "-v",
            &format!("{volume}:/v"),
            "-w",
            "/v",
            "upkeep-test/postgres:15",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script in {volume} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path of a volume with its type, owner, mode, mtime (files and
/// directories), content digest (files) or target (links).
fn full_listing(volume: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "run", "--rm", "--entrypoint", "sh", "-v", &format!("{volume}:/v:ro"), "-w", "/v",
            "upkeep-test/postgres:15", "-c",
            "find . | sort | while IFS= read -r f; do \
               if [ -L \"$f\" ]; then echo \"$f -> $(readlink \"$f\") $(stat -c '%u:%g' \"$f\")\"; \
               elif [ -d \"$f\" ]; then echo \"$f/ $(stat -c '%a %u:%g %Y' \"$f\")\"; \
               else echo \"$f $(sha256sum < \"$f\" | cut -c1-64) $(stat -c '%a %u:%g %Y' \"$f\")\"; fi; \
             done",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_delta_pass_after_a_pre_copy_makes_the_copy_equal_to_its_source() {
    bundles(); // builds the test images if needed
    let (src, dst) = (unique("dsrc"), unique("ddst"));
    let _cleanup = Volumes(vec![src.clone(), dst.clone()]);
    for v in [&src, &dst] {
        let made = std::process::Command::new("docker")
            .args(["volume", "create", v])
            .output()
            .unwrap();
        assert!(made.status.success());
    }
    in_volume(
        &src,
        "set -e; mkdir -p a/b c d/e keep willbefile; echo one > a/one; echo two > a/b/two; \
         head -c 300000 /dev/urandom > big; echo x > c/x; echo gone > gone; echo s > 'name with space'; \
         ln -s a/one link1; ln -s missing dangling; echo m > modme; echo p > permme; echo o > ownme; \
         echo w > willbefile/w; echo f > willbedir; echo deep > d/e/deep; echo k > keep/k; \
         chown 999:999 a/one d/e; chmod 640 a/b/two",
    );
    let engine = upkeep::docker::Engine::connect().unwrap();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    std::thread::sleep(std::time::Duration::from_millis(50));
    // Stale content in the destination that the full copy must clear.
    in_volume(&dst, "mkdir stale && echo s > stale/s && echo junk > big");
    engine
        .copy_volumes(&[(&src, &dst)], "upkeep-test/postgres:15", None)
        .unwrap();
    assert_eq!(
        full_listing(&dst),
        full_listing(&src),
        "the full copy is exact"
    );
    // Changes after the pre-copy, as a running Postgres makes them and more:
    // the same size rewritten in place, appends, new, renamed (files and a
    // directory with children), deleted, changed mode and owner, a file
    // that becomes a directory and back, re-pointed links. The clock moves
    // on a second first, so unchanged files keep an older ctime.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    in_volume(
        &src,
        "set -e; printf TWO | dd of=a/b/two conv=notrunc 2>/dev/null; echo more >> modme; \
         chmod 600 permme; chown 999:999 ownme; echo new > newfile; mkdir -p newdir/sub; echo n > newdir/sub/n; \
         mv a/one a/one-renamed; mv d dd; rm gone; rm -r c; rm -r willbefile; echo nowfile > willbefile; \
         rm willbedir; mkdir willbedir; echo in > willbedir/in; rm link1; ln -s a/b/two link1; \
         ln -s newfile link2; chmod 700 keep; echo '-dash' > ./-dash",
    );
    let source = full_listing(&src);
    engine
        .copy_volumes(&[(&src, &dst)], "upkeep-test/postgres:15", Some(since))
        .unwrap();
    assert_eq!(full_listing(&src), source, "the source is never modified");
    assert_eq!(
        full_listing(&dst),
        source,
        "the delta pass makes the copy exact"
    );
}

/// An old release whose Postgres executables cannot run in the new
/// release's image (here: they ask for a program loader only the old image
/// has, as binaries built for a newer C library would fail) is upgraded by
/// dump and restore, and the plan says why.
#[test]
fn old_binaries_that_cannot_run_in_the_new_image_fall_back_to_dump() {
    let site = TestSite::new();
    let version = unique_version("v1.0.0");
    let image = format!("upkeep-sample/postgres:{version}-foreign");
    let (old, new) = (default_project(&version), unique("fbnew"));
    site.track(&old);
    site.track(&new);
    let _image = BuiltImage::new(
        &image,
        "FROM upkeep-sample/postgres:v1.0.0\n\
         RUN set -e; b=/usr/lib/postgresql/15/bin/postgres; \
         sed -i 's|/lib64/ld-linux-x86-64.so.2|/lib64/ld-linuX-x86-64.so.2|' \"$b\"; \
         ln -s \"$(readlink -f /lib64/ld-linux-x86-64.so.2)\" /lib64/ld-linuX-x86-64.so.2; \
         \"$b\" -V\n",
    );
    let (_keep, bundle) = bundle_as("v1.0.0", &version, |t| {
        t.replace("upkeep-sample/postgres:v1.0.0", &image)
    });
    site.ok(&["install", bundle.to_str().unwrap()]);
    site.ok(&["install", common::bundle("v2.0.0").to_str().unwrap()]);
    site.ok(&["up", &version]);
    psql(
        &old,
        "CREATE TABLE items(id int primary key); INSERT INTO items SELECT generate_series(1, 500)",
    );
    let digest = table_digest(&old, "items");
    let upgrade = ["upgrade", &old, "--to", "v2.0.0", "--as", &new, "--yes"];
    let plan = site.ok(&[&upgrade[..], &["--dry-run"]].concat());
    assert!(
        plan.contains("strategy dump")
            && plan.contains("pg_upgrade cannot run here")
            && plan.contains("do not run in"),
        "{plan}"
    );
    let forced = site.fails(&[&upgrade[..], &["--strategy", "pg_upgrade"]].concat());
    assert!(
        forced.contains("--strategy pg_upgrade cannot run") && forced.contains("--strategy dump"),
        "{forced}"
    );
    site.ok(&upgrade);
    assert_eq!(journal(&site, &old)["strategy"], "dump");
    assert_eq!(table_digest(&new, "items"), digest);
    assert!(!volume_exists(&format!("{new}_upkeep-pg-old")));
}

/// An image built for one test from a Dockerfile (offline: FROM a local
/// image), removed when the test ends.
struct BuiltImage(String);

impl BuiltImage {
    fn new(tag: &str, dockerfile: &str) -> BuiltImage {
        use std::io::Write;
        let mut child = std::process::Command::new("docker")
            .args(["build", "--network", "none", "-q", "-t", tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker build {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BuiltImage(tag.to_string())
    }
}

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

/// What `pg_upgrade --check` refuses (a reg* type in a user table) stops
/// the upgrade before the downtime: the old instance was never stopped,
/// nothing of the new one is left, and the error says what to do.
#[test]
fn a_cluster_pg_upgrade_refuses_stops_the_upgrade_before_the_downtime() {
    let site = TestSite::new();
    let (old, new) = (unique("pgcold"), unique("pgcnew"));
    site.track(&old);
    site.track(&new);
    let digest = setup(&site, &["v1.0.0", "v2.0.0"], &old, 1_000);
    psql(
        &old,
        "CREATE TABLE handlers(f regproc); INSERT INTO handlers VALUES ('now')",
    );
    let started = container_started_at(&old);
    let err = site.fails(&["upgrade", &old, "--to", "v2.0.0", "--as", &new, "--yes"]);
    assert!(
        err.contains("pre-copy")
            && err.contains("reg*")
            && err.contains("--strategy dump")
            && err.contains("old instance was touched"),
        "{err}"
    );
    assert_eq!(state(&site, &old), "running");
    assert_eq!(
        container_started_at(&old),
        started,
        "the old Postgres was never restarted"
    );
    assert_eq!(table_digest(&old, "items"), digest);
    assert_eq!(journal(&site, &old)["state"], "failed");
    for v in [
        format!("{new}_postgres_data"),
        format!("{new}_upkeep-pg-old"),
    ] {
        assert!(!volume_exists(&v), "{v} is removed");
    }
}

/// When the old instance's Postgres container last started.
fn container_started_at(project: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.StartedAt}}",
            &container(project, "postgres"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
