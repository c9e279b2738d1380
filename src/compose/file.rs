//! A compose file as data: the services' images, named volumes, published
//! ports and mounts, and the generation of an instance's effective file.
//!
//! Instances never run the vendor file with an override: compose v1 appends
//! override `ports:` to the vendor's instead of replacing them, so a copy
//! could never drop the vendor's host port. upkeep therefore writes a full
//! effective file (vendor content with volume names, host ports and fixed
//! names rewritten) and passes only that with `-f`; the vendor file itself is
//! never touched.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use super::env::{interpolate, EnvMap};

#[derive(Debug, Clone)]
pub struct ComposeFile {
    doc: Value,
}

/// One published port of one service, as compose will bind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    pub service: String,
    /// Position in the service's `ports:` list.
    pub index: usize,
    pub host_ip: Option<String>,
    /// `None` for an ephemeral host port (compose picks one).
    pub published: Option<u16>,
    pub target: String,
    pub protocol: Option<String>,
}

/// A host path mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindMount {
    pub service: String,
    /// As written: absolute, or relative to the project folder.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// What an instance changes in the vendor file.
#[derive(Debug, Clone, Default)]
pub struct InstanceRewrite {
    /// Volume key → Docker volume name.
    pub volume_names: BTreeMap<String, String>,
    /// (service, index) → host port to publish instead of the vendor's.
    pub host_ports: BTreeMap<(String, usize), u16>,
    /// Prefix for fixed `container_name:` and network `name:` values, so
    /// copies of one release do not collide; `None` keeps them.
    pub name_prefix: Option<String>,
    /// Comment placed at the top of the generated file.
    pub header: String,
}

impl ComposeFile {
    pub fn load(path: &Path) -> Result<ComposeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading compose file {}", path.display()))?;
        ComposeFile::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ComposeFile> {
        let doc: Value = serde_yaml_ng::from_str(text).context("not valid compose YAML")?;
        if !doc.get("services").is_some_and(Value::is_mapping) {
            bail!("no `services:` section: this is not a compose file upkeep can run");
        }
        Ok(ComposeFile { doc })
    }

    fn services_map(&self) -> &Mapping {
        self.doc["services"].as_mapping().expect("checked in parse")
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services_map().keys().filter_map(key_str).collect()
    }

    /// Service → image reference, interpolated with `env`.
    pub fn images(&self, env: &EnvMap) -> Result<BTreeMap<String, String>> {
        let mut images = BTreeMap::new();
        for (name, svc) in self.services_map() {
            if let (Some(name), Some(image)) = (key_str(name), svc["image"].as_str()) {
                let image =
                    interpolate(image, env).with_context(|| format!("image of service {name}"))?;
                images.insert(name, image);
            }
        }
        Ok(images)
    }

    /// Top-level named volumes that the instance owns (not `external`).
    pub fn volume_keys(&self) -> Vec<String> {
        let Some(vols) = self.doc["volumes"].as_mapping() else {
            return Vec::new();
        };
        vols.iter()
            .filter(|(_, v)| !is_true(&v["external"]))
            .filter_map(|(k, _)| key_str(k))
            .collect()
    }

    /// Services that mount the named volume `key`, with the mount path.
    pub fn volume_mounts(&self, key: &str) -> Vec<(String, String)> {
        let mut mounts = Vec::new();
        for (name, svc) in self.services_map() {
            let Some(list) = svc["volumes"].as_sequence() else {
                continue;
            };
            for entry in list {
                let (source, target) = match entry {
                    Value::String(s) => {
                        let mut parts = s.split(':');
                        (
                            parts.next().map(str::to_string),
                            parts.next().map(str::to_string),
                        )
                    }
                    Value::Mapping(_) => (
                        entry["source"].as_str().map(str::to_string),
                        entry["target"].as_str().map(str::to_string),
                    ),
                    _ => (None, None),
                };
                if let (Some(source), Some(target), Some(name)) = (source, target, key_str(name)) {
                    if source == key {
                        mounts.push((name, target));
                    }
                }
            }
        }
        mounts
    }

