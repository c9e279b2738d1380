//! A vendor's compose file: what compose says it means, and the document an
//! instance's effective file is generated from.
//!
//! Every decision (services, images, mounts, ports, the Postgres service)
//! reads the model `compose config` resolves with the instance's `.env`:
//! compose is the authority on anchors, merge keys, `extends`, `env_file`,
//! profiles and variables. upkeep's own YAML handling is limited to the
//! rewrite in [`super::rewrite`], on the vendor document with its merge keys
//! resolved.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_yaml_ng::Value;

use super::env::read_env_text;
use super::model::{self, Model, Mount, MountKind, PublishedPort};
use super::naming::normalize_project_name;
use super::rewrite::{self, InstanceRewrite};
use super::runner::{Compose, ComposeFlavor, Project};

/// A host path one service mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub service: String,
    /// `./rel` inside the project folder, else absolute (as written by `parse`).
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct ComposeFile {
    /// The vendor's document, merge keys resolved.
    source: Value,
    /// What compose resolved it to.
    model: Model,
    /// The project folder compose resolved relative paths against.
    dir: Option<PathBuf>,
}

impl ComposeFile {
    /// The file at `path` as compose resolves it in its own folder, with the
    /// `.env` there.
    pub fn load(path: &Path) -> Result<ComposeFile> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let name = Some(normalize_project_name(&folder))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "upkeep".into());
        ComposeFile::resolve(&Compose::default(), &Project::new(&name, dir, path))
    }

    /// `project.file` as compose resolves it for `project`: its folder's
    /// `.env`, its name.
    pub fn resolve(compose: &Compose, project: &Project) -> Result<ComposeFile> {
        let text = std::fs::read_to_string(&project.file)
            .with_context(|| format!("reading compose file {}", project.file.display()))?;
        let source =
            read_source(&text).with_context(|| format!("in {}", project.file.display()))?;
        let model = Model::new(resolved_config(compose, project, &text)?)?;
        Ok(ComposeFile {
            source,
            model,
            dir: Some(project.directory.clone()),
        })
    }

    /// A compose document read without compose, for checks that must not
    /// run it (bundle inspection, fuzzing): variables stay unexpanded and
    /// `extends` unapplied; anchors and merge keys are resolved.
    pub fn parse(text: &str) -> Result<ComposeFile> {
        let source = read_source(text)?;
        let model = Model::new(source.clone())?;
        Ok(ComposeFile {
            source,
            model,
            dir: None,
        })
    }

    /// The model compose resolved, as it printed it (v2's JSON and v1's
    /// YAML differ in shape: prefer the accessors below).
    pub fn resolved(&self) -> &Value {
        self.model.doc()
    }

    pub fn service_names(&self) -> Vec<String> {
        self.model.services().map(|(name, _)| name).collect()
    }

    /// The service as compose resolved it (health check, `depends_on`,
    /// profiles, environment …).
    pub fn service(&self, name: &str) -> Option<&Value> {
        self.model.service(name)
    }

    /// Service → image reference, variables expanded by compose.
    pub fn images(&self) -> Result<BTreeMap<String, String>> {
        Ok(model::images(&self.model))
    }

    /// Top-level named volumes that the instance owns (not `external`).
    pub fn volume_keys(&self) -> Vec<String> {
        self.volume_keys_where(|external| !external)
    }

    /// Top-level volumes declared `external`: created by someone else.
    pub fn external_volume_keys(&self) -> Vec<String> {
        self.volume_keys_where(|external| external)
    }

    /// Keys come from the vendor document: compose v2 leaves volumes no
    /// service mounts out of its model, v1 keeps them.
    fn volume_keys_where(&self, keep: impl Fn(bool) -> bool) -> Vec<String> {
        let Some(vols) = self.source["volumes"].as_mapping() else {
            return Vec::new();
        };
        vols.iter()
            .filter_map(|(k, decl)| {
                let key = k.as_str()?;
                let decl = self.model_volume(key).unwrap_or(decl);
                keep(model::is_external(decl)).then(|| key.to_string())
            })
            .collect()
    }

    fn model_volume(&self, key: &str) -> Option<&Value> {
        self.model.section("volumes").and_then(|v| v.get(key))
    }

    /// The fixed Docker name the vendor gives volume `key` (`name:`,
    /// variables expanded), which an instance keeping the vendor's names
    /// must use; `None` when compose derives it from the project name.
    pub fn volume_name(&self, key: &str) -> Option<String> {
        let declared = self.source["volumes"].get(key)?.get("name")?;
        self.model_volume(key)
            .and_then(|v| v.get("name"))
            .or(Some(declared))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The service's mounts, as compose resolved them (relative bind
    /// sources made absolute).
    pub fn mounts(&self, service: &str) -> Result<Vec<Mount>> {
        self.model.mounts(service)
    }

    /// Host paths the services mount, as compose resolved them; a source
    /// inside the project folder is given relative to it (`./data`).
    pub fn bind_mounts(&self) -> Vec<BindMount> {
        let mut out = Vec::new();
        for service in self.service_names() {
            for m in self.mounts(&service).unwrap_or_default() {
                if let (MountKind::Bind, Some(source)) = (m.kind, m.source) {
                    out.push(BindMount {
                        service: service.clone(),
                        source: self.relative_to_project(source),
                        target: m.target,
                        read_only: m.read_only,
                    });
                }
            }
        }
        out
    }

    /// A path inside the project folder as `./rel` (how vendors write it, and
    /// the same for every copy of a release, whatever its home); any other as is.
    fn relative_to_project(&self, source: String) -> String {
        let Some(dir) = &self.dir else {
            return source;
        };
        match Path::new(&source).strip_prefix(dir) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
            Ok(rel) => format!("./{}", rel.display()),
            Err(_) => source,
        }
    }

    /// Volumes declared `external` (created by someone else): key → the
    /// Docker name (`name:`, else the key, which compose does not prefix).
    pub fn external_volumes(&self) -> Vec<(String, String)> {
        self.external_volume_keys()
            .into_iter()
            .map(|key| {
                let name = self.volume_name(&key).unwrap_or_else(|| key.clone());
                (key, name)
            })
            .collect()
    }

    /// Services that mount the named volume `key`, with the mount path.
    pub fn volume_mounts(&self, key: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in self.service_names() {
            for m in self.mounts(&name).unwrap_or_default() {
                if m.kind == MountKind::Volume && m.source.as_deref() == Some(key) {
                    out.push((name.clone(), m.target));
                }
            }
        }
        out
    }

    /// Every published port with a fixed host port.
    pub fn published_ports(&self) -> Result<Vec<PublishedPort>> {
        let mut ports = Vec::new();
        for name in self.service_names() {
            ports.extend(self.model.ports(&name)?.into_iter().flatten());
        }
        Ok(ports)
    }

    /// The instance's effective compose file as YAML text.
    pub fn effective(&self, rewrite: &InstanceRewrite) -> Result<String> {
        rewrite::effective(&self.source, &self.model, rewrite)
    }
}

