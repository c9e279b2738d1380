//! Generating an instance's effective compose file from the vendor's: the
//! only YAML upkeep writes. It renames volumes, networks and containers and
//! remaps host ports, on the vendor document with its merge keys resolved;
//! everything else (variables, `env_file`, `extends`, profiles) is left for
//! compose to read as the vendor wrote it.
//!
//! Instances never run the vendor file with an override: compose v1 appends
//! override `ports:` to the vendor's instead of replacing them, so a copy
//! could never drop the vendor's host port. upkeep therefore writes a full
//! effective file and passes only that with `-f`; the vendor file itself is
//! never touched.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde_yaml_ng::{Mapping, Value};

use super::model::{is_external, Model, PublishedPort};

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
    /// Labels put on every service's containers and on the networks
    /// compose creates (the site's ownership labels).
    pub labels: BTreeMap<String, String>,
}

/// The effective file for `rewrite` of the vendor document `source`, which
/// compose resolved to `model`.
pub fn effective(source: &Value, model: &Model, rewrite: &InstanceRewrite) -> Result<String> {
    let mut doc = source.clone();
    rename_volumes(&mut doc, &rewrite.volume_names);
    remap_ports(&mut doc, model, &rewrite.host_ports)?;
    if let Some(prefix) = &rewrite.name_prefix {
        prefix_container_names(&mut doc, model, prefix);
        if let Some(nets) = doc.get_mut("networks").and_then(Value::as_mapping_mut) {
            for (_, net) in nets.iter_mut().filter(|(_, n)| !is_external(n)) {
                prefix_string(net, "name", prefix);
            }
        }
    }
    add_labels(&mut doc, &rewrite.labels);
    let body = serde_yaml_ng::to_string(&doc)?;
    Ok(format!("{}{body}", rewrite.header))
}

/// Adds `labels` to every service and to every network compose creates
/// (the default one included), in the list or mapping form the file uses.
fn add_labels(doc: &mut Value, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    if let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, svc) in services.iter_mut().filter(|(_, s)| s.is_mapping()) {
            merge_labels(svc, labels);
        }
    }
    let Some(root) = doc.as_mapping_mut() else {
        return;
    };
    let nets = root
        .entry(Value::String("networks".into()))
        .or_insert(Value::Null);
    if !nets.is_mapping() {
        *nets = Value::Mapping(Mapping::new());
    }
    let nets = nets.as_mapping_mut().expect("made a mapping above");
    nets.entry(Value::String("default".into()))
        .or_insert(Value::Null);
    for (_, net) in nets.iter_mut() {
        if net.is_null() {
            *net = Value::Mapping(Mapping::new());
        }
        if net.is_mapping() && !is_external(net) {
            merge_labels(net, labels);
        }
    }
}

