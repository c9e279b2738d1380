//! Issue 4: back up and restore instances — config, volumes, Postgres — on
//! the real engine with real Postgres, into local, S3 and exported repositories.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "Upk33p-fixture_pw.4c7e91";

/// An installed v1.0.0 with a running instance holding data in Postgres, in
/// the second volume and in its config files.
fn populated(site: &TestSite, name: &str, rows: u32) {
    site.ok(&["install", bundle("v1.0.0").to_str().unwrap()]);
    site.ok(&["up", "v1.0.0", "--as", name]);
    psql(name, &format!(
        "CREATE TABLE users(id int primary key, email text not null); \
         INSERT INTO users SELECT g, 'user' || g || '@example.org' FROM generate_series(1, {rows}) g; \
         CREATE TABLE audit(at timestamptz default now(), what text); INSERT INTO audit(what) VALUES ('created')"
    ));
    let pg = container(name, "postgres");
    let st = Command::new("docker")
        .args(["exec", &pg, "sh", "-c", "mkdir -p /backups/nightly && echo dump-1 > /backups/nightly/a.txt && chown -R 999:999 /backups/nightly && chmod 640 /backups/nightly/a.txt"])
        .status()
        .unwrap();
    assert!(st.success());
    let home = site.root.join("instances").join(name);
    fs::write(home.join(".pivot-db/workbooks/wb-2.json"), "{\"id\": 42}\n").unwrap();
    fs::write(
        home.join("Caddyfile"),
        fs::read_to_string(home.join("Caddyfile")).unwrap() + "# admin edit\n",
    )
    .unwrap();
}

fn config_listing(site: &TestSite, name: &str) -> Vec<String> {
    let home = site.root.join("instances").join(name);
    let mut all = Vec::new();
    for p in [".env", "Caddyfile", "etc", ".pivot-db"] {
        let path = home.join(p);
        if path.is_dir() {
            all.extend(tree_listing(&path).into_iter().map(|l| format!("{p}: {l}")));
        } else {
            all.push(format!(
                "{p} {:o} {}",
                fs::metadata(&path).unwrap().permissions().mode(),
                sha256(&path)
            ));
        }
    }
    all
}