/// `compose config` for `project`, once per process for the same file text
/// and `.env`: one command resolves the same file several times, and
/// compose v1 takes most of a second to start. (`env_file` contents are not
/// in the key: they only fill services' environment, which upkeep reads
/// from the containers.)
fn resolved_config(compose: &Compose, project: &Project, text: &str) -> Result<Value> {
    type Key = (ComposeFlavor, String, PathBuf, PathBuf, u64);
    static CACHE: Mutex<BTreeMap<Key, Value>> = Mutex::new(BTreeMap::new());
    let mut inputs = DefaultHasher::new();
    text.hash(&mut inputs);
    read_env_text(&project.directory)?.hash(&mut inputs);
    let key = (
        compose.flavor()?,
        project.name.clone(),
        project.directory.clone(),
        project.file.clone(),
        inputs.finish(),
    );
    if let Some(model) = CACHE.lock().expect("cache lock").get(&key) {
        return Ok(model.clone());
    }
    let model = compose.config(project)?;
    CACHE.lock().expect("cache lock").insert(key, model.clone());
    Ok(model)
}

fn read_source(text: &str) -> Result<Value> {
    let mut doc: Value = serde_yaml_ng::from_str(text).context("not valid compose YAML")?;
    doc.apply_merge()
        .context("a YAML merge key (`<<:`) that does not merge a mapping")?;
    Model::new(doc.clone())?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VENDOR: &str = r#"
x-pg: &pg
  image: "acme/postgres:v1"
  volumes: ["postgres_data:/var/lib/postgresql/data", "./conf:/conf:ro"]
services:
  postgres:
    <<: *pg
  app:
    image: acme/app:1
    container_name: app
    ports:
      - "127.0.0.1:18080:8080"
      - "9000"
      - target: 443
        published: 18443
        protocol: tcp
    volumes:
      - type: volume
        source: postgres_backups
        target: /backups
volumes:
  postgres_data:
  postgres_backups: {name: acme_backups}
  shared:
    external: true
networks:
  grph_net:
    name: grph_net
"#;

    #[test]
    fn reads_images_volumes_ports_and_mounts_through_merge_keys() {
        let f = ComposeFile::parse(VENDOR).unwrap();
        let images = f.images().unwrap();
        assert_eq!(images["postgres"], "acme/postgres:v1");
        assert_eq!(f.volume_keys(), vec!["postgres_data", "postgres_backups"]);
        assert_eq!(f.external_volume_keys(), vec!["shared"]);
        assert_eq!(
            f.volume_name("postgres_backups").as_deref(),
            Some("acme_backups")
        );
        assert_eq!(f.volume_name("postgres_data"), None);
        assert_eq!(
            f.volume_mounts("postgres_data"),
            vec![("postgres".into(), "/var/lib/postgresql/data".into())]
        );
        assert_eq!(
            f.volume_mounts("postgres_backups"),
            vec![("app".into(), "/backups".into())]
        );
        let ports = f.published_ports().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].published, Some(18080));
        assert_eq!(ports[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(ports[1].index, 2);
        assert_eq!(ports[1].published, Some(18443));
    }

    #[test]
    fn refuses_what_is_not_a_compose_file() {
        assert!(ComposeFile::parse("just: text").is_err());
        assert!(ComposeFile::parse("services: [").is_err());
        assert!(ComposeFile::parse("services: {a: {<<: 3}}").is_err());
    }
}
