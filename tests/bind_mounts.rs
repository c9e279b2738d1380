//! Issue 11, item 4: the data is found wherever the vendor put it. Releases
//! are built here from the sample bundles with their compose file edited:
//! Postgres's data folder and the app's uploads in bind mounts under the
//! instance's folder, a host file mounted from outside it, Postgres in an
//! external volume, Postgres with no data folder at all. Real engine, real
//! compose, real Postgres.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A copy of sample bundle `from` as release `version`, its compose file
/// changed by `edit` (its VERSION and checksum list updated to match).
fn edited_bundle(
    dir: &Path,
    from: &str,
    version: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let out = dir.join(format!("bundle-{version}"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(bundle(from))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let compose = out.join("docker-compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    let listed = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert!(
        listed.contains(&format!("{}  docker-compose.yml", sha256(&compose))),
        "the shared sample bundle {from} was altered (its docker-compose.yml no longer matches \
         its SHA256SUMS): another test edited it in place"
    );
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&compose, edited).unwrap();
    std::fs::write(out.join("VERSION"), format!("{version}\n")).unwrap();
    let sums = out.join("SHA256SUMS");
    let rewritten: String = std::fs::read_to_string(&sums)
        .unwrap()
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, file)) if file == "docker-compose.yml" || file == "VERSION" => {
                format!("{}  {file}\n", sha256(&out.join(file)))
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&sums, rewritten).unwrap();
    out
}

/// Postgres's data in `./pgdata`, the app's uploads in `./uploads`, and the
/// host's clock file mounted read-only.
fn in_bind_mounts(text: String) -> String {
    text.replace(
        "      - postgres_data:/var/lib/postgresql/data\n",
        "      - ./pgdata:/var/lib/postgresql/data\n",
    )
    .replace("  postgres_data: {}\n", "")
    .replace(
        "      - ./.pivot-db:/srv/pivot-db\n",
        "      - ./.pivot-db:/srv/pivot-db\n      - ./uploads:/srv/uploads\n      - /etc/localtime:/etc/localtime:ro\n",
    )
}

fn install(site: &TestSite, bundle: &Path, version: &str) {
    site.ok(&["install", bundle.to_str().unwrap(), "--version", version]);
}

fn home(site: &TestSite, instance: &str) -> PathBuf {
    PathBuf::from(
        site.json(&["status", instance])[0]["home"]
            .as_str()
            .unwrap(),
    )
}

