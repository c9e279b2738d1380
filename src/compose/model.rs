//! Reading the model compose resolves (`compose config`): v2's JSON and v1's
//! YAML differ in shape (v1 prints short syntax: `src:target:mode` mounts,
//! `ip:host:target/proto` ports, IPv6 addresses without brackets), and both
//! are read here into one view. Nothing is interpolated or merged here:
//! compose has done that.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

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

/// What a mount's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named volume (the source is its key) or an anonymous one (no source).
    Volume,
    /// A host path (compose makes relative ones absolute).
    Bind,
    Tmpfs,
    /// npipe, cluster, image mounts: nothing upkeep acts on.
    Other,
}

/// One entry of a service's `volumes:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

/// A resolved compose model.
#[derive(Debug, Clone)]
pub struct Model {
    doc: Value,
}

impl Model {
    pub fn new(doc: Value) -> Result<Model> {
        if !doc.get("services").is_some_and(Value::is_mapping) {
            bail!("no `services:` section: this is not a compose file upkeep can run");
        }
        Ok(Model { doc })
    }

    /// The whole document as compose printed it.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    pub fn services(&self) -> impl Iterator<Item = (String, &Value)> {
        self.doc["services"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
    }

    /// The service as compose resolved it (health check, `depends_on`,
    /// profiles, environment …).
    pub fn service(&self, name: &str) -> Option<&Value> {
        self.doc["services"].get(name)
    }

    /// A top-level section (`volumes`, `networks`) as key → declaration.
    pub fn section(&self, name: &str) -> Option<&Mapping> {
        self.doc.get(name).and_then(Value::as_mapping)
    }

    pub fn mounts(&self, service: &str) -> Result<Vec<Mount>> {
        let Some(list) = self
            .service(service)
            .and_then(|s| s["volumes"].as_sequence())
        else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(read_mount)
            .collect::<Result<_>>()
            .with_context(|| format!("volumes of service {service}"))
    }

    /// The service's `ports:` entries, one per entry (`None` for one that
    /// publishes no fixed host port).
    pub fn ports(&self, service: &str) -> Result<Vec<Option<PublishedPort>>> {
        let Some(list) = self.service(service).and_then(|s| s["ports"].as_sequence()) else {
            return Ok(Vec::new());
        };
        list.iter()
            .enumerate()
            .map(|(index, entry)| {
                read_port(service, index, entry)
                    .with_context(|| format!("port #{} of service {service}", index + 1))
            })
            .collect()
    }
}

fn read_mount(entry: &Value) -> Result<Mount> {
    match entry {
        Value::String(short) => Ok(short_mount(short)),
        Value::Mapping(_) => {
            let kind = match entry["type"].as_str().unwrap_or("volume") {
                "volume" => MountKind::Volume,
                "bind" => MountKind::Bind,
                "tmpfs" => MountKind::Tmpfs,
                _ => MountKind::Other,
            };
            Ok(Mount {
                kind,
                source: entry["source"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                target: entry["target"]
                    .as_str()
                    .context("a mount without `target`")?
                    .to_string(),
                read_only: entry["read_only"].as_bool().unwrap_or(false),
            })
        }
        other => bail!("unsupported mount entry {other:?}"),
    }
}

/// `source:target[:mode]` or `target` (an anonymous volume).
fn short_mount(short: &str) -> Mount {
    let parts: Vec<&str> = short.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode, ..] => (Some(*source), *target, *mode),
        [] => unreachable!("split yields at least one part"),
    };
    let is_path = |s: &str| s.starts_with(['/', '.', '~']);
    Mount {
        kind: match source {
            Some(s) if is_path(s) => MountKind::Bind,
            _ => MountKind::Volume,
        },
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only: mode.split(',').any(|m| m == "ro"),
    }
}

fn read_port(service: &str, index: usize, entry: &Value) -> Result<Option<PublishedPort>> {
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
        Value::String(text) => {
            let (spec, proto) = match text.split_once('/') {
                Some((s, p)) => (s, Some(p.to_string())),
                None => (text.as_str(), None),
            };
            port.protocol = proto;
            // From the right: an IPv6 host address holds colons itself.
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
                    port.host_ip = Some(unbracket(ip).to_string());
                }
                _ => unreachable!("rsplitn(3) yields 1 to 3 parts"),
            }
        }
        Value::Mapping(_) => {
            port.target = scalar_text(&entry["target"]).context("a port without `target`")?;
            port.published = match scalar_text(&entry["published"]) {
                Some(p) => parse_host_port(&p)?,
                None => None,
            };
            port.host_ip = scalar_text(&entry["host_ip"]).map(|ip| unbracket(&ip).to_string());
            port.protocol = scalar_text(&entry["protocol"]);
        }
        other => bail!("unsupported port entry {other:?}"),
    }
    Ok(port.published.map(|_| port))
}

fn unbracket(ip: &str) -> &str {
    ip.strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip)
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

pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a declaration's `external:` is set (`true`, or v1's old
/// `external: {name: …}`).
pub(super) fn is_external(decl: &Value) -> bool {
    let v = &decl["external"];
    v.as_bool().unwrap_or(false) || v.is_mapping()
}

/// Service → image reference.
pub(super) fn images(model: &Model) -> BTreeMap<String, String> {
    model
        .services()
        .filter_map(|(name, svc)| Some((name, svc["image"].as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_short_syntax_reads_like_v2_long_syntax() {
        let v1 = "services:\n  a:\n    ports: ['::1:18081:81/udp', '127.0.0.1:18082:82/tcp', '9000', {target: 9001}, '18083:83']\n    volumes: ['db:/var/lib/postgresql/data:rw', '/srv/x:/x:ro', '/anon']\n";
        let m = Model::new(serde_yaml_ng::from_str(v1).unwrap()).unwrap();
        let ports: Vec<_> = m.ports("a").unwrap().into_iter().flatten().collect();
        assert_eq!(ports.len(), 3);
        assert_eq!(
            (
                ports[0].host_ip.as_deref(),
                ports[0].published,
                ports[0].target.as_str()
            ),
            (Some("::1"), Some(18081), "81")
        );
        assert_eq!(ports[2].index, 4);
        assert_eq!(ports[2].host_ip, None);
        let mounts = m.mounts("a").unwrap();
        assert_eq!(mounts[0].kind, MountKind::Volume);
        assert_eq!(mounts[0].source.as_deref(), Some("db"));
        assert_eq!(
            (mounts[1].kind, mounts[1].read_only),
            (MountKind::Bind, true)
        );
        assert_eq!(
            (mounts[2].kind, mounts[2].source.clone()),
            (MountKind::Volume, None)
        );
    }

    #[test]
    fn port_ranges_are_refused_with_a_reason() {
        let doc = "services:\n  a:\n    ports: ['8000-8001:8000-8001']\n";
        let m = Model::new(serde_yaml_ng::from_str(doc).unwrap()).unwrap();
        let err = format!("{:#}", m.ports("a").unwrap_err());
        assert!(err.contains("ranges"), "{err}");
    }
}