#[test]
fn restore_after_disaster_gives_back_every_row_file_and_mode() {
    let site = TestSite::new();
    let (src, dst) = (unique("src"), unique("dst"));
    site.track(&src);
    site.track(&dst);
    populated(&site, &src, 5000);
    let users = table_digest(&src, "users");
    let audit = table_digest(&src, "audit");
    let files = volume_listing(&format!("{src}_postgres_backups"));
    let config = config_listing(&site, &src);

    // Watch every process on the machine while the backup runs.
    let seen_password = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen_password.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) && samples < 10_000 {
                let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
                if String::from_utf8_lossy(&ps.stdout).contains(PASSWORD) {
                    seen.store(true, Ordering::SeqCst);
                }
                samples += 1;
            }
            samples
        })
    };
    let out = site.ok(&["backup", &src, "--tag", "before-disaster"]);
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().unwrap();
    assert!(samples > 0);
    assert!(
        !seen_password.load(Ordering::SeqCst),
        "the database password appeared in a process's arguments"
    );
    assert!(out.contains("postgres/graphistry.dump"), "{out}");
    assert_eq!(
        site.json(&["status", &src])[0]["state"],
        "running",
        "the backup left the instance running"
    );

    // Snapshot files are not world-readable.
    let repo = site.root.join("backups");
    for entry in fs::read_dir(repo.join("snapshots")).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "snapshot file mode {mode:o}");
    }
    assert_eq!(
        fs::metadata(site.root.join(".upkeep/repository.password"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    destroy(&src);
    assert!(!volume_exists(&format!("{src}_postgres_data")));
    let out = site.ok(&["restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    assert!(out.contains("row counts of 2 tables match"), "{out}");
    // The bulk load's settings ran in a stand-in container, now gone: the
    // instance's server runs as the vendor configured it.
    assert_eq!(twins(&dst), Vec::<String>::new());
    assert_eq!(psql(&dst, "SHOW wal_level"), "replica");

    assert_eq!(table_digest(&dst, "users"), users);
    assert_eq!(table_digest(&dst, "audit"), audit);
    assert_eq!(volume_listing(&format!("{dst}_postgres_backups")), files);
    assert_eq!(config_listing(&site, &dst), config);
    let key = site
        .root
        .join("instances")
        .join(&dst)
        .join("etc/ssl/server.key");
    assert_eq!(
        fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(http_get(
        site.json(&["status", &dst])[0]["ports"][0]["host_port"]
            .as_u64()
            .unwrap() as u16
    )
    .contains("Hello from"));

    // Restoring over an existing instance needs --force and takes a safety snapshot.
    let err = site.fails(&["restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    assert!(err.contains("--force"), "{err}");
    psql(&dst, "INSERT INTO audit(what) VALUES ('after restore')");
    let out = site.ok(&[
        "restore", "latest", "--into", "v1.0.0", "--as", &dst, "--force",
    ]);
    assert!(out.contains("safety snapshot"), "{out}");
    assert_eq!(
        table_digest(&dst, "audit"),
        audit,
        "forced restore brings back the snapshot's rows"
    );
    let snaps = site.json(&["snapshots", "--instance", &dst]);
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tags"].to_string().contains("safety")),
        "{snaps}"
    );
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));

    // Retention: one snapshot per instance is kept, the rest pruned, nothing damaged.
    site.ok(&["backup", &dst]);
    let before = site.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(before, 3, "src's, dst's safety snapshot and dst's backup");
    site.ok(&["forget", "--keep-last", "1", "--prune"]);
    let after = site.json(&["snapshots"]);
    let tags: Vec<String> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["paths"].to_string())
        .collect();
    let mut unique_paths = tags.clone();
    unique_paths.sort();
    unique_paths.dedup();
    assert_eq!(tags.len(), unique_paths.len(), "one per instance: {after}");
    assert!(tags.len() < before);
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));
    assert!(site.fails(&["forget"]).contains("say what to keep"));
    // `key` prints the site's password (and warns on stderr).
    let key = site.run(&["key"]);
    let pw = fs::read_to_string(site.root.join(".upkeep/repository.password")).unwrap();
    assert_eq!(String::from_utf8_lossy(&key.stdout).trim(), pw.trim());
    assert!(String::from_utf8_lossy(&key.stderr).contains("store it somewhere safe"));
}

#[test]
fn postgres_15_restores_into_17_and_17_is_refused_by_15() {
    let site = TestSite::new();
    let (src, up17, back) = (unique("pgsrc"), unique("pg17"), unique("pgback"));
    for p in [&src, &up17, &back] {
        site.track(p);
    }
    populated(&site, &src, 1000);
    let users = table_digest(&src, "users");
    site.ok(&[
        "install",
        bundles()
            .join("upkeep-sample-v2.0.0.tar.gz")
            .to_str()
            .unwrap(),
    ]);
    // The app keeps writing while the backup runs: the counts are taken in
    // the dump's own MVCC snapshot, so every table, the one being written
    // included, is verified on restore.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, src) = (stop.clone(), src.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                psql(&src, "INSERT INTO audit(what) VALUES ('busy')");
                n += 1;
            }
            n
        })
    };
    // --online: nothing is stopped, so the writer runs through the whole backup.
    site.ok(&["backup", &src, "--online"]);
    stop.store(true, Ordering::SeqCst);
    assert!(writer.join().unwrap() > 0);
    let out = site.ok(&["restore", "latest", "--into", "v2.0.0", "--as", &up17]);
    let tables = psql(
        &src,
        "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
         AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    );
    assert!(
        out.contains(&format!("row counts of {tables} tables match")),
        "{out}"
    );
    assert!(!out.contains("not verified"), "{out}");
    assert_eq!(
        psql(&up17, "SHOW server_version_num")[..2].to_string(),
        "17"
    );
    assert_eq!(table_digest(&up17, "users"), users);

    site.ok(&["backup", &up17]);
    let err = site.fails(&["restore", "latest", "--into", "v1.0.0", "--as", &back]);
    assert!(
        err.contains("Postgres 17") && err.contains("runs Postgres 15"),
        "{err}"
    );
    assert!(
        !volume_exists(&format!("{back}_postgres_data")),
        "a refused restore creates nothing"
    );
    assert!(site.fails(&["status", &back]).contains("no instance named"));
}

