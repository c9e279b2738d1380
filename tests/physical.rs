//! Issue 13, item 2: `backup --physical` streams `pg_basebackup` of the
//! running server into the snapshot beside the dumps, and a restore into
//! the same Postgres major writes that copy instead of loading the dumps.
//! Real engine, real compose, real Postgres.

mod common;

use common::*;

/// What `populate` made, as digests: the app's table, the second
/// database's table and the large object's bytes.
fn cluster_state(project: &str) -> Vec<String> {
    vec![
        table_digest(project, "items"),
        psql_in(
            project,
            "analytics",
            "SELECT count(*) || ':' || md5(string_agg(e::text, '|' ORDER BY e.id)) FROM events e",
        ),
        psql(
            project,
            "SELECT count(*) || ':' || md5(string_agg(md5(lo_get(oid)), '|' ORDER BY oid)) \
             FROM pg_largeobject_metadata",
        ),
    ]
}

fn populate(project: &str) {
    psql(
        project,
        "CREATE TABLE items(id serial primary key, name text); \
         INSERT INTO items(name) SELECT 'item ' || g FROM generate_series(1, 4000) g; \
         SELECT lo_from_bytea(0, convert_to(repeat('large object ', 700), 'UTF8'))",
    );
    psql(project, "CREATE DATABASE analytics");
    psql_in(
        project,
        "analytics",
        "CREATE TABLE events(id bigint primary key, kind text); \
         INSERT INTO events SELECT g, 'kind ' || (g % 7) FROM generate_series(1, 6000) g",
    );
    // Analysed now, so that autovacuum's ANALYZE (a transaction that takes
    // an xid) does not run during the backup and make its counts unexact.
    psql(project, "ANALYZE");
    psql_in(project, "analytics", "ANALYZE");
}

/// A site with v1.0.0 and v2.0.0 installed, every project of `names`
/// tracked, and the first up (v1.0.0) and populated.
fn populated_site(names: &[&String]) -> TestSite {
    let site = TestSite::new();
    for p in names {
        site.track(p);
    }
    site.install(&["v1.0.0", "v2.0.0"]);
    site.ok(&["up", "v1.0.0", "--as", names[0]]);
    populate(names[0]);
    site
}

/// Restores `snapshot` into v1.0.0 as `copy` and checks it came from the
/// physical copy, verified, with the cluster as it was (`state`).
fn restores_physically(site: &TestSite, snapshot: &str, copy: &str, state: &[String]) {
    let restored = site.json(&["restore", snapshot, "--into", "v1.0.0", "--as", copy]);
    assert_eq!(restored["postgres_from"], "physical", "{restored}");
    assert!(
        restored["tables_verified"].as_u64().unwrap() >= 2,
        "{restored}"
    );
    assert_eq!(cluster_state(copy), state);
}

#[test]
fn a_running_server_is_backed_up_physically_and_restored_from_that_copy() {
    let (src, copy, cross) = (unique("pbsrc"), unique("pbcopy"), unique("pbx"));
    let site = populated_site(&[&src, &copy, &cross]);
    let state = cluster_state(&src);
    let postgres = container(&src, "postgres");

    let plan = site.ok(&["backup", &src, "--physical", "--dry-run"]);
    assert!(
        plan.contains("pg_basebackup") && plan.contains("online"),
        "{plan}"
    );
    assert!(
        !plan.contains(&format!("copy volume {src}_postgres_data")),
        "the data volume is not copied as files while Postgres runs: {plan}"
    );
    let report = site.json(&["backup", &src, "--physical"]);
    assert_eq!(
        container(&src, "postgres"),
        postgres,
        "Postgres kept running (same container)"
    );
    assert_eq!(
        psql(
            &src,
            "SELECT now() - pg_postmaster_start_time() > interval '0'"
        ),
        "t"
    );
    let m = &report["manifest"];
    let kinds: Vec<&str> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"postgres_base"), "{kinds:?}");
    assert!(
        kinds.contains(&"postgres_dump"),
        "the dumps stay: {kinds:?}"
    );
    assert_eq!(m["postgres"]["mode"], "logical+physical");
    assert_eq!(
        m["postgres"]["base_row_counts"]["analytics/public.events"], 6000,
        "nothing wrote during the backup: the counts hold for the physical copy"
    );
    let snapshot = report["snapshot"]["id"].as_str().unwrap().to_string();

    let plan = site.ok(&[
        "restore",
        &snapshot,
        "--into",
        "v1.0.0",
        "--as",
        &copy,
        "--dry-run",
    ]);
    assert!(plan.contains("physical copy"), "{plan}");
    assert!(!plan.contains("pg_restore"), "no dump is loaded: {plan}");
    restores_physically(&site, &snapshot, &copy, &state);

    let plan = site.ok(&[
        "restore",
        &snapshot,
        "--into",
        "v2.0.0",
        "--as",
        &cross,
        "--dry-run",
    ]);
    assert!(
        plan.contains("across majors the logical dump is restored") && plan.contains("pg_restore"),
        "{plan}"
    );
}