fn merge_labels(parent: &mut Value, labels: &BTreeMap<String, String>) {
    let map = parent.as_mapping_mut().expect("checked by the caller");
    let entry = map
        .entry(Value::String("labels".into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    match entry {
        Value::Sequence(list) => {
            list.retain(|l| {
                !l.as_str()
                    .and_then(|l| l.split_once('='))
                    .is_some_and(|(k, _)| labels.contains_key(k))
            });
            list.extend(
                labels
                    .iter()
                    .map(|(k, v)| Value::String(format!("{k}={v}"))),
            );
        }
        Value::Mapping(m) => {
            for (k, v) in labels {
                m.insert(Value::String(k.clone()), Value::String(v.clone()));
            }
        }
        other => {
            *other = Value::Mapping(
                labels
                    .iter()
                    .map(|(k, v)| (Value::String(k.clone()), Value::String(v.clone())))
                    .collect(),
            );
        }
    }
}

fn rename_volumes(doc: &mut Value, names: &BTreeMap<String, String>) {
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
        // An external volume a copy owns (`--external-volume`): the old
        // `external: {name: …}` form would contradict the new `name:`.
        if entry.get("external").is_some_and(Value::is_mapping) {
            entry["external"] = Value::Bool(true);
        }
        entry["name"] = Value::String(name.clone());
    }
}

/// Replaces the host port of each remapped entry and nothing else: a
/// long-syntax entry keeps every other field (`app_protocol`, `name`,
/// `mode` …), a short one is written back from compose's reading of it.
fn remap_ports(
    doc: &mut Value,
    model: &Model,
    host_ports: &BTreeMap<(String, usize), u16>,
) -> Result<()> {
    for ((service, index), &host_port) in host_ports {
        let resolved = model.ports(service)?;
        let Some(Some(port)) = resolved.get(*index) else {
            bail!("service {service} has no published port #{}", index + 1);
        };
        let entries = doc["services"]
            .get_mut(service.as_str())
            .and_then(|s| s.get_mut("ports"))
            .and_then(Value::as_sequence_mut);
        let entries = match entries {
            Some(e) if e.len() == resolved.len() => e,
            _ => bail!(
                "service {service} publishes ports its own `ports:` list does not hold as \
                 written (inherited through `extends`, or a range): upkeep cannot give this \
                 copy its own host ports; write them in the service itself"
            ),
        };
        let entry = &mut entries[*index];
        match entry {
            Value::Mapping(m) => {
                m.insert("published".into(), Value::String(host_port.to_string()));
            }
            _ => *entry = Value::String(short_port(port, host_port)),
        }
    }
    Ok(())
}

/// `[ip]:host:target/proto`, with an IPv6 address in brackets.
fn short_port(port: &PublishedPort, host_port: u16) -> String {
    let ip = match port.host_ip.as_deref() {
        Some(ip) if ip.contains(':') => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    let proto = port
        .protocol
        .as_deref()
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    format!("{ip}{host_port}:{}{proto}", port.target)
}

/// Prefixes each service's fixed container name: the vendor's text, or
/// compose's resolved one when the name comes from an `extends` base.
fn prefix_container_names(doc: &mut Value, model: &Model, prefix: &str) {
    let Some(services) = doc.get_mut("services").and_then(Value::as_mapping_mut) else {
        return;
    };
    for (name, svc) in services.iter_mut() {
        if svc.get("container_name").is_some() {
            prefix_string(svc, "container_name", prefix);
        } else if let Some(fixed) = name
            .as_str()
            .and_then(|n| model.service(n))
            .and_then(|s| s["container_name"].as_str())
        {
            if let Some(m) = svc.as_mapping_mut() {
                m.insert("container_name".into(), format!("{prefix}-{fixed}").into());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::ComposeFile;

    const VENDOR: &str = r#"
x-db: &db
  image: "acme/postgres:v1"
  container_name: db
  ports: ["127.0.0.1:15432:5432"]
services:
  postgres:
    <<: *db
  app:
    image: acme/app:1
    container_name: app
    ports:
      - "[::1]:18080:8080"
      - "9000"
      - target: 443
        published: 18443
        protocol: tcp
        app_protocol: https
        name: web-secure
volumes:
  postgres_data:
  shared:
    external: true
networks:
  grph_net:
    name: grph_net
  outside:
    external: true
    name: outside
"#;

    fn rewritten() -> Value {
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
        rw.host_ports.insert(("postgres".into(), 0), 15433);
        let text = f.effective(&rw).unwrap();
        assert!(text.starts_with("# generated\n"));
        serde_yaml_ng::from_str(&text).unwrap()
    }

    #[test]
    fn renames_volumes_networks_and_containers_through_merge_keys() {
        let out = rewritten();
        assert_eq!(
            out["volumes"]["postgres_data"]["name"],
            "copy2_postgres_data"
        );
        assert!(out["volumes"]["shared"].get("name").is_none());
        assert_eq!(out["services"]["app"]["container_name"], "copy2-app");
        assert_eq!(out["services"]["postgres"]["container_name"], "copy2-db");
        assert!(out["services"]["postgres"].get("<<").is_none());
        assert_eq!(out["networks"]["grph_net"]["name"], "copy2-grph_net");
        assert_eq!(out["networks"]["outside"]["name"], "outside");
    }

    #[test]
    fn an_external_volume_a_copy_owns_gets_its_name_in_either_form() {
        let text = VENDOR.replace(
            "  shared:\n    external: true\n",
            "  shared:\n    external: true\n  legacy:\n    external:\n      name: acme_legacy\n",
        );
        let f = ComposeFile::parse(&text).unwrap();
        let mut rw = InstanceRewrite::default();
        rw.volume_names
            .insert("shared".into(), "copy2_shared".into());
        rw.volume_names
            .insert("legacy".into(), "copy2_legacy".into());
        let out: Value = serde_yaml_ng::from_str(&f.effective(&rw).unwrap()).unwrap();
        for key in ["shared", "legacy"] {
            assert_eq!(out["volumes"][key]["name"], format!("copy2_{key}"));
            assert_eq!(out["volumes"][key]["external"], true);
        }
    }

    #[test]
    fn port_rewrite_keeps_every_field_and_brackets_ipv6() {
        let out = rewritten();
        let app = &out["services"]["app"]["ports"];
        assert_eq!(app[0], "[::1]:18081:8080");
        assert_eq!(app[1], "9000");
        assert_eq!(app[2]["published"], "18444");
        assert_eq!(app[2]["app_protocol"], "https");
        assert_eq!(app[2]["name"], "web-secure");
        assert_eq!(app[2]["protocol"], "tcp");
        assert_eq!(
            out["services"]["postgres"]["ports"][0],
            "127.0.0.1:15433:5432"
        );
    }

    #[test]
    fn labels_go_on_services_and_created_networks_only() {
        let text = VENDOR.replace(
            "    image: acme/app:1\n",
            "    image: acme/app:1\n    labels: [\"a=b\"]\n",
        );
        let f = ComposeFile::parse(&text).unwrap();
        let rw = InstanceRewrite {
            labels: [("org.upkeep.site".to_string(), "s1".to_string())].into(),
            ..Default::default()
        };
        let out: Value = serde_yaml_ng::from_str(&f.effective(&rw).unwrap()).unwrap();
        assert_eq!(
            out["services"]["postgres"]["labels"]["org.upkeep.site"],
            "s1"
        );
        let app: Vec<&str> = out["services"]["app"]["labels"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(app, ["a=b", "org.upkeep.site=s1"]);
        assert_eq!(
            out["networks"]["grph_net"]["labels"]["org.upkeep.site"],
            "s1"
        );
        assert_eq!(
            out["networks"]["default"]["labels"]["org.upkeep.site"],
            "s1"
        );
        assert!(
            out["networks"]["outside"].get("labels").is_none(),
            "external"
        );
        assert!(out["volumes"]["postgres_data"].get("labels").is_none());
    }
}