#[test]
fn a_second_host_restores_from_s3_and_from_an_exported_file() {
    let moto = moto_server();
    let (host1, host2) = (TestSite::new(), TestSite::new());
    let (src, via_s3, via_file) = (unique("h1src"), unique("h2s3"), unique("h2file"));
    for p in [&src, &via_s3, &via_file] {
        host1.track(p);
    }
    populated(&host1, &src, 2000);
    let users = table_digest(&src, "users");
    let url = format!("s3:http://127.0.0.1:{}/upkeep-migrate/site1", moto.port);
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let run = |site: &TestSite, args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.envs(env);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "upkeep {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let password_file = host1.root.join(".upkeep/repository.password");
    host1.ok(&["backup", &src]); // creates the site password
    run(
        &host1,
        &[
            "backup",
            &src,
            "--repo",
            &url,
            "--password-file",
            password_file.to_str().unwrap(),
        ],
    );
    let export = host1.root.join("migrate.upkeep");
    host1.ok(&["export", "latest", export.to_str().unwrap()]);

    // host 2: its own site and instance names, the same engine.
    host2.ok(&["install", bundle("v1.0.0").to_str().unwrap()]);
    let out = run(
        &host2,
        &[
            "restore",
            "latest",
            "--into",
            "v1.0.0",
            "--as",
            &via_s3,
            "--repo",
            &url,
            "--password-file",
            password_file.to_str().unwrap(),
        ],
    );
    assert!(out.contains("match"), "{out}");
    assert_eq!(table_digest(&via_s3, "users"), users);

    let pw2 = host2.root.join("pw-from-host1");
    fs::copy(&password_file, &pw2).unwrap();
    host2.ok(&[
        "import",
        export.to_str().unwrap(),
        "--password-file",
        pw2.to_str().unwrap(),
    ]);
    host2.ok(&[
        "restore",
        "latest",
        "--into",
        "v1.0.0",
        "--as",
        &via_file,
        "--password-file",
        pw2.to_str().unwrap(),
    ]);
    assert_eq!(table_digest(&via_file, "users"), users);
}

