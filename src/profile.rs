//! Profiles: what of an instance is config and what is data. Built in: the
//! seed page's layout (config at the release root), the later layout (all
//! state under `data/`) and a generic one; a release may carry its own
//! `upkeep.toml`. Everything else about an app comes from its compose file.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::compose::ComposeFile;

/// The file a vendor or administrator puts in a release to describe it.
pub const PROFILE_FILE: &str = "upkeep.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    /// Config files and folders, relative to the instance's home; missing
    /// ones are skipped.
    pub config: Vec<String>,
    #[serde(default)]
    pub postgres: Option<PostgresProfile>,
    /// Named volumes that the services mounting them never read or write on
    /// their own: they hold files administrators put there (the seed's
    /// `postgres_backups`, where `pg_dump` files are kept). Backups copy them
    /// without stopping those services (stopping Postgres would take the
    /// database down in an otherwise online backup), and restores fill them
    /// while Postgres starts.
    #[serde(default)]
    pub passive_volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresProfile {
    /// The compose service running Postgres.
    pub service: String,
    /// The named volume (owned or external) holding its data directory;
    /// empty when that is a bind mount.
    #[serde(default)]
    pub data_volume: String,
    /// The host folder holding its data directory, as the compose file
    /// writes it (`./postgres`), when that is a bind mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bind: Option<String>,
    /// Names of the variables, in the container's environment, that hold the
    /// credentials (the official image's names by default).
    #[serde(default = "default_user_var")]
    pub user_var: String,
    #[serde(default = "default_password_var")]
    pub password_var: String,
    #[serde(default = "default_db_var")]
    pub db_var: String,
    /// Which copies of the running server `upkeep backup` takes unless its
    /// command line says otherwise.
    #[serde(default, skip_serializing_if = "PostgresCopies::is_default")]
    pub backup: PostgresCopies,
}

/// Which copies of a running Postgres a snapshot holds. The names are the
/// manifest's `postgres.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum PostgresCopies {
    /// `pg_dump` of every database, and the roles: restores into any
    /// release with the same or a newer major.
    #[default]
    #[serde(rename = "logical")]
    #[value(name = "logical")]
    Logical,
    /// The dumps and a `pg_basebackup`: a restore into the same major
    /// writes the physical copy, any other loads the dumps.
    #[serde(rename = "logical+physical")]
    #[value(name = "logical+physical")]
    LogicalAndPhysical,
    /// Only the `pg_basebackup`: restores only into a release with the same
    /// major (upgrade afterwards).
    #[serde(rename = "physical")]
    #[value(name = "physical")]
    Physical,
}

impl PostgresCopies {
    fn is_default(&self) -> bool {
        *self == PostgresCopies::default()
    }

    pub fn dumps(self) -> bool {
        self != PostgresCopies::Physical
    }

    pub fn base_backup(self) -> bool {
        self != PostgresCopies::Logical
    }

    /// The Postgres tools that take these copies.
    pub fn tools(self) -> &'static str {
        match self {
            PostgresCopies::Logical => "pg_dump",
            PostgresCopies::LogicalAndPhysical => "pg_dump and pg_basebackup",
            PostgresCopies::Physical => "pg_basebackup",
        }
    }

    /// As the manifest's `postgres.mode` writes it.
    pub fn mode(self) -> &'static str {
        match self {
            PostgresCopies::Logical => "logical",
            PostgresCopies::LogicalAndPhysical => "logical+physical",
            PostgresCopies::Physical => "physical",
        }
    }
}

fn default_user_var() -> String {
    "POSTGRES_USER".into()
}
fn default_password_var() -> String {
    "POSTGRES_PASSWORD".into()
}
fn default_db_var() -> String {
    "POSTGRES_DB".into()
}

/// Config of releases up to Graphistry 2.24: everything at the release root.
const CLASSIC: &[&str] = &[".env", "Caddyfile", ".caddy", "etc/ssl", ".pivot-db"];
/// Later releases keep config and local data under `data/`.
const DATA_DIR: &[&str] = &[".env", "data"];
/// Graphistry's volume for administrators' `pg_dump` files, mounted into
/// the Postgres service at `/backups` but never touched by the server.
const GRAPHISTRY_PASSIVE: &[&str] = &["postgres_backups"];

