//! The `pg_upgrade` strategy: across majors, the old cluster is copied as
//! files into a staging folder on the new data volume (before the downtime,
//! then what changed in it), and `pg_upgrade --link` makes the new cluster
//! from it: hard links within the new volume, so the time depends on the
//! number of relations, not on the bytes, and the old volume is only ever
//! mounted read-only (a rollback starts it as it was).
//!
//! `preflight` decides whether it can run here (else the plan uses `dump`
//! and says why); `run` does the downtime's part; `after_start` the work
//! that can wait until the new instance serves.

mod binaries;
mod check;
mod run;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::docker::Engine;
use crate::ops::Target;
use crate::postgres::{conf, Server};

pub use binaries::volume_name;
pub(super) use check::check_before_downtime;
pub(super) use run::{after_start, empty_new_volume, init_new_cluster, migrate};

/// Staging folder of the old cluster, and of the new one, on the new volume.
pub const STAGING: &str = ".upkeep-pg_upgrade/old";

/// What `pg_upgrade` needs to know of the old cluster and the new image,
/// read by the plan while the old server runs; kept in the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OldCluster {
    pub old_major: u32,
    pub new_major: u32,
    /// The bootstrap superuser (`pg_authid` oid 10): the new cluster's
    /// must have the same name.
    pub install_user: String,
    /// template0's encoding and locale: the new cluster's must match.
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `c` (libc) or `i` (ICU), with the ICU locale.
    pub provider: String,
    pub icu_locale: String,
    pub checksums: bool,
    pub wal_segment_mb: u64,
    pub new_bindir: String,
    pub scratch_volume: String,
    /// Parameter names the new server knows (`postgres --describe-config`).
    #[serde(default)]
    pub new_settings: Vec<String>,
    /// For the plan: what depends on versioned collations, and whether the
    /// new image's C library and ICU differ from the old one's.
    #[serde(default)]
    pub collation_notes: Vec<String>,
}

/// Removes the scratch volume of the upgrade to instance `new`, if any
/// (only when it is that instance's).
pub fn remove_scratch(engine: &Engine, new: &str) -> Result<()> {
    let name = volume_name(new);
    if engine.volume(&name)?.is_some() {
        engine.ensure_helper_volume(&name, new)?;
        engine.remove_volume(&name)?;
    }
    Ok(())
}

/// Whether `pg_upgrade` can move `old`'s cluster into `new`'s image here:
/// `Ok(Err(why))` when it cannot, for the plan to use `dump` instead.
pub(super) fn preflight(
    engine: &Engine,
    old: &Target,
    new: &Target,
    (old_major, new_major): (u32, u32),
) -> Result<std::result::Result<OldCluster, String>> {
    let (Some(opg), Some(npg)) = (&old.profile.postgres, &new.profile.postgres) else {
        return Ok(Err("no Postgres service".into()));
    };
    if opg.data_bind.is_some() || npg.data_bind.is_some() {
        return Ok(Err(
            "Postgres's data is a bind-mounted folder, and pg_upgrade's hard links need the staging copy on the new volume"
                .into(),
        ));
    }
    let Some(server) = old.running_postgres(engine)? else {
        return Ok(Err(format!(
            "the old Postgres of {} is not running, and pg_upgrade's preflight reads its cluster's settings",
            old.rec.name
        )));
    };
    if let Some(why) = mounted_elsewhere(engine, old, &server)? {
        return Ok(Err(why));
    }
    let mut facts = match read_old_cluster(engine, &server, old_major)? {
        Ok(f) => f,
        Err(why) => return Ok(Err(why)),
    };
    let old_image = old.helper_image(Some(&opg.service))?;
    let new_image = new.helper_image(Some(&npg.service))?;
    facts.new_major = new_major;
    facts.new_bindir = format!("/usr/lib/postgresql/{new_major}/bin");
    facts.scratch_volume = volume_name(&new.rec.name);
    if let Err(why) = binaries::prepare(
        engine,
        &facts.scratch_volume,
        &new.rec.name,
        &old_image,
        old_major,
        &new_image,
        &facts.new_bindir,
    )? {
        remove_scratch(engine, &new.rec.name)?;
        return Ok(Err(why));
    }
    let (code, described) = engine.run_as(
        &new_image,
        Some("postgres"),
        &[
            &format!("{}/postgres", facts.new_bindir),
            "--describe-config",
        ],
        &[],
    )?;
    facts.new_settings = conf::described_names(&described);
    if code != 0 || facts.new_settings.len() < 100 {
        remove_scratch(engine, &new.rec.name)?;
        return Ok(Err(format!(
            "`postgres --describe-config` in {new_image} failed (exit {code})"
        )));
    }
    facts.collation_notes = collation_notes(engine, &server, &old_image, &new_image)?;
    Ok(Ok(facts))
}

/// `ldd --version`'s first line and the ICU library's file name, in an image.
const LIBRARIES: &str =
    "ldd --version 2>&1 | head -n 1; ls /usr/lib/*/libicuuc.so.[0-9]* 2>/dev/null | head -n 1";