#[test]
fn kill_9_during_backup_or_restore_loses_nothing() {
    let site = TestSite::new();
    let (src, dst) = (unique("ksrc"), unique("kdst"));
    site.track(&src);
    site.track(&dst);
    // Enough rows that the dump streams for a while.
    populated(&site, &src, 2_000_000);
    let users = table_digest(&src, "users");
    site.ok(&["backup", &src, "--tag", "good"]);

    // Killed while pg_dump streams (the dump of 2M rows takes seconds).
    let mut backup = site
        .command(&["backup", &src, "--tag", "killed", "--no-reuse"])
        .spawn()
        .unwrap();
    site.wait_for_holder("backup");
    std::thread::sleep(Duration::from_millis(1000));
    backup.kill().unwrap();
    backup.wait().unwrap();
    assert_eq!(
        site.json(&["status", &src])[0]["state"],
        "running",
        "the instance keeps running"
    );
    let snaps = site.json(&["snapshots"]);
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "the killed backup is not visible: {snaps}"
    );
    assert!(site.ok(&["check"]).contains("no errors"));
    // The next command restarts anything the killed run had stopped.
    site.ok(&["backup", &src, "--tag", "after-kill"]);
    assert_eq!(site.json(&["status", &src])[0]["state"], "running");
    assert_eq!(table_digest(&src, "users"), users);

    let mut restore = site
        .command(&["restore", "latest", "--into", "v1.0.0", "--as", &dst])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !volume_exists(&format!("{dst}_postgres_data")) {
        assert!(
            Instant::now() < deadline,
            "the restore never created its volumes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Killed while Postgres loads the dump in its stand-in container.
    while twins(&dst).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restore never started Postgres for its load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2500));
    restore.kill().unwrap();
    restore.wait().unwrap();
    assert_eq!(twins(&dst).len(), 1, "the killed run left its stand-in");
    // The source instance and the snapshots are untouched.
    assert_eq!(table_digest(&src, "users"), users);
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));
    // Retrying the same restore clears the half-made instance and succeeds.
    let out = site.ok(&["restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    assert!(out.contains("match"), "{out}");
    assert_eq!(table_digest(&dst, "users"), users);
    assert_eq!(twins(&dst), Vec::<String>::new());
}

#[test]
fn a_stopped_instance_is_copied_physically_and_restores_only_into_the_same_major() {
    let site = TestSite::new();
    let (src, dst, cross) = (unique("physsrc"), unique("physdst"), unique("physx"));
    for p in [&src, &dst, &cross] {
        site.track(p);
    }
    populated(&site, &src, 3000);
    let users = table_digest(&src, "users");
    site.ok(&[
        "install",
        bundles()
            .join("upkeep-sample-v2.0.0.tar.gz")
            .to_str()
            .unwrap(),
    ]);
    site.ok(&["stop", &src]);
    let plan = site.ok(&["backup", &src, "--dry-run"]);
    assert!(
        plan.contains(&format!("copy volume {src}_postgres_data")),
        "{plan}"
    );
    let out = site.ok(&["backup", &src]);
    assert!(
        out.contains("volumes/postgres_data.tar") && out.contains("(physical)"),
        "{out}"
    );
    assert_eq!(
        site.json(&["status", &src])[0]["state"],
        "stopped",
        "a stopped instance stays stopped"
    );

    let err = site.fails(&["restore", "latest", "--into", "v2.0.0", "--as", &cross]);
    assert!(err.contains("only a physical copy of Postgres 15"), "{err}");
    site.ok(&["restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    assert_eq!(table_digest(&dst, "users"), users);
}

fn started_at(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}", container])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {container} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_passive_volume_is_copied_online_others_with_their_services_stopped() {
    let site = TestSite::new();
    let src = unique("psv");
    site.track(&src);
    populated(&site, &src, 1000);
    let pg = container(&src, "postgres");
    let profile = site.ok(&["profile", &src]);
    assert!(
        profile.contains("postgres_backups") && profile.contains("passive"),
        "{profile}"
    );

    // The built-in profile: Postgres keeps running while its backups volume is copied.
    let plan = site.ok(&["backup", &src, "--dry-run"]);
    assert!(!plan.contains("stopping"), "{plan}");
    let before = started_at(&pg);
    site.ok(&["backup", &src]);
    assert_eq!(started_at(&pg), before, "Postgres was restarted");

    // An upkeep.toml without passive volumes: Postgres, which mounts
    // postgres_backups, is stopped for its copy (after the dump) and restarted.
    fs::write(
        site.root.join("releases/v1.0.0/upkeep.toml"),
        "name = \"strict\"\nconfig = [\".env\", \"Caddyfile\", \"etc/ssl\", \".pivot-db\"]\n\
         [postgres]\nservice = \"postgres\"\ndata_volume = \"postgres_data\"\n",
    )
    .unwrap();
    let profile = site.ok(&["profile", &src]);
    assert!(profile.contains("stopped while it is copied"), "{profile}");
    let plan = site.ok(&["backup", &src, "--dry-run"]);
    assert!(plan.contains("(stopping postgres meanwhile)"), "{plan}");
    site.ok(&["backup", &src, "--tag", "strict"]);
    let pg = container(&src, "postgres");
    assert_ne!(
        started_at(&pg),
        before,
        "Postgres was not stopped for the copy"
    );
    assert_eq!(site.json(&["status", &src])[0]["state"], "running");
    let snaps = site.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
}

#[test]
fn a_postgres_behind_a_wrapper_command_is_restored_as_configured() {
    let site = TestSite::new();
    let (src, dst) = (unique("wsrc"), unique("wdst"));
    site.track(&src);
    site.track(&dst);
    site.ok(&["install", bundle("v1.0.0").to_str().unwrap()]);
    // A hand edit: the server starts through a shell, with a setting of its own.
    let vendor = site.root.join("releases/v1.0.0/docker-compose.yml");
    let text = fs::read_to_string(&vendor).unwrap();
    let wrapped = text.replacen(
        "    image: upkeep-sample/postgres:v1.0.0\n",
        "    image: upkeep-sample/postgres:v1.0.0\n    command: [\"sh\", \"-c\", \"exec docker-entrypoint.sh postgres -c max_connections=42\"]\n",
        1,
    );
    assert_ne!(wrapped, text, "the sample's postgres service has moved");
    fs::write(&vendor, wrapped).unwrap();
    site.ok(&["up", "v1.0.0", "--as", &src]);
    psql(
        &src,
        "CREATE TABLE t(id int primary key); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    let digest = table_digest(&src, "t");
    site.ok(&["backup", &src]);

    let out = site.run(&["-v", "restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not the postgres server itself") && err.contains("loading it as configured"),
        "{err}"
    );
    assert_eq!(table_digest(&dst, "t"), digest);
    assert_eq!(psql(&dst, "SHOW max_connections"), "42");
    assert_eq!(twins(&dst), Vec::<String>::new());
}

/// The WAL insert position once it has not moved for 16 s: the background
/// writer logs one standby snapshot up to 15 s after the last change.
fn quiet_wal(name: &str) -> String {
    let start = Instant::now();
    let mut last = psql(name, "SELECT pg_current_wal_insert_lsn()");
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(16) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the WAL of {name} kept moving"
        );
        std::thread::sleep(Duration::from_millis(500));
        let now = psql(name, "SELECT pg_current_wal_insert_lsn()");
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// The Postgres items of a [`backup_postgres`] report.
fn dump_items(pg: &serde_json::Value) -> Vec<serde_json::Value> {
    pg["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"].as_str().unwrap().starts_with("postgres"))
        .cloned()
        .collect()
}

/// The volume item of a backup report.
fn volume_item(report: &serde_json::Value, key: &str) -> serde_json::Value {
    report["manifest"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["volume"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no volume {key} in {report}"))
}

#[test]
fn an_unchanged_volume_is_not_read_again_and_any_change_is() {
    let site = TestSite::new();
    let (src, dst) = (unique("src"), unique("dst"));
    site.track(&src);
    site.track(&dst);
    populated(&site, &src, 100);
    let pg = container(&src, "postgres");
    let in_volume = |script: &str| {
        let st = Command::new("docker")
            .args(["exec", &pg, "sh", "-c", script])
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    // A path changed in the last 2 s gives no listing: read next time too.
    in_volume("touch /backups/nightly/a.txt");
    let fresh = site.json(&["backup", &src]);
    let item = volume_item(&fresh, "postgres_backups");
    assert!(item["listing_sha256"].is_null(), "{item}");
    std::thread::sleep(Duration::from_secs(3));
    let first = site.json(&["backup", &src]);
    let listed = volume_item(&first, "postgres_backups");
    assert!(listed["listing_sha256"].is_string(), "{listed}");
    assert!(listed["reused_from"].is_null(), "{listed}");
    let out = site.ok(&["backup", &src]);
    assert!(
        out.contains("volume postgres_backups unchanged since snapshot"),
        "{out}"
    );
    let reused = site.json(&["backup", &src]);
    let item = volume_item(&reused, "postgres_backups");
    assert!(item["reused_from"].is_string(), "{item}");
    assert_eq!(item["sha256"], listed["sha256"]);
    assert_eq!(item["listing_sha256"], listed["listing_sha256"]);
    let files = volume_listing(&format!("{src}_postgres_backups"));

    // Each kind of change is seen: content, mode alone, a new empty file.
    for change in [
        "echo more >> /backups/nightly/a.txt",
        "chmod 600 /backups/nightly/a.txt",
        "touch /backups/nightly/empty",
    ] {
        // the last change is 3 s old: this backup records a listing
        std::thread::sleep(Duration::from_secs(3));
        site.json(&["backup", &src]);
        let before = site.json(&["backup", &src]);
        assert!(volume_item(&before, "postgres_backups")["reused_from"].is_string());
        in_volume(change);
        let after = site.json(&["backup", &src]);
        let item = volume_item(&after, "postgres_backups");
        assert!(item["reused_from"].is_null(), "{change}: {item}");
    }

    // The reused copy restores the volume as it was.
    let out = site.ok(&[
        "restore",
        &reused["snapshot"]["id"].as_str().unwrap()[..8],
        "--into",
        "v1.0.0",
        "--as",
        &dst,
    ]);
    assert!(out.contains("row counts of 2 tables match"), "{out}");
    assert_eq!(volume_listing(&format!("{dst}_postgres_backups")), files);
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));
}

fn backup_postgres(site: &TestSite, name: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backup", name];
    args.extend(extra);
    let report = site.json(&args);
    let mut pg = report["manifest"]["postgres"].clone();
    pg["snapshot"] = report["snapshot"]["id"].clone();
    pg["items"] = report["manifest"]["items"].clone();
    pg
}

#[test]
fn an_unchanged_cluster_reuses_its_dumps_and_any_change_dumps_again() {
    let site = TestSite::new();
    let (src, dst) = (unique("src"), unique("dst"));
    site.track(&src);
    site.track(&dst);
    populated(&site, &src, 2000);
    psql(
        &src,
        "CREATE TABLE tickets(id serial primary key, what text); \
         INSERT INTO tickets(what) VALUES ('a'), ('b'), ('c')",
    );
    // No timed checkpoint and no autovacuum: nothing writes WAL on its own.
    // VACUUM prunes the catalog's dead rows now: a read (the first
    // backup's) would, and pruning writes WAL (that backup's successor
    // would then dump again, rightly).
    psql(&src, "ALTER SYSTEM SET checkpoint_timeout = '1d'");
    psql(&src, "ALTER SYSTEM SET autovacuum = off");
    psql(&src, "SELECT pg_reload_conf()");
    psql(&src, "VACUUM");
    psql(&src, "CHECKPOINT");
    quiet_wal(&src);

    let first = backup_postgres(&site, &src, &[]);
    assert!(first["dumps_from"].is_null(), "{first}");
    assert!(first["dump_fingerprint"].is_string(), "{first}");
    let out = site.run(&["-v", "backup", &src]);
    let (text, log) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success()
            && text.contains(&format!(
                "unchanged since snapshot {}",
                &first["snapshot"].as_str().unwrap()[..8]
            )),
        "{text}{log}"
    );
    let second = site.json(&["snapshots", "--instance", &src]);
    let second_id = second.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reused = backup_postgres(&site, &src, &[]);
    assert_eq!(reused["dumps_from"], second_id.as_str(), "{reused}");
    assert_eq!(
        dump_items(&reused),
        dump_items(&first),
        "same dumps, same digests"
    );
    let fresh = backup_postgres(&site, &src, &["--no-reuse"]);
    assert!(fresh["dumps_from"].is_null(), "{fresh}");
    assert_eq!(fresh["dump_fingerprint"], first["dump_fingerprint"]);

    // The reused dumps restore (the restore verifies their row counts).
    let users = table_digest(&src, "users");
    let out = site.ok(&[
        "restore",
        &reused["snapshot"].as_str().unwrap()[..8],
        "--into",
        "v1.0.0",
        "--as",
        &dst,
    ]);
    assert!(out.contains("row counts of 3 tables match"), "{out}");
    assert_eq!(table_digest(&dst, "users"), users);

    // nextval writes WAL only every 32 values: the second call leaves the
    // WAL where it was, and the backup must still see the change.
    psql(&src, "SELECT nextval('tickets_id_seq')");
    quiet_wal(&src);
    let before = backup_postgres(&site, &src, &[]);
    assert!(before["dumps_from"].is_null(), "{before}");
    let lsn = psql(&src, "SELECT pg_current_wal_insert_lsn()");
    psql(&src, "SELECT nextval('tickets_id_seq')");
    assert_eq!(
        psql(&src, "SELECT pg_current_wal_insert_lsn()"),
        lsn,
        "this nextval was expected to write no WAL"
    );
    let after = backup_postgres(&site, &src, &[]);
    assert!(after["dumps_from"].is_null(), "{after}");
    assert_ne!(after["dump_fingerprint"], before["dump_fingerprint"]);

    // An unlogged table changes without WAL: no fingerprint, always dumped.
    psql(&src, "CREATE UNLOGGED TABLE scratch(x int)");
    let out = site.run(&["-v", "backup", &src]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("1 unlogged relation(s)"), "{log}");
    let unlogged = backup_postgres(&site, &src, &[]);
    assert!(unlogged["dumps_from"].is_null(), "{unlogged}");
    assert!(unlogged["dump_fingerprint"].is_null(), "{unlogged}");
    assert!(site.ok(&["check", "--read-data"]).contains("no errors"));
}