/// The profile of a release: its `upkeep.toml`, else detected from its
/// layout; `home` is where the instance's files are (config may be there).
pub fn detect(release_dir: &Path, home: &Path, compose: &ComposeFile) -> Result<Profile> {
    let custom = release_dir.join(PROFILE_FILE);
    if custom.is_file() {
        let text = std::fs::read_to_string(&custom)?;
        let profile: Profile = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid profile", custom.display()))?;
        check(&profile, compose).with_context(|| format!("in {}", custom.display()))?;
        return Ok(profile);
    }
    let has = |p: &str| release_dir.join(p).exists() || home.join(p).exists();
    let (name, config, passive) = if has("data/config") {
        ("graphistry-data", DATA_DIR, GRAPHISTRY_PASSIVE)
    } else if CLASSIC[1..].iter().any(|p| has(p)) {
        ("graphistry-classic", CLASSIC, GRAPHISTRY_PASSIVE)
    } else {
        ("generic", &[".env"][..], &[][..])
    };
    let volumes = compose.volume_keys();
    Ok(Profile {
        name: name.into(),
        config: config.iter().map(|s| s.to_string()).collect(),
        postgres: detect_postgres(compose),
        passive_volumes: passive
            .iter()
            .filter(|v| volumes.iter().any(|k| k == *v))
            .map(|v| v.to_string())
            .collect(),
    })
}

/// Where images keep Postgres's data: the official image and most others
/// under /var/lib/postgresql, Bitnami's under /bitnami/postgresql.
const POSTGRES_DATA_DIRS: &[&str] = &["/var/lib/postgresql", "/bitnami/postgresql"];

fn is_postgres_data(target: &str) -> bool {
    POSTGRES_DATA_DIRS.iter().any(|d| target.starts_with(d))
}

/// The Postgres service, found by its data folder: a named volume (owned or
/// external) or a host folder mounted where Postgres keeps its data.
fn detect_postgres(compose: &ComposeFile) -> Option<PostgresProfile> {
    let profile =
        |service: String, data_volume: String, data_bind: Option<String>| PostgresProfile {
            service,
            data_volume,
            data_bind,
            user_var: default_user_var(),
            password_var: default_password_var(),
            db_var: default_db_var(),
            backup: PostgresCopies::default(),
        };
    let external = compose.external_volumes().into_iter().map(|(k, _)| k);
    for key in compose.volume_keys().into_iter().chain(external) {
        for (service, target) in compose.volume_mounts(&key) {
            if is_postgres_data(&target) {
                return Some(profile(service, key, None));
            }
        }
    }
    compose
        .bind_mounts()
        .into_iter()
        .find(|b| is_postgres_data(&b.target))
        .map(|b| profile(b.service, String::new(), Some(b.source)))
}

/// A service that looks like Postgres (by its name or image), for the
/// backup's check that it found its data.
pub fn looks_like_postgres(service: &str, image: &str) -> bool {
    let image = image.rsplit('/').next().unwrap_or(image);
    ["postgres", "postgis", "timescaledb"]
        .iter()
        .any(|p| image.starts_with(p) || service == *p)
}

fn check(profile: &Profile, compose: &ComposeFile) -> Result<()> {
    for path in &profile.config {
        if Path::new(path).is_absolute() || path.split('/').any(|c| c == "..") {
            bail!("config path `{path}` must be relative to the instance folder, without `..`");
        }
    }
    let volumes = compose.volume_keys();
    if let Some(v) = profile
        .passive_volumes
        .iter()
        .find(|v| !volumes.contains(v))
    {
        bail!("passive volume `{v}` is not a named volume of the compose file");
    }
    if let Some(pg) = &profile.postgres {
        if profile.passive_volumes.contains(&pg.data_volume) {
            bail!(
                "the Postgres data volume `{}` cannot be a passive volume: the server writes it",
                pg.data_volume
            );
        }
        if !compose.service_names().contains(&pg.service) {
            bail!(
                "the Postgres service `{}` is not in the compose file",
                pg.service
            );
        }
        let external = compose
            .external_volumes()
            .into_iter()
            .any(|(k, _)| k == pg.data_volume);
        if pg.data_bind.is_none() && !volumes.contains(&pg.data_volume) && !external {
            bail!(
                "the Postgres data volume `{}` is not a named volume of the compose file",
                pg.data_volume
            );
        }
    }
    Ok(())
}

impl Profile {
    /// Whether services mounting volume `key` can keep running while it is copied.
    pub fn is_passive(&self, key: &str) -> bool {
        self.passive_volumes.iter().any(|v| v == key)
    }

