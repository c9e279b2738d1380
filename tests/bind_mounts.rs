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

/// Names for an instance, a copy restored from it and its upgrade, unique
/// to the run and removed with the test.
fn old_copy_new(site: &TestSite, prefix: &str) -> (String, String, String) {
    let names = [
        unique(&format!("{prefix}old")),
        unique(&format!("{prefix}copy")),
        unique(&format!("{prefix}new")),
    ];
    for p in &names {
        site.track(p);
    }
    let [old, copy, new] = names;
    (old, copy, new)
}

#[test]
fn postgres_and_uploads_in_bind_mounts_are_backed_up_restored_and_upgraded() {
    let site = TestSite::new();
    let scratch = tempfile::tempdir().unwrap();
    let (old, copy, new) = old_copy_new(&site, "bind");
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

/// The releases `ext-1.0.0` and `ext-1.1.0` of `site`, whose Postgres data
/// is the external volume `volume` (which the vendor's installer creates).
fn install_external(site: &TestSite, scratch: &Path, volume: &str) {
    let external = |t: String| {
        t.replace(
            "  postgres_data: {}\n",
            &format!("  postgres_data:\n    external: true\n    name: {volume}\n"),
        )
    };
    for (from, version) in [("v1.0.0", "ext-1.0.0"), ("v1.1.0", "ext-1.1.0")] {
        install(
            site,
            &edited_bundle(scratch, from, version, external),
            version,
        );
    }
}

fn volumes_of(site: &TestSite, instance: &str) -> Vec<String> {
    site.json(&["status", instance])[0]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn postgres_in_an_external_volume_is_backed_up_restored_as_a_copy_and_upgraded() {
    let site = TestSite::new();
    let scratch = tempfile::tempdir().unwrap();
    let (old, copy, new) = old_copy_new(&site, "ext");
    let volume = OwnVolume(unique("extpgdata"));
    install_external(&site, scratch.path(), &volume.0);
    assert!(Command::new("docker")
        .args(["volume", "create", &volume.0])
        .output()
        .unwrap()
        .status
        .success());
    // The first instance that uses it gets the vendor's volume, as plain
    // compose would.
    site.ok(&["up", "ext-1.0.0", "--as", &old]);
    assert!(volumes_of(&site, &old).contains(&volume.0));
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

    // A second copy would share the vendor's volume: refused, and told how
    // to give it one of its own.
    let own = format!("postgres_data={copy}_pgdata");
    let err = site.fails(&["restore", &snapshot, "--into", "ext-1.0.0", "--as", &copy]);
    assert!(
        err.contains("external volume")
            && err.contains(&format!(
                "--external-volume postgres_data={copy}_postgres_data"
            )),
        "{err}"
    );
    let err = site.fails(&["up", "ext-1.0.0", "--as", &copy]);
    assert!(err.contains("--external-volume"), "{err}");
    site.ok(&[
        "restore",
        &snapshot,
        "--into",
        "ext-1.0.0",
        "--as",
        &copy,
        "--external-volume",
        &own,
    ]);
    assert_eq!(table_digest(&copy, "items"), items);
    let copy_volumes = volumes_of(&site, &copy);
    assert!(
        copy_volumes.contains(&format!("{copy}_pgdata")),
        "{copy_volumes:?}"
    );
    assert!(!copy_volumes.contains(&volume.0), "{copy_volumes:?}");
    psql(&copy, "INSERT INTO items VALUES (901)");
    assert_eq!(
        table_digest(&old, "items"),
        items,
        "the original is untouched"
    );

    let upgrade = ["upgrade", &old, "--to", "ext-1.1.0", "--as", &new];
    let err = site.fails(&[&upgrade[..], &["--dry-run"]].concat());
    assert!(
        err.contains(&format!(
            "--external-volume postgres_data={new}_postgres_data"
        )),
        "{err}"
    );
    let new_volume = format!("{new}_pgdata");
    let own = format!("postgres_data={new_volume}");
    site.ok(&[&upgrade[..], &["--external-volume", &own, "--yes"]].concat());
    assert_eq!(table_digest(&new, "items"), items);
    assert!(volumes_of(&site, &new).contains(&new_volume));
    assert!(
        volume_exists(&volume.0),
        "the old instance's volume is kept"
    );

    // A disaster takes the host's instances and the vendor's volume; a new
    // site restores from the repository and the volume is made again.
    for p in [&old, &new] {
        destroy(p);
    }
    let backups = site.root.join("backups");
    let password = site.root.join(".upkeep/repository.password");
    let host2 = TestSite::new();
    let restored = unique("extdr");
    host2.track(&restored);
    let scratch2 = tempfile::tempdir().unwrap();
    install_external(&host2, scratch2.path(), &volume.0);
    let from_repo = [
        "--repo",
        backups.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
    ];
    let restore: Vec<&str> = [
        "restore",
        &snapshot,
        "--into",
        "ext-1.0.0",
        "--as",
        &restored,
    ]
    .into_iter()
    .chain(from_repo)
    .collect();
    let err = host2.fails(&restore);
    assert!(
        err.contains(&format!("external volume {}", volume.0)) && err.contains("exists"),
        "the vendor's volume still exists and is not overwritten: {err}"
    );
    assert!(Command::new("docker")
        .args(["volume", "rm", &volume.0])
        .output()
        .unwrap()
        .status
        .success());
    host2.ok(&restore);
    assert_eq!(table_digest(&restored, "items"), items);
    assert!(volume_exists(&volume.0));
}