/// Uploads as an app leaves them: nested folders, private modes, a file
/// owned by the app's user rather than the administrator.
fn write_uploads(dir: &Path) {
    std::fs::create_dir_all(dir.join("2026/01")).unwrap();
    std::fs::write(dir.join("2026/01/report.pdf"), vec![7u8; 300_000]).unwrap();
    std::fs::write(dir.join("avatar.png"), b"png bytes").unwrap();
    std::fs::set_permissions(
        dir.join("avatar.png"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("2026"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(dir.join("2026/01/report.pdf"), Some(1234), Some(2345)).unwrap();
}

/// `tree_listing` plus each path's owner.
fn listing_with_owners(dir: &Path) -> Vec<String> {
    tree_listing(dir)
        .into_iter()
        .map(|line| {
            let rel = line.split(' ').nth(1).unwrap().to_string();
            let meta = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
            format!("{line} {}:{}", meta.uid(), meta.gid())
        })
        .collect()
}

/// The test's data in Postgres and in the uploads folder, as digests.
fn populate(site: &TestSite, instance: &str) -> (String, Vec<String>) {
    psql(
        instance,
        "CREATE TABLE items(id int primary key, name text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 4000) g",
    );
    let uploads = home(site, instance).join("uploads");
    write_uploads(&uploads);
    (
        table_digest(instance, "items"),
        listing_with_owners(&uploads),
    )
}

#[test]
fn postgres_and_uploads_in_bind_mounts_are_backed_up_restored_and_upgraded() {
    let site = TestSite::new();
    let scratch = tempfile::tempdir().unwrap();
    let (old, copy, new) = (unique("bindold"), unique("bindcopy"), unique("bindnew"));
    for p in [&old, &copy, &new] {
        site.track(p);
    }
    let v1 = edited_bundle(scratch.path(), "v1.0.0", "bind-1.0.0", in_bind_mounts);
    let v2 = edited_bundle(scratch.path(), "v2.0.0", "bind-2.0.0", in_bind_mounts);
    install(&site, &v1, "bind-1.0.0");
    install(&site, &v2, "bind-2.0.0");
    site.ok(&["up", "bind-1.0.0", "--as", &old]);
    let profile = site.json(&["profile", &old]);
    assert_eq!(profile["postgres"]["data_bind"], "./pgdata", "{profile}");
    let (items, uploads) = populate(&site, &old);

    let plan = site.ok(&["backup", &old, "--dry-run"]);
    assert!(plan.contains("dump every database"), "{plan}");
    assert!(
        plan.contains("not backed up: /etc/localtime (mounted by app at /etc/localtime)"),
        "{plan}"
    );
    assert!(plan.contains("/uploads (mounted by app)"), "{plan}");
    assert!(
        !plan.contains("pgdata"),
        "a running Postgres is dumped, not copied: {plan}"
    );

    let report = site.json(&["backup", &old]);
    let streams: Vec<&str> = report["manifest"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["stream"].as_str().unwrap())
        .collect();
    assert!(streams.contains(&"binds/uploads.tar"), "{streams:?}");
    assert!(streams.contains(&"postgres/graphistry.dump"), "{streams:?}");
    let snapshot = report["snapshot"]["id"].as_str().unwrap().to_string();

    site.ok(&["restore", &snapshot, "--into", "bind-1.0.0", "--as", &copy]);
    assert_eq!(table_digest(&copy, "items"), items);
    assert_eq!(
        listing_with_owners(&home(&site, &copy).join("uploads")),
        uploads
    );

    site.ok(&["upgrade", &old, "--to", "bind-2.0.0", "--as", &new, "--yes"]);
    assert_eq!(psql(&new, "SHOW server_version_num").get(..2), Some("17"));
    assert_eq!(table_digest(&new, "items"), items);
    assert_eq!(
        listing_with_owners(&home(&site, &new).join("uploads")),
        uploads
    );
}

#[test]
fn a_backup_that_would_hold_no_postgres_data_fails_loudly() {
    let site = TestSite::new();
    let scratch = tempfile::tempdir().unwrap();
    let old = unique("bindnone");
    site.track(&old);
    // Postgres keeps its data in the container (or an anonymous volume).
    let v1 = edited_bundle(scratch.path(), "v1.0.0", "nodata-1.0.0", |t| {
        t.replace("      - postgres_data:/var/lib/postgresql/data\n", "")
            .replace("  postgres_data: {}\n", "")
    });
    install(&site, &v1, "nodata-1.0.0");
    site.ok(&["up", "nodata-1.0.0", "--as", &old]);
    let err = site.fails(&["backup", &old]);
    assert!(
        err.contains("service postgres runs Postgres") && err.contains("found no data folder"),
        "{err}"
    );
}

/// Removes a volume this test created outside any compose project.
struct OwnVolume(String);

impl Drop for OwnVolume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn postgres_in_an_external_volume_is_dumped_and_never_shared_by_a_second_copy() {
    let site = TestSite::new();
    let scratch = tempfile::tempdir().unwrap();
    let (old, copy) = (unique("extold"), unique("extcopy"));
    for p in [&old, &copy] {
        site.track(p);
    }
    let volume = OwnVolume(unique("extpgdata"));
    let name = volume.0.clone();
    let external = |t: String| {
        t.replace(
            "  postgres_data: {}\n",
            &format!("  postgres_data:\n    external: true\n    name: {name}\n"),
        )
    };
    for (from, version) in [("v1.0.0", "ext-1.0.0"), ("v1.1.0", "ext-1.1.0")] {
        install(
            &site,
            &edited_bundle(scratch.path(), from, version, external),
            version,
        );
    }
    // The vendor's installer creates the volume.
    assert!(Command::new("docker")
        .args(["volume", "create", &volume.0])
        .output()
        .unwrap()
        .status
        .success());
    site.ok(&["up", "ext-1.0.0", "--as", &old]);
    psql(
        &old,
        "CREATE TABLE items(id int primary key); INSERT INTO items SELECT generate_series(1, 900)",
    );
    let items = table_digest(&old, "items");
    let profile = site.json(&["profile", &old]);
    assert_eq!(
        profile["postgres"]["data_volume"], "postgres_data",
        "{profile}"
    );
    let report = site.json(&["backup", &old]);
    let snapshot = report["snapshot"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        report["manifest"]["postgres"]["databases"][0]["row_counts"]["public.items"],
        900
    );

    let err = site.fails(&["restore", &snapshot, "--into", "ext-1.0.0", "--as", &copy]);
    assert!(
        err.contains(&format!("external volume {}", volume.0)) && err.contains("exists"),
        "{err}"
    );
    let err = site.fails(&[
        "upgrade",
        &old,
        "--to",
        "ext-1.1.0",
        "--as",
        &copy,
        "--dry-run",
    ]);
    assert!(err.contains("external volumes"), "{err}");

    // A disaster takes the instance and its volume: the restore makes the
    // volume again and fills it from the dump.
    destroy(&old);
    assert!(Command::new("docker")
        .args(["volume", "rm", &volume.0])
        .output()
        .unwrap()
        .status
        .success());
    site.ok(&["restore", &snapshot, "--into", "ext-1.0.0", "--as", &copy]);
    assert_eq!(table_digest(&copy, "items"), items);
    assert!(volume_exists(&volume.0));
}
