//! Issue 11, item 3: every database of the cluster is backed up, restored
//! and carried by the upgrade (15 → 17, by pg_upgrade; issue 13), with its
//! properties, large objects and roles; and a snapshot with one database,
//! as releases before wrote it, still restores. Real engine, real compose,
//! real Postgres.

mod common;

use std::process::Command;

use common::*;

const ANALYST_PASSWORD: &str = "An4lyst-test_pw";

/// Whether `user` logs in to `database` with `password`, over TCP, where the
/// image asks for a scram password (the password reaches psql through the
/// environment, never a command line).
fn logs_in(project: &str, user: &str, database: &str, password: &str) -> bool {
    Command::new("docker")
        .env("PGPASSWORD", password)
        .args(["exec", "-e", "PGPASSWORD", &container(project, "postgres")])
        .args(["psql", "-h", "127.0.0.1", "-U", user, "-d", database])
        .args(["-XtAc", "SELECT 1"])
        .output()
        .unwrap()
        .status
        .success()
}

/// Every row of every database (`pg_dumpall --data-only`), sorted, without
/// what differs between server versions rather than between data: comments,
/// session settings, psql's `\restrict` guards.
fn cluster_data(project: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["exec", "-u", "postgres", &container(project, "postgres")])
        .args(["pg_dumpall", "-U", PG_USER, "--data-only"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dumpall in {project}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// What the catalog says of database `analytics`: owner, privileges,
/// settings, comment, encoding.
fn analytics_properties(project: &str) -> String {
    psql_in(
        project,
        PG_DB,
        "SELECT pg_get_userbyid(d.datdba), d.datacl::text, pg_encoding_to_char(d.encoding), \
         shobj_description(d.oid, 'pg_database'), \
         (SELECT string_agg(coalesce(r.rolname, '-') || ':' || array_to_string(s.setconfig, ','), ';' \
          ORDER BY r.rolname NULLS FIRST) \
          FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
          WHERE s.setdatabase = d.oid) \
         FROM pg_database d WHERE d.datname = 'analytics'",
    )
}

/// A v1.0.0 instance whose cluster holds, besides the app's database with
/// a large object, a second database owned by a role with a password, with
/// its own privileges and settings, and a database whose name needs quoting.
fn populate(old: &str) {
    psql_in(
        old,
        PG_DB,
        &format!("CREATE ROLE analyst LOGIN PASSWORD '{ANALYST_PASSWORD}'; CREATE ROLE reader"),
    );
    psql_in(old, PG_DB, "CREATE DATABASE analytics OWNER analyst");
    psql_in(old, PG_DB, "CREATE DATABASE \"Odd name/2\"");
    psql_in(
        old,
        PG_DB,
        "ALTER DATABASE analytics SET work_mem = '8MB'; \
         ALTER ROLE reader IN DATABASE analytics SET search_path = \"my schema\", public; \
         REVOKE ALL ON DATABASE analytics FROM PUBLIC; \
         GRANT CONNECT ON DATABASE analytics TO reader; \
         COMMENT ON DATABASE analytics IS 'the analyst''s reports'",
    );
    psql_in(
        old,
        PG_DB,
        "CREATE TABLE items(id serial primary key, name text); \
         INSERT INTO items(name) SELECT 'item ' || g FROM generate_series(1, 3000) g; \
         SELECT lo_from_bytea(0, convert_to(repeat('large object ', 500), 'UTF8'))",
    );
    psql_in(
        old,
        "analytics",
        "SET ROLE analyst; \
         CREATE TABLE events(id bigint primary key, kind text, at timestamptz); \
         INSERT INTO events SELECT g, 'kind ' || (g % 7), '2026-01-01'::timestamptz + g * interval '1 min' \
         FROM generate_series(1, 5000) g",
    );
    psql_in(
        old,
        "Odd name/2",
        "CREATE TABLE notes(t text); INSERT INTO notes VALUES ('a'), ('b')",
    );
}

/// Everything `populate` made is there, row for row, in `project`.
fn assert_same_cluster(project: &str, data: &[String], properties: &str) {
    assert_same_rows(project, data);
    assert_eq!(analytics_properties(project), properties, "{project}");
    assert!(
        logs_in(project, "analyst", "analytics", ANALYST_PASSWORD),
        "{project}: analyst cannot log in with its password"
    );
    assert!(
        !logs_in(project, "analyst", "analytics", "not-the-password"),
        "{project}: a wrong password is accepted"
    );
}

/// The rows of `project`'s cluster are `data`; if not, a few that differ.
fn assert_same_rows(project: &str, data: &[String]) {
    let got = cluster_data(project);
    if got == data {
        return;
    }
    let missing: Vec<&String> = data.iter().filter(|l| !got.contains(l)).take(5).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !data.contains(l)).take(5).collect();
    panic!(
        "{project}: the cluster's rows differ ({} lines, {} expected); missing: {missing:?}; \
         not expected: {extra:?}",
        got.len(),
        data.len()
    );
}

