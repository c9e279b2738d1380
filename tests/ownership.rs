//! Issue 10: upkeep owns only what its site made or adopted. Installs made
//! by hand are adopted, two sites on one engine never touch each other, and
//! nothing upkeep did not create is replaced without --force and a safety
//! snapshot. Real engine, real compose (v1 or v2, as UPKEEP_COMPOSE says),
//! real Postgres.

mod common;

use std::process::Command;

use common::*;

fn insert_rows(project: &str, table: &str, rows: u32) -> String {
    psql(
        project,
        &format!(
            "CREATE TABLE {table}(id int primary key, body text); \
             INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
        ),
    );
    table_digest(project, table)
}

/// The one published port of the sample's compose file, set to `port`.
fn with_port(text: &str, port: u16) -> String {
    let start = text
        .find("\"127.0.0.1:")
        .expect("the sample publishes a port");
    let end = start + text[start + 1..].find('"').unwrap() + 2;
    format!(
        "{}\"127.0.0.1:{port}:8080\"{}",
        &text[..start],
        &text[end..]
    )
}

fn snapshots_tagged(site: &TestSite, tag: &str) -> usize {
    site.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["tags"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.starts_with(tag)))
            })
        })
        .count()
}

#[test]
fn an_install_made_by_hand_is_adopted_backed_up_upgraded_and_rolled_back() {
    let site = TestSite::new();
    // Unpacked by hand as the reference page says: releases/<version>/.
    let version = unique_version("v1.0.0");
    let first = default_project(&version);
    let (second, up1, up2) = (unique("mycopy"), unique("hup1"), unique("hup2"));
    for p in [&first, &second, &up1, &up2] {
        site.track(p);
    }
    let release = site.root.join("releases").join(&version);
    std::fs::create_dir_all(site.root.join("releases")).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(bundle("v1.0.0"))
        .arg(&release)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("docker")
        .args(["load", "-i"])
        .arg(release.join("containers.tar"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compose_file = release.join("docker-compose.yml");
    // Another test may hold the vendor's port: the administrator picks one.
    let vendor = std::fs::read_to_string(&compose_file).unwrap();
    std::fs::write(&compose_file, with_port(&vendor, free_port())).unwrap();
    compose_by_hand(&release, &["up", "-d"]);
    wait_healthy(&first);
    let rows1 = insert_rows(&first, "notes", 500);

    // The second copy: the page's hand-edited volume name and `-p`.
    let fixed = format!("{second}_MY_COPY_2_postgres_data");
    let text = std::fs::read_to_string(&compose_file).unwrap();
    let text = with_port(&text, free_port()).replace(
        "volumes:\n  postgres_data: {}",
        &format!("volumes:\n  postgres_data:\n    name: {fixed}"),
    );
    std::fs::write(&compose_file, text).unwrap();
    compose_by_hand(&release, &["-p", &second, "up", "-d"]);
    wait_healthy(&second);
    let rows2 = insert_rows(&second, "notes", 700);
    let vendor_digest = sha256(&compose_file);

    // Found, and refused until adopted.
    let listed = site.ok(&["status"]);
    assert!(
        listed.contains(&format!("`upkeep adopt {first}`")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("`upkeep adopt {second}`")),
        "{listed}"
    );
    let refused = site.fails(&["backup", &first]);
    assert!(refused.contains("upkeep adopt"), "{refused}");
    let refused = site.fails(&["up", &version]);
    assert!(refused.contains("upkeep adopt"), "{refused}");

    let out = site.ok(&["adopt", &first]);
    assert!(
        out.contains("cannot be detected"),
        "no bundle to compare: {out}"
    );
    // Given the vendor's bundle later, the hand edits are told apart.
    let bundle_file = bundle("v1.0.0");
    let out = site.ok(&["adopt", &second, "--bundle", bundle_file.to_str().unwrap()]);
    assert!(
        out.contains("docker-compose.yml differs from the bundle"),
        "{out}"
    );
    assert_eq!(site.json(&["releases"])[0]["compose_edited"], true);
    let rec = site.json(&["status", &second]);
    let volumes: Vec<&str> = rec[0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(volumes.contains(&fixed.as_str()), "{rec}");
    assert_eq!(site.json(&["status", &first])[0]["state"], "running");

    // Backed up, upgraded to v1.1.0 and rolled back, every row kept.
    site.install(&["v1.1.0"]);
    for (old, new, rows) in [(&first, &up1, &rows1), (&second, &up2, &rows2)] {
        site.ok(&["backup", old]);
        let out = site.ok(&["upgrade", old, "--to", "v1.1.0", "--as", new, "--yes"]);
        assert!(out.contains("upgraded"), "{out}");
        assert_eq!(&table_digest(new, "notes"), rows);
        site.ok(&["rollback", new, "--yes"]);
        assert_eq!(site.json(&["status", old])[0]["state"], "running");
        assert_eq!(&table_digest(old, "notes"), rows);
    }
    assert_eq!(
        sha256(&compose_file),
        vendor_digest,
        "the vendor file is untouched"
    );
    assert!(volume_exists(&fixed));

    // An adopted instance is replaced by a restore only with --force.
    let snaps = site.json(&["snapshots", "--instance", &first]);
    let id = snaps.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    psql(
        &first,
        "INSERT INTO notes VALUES (99999, 'after the backup')",
    );
    let err = site.fails(&["restore", &id, "--into", &version]);
    assert!(err.contains("--force"), "{err}");
    site.ok(&["restore", &id, "--into", &version, "--force"]);
    assert_eq!(table_digest(&first, "notes"), rows1);
    assert_eq!(sha256(&compose_file), vendor_digest);
}

/// Waits (bounded) until every container of `project` reports healthy.
fn wait_healthy(project: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = Command::new("docker")
            .args(["ps", "-a", "--filter"])
            .arg(format!("label=com.docker.compose.project={project}"))
            .args(["--format", "{{.Status}}"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        if !lines.is_empty() && lines.iter().all(|l| l.contains("(healthy)")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{project} did not become healthy: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn two_sites_on_one_engine_never_touch_each_other() {
    let (a, b) = (TestSite::new(), TestSite::new());
    let version = unique_version("v1.0.0");
    let shared = default_project(&version);
    let own = unique("siteb");
    a.track(&shared);
    b.track(&own);
    let (_keep, bundle_dir) = bundle_as("v1.0.0", &version, |t| t);
    for site in [&a, &b] {
        site.ok(&["install", bundle_dir.to_str().unwrap(), "--skip-load"]);
    }
    a.ok(&["up", &version]);
    let rows = insert_rows(&shared, "notes", 300);
    let a_root = a.root.canonicalize().unwrap().display().to_string();
    let names_a = |err: &str| err.contains(&a_root) && err.contains("--as NAME");

    // B's default instance would be A's: refused, naming A and the way out.
    let err = b.fails(&["up", &version]);
    assert!(names_a(&err), "{err}");
    b.ok(&["up", &version, "--as", &own]);
    b.ok(&["backup", &own]);
    for args in [
        vec!["stop", shared.as_str()],
        vec!["down", shared.as_str()],
        vec!["backup", shared.as_str()],
        vec!["restore", "latest", "--into", &version],
        vec!["restore", "latest", "--into", &version, "--force"],
        vec!["upgrade", shared.as_str(), "--to", &version, "--yes"],
        vec!["rollback", shared.as_str(), "--yes"],
    ] {
        let err = b.fails(&args);
        assert!(names_a(&err), "site B `{args:?}`: {err}");
    }
    // A's instance and data are as they were.
    assert_eq!(a.json(&["status", &shared])[0]["state"], "running");
    assert_eq!(table_digest(&shared, "notes"), rows);
    // And A cannot touch B's copy either.
    let err = a.fails(&["stop", &own]);
    let b_root = b.root.canonicalize().unwrap().display().to_string();
    assert!(err.contains(&b_root), "{err}");
    assert_eq!(b.json(&["status", &own])[0]["state"], "running");
}

#[test]
fn a_restore_whose_instance_ran_is_replaced_only_with_force() {
    let site = TestSite::new();
    let (src, dst) = (unique("rsrc"), unique("rdst"));
    site.track(&src);
    site.track(&dst);
    site.install(&["v1.0.0", "v2.0.1-broken"]);
    site.ok(&["up", "v1.0.0", "--as", &src]);
    let rows = insert_rows(&src, "notes", 200);
    site.ok(&["backup", &src]);
    // The broken release's app never starts: the restore fails after its
    // instance started, leaving its journal behind, like one that timed out.
    let args = [
        "restore",
        "latest",
        "--into",
        "v2.0.1-broken",
        "--as",
        &dst,
        "--timeout",
        "60",
    ];
    site.fails(&args);
    assert!(site
        .root
        .join(format!(".upkeep/journals/{dst}.restore.json"))
        .exists());
    assert_eq!(table_digest(&dst, "notes"), rows);
    // Written to since: not a half-made restore any more.
    psql(
        &dst,
        "INSERT INTO notes VALUES (100000, 'written after the restore')",
    );
    let written = table_digest(&dst, "notes");
    let err = site.fails(&args);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(table_digest(&dst, "notes"), written, "nothing was deleted");
    let volume = format!("{dst}_postgres_data");
    assert!(volume_exists(&volume));

    // With --force: a safety snapshot first, then the instance is replaced
    // (and fails again on the broken app, with the snapshot's data loaded).
    let before = snapshots_tagged(&site, "safety");
    let mut forced = args.to_vec();
    forced.push("--force");
    site.fails(&forced);
    assert_eq!(snapshots_tagged(&site, "safety"), before + 1);
    assert_eq!(table_digest(&dst, "notes"), rows);
}

#[test]
fn upgrading_again_after_a_rollback_needs_force_and_keeps_a_snapshot() {
    let site = TestSite::new();
    let (old, new) = (unique("agold"), unique("agnew"));
    site.track(&old);
    site.track(&new);
    site.install(&["v1.0.0", "v1.1.0"]);
    site.ok(&["up", "v1.0.0", "--as", &old]);
    let old_rows = insert_rows(&old, "notes", 100);
    site.ok(&["upgrade", &old, "--to", "v1.1.0", "--as", &new, "--yes"]);
    psql(
        &new,
        "INSERT INTO notes VALUES (5000, 'written on the new release')",
    );
    let written = table_digest(&new, "notes");
    site.ok(&["rollback", &new, "--yes"]);

    let again = [
        "upgrade",
        old.as_str(),
        "--to",
        "v1.1.0",
        "--as",
        &new,
        "--yes",
    ];
    let err = site.fails(&again);
    assert!(err.contains("--force"), "{err}");
    assert!(volume_exists(&format!("{new}_postgres_data")));
    let before = snapshots_tagged(&site, "before-upgrade-again");
    let mut forced = again.to_vec();
    forced.push("--force");
    site.ok(&forced);
    assert_eq!(snapshots_tagged(&site, "before-upgrade-again"), before + 1);
    assert_ne!(
        table_digest(&new, "notes"),
        written,
        "replaced by the old data"
    );
    assert_eq!(table_digest(&new, "notes"), old_rows);
}

#[test]
fn a_fixed_volume_name_is_kept_by_the_default_instance_only() {
    let site = TestSite::new();
    let version = unique_version("v1.0.0");
    let default = default_project(&version);
    let copy = unique("fixcopy");
    let fixed = format!("{default}_acme_data");
    site.track(&default);
    site.track(&copy);
    let (_keep, dir) = bundle_as("v1.0.0", &version, |t| {
        let t = t.replace(
            "volumes:\n  postgres_data: {}",
            &format!("volumes:\n  postgres_data:\n    name: {fixed}"),
        );
        with_port(&t, free_port())
    });
    site.ok(&["install", dir.to_str().unwrap(), "--skip-load"]);
    site.ok(&["up", &version]);
    assert!(volume_exists(&fixed), "the default instance keeps {fixed}");
    let rows = insert_rows(&default, "notes", 50);
    let out = site.ok(&["up", &version, "--as", &copy]);
    assert!(out.contains(&format!("{copy}_postgres_data")), "{out}");
    assert!(
        out.contains(&fixed),
        "the note names the vendor's name: {out}"
    );
    assert!(volume_exists(&format!("{copy}_postgres_data")));
    // The copy's database is its own.
    let tables = psql(
        &copy,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'",
    );
    assert_eq!(tables, "0");
    assert_eq!(table_digest(&default, "notes"), rows);
    // The backup captures the real data volume.
    let out = site.ok(&["backup", &default]);
    assert!(out.contains("1 tables"), "{out}");
}

#[test]
fn a_repository_is_listed_outside_any_site() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "hello").unwrap();
    let restic = |args: &[&str]| {
        let out = Command::new("restic")
            .arg("-r")
            .arg(&repo)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .output()
            .expect("restic");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    restic(&["init"]);
    restic(&["backup", data.to_str().unwrap()]);
    let fresh = dir.path().join("nowhere");
    std::fs::create_dir_all(&fresh).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .current_dir(&fresh)
        .env_remove("UPKEEP_SITE")
        .args(["snapshots", "--json", "--repo"])
        .arg(&repo)
        .arg("--password-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(!fresh.join(".upkeep").exists() && !fresh.join("releases").exists());
    // Without --repo a site is still needed, and the error says so.
    let out = Command::new(env!("CARGO_BIN_EXE_upkeep"))
        .current_dir(&fresh)
        .env_remove("UPKEEP_SITE")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--site"));
}