#[test]
fn refused_replication_and_extra_tablespaces_are_explained() {
    let site = TestSite::new();
    let src = unique("pbts");
    site.track(&src);
    site.install(&["v1.0.0"]);
    site.ok(&["up", "v1.0.0", "--as", &src]);
    let hba = sh_in(
        &src,
        "cp \"$PGDATA/pg_hba.conf\" /tmp/hba && sed -i '/replication/d' \"$PGDATA/pg_hba.conf\"",
    )
    .status()
    .unwrap();
    assert!(hba.success());
    psql(&src, "SELECT pg_reload_conf()");
    let err = site.fails(&["backup", &src, "--physical"]);
    assert!(
        err.contains(&format!("add the line `local replication {PG_USER} trust`")),
        "{err}"
    );
    let back = sh_in(&src, "cp /tmp/hba \"$PGDATA/pg_hba.conf\"")
        .status()
        .unwrap();
    assert!(back.success());
    psql(&src, "SELECT pg_reload_conf()");
    let made = sh_in(&src, "mkdir -p /var/lib/postgresql/extra")
        .status()
        .unwrap();
    assert!(made.success());
    psql(
        &src,
        "CREATE TABLESPACE extra LOCATION '/var/lib/postgresql/extra'",
    );
    let err = site.fails(&["backup", &src, "--physical"]);
    assert!(
        err.contains("tablespaces outside its data folder (extra)")
            && err.contains("without --physical"),
        "{err}"
    );
    site.ok(&["backup", &src]);
    assert_eq!(
        site.json(&["snapshots"]).as_array().map(Vec::len),
        Some(1),
        "the refused backup committed no snapshot"
    );
}

/// Runs `script` in the Postgres container of `project` as the postgres user.
fn sh_in(project: &str, script: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["exec", "-u", "postgres", &container(project, "postgres")])
        .args(["sh", "-c", script]);
    cmd
}

#[test]
fn writes_during_a_physical_backup_leave_its_counts_unverified_not_wrong() {
    let site = TestSite::new();
    let (src, copy) = (unique("pbw"), unique("pbwcopy"));
    for p in [&src, &copy] {
        site.track(p);
    }
    site.install(&["v1.0.0"]);
    site.ok(&["up", "v1.0.0", "--as", &src]);
    psql(&src, "CREATE TABLE ticks(id serial primary key)");
    // One committed row every 20 ms until told to stop: the dumps and the
    // base backup see different rows.
    let mut writer = sh_in(
        &src,
        &format!(
            "rm -f /tmp/stop; while [ ! -e /tmp/stop ]; do \
             psql -X -q -U {PG_USER} -d {PG_DB} -c 'INSERT INTO ticks DEFAULT VALUES'; sleep 0.02; done"
        ),
    )
    .spawn()
    .unwrap();
    let report = site.json(&["backup", &src, "--physical"]);
    assert!(sh_in(&src, "touch /tmp/stop").status().unwrap().success());
    assert!(writer.wait().unwrap().success());
    let pg = &report["manifest"]["postgres"];
    assert!(
        pg["base_row_counts"].is_null(),
        "the cluster changed during the backup, so the dumps' counts do not hold for the copy: {pg}"
    );
    let dumped = pg["databases"][0]["row_counts"]["public.ticks"]
        .as_i64()
        .unwrap();

    let restored = site.json(&["restore", "latest", "--into", "v1.0.0", "--as", &copy]);
    assert_eq!(restored["postgres_from"], "physical", "{restored}");
    let unverified = restored["tables_unverified"].as_array().unwrap();
    assert!(
        unverified
            .iter()
            .any(|t| t == &format!("{PG_DB}/public.ticks")),
        "{restored}"
    );
    let got: i64 = psql(&copy, "SELECT count(*) FROM ticks").parse().unwrap();
    assert!(
        got >= dumped,
        "the physical copy ends after the dumps: {got} rows, the dump had {dumped}"
    );
    assert_eq!(
        psql(&copy, "SELECT count(*) = max(id) - min(id) + 1 FROM ticks"),
        "t",
        "the copy is consistent: no gap in the committed ids"
    );
}

