//! Issue 2: releases side by side and concurrent copies of one release, on
//! the real Docker Engine with real compose and real Postgres.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn host_port(site: &TestSite, instance: &str) -> u16 {
    let st = site.json(&["status", instance]);
    st[0]["ports"][0]["host_port"]
        .as_u64()
        .expect("a published port") as u16
}

#[test]
fn two_copies_of_a_release_run_side_by_side() {
    let site = TestSite::new();
    let copy = unique("copy");
    // A version unique to the run: its default instance is no real `v100`.
    let version = unique_version("v1.0.0");
    let v100 = default_project(&version);
    let v100 = v100.as_str();
    site.track(v100);
    site.track(&copy);
    let (_keep, bundle) = bundle_as("v1.0.0", &version, |t| t);
    let vendor_digest = sha256(&bundle.join("docker-compose.yml"));

    let out = site.ok(&["install", bundle.to_str().unwrap()]);
    assert!(
        out.contains(&format!("installed release {version}")),
        "{out}"
    );
    let releases = site.json(&["releases"]);
    assert_eq!(releases[0]["version"], version.as_str());
    assert_eq!(
        releases[0]["missing_images"].as_array().unwrap().len(),
        0,
        "{releases}"
    );

    site.ok(&["up", &version]);
    site.ok(&["up", &version, "--as", &copy]);

    // Each copy has its own volumes, created with compose's labels.
    for project in [v100, copy.as_str()] {
        for key in ["postgres_data", "postgres_backups"] {
            let name = format!("{project}_{key}");
            assert!(volume_exists(&name), "volume {name} missing");
            assert_eq!(volume_label(&name, "com.docker.compose.project"), project);
            assert_eq!(volume_label(&name, "com.docker.compose.volume"), key);
        }
    }
    // Own host ports: each copy takes the vendor's where it is free, else
    // the next free one. Other tests or programs may hold 18080 while one
    // copy starts and not while the other does, so which one has it is not
    // fixed; that they differ is.
    let (p1, p2) = (host_port(&site, v100), host_port(&site, &copy));
    let vendor = site.json(&["status", v100])[0]["ports"][0]["vendor_port"]
        .as_u64()
        .unwrap();
    assert_eq!(vendor, 18080);
    assert_ne!(p1, p2, "two copies share a host port");
    assert!(http_get(p1).contains("Hello from"), "app of v100 answers");
    assert!(http_get(p2).contains("Hello from"), "app of {copy} answers");

    // Rows written to one copy's Postgres are absent from the other's.
    psql(v100, "CREATE TABLE notes(id int primary key, body text); INSERT INTO notes VALUES (1,'only in v100')");
    assert_eq!(psql(v100, "SELECT body FROM notes"), "only in v100");
    assert_eq!(
        psql(
            &copy,
            "SELECT count(*) FROM pg_tables WHERE tablename='notes'"
        ),
        "0"
    );

    // Sizes of the instance's own volumes, only when asked for: a Postgres
    // cluster is tens of MiB, its empty backups volume a few KiB.
    let sizes = |st: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let vols = st[0]["volumes"].as_array().unwrap().iter();
        vols.map(|v| (v["key"].as_str().unwrap().to_string(), v["size"].clone()))
            .collect()
    };
    let plain = sizes(&site.json(&["status", v100]));
    assert!(plain.iter().all(|(_, s)| s.is_null()), "{plain:?}");
    let measured = sizes(&site.json(&["status", v100, "--sizes"]));
    let size_of = |key: &str| measured.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert!(
        size_of("postgres_data").as_str().unwrap().ends_with("MiB"),
        "{measured:?}"
    );
    assert!(
        size_of("postgres_backups")
            .as_str()
            .unwrap()
            .ends_with("KiB"),
        "{measured:?}"
    );

    // stop and down keep the volumes and their data.
    site.ok(&["stop", v100]);
    let st = site.json(&["status", v100]);
    assert_eq!(st[0]["state"], "stopped", "{st}");
    site.ok(&["down", v100]);
    assert_eq!(site.json(&["status", v100])[0]["state"], "down");
    assert!(volume_exists(&format!("{v100}_postgres_data")));
    site.ok(&["up", &version]);
    assert_eq!(psql(v100, "SELECT body FROM notes"), "only in v100");
    let status = site.ok(&["status"]);
    assert!(
        status.contains(&copy) && status.contains(&format!("{v100}_postgres_data")),
        "{status}"
    );

    // The vendor compose file is byte-identical, and the release reports no hand edit.
    let installed = site
        .root
        .join("releases")
        .join(&version)
        .join("docker-compose.yml");
    assert_eq!(sha256(&installed), vendor_digest);
    assert_eq!(site.json(&["releases"])[0]["compose_edited"], false);
    fs::write(
        &installed,
        fs::read_to_string(&installed).unwrap() + "\n# local tweak\n",
    )
    .unwrap();
    assert_eq!(site.json(&["releases"])[0]["compose_edited"], true);

    site.ok(&["down", &copy]);
    site.ok(&["down", v100]);
}

