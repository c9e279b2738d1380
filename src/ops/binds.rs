//! Host paths an instance's services mount, sorted by what they are: data
//! under the instance's home (its folder), which backups, restores and
//! upgrades carry like a volume; config, which the config archive already
//! holds; and paths outside the home (`/etc/localtime`, the Docker socket,
//! the host's own folders), which upkeep does not own and leaves alone.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use super::Target;
use crate::docker::Engine;

/// A folder or file under the home that services mount as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBind {
    /// Relative to the home, `/`-separated, without `./`.
    pub path: String,
    /// Services that mount it, in the compose file's order.
    pub services: Vec<String>,
}

/// A host path outside the home, and why it is not backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub service: String,
    pub source: String,
    pub target: String,
    pub reason: &'static str,
}

/// `source` (as written in the compose file) relative to `home` when it
/// lies inside it, lexically (it may not exist yet).
pub fn inside_home(home: &Path, source: &str) -> Option<String> {
    if source.starts_with('~') {
        return None;
    }
    let joined = home.join(source);
    let mut clean = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let rel = clean.strip_prefix(home).ok()?;
    let rel = rel.to_string_lossy().into_owned();
    (!rel.is_empty()).then_some(rel)
}

/// Whether `path` is `config` or inside it.
fn is_under(path: &str, config: &str) -> bool {
    let config = config.trim_start_matches("./").trim_end_matches('/');
    path == config || path.starts_with(&format!("{config}/"))
}

fn why_not_backed_up(source: &str) -> &'static str {
    if source.ends_with("docker.sock") {
        "the Docker socket of the host, not the app's data"
    } else if source.starts_with("/etc/") || source.starts_with("/usr/") {
        "a file of the host's system, not the app's data"
    } else {
        "outside the instance's folder: the host's own path, which upkeep does not own"
    }
}

impl Target {
    /// Data folders and files under the home that services mount: neither
    /// config (in the config archive) nor inside another one (copied with it).
    pub fn data_binds(&self) -> Vec<DataBind> {
        let mut out: Vec<DataBind> = Vec::new();
        for b in self.vendor.bind_mounts() {
            let Some(path) = inside_home(&self.rec.home, &b.source) else {
                continue;
            };
            if self.profile.config.iter().any(|c| is_under(&path, c)) {
                continue;
            }
            match out.iter_mut().find(|d| d.path == path) {
                Some(d) if !d.services.contains(&b.service) => d.services.push(b.service),
                Some(_) => {}
                None => out.push(DataBind {
                    path,
                    services: vec![b.service],
                }),
            }
        }
        let all = out.clone();
        out.retain(|d| {
            !all.iter()
                .any(|o| o.path != d.path && is_under(&d.path, &o.path))
        });
        out
    }

    /// Host paths outside the home that services mount.
    pub fn host_binds(&self) -> Vec<HostBind> {
        self.vendor
            .bind_mounts()
            .into_iter()
            .filter(|b| inside_home(&self.rec.home, &b.source).is_none())
            .map(|b| HostBind {
                reason: why_not_backed_up(&b.source),
                service: b.service,
                source: b.source,
                target: b.target,
            })
            .collect()
    }

    /// Writes `tar` (from [`Engine::read_host_path`] of folder or file
    /// `path`) at `path` under this instance's home, through the engine:
    /// owners, modes and times as the tar holds them.
    pub fn write_bind<R: Read + Send + 'static>(
        &self,
        engine: &Engine,
        path: &str,
        tar: R,
    ) -> Result<()> {
        let parent = Path::new(path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::create_dir_all(self.rec.home.join(&parent))?;
        engine.write_host_path(&self.rec.home, &parent, &self.helper_image(None)?, tar)
    }

    /// The data folder of the Postgres service when it is a bind mount
    /// under the home.
    pub fn postgres_data_bind(&self) -> Option<String> {
        let pg = self.profile.postgres.as_ref()?;
        inside_home(&self.rec.home, pg.data_bind.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_home_are_relative_and_others_are_not() {
        let home = Path::new("/site/instances/a");
        assert_eq!(inside_home(home, "./pg/data").as_deref(), Some("pg/data"));
        assert_eq!(inside_home(home, "uploads/").as_deref(), Some("uploads"));
        assert_eq!(
            inside_home(home, "/site/instances/a/x").as_deref(),
            Some("x")
        );
        assert_eq!(inside_home(home, "../b/x"), None);
        assert_eq!(inside_home(home, "/etc/localtime"), None);
        assert_eq!(inside_home(home, "~/x"), None);
        assert_eq!(
            inside_home(home, "."),
            None,
            "the home itself is not one bind"
        );
    }

    #[test]
    fn config_paths_cover_what_is_inside_them() {
        assert!(is_under("data/config/x", "data"));
        assert!(is_under("etc/ssl", "./etc/ssl/"));
        assert!(!is_under("database", "data"));
    }
}