#[test]
fn every_database_is_upgraded_from_15_to_17_and_restored_from_a_backup() {
    let site = TestSite::new();
    let (old, new, restored) = (unique("dbold"), unique("dbnew"), unique("dbrest"));
    for p in [&old, &new, &restored] {
        site.track(p);
    }
    for v in ["v1.0.0", "v2.0.0"] {
        site.ok(&["install", bundle(v).to_str().unwrap()]);
    }
    site.ok(&["up", "v1.0.0", "--as", &old]);
    populate(&old);
    let data = cluster_data(&old);
    assert!(
        data.iter().any(|l| l.contains("lowrite")),
        "the large object is in the data"
    );
    let properties = analytics_properties(&old);
    assert!(
        properties.contains("work_mem=8MB") && properties.contains("reader=c/"),
        "{properties}"
    );

    // An index on an ICU collation (ICU 72 in the old image, 76 in the
    // new: rebuilt after the start), a setting of ALTER SYSTEM the new
    // server has and one it no longer has (it would refuse to start).
    psql_in(
        &old,
        "analytics",
        "CREATE COLLATION de_icu (provider = icu, locale = 'de'); \
         CREATE TABLE names(n text COLLATE de_icu); CREATE INDEX names_n ON names(n); \
         INSERT INTO names VALUES ('b'), ('ä'), ('a')",
    );
    psql_in(&old, PG_DB, "ALTER SYSTEM SET temp_buffers = '12MB'");
    psql_in(
        &old,
        PG_DB,
        "ALTER SYSTEM SET old_snapshot_threshold = '-1'",
    );
    let data = cluster_data(&old);

    let report = site.json(&["backup", &old]);
    // The old instance keeps serving until the upgrade stops it, and
    // nothing writes to it: its rows are those of the backup. Killed once
    // it stopped the old Postgres, to list the old volume as it was then.
    let upgrade = ["upgrade", &old, "--to", "v2.0.0", "--as", &new, "--yes"];
    let plan = site.ok(&[&upgrade[..], &["--dry-run"]].concat());
    assert!(plan.contains("strategy pg_upgrade"), "{plan}");
    assert!(
        plan.contains("database analytics: 1 index(es) on collation de_icu (ICU 153.")
            && plan.contains("REINDEX CONCURRENTLY"),
        "the plan names the index on the ICU collation: {plan}"
    );
    let mut cmd = site.command(&[&upgrade[..], &["-v"]].concat());
    cmd.env("UPKEEP_CRASH_AFTER", "stop-old");
    let killed = cmd.output().unwrap();
    assert!(!killed.status.success(), "{killed:?}");
    let log = String::from_utf8_lossy(&killed.stderr);
    assert!(
        log.contains("pg_upgrade --check passed on a physical copy"),
        "the check ran before the downtime: {log}"
    );
    assert!(
        log.contains("cluster initialised before the downtime"),
        "initdb ran before the downtime: {log}"
    );
    let old_volume = format!("{old}_postgres_data");
    let before = volume_listing(&old_volume);
    let resumed = site.run(&["upgrade", "--resume", &old, "-v"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(resumed.status.success(), "{out}");
    assert!(
        out.contains("pg_upgrade --link into a new cluster"),
        "{out}"
    );
    assert!(out.contains("analyze-in-stages"), "{out}");
    assert!(out.contains("REINDEX INDEX CONCURRENTLY"), "{out}");
    assert!(
        out.contains("old_snapshot_threshold"),
        "reported as not carried: {out}"
    );
    assert_eq!(
        psql_in(&new, PG_DB, "SHOW server_version_num").get(..2),
        Some("17")
    );
    assert_same_cluster(&new, &data, &properties);
    assert_eq!(psql_in(&new, PG_DB, "SHOW temp_buffers"), "12MB");
    assert_eq!(
        psql_in(&new, "analytics", "SELECT collversion = pg_collation_actual_version(oid) FROM pg_collation WHERE collname = 'de_icu'"),
        "t",
        "the ICU collation's version is refreshed"
    );
    assert_eq!(
        volume_listing(&old_volume),
        before,
        "the old volume is byte for byte as the upgrade found it"
    );
    assert!(
        !volume_exists(&format!("{new}_upkeep-pg-old")),
        "the scratch volume is removed"
    );

    let databases = &report["manifest"]["postgres"]["databases"];
    let listed: Vec<(&str, &str)> = databases
        .as_array()
        .expect("the manifest lists the databases")
        .iter()
        .map(|d| {
            (
                d["properties"]["name"].as_str().unwrap(),
                d["stream"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (PG_DB, "postgres/graphistry.dump"),
            ("Odd name/2", "postgres/Odd%20name%2F2.dump"),
            ("analytics", "postgres/analytics.dump"),
            ("postgres", "postgres/postgres.dump"),
        ],
        "the app's database first, then the others"
    );
    assert_eq!(databases[2]["row_counts"]["public.events"], 5000);
    assert_eq!(databases[0]["row_counts"]["public.items"], 3000);

    let backup = report["snapshot"]["id"].as_str().unwrap();
    let out = site.ok(&["restore", backup, "--into", "v2.0.0", "--as", &restored]);
    assert!(out.contains("row counts of"), "{out}");
    assert_same_cluster(&restored, &data, &properties);
}

/// Rewrites snapshot `id` as the release before this one wrote it: one
/// database (the app's), its dump the only one, and a manifest without the
/// list of databases. Returns the new snapshot's id.
fn as_written_before_every_database(site: &TestSite, id: &str) -> String {
    use upkeep::repo::{RepoLocation, Repository, SnapshotMeta};
    let password = std::fs::read_to_string(site.root.join(".upkeep/repository.password")).unwrap();
    let location = RepoLocation::parse(site.root.join("backups").to_str().unwrap()).unwrap();
    let repo = Repository::open(&location, password.trim()).unwrap();
    let info = repo.snapshot(id).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&repo.manifest(&info.id).unwrap().unwrap()).unwrap();
    let main_dump = format!("postgres/{PG_DB}.dump");
    manifest["postgres"]
        .as_object_mut()
        .unwrap()
        .remove("databases")
        .expect("today's manifest lists the databases");
    manifest["items"]
        .as_array_mut()
        .unwrap()
        .retain(|i| i["kind"] != "postgres_dump" || i["stream"] == main_dump.as_str());
    let writer = repo
        .begin_snapshot(SnapshotMeta {
            tags: info.tags.clone(),
            paths: info.paths.clone(),
            manifest: Some(manifest.to_string()),
            ..Default::default()
        })
        .unwrap();
    for item in manifest["items"].as_array().unwrap() {
        let stream = item["stream"].as_str().unwrap();
        let mut bytes = Vec::new();
        repo.restore_stream(&info.id, stream, &mut bytes).unwrap();
        writer.add_stream(stream, &mut bytes.as_slice()).unwrap();
    }
    writer.commit().unwrap().id
}

#[test]
fn a_snapshot_with_one_database_as_the_previous_release_wrote_it_still_restores() {
    let site = TestSite::new();
    let (old, restored) = (unique("dbone"), unique("dbonerest"));
    for p in [&old, &restored] {
        site.track(p);
    }
    site.ok(&["install", bundle("v1.0.0").to_str().unwrap()]);
    site.ok(&["up", "v1.0.0", "--as", &old]);
    psql(
        &old,
        "CREATE TABLE items(id int primary key, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g; \
         CREATE TABLE audit(at int); INSERT INTO audit SELECT generate_series(1, 70)",
    );
    let items = table_digest(&old, "items");
    let report = site.json(&["backup", &old]);
    let id = as_written_before_every_database(&site, report["snapshot"]["id"].as_str().unwrap());

    let plan = site.ok(&[
        "restore",
        &id,
        "--into",
        "v1.0.0",
        "--as",
        &restored,
        "--dry-run",
    ]);
    assert!(plan.contains(&format!("each database ({PG_DB})")), "{plan}");
    let out = site.ok(&["restore", &id, "--into", "v1.0.0", "--as", &restored]);
    assert!(out.contains("row counts of 2 tables match"), "{out}");
    assert_eq!(table_digest(&restored, "items"), items);
    assert_eq!(psql(&restored, "SELECT count(*) FROM audit"), "70");
}