/// Writes a tiny bundle (no images) as a tar file with the given extra entries.
fn small_bundle(
    dir: &Path,
    name: &str,
    version: &str,
    extra: &[(&str, &str)],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |p: &str, data: &[u8], kind: tar::EntryType, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let raw = h.as_old_mut().name.as_mut();
        raw[..p.len()].copy_from_slice(p.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let compose = "services:\n  web:\n    image: upkeep-none/web:1\n";
    add(
        "rel/docker-compose.yml",
        compose.as_bytes(),
        tar::EntryType::Regular,
        None,
    );
    add(
        "rel/VERSION",
        format!("{version}\n").as_bytes(),
        tar::EntryType::Regular,
        None,
    );
    for (p, what) in extra {
        if let Some(target) = what.strip_prefix("->") {
            add(p, b"", tar::EntryType::Symlink, Some(target));
        } else {
            add(p, what.as_bytes(), tar::EntryType::Regular, None);
        }
    }
    b.finish().unwrap();
    path
}

#[test]
fn unsafe_or_damaged_bundles_are_refused_and_leave_the_site_unchanged() {
    let site = TestSite::new();
    let work = tempfile::tempdir().unwrap();
    let good = small_bundle(
        work.path(),
        "good.tar",
        "v0.1.0",
        &[("rel/etc/a.conf", "x=1\n")],
    );
    site.ok(&["install", good.to_str().unwrap(), "--skip-load"]);
    let before = tree_listing(&site.root);

    let sha_of_x = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"; // "x"
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "parent path",
            small_bundle(work.path(), "p.tar", "v0.2.0", &[("rel/../../evil", "x")]),
            "climbs out",
        ),
        (
            "absolute path",
            small_bundle(work.path(), "a.tar", "v0.2.1", &[("/tmp/upkeep-evil", "x")]),
            "absolute",
        ),
        (
            "escaping link",
            small_bundle(
                work.path(),
                "l.tar",
                "v0.2.2",
                &[("rel/etc/ssl", "->../../../etc")],
            ),
            "points outside",
        ),
        (
            "absolute link",
            small_bundle(
                work.path(),
                "k.tar",
                "v0.2.3",
                &[("rel/pw", "->/etc/passwd")],
            ),
            "points outside",
        ),
        (
            "wrong checksum",
            small_bundle(
                work.path(),
                "c.tar",
                "v0.2.4",
                &[
                    ("rel/f", "y"),
                    ("rel/SHA256SUMS", &format!("{sha_of_x}  f\n")),
                ],
            ),
            "checksum mismatch for `f`",
        ),
        (
            "already installed",
            small_bundle(work.path(), "d.tar", "v0.1.0", &[]),
            "already installed",
        ),
        (
            "missing file",
            work.path().join("nope.tar.gz"),
            "does not exist",
        ),
    ];
    for (what, path, expect) in cases {
        let err = site.fails(&["install", path.to_str().unwrap(), "--skip-load"]);
        assert!(
            err.contains(expect),
            "{what}: expected `{expect}` in: {err}"
        );
        assert_eq!(tree_listing(&site.root), before, "{what}: the site changed");
    }
    assert!(!Path::new("/tmp/upkeep-evil").exists());
    // A corrupt archive (truncated gzip) is refused too.
    let bytes = fs::read(&good).unwrap();
    let gz = work.path().join("t.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &bytes).unwrap();
    let enc = enc.finish().unwrap();
    fs::write(&gz, &enc[..enc.len() / 2]).unwrap();
    let err = site.fails(&["install", gz.to_str().unwrap(), "--skip-load"]);
    assert!(
        err.contains("damaged") || err.contains("unpacking"),
        "{err}"
    );
    assert_eq!(
        tree_listing(&site.root),
        before,
        "truncated archive: the site changed"
    );
}

#[test]
fn compressed_bundles_install_and_load_their_images() {
    let site = TestSite::new();
    let gz = bundles().join("upkeep-sample-v1.1.0.tar.gz");
    let zst = bundles().join("upkeep-sample-v2.0.0.tar.zst");
    site.ok(&["install", gz.to_str().unwrap()]);
    site.ok(&["install", zst.to_str().unwrap()]);
    let releases = site.json(&["releases"]);
    let versions: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1.1.0", "v2.0.0"]);
    for r in releases.as_array().unwrap() {
        assert!(r["missing_images"].as_array().unwrap().is_empty(), "{r}");
    }
    // The secret key keeps its mode through tar unpacking.
    use std::os::unix::fs::PermissionsExt;
    let key = site.root.join("releases/v2.0.0/etc/ssl/server.key");
    assert_eq!(
        fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_second_mutating_command_is_told_the_site_is_busy() {
    let site = TestSite::new();
    let copy = unique("busy");
    site.track(&copy);
    // A big, slow install holds the lock while a second command tries.
    let mut first = site
        .command(&[
            "install",
            bundles()
                .join("upkeep-sample-v1.0.0.tar.gz")
                .to_str()
                .unwrap(),
        ])
        .spawn()
        .unwrap();
    site.wait_for_holder("install");
    let second = site.run(&["up", "v1.0.0", "--as", &copy]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{err}");
    assert!(err.contains("busy") && err.contains("install"), "{err}");
    assert!(
        first.wait().unwrap().success(),
        "the first command completes"
    );
    // Nothing corrupt: the release is complete and usable.
    let r = site.json(&["releases"]);
    assert!(r[0]["missing_images"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(
        sha256(&site.root.join("releases/v1.0.0/containers.tar")),
        sha256(&bundle("v1.0.0").join("containers.tar"))
    );
}

#[test]
fn a_lock_left_by_a_killed_run_is_recovered() {
    let site = TestSite::new();
    let mut first = site
        .command(&[
            "install",
            bundles()
                .join("upkeep-sample-v1.0.0.tar.zst")
                .to_str()
                .unwrap(),
        ])
        .spawn()
        .unwrap();
    site.wait_for_holder("install");
    first.kill().unwrap(); // SIGKILL: no cleanup runs
    first.wait().unwrap();
    let out = site.run(&[
        "install",
        bundles()
            .join("upkeep-sample-v1.0.0.tar.zst")
            .to_str()
            .unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("recovered the site lock"),
        "the dead holder is reported: {err}"
    );
    let staging: Vec<_> = fs::read_dir(site.root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        staging,
        ["v1.0.0"],
        "the killed install's staging folder is gone"
    );
}