/// The kinds of the items of a backup report's manifest.
fn item_kinds(report: &serde_json::Value) -> Vec<String> {
    report["manifest"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_physical_only_snapshot_restores_into_its_major_and_is_refused_across() {
    let (src, copy, cross) = (unique("posrc"), unique("pocopy"), unique("pox"));
    let site = populated_site(&[&src, &copy, &cross]);
    let state = cluster_state(&src);

    // The administrator's upkeep.toml makes physical-only the release's default.
    write_profile(&site, "v1.0.0", "physical");
    let profile = site.ok(&["profile", &src]);
    assert!(
        profile.contains("Postgres data: pg_basebackup while running"),
        "{profile}"
    );
    let plan = site.ok(&["backup", &src, "--dry-run"]);
    assert!(plan.contains("pg_basebackup"), "{plan}");
    assert!(
        !plan.contains("pg_dump"),
        "no dump by the profile's default: {plan}"
    );
    let plan = site.ok(&["backup", &src, "--postgres", "logical", "--dry-run"]);
    assert!(
        plan.contains("pg_dump") && !plan.contains("pg_basebackup"),
        "the command line overrides the profile: {plan}"
    );

    let report = site.json(&["backup", &src]);
    let kinds = item_kinds(&report);
    assert!(kinds.contains(&"postgres_base".to_string()), "{kinds:?}");
    assert!(
        !kinds
            .iter()
            .any(|k| k == "postgres_dump" || k == "postgres_globals"),
        "physical-only: no dump, no roles dump: {kinds:?}"
    );
    let pg = &report["manifest"]["postgres"];
    assert_eq!(pg["mode"], "physical");
    assert_eq!(
        pg["base_row_counts"]["analytics/public.events"], 6000,
        "counted on the running server, exact as nothing wrote: {pg}"
    );
    let snapshot = report["snapshot"]["id"].as_str().unwrap().to_string();

    let err = site.fails(&["restore", &snapshot, "--into", "v2.0.0", "--as", &cross]);
    assert!(
        err.contains("only a physical copy of Postgres 15")
            && err.contains("backup --postgres physical")
            && err.contains("upkeep upgrade"),
        "{err}"
    );
    assert!(
        site.json(&["status"])
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"] != cross.as_str()),
        "a refused restore creates nothing"
    );
    assert!(
        !volume_exists(&format!("{cross}_postgres_data")),
        "a refused restore creates no volume"
    );

    restores_physically(&site, &snapshot, &copy, &state);
    // the roles came with the data folder
    assert_eq!(
        psql(
            &copy,
            "SELECT count(*) FROM pg_roles WHERE rolname = current_user"
        ),
        "1"
    );
}

/// Writes `releases/VERSION/upkeep.toml`: the sample's built-in profile,
/// with `[postgres] backup = COPIES`.
fn write_profile(site: &TestSite, version: &str, copies: &str) {
    std::fs::write(
        site.root.join(format!("releases/{version}/upkeep.toml")),
        format!(
            "name = \"physical-default\"\nconfig = [\".env\", \"Caddyfile\", \"etc/ssl\", \".pivot-db\"]\n\
             passive_volumes = [\"postgres_backups\"]\n\
             [postgres]\nservice = \"postgres\"\ndata_volume = \"postgres_data\"\nbackup = \"{copies}\"\n"
        ),
    )
    .unwrap();
}
