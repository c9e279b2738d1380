//! Issue 11 item 1, on the engine: a release whose Postgres service takes
//! its image, volumes and health check from a YAML anchor (`<<: *x`) is
//! read as compose reads it. Its Postgres is detected and dumped online,
//! never copied raw while it runs, and the backup restores every row.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// The v1.0.0 sample bundle with its Postgres service moved into an
/// `x-postgres` anchor that the service merges.
fn anchored_bundle(work: &Path) -> PathBuf {
    let from = bundle("v1.0.0");
    let to = work.join("upkeep-sample-anchored");
    copy_tree(&from, &to);
    // The checksums no longer hold for the edited file.
    fs::remove_file(to.join("SHA256SUMS")).unwrap();
    let compose = fs::read_to_string(from.join("docker-compose.yml")).unwrap();
    assert!(compose.contains("services:\n  postgres:\n") && compose.contains("\n  app:\n"));
    let anchored = compose
        .replace(
            "services:\n  postgres:\n",
            "x-postgres: &postgres-defaults\n",
        )
        .replace(
            "\n  app:\n",
            "\nservices:\n  postgres:\n    <<: *postgres-defaults\n  app:\n",
        );
    fs::write(to.join("docker-compose.yml"), anchored).unwrap();
    to
}

/// Copies a release folder. Never hard links: the copy is edited, and the
/// sample bundles are shared by every test.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn an_anchored_postgres_is_detected_dumped_online_and_restored() {
    let site = TestSite::new();
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let (src, dst) = (unique("anchsrc"), unique("anchdst"));
    site.track(&src);
    site.track(&dst);
    site.ok(&["install", anchored_bundle(work.path()).to_str().unwrap()]);
    site.ok(&["up", "v1.0.0", "--as", &src]);
    psql(
        &src,
        "CREATE TABLE items(id int primary key, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g",
    );
    let digest = table_digest(&src, "items");

    let profile = site.ok(&["profile", &src]);
    assert!(
        profile.contains("Postgres data: pg_dump while running"),
        "{profile}"
    );
    let plan = site.ok(&["backup", &src, "--online", "--dry-run"]);
    assert!(
        plan.contains("dump Postgres (service postgres)"),
        "the anchored Postgres is dumped: {plan}"
    );
    assert!(
        !plan.contains(&format!("copy volume {src}_postgres_data")),
        "its live data volume is never copied raw: {plan}"
    );
    site.ok(&["backup", &src, "--online"]);
    site.ok(&["restore", "latest", "--into", "v1.0.0", "--as", &dst]);
    assert_eq!(table_digest(&dst, "items"), digest);
}
