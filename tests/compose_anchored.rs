//! Issue 11 item 1, on the engine: a release whose Postgres service takes
//! its image, volumes and health check from a YAML anchor (`<<: *x`) is
//! read as compose reads it. Its Postgres is detected and dumped online,
//! never copied raw while it runs, and the backup restores every row.

mod common;

use common::*;

/// The v1.0.0 sample compose file with its Postgres service moved into an
/// `x-postgres` anchor that the service merges.
fn anchored(compose: String) -> String {
    assert!(compose.contains("services:\n  postgres:\n") && compose.contains("\n  app:\n"));
    compose
        .replace(
            "services:\n  postgres:\n",
            "x-postgres: &postgres-defaults\n",
        )
        .replace(
            "\n  app:\n",
            "\nservices:\n  postgres:\n    <<: *postgres-defaults\n  app:\n",
        )
}

#[test]
fn an_anchored_postgres_is_detected_dumped_online_and_restored() {
    let site = TestSite::new();
    let version = unique_version("v1.0.0");
    let (_bundle_dir, bundle) = bundle_as("v1.0.0", &version, anchored);
    let (src, dst) = (unique("anchsrc"), unique("anchdst"));
    site.track(&src);
    site.track(&dst);
    site.ok(&["install", bundle.to_str().unwrap()]);
    site.ok(&["up", &version, "--as", &src]);
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
        plan.contains("of Postgres (service postgres)"),
        "the anchored Postgres is dumped: {plan}"
    );
    assert!(
        !plan.contains(&format!("copy volume {src}_postgres_data")),
        "its live data volume is never copied raw: {plan}"
    );
    site.ok(&["backup", &src, "--online"]);
    site.ok(&["restore", "latest", "--into", &version, "--as", &dst]);
    assert_eq!(table_digest(&dst, "items"), digest);
}
