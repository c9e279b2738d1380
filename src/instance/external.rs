//! External volumes (`external: true`): the vendor's installer creates them
//! and compose never does. The first instance of a site that uses one gets
//! it under the vendor's name, as plain compose would; any further copy
//! would share its data, so it is refused unless the administrator gives
//! the copy volumes of its own (`--external-volume KEY=NAME`). Those are
//! the copy's own volumes from then on, kept in its record like any other.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use crate::compose::ComposeFile;
use crate::site::Site;

use super::{list, vendor_compose, InstanceRecord};

/// `--external-volume KEY=NAME` choices: volume key → Docker volume name.
pub type ExternalVolumes = BTreeMap<String, String>;

/// Parses one `KEY=NAME` of `--external-volume`.
pub fn parse_mapping(text: &str) -> Result<(String, String), String> {
    let (key, name) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=NAME (the volume's key in the compose file = the Docker volume name), got {text:?}"))?;
    if key.is_empty() {
        return Err(format!("no volume key before '=' in {text:?}"));
    }
    check_volume_name(name).map_err(|e| e.to_string())?;
    Ok((key.to_string(), name.to_string()))
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_volume_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok =
        name.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !(first_ok && rest_ok) {
        bail!(
            "{name:?} is not a Docker volume name: two or more letters, digits, '_', '.' or '-', \
             starting with a letter or digit"
        );
    }
    Ok(())
}

/// Applies `chosen` to the volumes of a new record `name` of a release whose
/// vendor file is `compose`: chosen names join `volumes`; the vendor's own
/// name, given or not, means using the vendor's volume, which is refused
/// when another instance of `site` already uses it.
pub(super) fn assign(
    site: &Site,
    compose: &ComposeFile,
    name: &str,
    chosen: &ExternalVolumes,
    volumes: &mut BTreeMap<String, String>,
) -> Result<()> {
    let external = compose.external_volumes();
    check_keys(chosen, &external)?;
    let in_use = used_by_others(site, name)?;
    let mut shared = Vec::new();
    for (key, vendor_name) in external {
        match chosen.get(&key) {
            Some(own) if own != &vendor_name => {
                volumes.insert(key, own.clone());
            }
            _ if in_use.contains(&vendor_name) => shared.push((key, vendor_name)),
            _ => {}
        }
    }
    if shared.is_empty() {
        return Ok(());
    }
    let (listed, flags) = own_volume_advice(name, &shared);
    bail!(
        "the release uses external volumes that another instance of this site already uses \
         ({listed}): a second copy would share their data with it. Give {name} volumes of its \
         own with {flags} (upkeep creates them; they are {name}'s, like its other volumes)"
    )
}

/// For a refusal of volumes (key → Docker name) that `instance` would
/// share: the list `key → name, …` and the flags that give it its own,
/// `--external-volume key=<instance>_key …`.
pub fn own_volume_advice(instance: &str, shared: &[(String, String)]) -> (String, String) {
    let listed: Vec<String> = shared.iter().map(|(k, v)| format!("{k} → {v}")).collect();
    let flags: Vec<String> = shared
        .iter()
        .map(|(k, _)| format!("--external-volume {k}={instance}_{k}"))
        .collect();
    (listed.join(", "), flags.join(" "))
}

/// An existing record must agree with what `--external-volume` asks.
pub(super) fn check_existing(
    compose: &ComposeFile,
    rec: &InstanceRecord,
    chosen: &ExternalVolumes,
) -> Result<()> {
    let external = compose.external_volumes();
    check_keys(chosen, &external)?;
    for (key, vendor_name) in external {
        let Some(asked) = chosen.get(&key) else {
            continue;
        };
        let uses = rec.volumes.get(&key).unwrap_or(&vendor_name);
        if uses != asked {
            bail!(
                "instance {} already uses volume {uses} for {key}, not {asked}; a volume of an \
                 existing instance is not changed by --external-volume",
                rec.name
            );
        }
    }
    Ok(())
}

fn check_keys(chosen: &ExternalVolumes, external: &[(String, String)]) -> Result<()> {
    for key in chosen.keys() {
        if !external.iter().any(|(k, _)| k == key) {
            let known: Vec<&str> = external.iter().map(|(k, _)| k.as_str()).collect();
            bail!(
                "--external-volume {key}=…: the release has no external volume {key} (its external \
                 volumes: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    Ok(())
}

/// Docker names of the external volumes that the site's other instances
/// use: the vendor's, or the one recorded (an adopted install records the
/// volumes its containers mount, the vendor's among them).
fn used_by_others(site: &Site, name: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for rec in list(site)?.into_iter().filter(|r| r.name != name) {
        let Ok(compose) = vendor_compose(&site.release_dir(&rec.release)) else {
            continue;
        };
        for (key, vendor_name) in compose.external_volumes() {
            out.insert(rec.volumes.get(&key).cloned().unwrap_or(vendor_name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_key_equals_a_docker_volume_name() {
        assert_eq!(
            parse_mapping("pgdata=copy2_pgdata").unwrap(),
            ("pgdata".into(), "copy2_pgdata".into())
        );
        assert!(parse_mapping("pgdata").unwrap_err().contains("KEY=NAME"));
        assert!(parse_mapping("=x1").is_err());
        assert!(parse_mapping("pg=../etc")
            .unwrap_err()
            .contains("not a Docker volume name"));
        assert!(parse_mapping("pg=a").is_err());
        assert!(parse_mapping("pg=_a").is_err());
    }
}
