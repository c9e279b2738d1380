//! Named volumes, created with compose's labels so compose adopts them
//! without the "already exists but was not created by Docker Compose" warning.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{bail, Context, Result};
use bollard::models::VolumeCreateRequest;
use serde::Serialize;

use super::{is_not_found, Engine};

#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: HashMap<String, String>,
}

impl Engine {
    pub fn volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        match self.block_on(self.api.inspect_volume(name)) {
            Ok(v) => Ok(Some(VolumeInfo {
                name: v.name,
                labels: v.labels,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting volume {name}")),
        }
    }

    /// Creates volume `name` as compose would for `project`/`key`; an
    /// existing volume is kept as it is (its data is never touched).
    pub fn ensure_compose_volume(
        &self,
        name: &str,
        project: &str,
        key: &str,
        compose_version: &str,
    ) -> Result<VolumeInfo> {
        if let Some(existing) = self.volume(name)? {
            let owner = existing.labels.get("com.docker.compose.project");
            if owner.is_some_and(|p| p != project) {
                bail!(
                    "volume {name} belongs to compose project {} but instance {project} wants it; \
                     refusing to share data between instances",
                    owner.map(String::as_str).unwrap_or("?")
                );
            }
            return Ok(existing);
        }
        self.create_volume(
            name,
            self.owned_labels([
                ("com.docker.compose.project", project),
                ("com.docker.compose.volume", key),
                ("com.docker.compose.version", compose_version),
                (crate::ownership::INSTANCE_LABEL, project),
            ]),
        )
    }

    fn create_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<VolumeInfo> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        self.block_on(self.api.create_volume(req))
            .with_context(|| format!("creating volume {name}"))?;
        Ok(VolumeInfo {
            name: name.to_string(),
            labels,
        })
    }

    /// Creates a scratch volume of instance `instance` (site labels, no
    /// compose labels: compose never sees it); an existing one is kept
    /// when it carries exactly those labels (this site's, this instance's),
    /// refused otherwise: an instance of another site may have the name.
    pub fn ensure_helper_volume(&self, name: &str, instance: &str) -> Result<VolumeInfo> {
        let labels = self.owned_labels([
            (crate::ownership::INSTANCE_LABEL, instance),
            ("org.upkeep.helper", "scratch"),
        ]);
        if let Some(existing) = self.volume(name)? {
            if labels
                .iter()
                .any(|(k, v)| existing.labels.get(k) != Some(v))
            {
                bail!("volume {name} exists and is not a scratch volume of instance {instance} of this site: refusing to write into it or remove it");
            }
            return Ok(existing);
        }
        self.create_volume(name, labels)
    }

    /// Disk usage per volume name in bytes (approximate: docker rounds).
    pub fn volume_bytes(&self) -> HashMap<String, u64> {
        self.volume_sizes()
            .into_iter()
            .filter_map(|(name, size)| parse_size(&size).map(|b| (name, b)))
            .collect()
    }

    /// Disk usage per volume name. The typed API client follows the newest
    /// `/system/df` schema, which older engines (API 1.41) do not send, so
    /// this asks the docker CLI, which speaks every version.
    pub fn volume_sizes(&self) -> HashMap<String, String> {
        let out = Command::new("docker")
            .args(["system", "df", "-v", "--format", "{{json .Volumes}}"])
            .output();
        let Ok(out) = out else {
            return HashMap::new();
        };
        #[derive(serde::Deserialize)]
        struct Row {
            #[serde(rename = "Name")]
            name: String,
            #[serde(rename = "Size")]
            size: String,
        }
        let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows.into_iter().map(|r| (r.name, r.size)).collect()
    }
}

impl Engine {
    /// Removes a volume and its data. Only for volumes upkeep itself
    /// created in a run that is being undone, or that the user asked to replace.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        match self.block_on(
            self.api
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>),
        ) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing volume {name}")),
        }
    }
}

/// Parses docker's human sizes (`0B`, `512kB`, `47.25MB`, `1.2GB`: decimal units).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "b" => 1e0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_sizes_parse() {
        assert_eq!(super::parse_size("0B"), Some(0));
        assert_eq!(super::parse_size("512kB"), Some(512_000));
        assert_eq!(super::parse_size("47.25MB"), Some(47_250_000));
        assert_eq!(super::parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(super::parse_size("N/A"), None);
    }
}