    /// Whether a snapshot taken with `self` can be restored where `target` applies.
    pub fn fits(&self, target: &Profile) -> Result<()> {
        match (&self.postgres, &target.postgres) {
            (Some(a), None) => bail!(
                "the snapshot holds a Postgres database (service {}) but the target release has no \
                 Postgres service: it cannot hold this data",
                a.service
            ),
            (Some(a), Some(b)) if a.data_volume != b.data_volume || a.data_bind != b.data_bind => {
                tracing::info!(
                    "Postgres data is in {} in the snapshot and in {} in the target",
                    a.data_bind.as_ref().unwrap_or(&a.data_volume),
                    b.data_bind.as_ref().unwrap_or(&b.data_volume)
                )
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = "services:\n  postgres:\n    image: pg\n    volumes: [\"postgres_data:/var/lib/postgresql/data\", \"postgres_backups:/backups\"]\n  app:\n    image: app\nvolumes:\n  postgres_data: {}\n  postgres_backups: {}\n";

    #[test]
    fn detects_layouts_and_the_postgres_volume() {
        let compose = ComposeFile::parse(COMPOSE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = detect(dir.path(), dir.path(), &compose).unwrap();
        assert_eq!(p.name, "generic");
        assert!(
            p.passive_volumes.is_empty(),
            "generic: every volume is copied with its services stopped"
        );
        let pg = p.postgres.unwrap();
        assert_eq!(
            (pg.service.as_str(), pg.data_volume.as_str()),
            ("postgres", "postgres_data")
        );
        std::fs::write(dir.path().join("Caddyfile"), "").unwrap();
        let p = detect(dir.path(), dir.path(), &compose).unwrap();
        assert_eq!(p.name, "graphistry-classic");
        assert!(p.is_passive("postgres_backups") && !p.is_passive("postgres_data"));
        std::fs::create_dir_all(dir.path().join("data/config")).unwrap();
        let p = detect(dir.path(), dir.path(), &compose).unwrap();
        assert_eq!(
            (p.name.as_str(), p.config.clone()),
            ("graphistry-data", vec![".env".to_string(), "data".into()])
        );
    }

    #[test]
    fn postgres_is_found_in_a_bind_mount_or_an_external_volume() {
        let dir = tempfile::tempdir().unwrap();
        let bind = ComposeFile::parse("services:\n  db:\n    image: postgres:16\n    volumes: [\"./volumes/db/data:/var/lib/postgresql/data\"]\n").unwrap();
        let pg = detect(dir.path(), dir.path(), &bind)
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!(
            (
                pg.service.as_str(),
                pg.data_volume.as_str(),
                pg.data_bind.as_deref()
            ),
            ("db", "", Some("./volumes/db/data"))
        );
        let external = ComposeFile::parse("services:\n  database:\n    image: bitnami/postgresql\n    volumes: [\"pg:/bitnami/postgresql\"]\nvolumes:\n  pg:\n    external: true\n").unwrap();
        let pg = detect(dir.path(), dir.path(), &external)
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!(
            (pg.service.as_str(), pg.data_volume.as_str()),
            ("database", "pg")
        );
        assert!(looks_like_postgres("db", "docker.io/library/postgres:15"));
        assert!(looks_like_postgres("postgres", "acme/db"));
        assert!(!looks_like_postgres("app", "acme/app"));
    }

    #[test]
    fn upkeep_toml_wins_and_is_checked() {
        let compose = ComposeFile::parse(COMPOSE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(PROFILE_FILE);
        std::fs::write(&f, "name = \"acme\"\nconfig = [\"conf\"]\n[postgres]\nservice = \"postgres\"\ndata_volume = \"postgres_data\"\n").unwrap();
        let p = detect(dir.path(), dir.path(), &compose).unwrap();
        assert_eq!(p.name, "acme");
        assert_eq!(p.postgres.unwrap().password_var, "POSTGRES_PASSWORD");
        std::fs::write(&f, "name = \"bad\"\nconfig = [\"../etc\"]\n").unwrap();
        assert!(detect(dir.path(), dir.path(), &compose).is_err());
        std::fs::write(&f, "name = \"bad\"\nconfig = []\npassive_volumes = [\"postgres_data\"]\n[postgres]\nservice = \"postgres\"\ndata_volume = \"postgres_data\"\n").unwrap();
        let err = format!(
            "{:#}",
            detect(dir.path(), dir.path(), &compose).unwrap_err()
        );
        assert!(err.contains("cannot be a passive volume"), "{err}");
        std::fs::write(&f, "name = \"bad\"\nconfig = []\n[postgres]\nservice = \"db\"\ndata_volume = \"postgres_data\"\n").unwrap();
        let err = format!(
            "{:#}",
            detect(dir.path(), dir.path(), &compose).unwrap_err()
        );
        assert!(err.contains("`db` is not in the compose file"), "{err}");
    }
}