/// pg_upgrade keeps the old indexes: those on a collation whose version the
/// new image's C library or ICU changes sort wrongly until rebuilt. The
/// plan says which exist and whether the libraries differ; the actual
/// versions are compared after the start (`after_start`).
fn collation_notes(
    engine: &Engine,
    server: &Server,
    old_image: &str,
    new_image: &str,
) -> Result<Vec<String>> {
    let versioned = server.versioned_collations(engine)?;
    if versioned.is_empty() {
        return Ok(Vec::new());
    }
    let libs = |image: &str| -> Result<String> {
        let out = engine.run_once(image, &["sh", "-c", LIBRARIES])?;
        Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let (old_libs, new_libs) = (libs(old_image)?, libs(new_image)?);
    let verdict = if old_libs == new_libs {
        format!("the new image has the same C library and ICU ({new_libs}): nothing should need rebuilding")
    } else {
        format!(
            "the C library or ICU differ ({old_libs} → {new_libs}): after the start, where a collation's version changed, its indexes are rebuilt with REINDEX CONCURRENTLY (outside the downtime) and the version refreshed"
        )
    };
    Ok(versioned
        .into_iter()
        .map(|v| format!("pg_upgrade keeps indexes as they are; {v}; {verdict}"))
        .collect())
}

/// Why the data volume is not what the server uses as its data folder
/// (`PGDATA` a subfolder of it, say), if it is not.
fn mounted_elsewhere(engine: &Engine, old: &Target, server: &Server) -> Result<Option<String>> {
    let pg = old.postgres()?;
    let env = engine.container_env(&server.container)?;
    let pgdata = env
        .get("PGDATA")
        .map(|p| p.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "/var/lib/postgresql/data".into());
    let mounted = old.vendor.volume_mounts(&pg.data_volume);
    if mounted
        .iter()
        .any(|(svc, path)| svc == &pg.service && path.trim_end_matches('/') == pgdata)
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "the data folder {pgdata} is not the root of volume {}",
        pg.data_volume
    )))
}

/// The old cluster's facts, from the running server.
fn read_old_cluster(
    engine: &Engine,
    server: &Server,
    old_major: u32,
) -> Result<std::result::Result<OldCluster, String>> {
    // Postgres 17 renamed daticulocale to datlocale.
    let locale = if old_major >= 17 {
        "datlocale"
    } else {
        "daticulocale"
    };
    let sql = format!(
        "SELECT rolname FROM pg_authid WHERE oid = 10;\n\
         SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, coalesce({locale}, '') \
         FROM pg_database WHERE datname = 'template0';\n\
         SELECT setting FROM pg_settings WHERE name = 'data_checksums';\n\
         SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 0 END \
         FROM pg_settings WHERE name = 'wal_segment_size';\n\
         SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global');"
    );
    let out = match server.query(engine, &sql) {
        Ok(o) => o,
        Err(e) => {
            return Ok(Err(format!(
                "the old server's settings could not be read ({e:#})"
            )))
        }
    };
    let lines: Vec<&str> = out.lines().collect();
    let [user, t0, checksums, segment, tablespaces] = lines[..] else {
        return Ok(Err(format!(
            "unexpected answer about the old cluster: {out}"
        )));
    };
    if tablespaces != "0" {
        return Ok(Err(format!(
            "the cluster has {tablespaces} tablespace(s) outside its data folder"
        )));
    }
    let t0: Vec<&str> = t0.split('\t').collect();
    let [encoding, collate, ctype, provider, icu_locale] = t0[..] else {
        return Ok(Err(format!("unexpected answer about template0: {t0:?}")));
    };
    if !matches!(provider, "c" | "i") {
        return Ok(Err(format!(
            "template0's locale provider {provider:?} is not libc or ICU"
        )));
    }
    let segment: u64 = segment.parse().unwrap_or(0);
    if segment == 0 || !segment.is_multiple_of(1 << 20) {
        return Ok(Err(format!("unexpected WAL segment size {segment}")));
    }
    Ok(Ok(OldCluster {
        old_major,
        new_major: 0,
        install_user: user.to_string(),
        encoding: encoding.to_string(),
        collate: collate.to_string(),
        ctype: ctype.to_string(),
        provider: provider.to_string(),
        icu_locale: icu_locale.to_string(),
        checksums: checksums == "on",
        wal_segment_mb: segment >> 20,
        new_bindir: String::new(),
        scratch_volume: String::new(),
        new_settings: Vec::new(),
        collation_notes: Vec::new(),
    }))
}

impl OldCluster {
    /// `initdb`'s options for a new cluster `pg_upgrade` accepts.
    fn initdb_options(&self) -> Vec<String> {
        let mut o = vec![
            format!("--encoding={}", self.encoding),
            format!("--lc-collate={}", self.collate),
            format!("--lc-ctype={}", self.ctype),
            format!("--wal-segsize={}", self.wal_segment_mb),
        ];
        if self.provider == "i" {
            o.push("--locale-provider=icu".into());
            o.push(format!("--icu-locale={}", self.icu_locale));
        }
        if self.checksums {
            o.push("--data-checksums".into());
        } else if self.new_major >= 18 {
            o.push("--no-data-checksums".into());
        }
        o
    }
}