    /// Host paths the services mount (short syntax `./data:/x[:ro]`, or
    /// long syntax `type: bind`), sources as written: a relative one is
    /// relative to the project folder. (Added for backups of bind-mounted
    /// data; once compose's resolved model is read, its bind mounts give the
    /// same, with sources made absolute.)
    pub fn bind_mounts(&self) -> Vec<BindMount> {
        let mut out = Vec::new();
        for (name, svc) in self.services_map() {
            let (Some(service), Some(list)) = (key_str(name), svc["volumes"].as_sequence()) else {
                continue;
            };
            for entry in list {
                let mount = match entry {
                    Value::String(s) => short_bind(s),
                    Value::Mapping(_) if entry["type"].as_str() == Some("bind") => {
                        match (entry["source"].as_str(), entry["target"].as_str()) {
                            (Some(source), Some(target)) => Some((
                                source.to_string(),
                                target.to_string(),
                                entry["read_only"].as_bool().unwrap_or(false),
                            )),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                if let Some((source, target, read_only)) = mount {
                    out.push(BindMount {
                        service: service.clone(),
                        source,
                        target,
                        read_only,
                    });
                }
            }
        }
        out
    }

    /// Top-level volumes declared `external` (created by someone else),
    /// key → Docker name (`name:`, else the key).
    pub fn external_volumes(&self) -> Vec<(String, String)> {
        let Some(vols) = self.doc["volumes"].as_mapping() else {
            return Vec::new();
        };
        vols.iter()
            .filter(|(_, v)| is_true(&v["external"]))
            .filter_map(|(k, v)| {
                let key = key_str(k)?;
                let name = v["name"]
                    .as_str()
                    .or(v["external"]["name"].as_str())
                    .map_or(key.clone(), str::to_string);
                Some((key, name))
            })
            .collect()
    }

    /// Every published port, interpolated with `env`.
    pub fn published_ports(&self, env: &EnvMap) -> Result<Vec<PublishedPort>> {
        let mut ports = Vec::new();
        for (name, svc) in self.services_map() {
            let (Some(service), Some(list)) = (key_str(name), svc["ports"].as_sequence()) else {
                continue;
            };
            for (index, entry) in list.iter().enumerate() {
                let port = parse_port(&service, index, entry, env)
                    .with_context(|| format!("port #{} of service {service}", index + 1))?;
                ports.extend(port);
            }
        }
        Ok(ports)
    }

    /// The instance's effective compose file as YAML text.
    pub fn effective(&self, rewrite: &InstanceRewrite, env: &EnvMap) -> Result<String> {
        let mut doc = self.doc.clone();
        rewrite_volumes(&mut doc, &rewrite.volume_names);
        let ports = self.published_ports(env)?;
        let services = doc["services"].as_mapping_mut().expect("checked in parse");
        for port in &ports {
            let Some(&host_port) = rewrite.host_ports.get(&(port.service.clone(), port.index))
            else {
                continue;
            };
            let svc = services
                .get_mut(port.service.as_str())
                .expect("port came from this service");
            svc["ports"][port.index] = Value::String(short_port(port, host_port));
        }
        if let Some(prefix) = &rewrite.name_prefix {
            for (_, svc) in services.iter_mut() {
                prefix_string(svc, "container_name", prefix);
            }
            if let Some(nets) = doc.get_mut("networks").and_then(Value::as_mapping_mut) {
                for (_, net) in nets.iter_mut() {
                    if !is_true(&net["external"]) {
                        prefix_string(net, "name", prefix);
                    }
                }
            }
        }
        let body = serde_yaml_ng::to_string(&doc)?;
        Ok(format!("{}{body}", rewrite.header))
    }
}

fn rewrite_volumes(doc: &mut Value, names: &BTreeMap<String, String>) {
    let Some(vols) = doc.get_mut("volumes").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (key, name) in names {
        let Some(entry) = vols.get_mut(key.as_str()) else {
            continue;
        };
        if entry.is_null() {
            *entry = Value::Mapping(Mapping::new());
        }
        entry["name"] = Value::String(name.clone());
    }
}

/// Prefixes `parent[key]` when it is a string. (Indexing a `Value` mutably
/// would insert a null for a missing key, which compose rejects.)
fn prefix_string(parent: &mut Value, key: &str, prefix: &str) {
    if let Some(v) = parent.get_mut(key) {
        if let Some(s) = v.as_str() {
            *v = Value::String(format!("{prefix}-{s}"));
        }
    }
}

fn short_port(port: &PublishedPort, host_port: u16) -> String {
    let ip = port
        .host_ip
        .as_deref()
        .map(|ip| format!("{ip}:"))
        .unwrap_or_default();
    let proto = port
        .protocol
        .as_deref()
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    format!("{ip}{host_port}:{}{proto}", port.target)
}

fn parse_port(
    service: &str,
    index: usize,
    entry: &Value,
    env: &EnvMap,
) -> Result<Option<PublishedPort>> {
    let mut port = PublishedPort {
        service: service.to_string(),
        index,
        host_ip: None,
        published: None,
        target: String::new(),
        protocol: None,
    };
    match entry {
        // A bare container port publishes nothing fixed.
        Value::Number(_) => return Ok(None),
        Value::String(raw) => {
            let text = interpolate(raw, env)?;
            let (spec, proto) = match text.split_once('/') {
                Some((s, p)) => (s.to_string(), Some(p.to_string())),
                None => (text.clone(), None),
            };
            port.protocol = proto;
            let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
            match parts.as_slice() {
                [_target] => return Ok(None),
                [target, published] => {
                    port.target = target.to_string();
                    port.published = parse_host_port(published)?;
                }
                [target, published, ip] => {
                    port.target = target.to_string();
                    port.published = parse_host_port(published)?;
                    port.host_ip = Some(ip.to_string());
                }
                _ => unreachable!("rsplitn(3) yields 1 to 3 parts"),
            }
        }
        Value::Mapping(_) => {
            port.target =
                value_text(&entry["target"], env)?.context("long-syntax port without `target`")?;
            port.published = match value_text(&entry["published"], env)? {
                Some(p) => parse_host_port(&p)?,
                None => None,
            };
            port.host_ip = value_text(&entry["host_ip"], env)?;
            port.protocol = value_text(&entry["protocol"], env)?;
        }
        other => bail!("unsupported port entry {other:?}"),
    }
    Ok(Some(port))
}

fn parse_host_port(text: &str) -> Result<Option<u16>> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('-') {
        bail!("host port ranges (`{text}`) are not supported yet; publish single ports");
    }
    text.parse()
        .map(Some)
        .with_context(|| format!("`{text}` is not a host port number"))
}

fn value_text(v: &Value, env: &EnvMap) -> Result<Option<String>> {
    Ok(match v {
        Value::String(s) => Some(interpolate(s, env)?),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// `SOURCE:TARGET[:MODE]` when SOURCE is a host path (compose's rule: it
/// starts with `.`, `/` or `~`); a volume key otherwise.
fn short_bind(entry: &str) -> Option<(String, String, bool)> {
    let mut parts = entry.split(':');
    let (source, target) = (parts.next()?, parts.next()?);
    if !source.starts_with(['.', '/', '~']) {
        return None;
    }
    let read_only = parts
        .next()
        .is_some_and(|m| m.split(',').any(|o| o == "ro"));
    Some((source.to_string(), target.to_string(), read_only))
}

fn key_str(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn is_true(v: &Value) -> bool {
    v.as_bool().unwrap_or(false) || v.is_mapping()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::env::parse_env;

    const VENDOR: &str = r#"
services:
  postgres:
    image: "acme/postgres:${VERSION}"
    volumes: ["postgres_data:/var/lib/postgresql/data", "./conf:/conf:ro"]
  app:
    image: acme/app:1
    container_name: app
    ports:
      - "127.0.0.1:${HTTP_PORT:-18080}:8080"
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
  postgres_backups: {}
  shared:
    external: true
networks:
  grph_net:
    name: grph_net
"#;

    fn env() -> EnvMap {
        parse_env("VERSION=v1.0.0\n")
    }

    #[test]
    fn reads_images_volumes_ports_and_mounts() {
        let f = ComposeFile::parse(VENDOR).unwrap();
        let images = f.images(&env()).unwrap();
        assert_eq!(images["postgres"], "acme/postgres:v1.0.0");
        assert_eq!(f.volume_keys(), vec!["postgres_data", "postgres_backups"]);
        assert_eq!(
            f.volume_mounts("postgres_backups"),
            vec![("app".into(), "/backups".into())]
        );
        let ports = f.published_ports(&env()).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].published, Some(18080));
        assert_eq!(ports[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(ports[1].index, 2);
        assert_eq!(ports[1].published, Some(18443));
    }

    #[test]
    fn effective_file_renames_volumes_ports_and_fixed_names() {
        let f = ComposeFile::parse(VENDOR).unwrap();
        let mut rw = InstanceRewrite {
            name_prefix: Some("copy2".into()),
            header: "# generated\n".into(),
            ..Default::default()
        };
        rw.volume_names
            .insert("postgres_data".into(), "copy2_postgres_data".into());
        rw.host_ports.insert(("app".into(), 0), 18081);
        rw.host_ports.insert(("app".into(), 2), 18444);
        let text = f.effective(&rw, &env()).unwrap();
        assert!(text.starts_with("# generated\n"));
        let out = ComposeFile::parse(&text).unwrap();
        let ports = out.published_ports(&env()).unwrap();
        assert_eq!(ports[0].published, Some(18081));
        assert_eq!(ports[1].published, Some(18444));
        assert_eq!(
            out.doc["volumes"]["postgres_data"]["name"],
            "copy2_postgres_data"
        );
        assert_eq!(out.doc["services"]["app"]["container_name"], "copy2-app");
        assert_eq!(out.doc["networks"]["grph_net"]["name"], "copy2-grph_net");
        assert!(
            out.doc["services"]["postgres"]
                .get("container_name")
                .is_none(),
            "{text}"
        );
        // Untouched: the image keeps its variable for compose to expand.
        assert_eq!(
            out.doc["services"]["postgres"]["image"],
            "acme/postgres:${VERSION}"
        );
    }

    #[test]
    fn refuses_what_is_not_a_compose_file() {
        assert!(ComposeFile::parse("just: text").is_err());
        assert!(ComposeFile::parse("services: [").is_err());
    }
}

#[cfg(test)]
mod bind_and_external_tests {
    use super::*;

    #[test]
    fn bind_mounts_and_external_volumes_are_listed_as_written() {
        let f = ComposeFile::parse(
            "services:\n  db:\n    image: pg\n    volumes:\n      - ./pgdata:/var/lib/postgresql/data\n      - shared:/shared\n      - /etc/localtime:/etc/localtime:ro\n  app:\n    image: app\n    volumes:\n      - type: bind\n        source: ./uploads\n        target: /srv/uploads\n      - type: volume\n        source: shared\n        target: /x\nvolumes:\n  shared:\n    external: true\n    name: vendor_shared\n  other:\n    external: true\n  own: {}\n",
        )
        .unwrap();
        let binds: Vec<(String, String, bool)> = f
            .bind_mounts()
            .into_iter()
            .map(|b| (b.service, b.source, b.read_only))
            .collect();
        assert_eq!(
            binds,
            [
                ("db".to_string(), "./pgdata".to_string(), false),
                ("db".into(), "/etc/localtime".into(), true),
                ("app".into(), "./uploads".into(), false),
            ]
        );
        assert_eq!(
            f.external_volumes(),
            [
                ("shared".to_string(), "vendor_shared".to_string()),
                ("other".into(), "other".into())
            ]
        );
        assert_eq!(f.volume_keys(), ["own"]);
    }
}
