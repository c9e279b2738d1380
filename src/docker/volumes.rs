//! Named volumes, created with compose's labels so compose adopts them
//! without the "already exists but was not created by Docker Compose" warning.

use std::collections::HashMap;

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

    /// Disk usage in bytes of each of `volumes`, by `du` in one helper of
    /// `image` that mounts them read-only. Only these volumes are walked:
    /// the engine's own figure (`/system/df`) walks every volume, layer and
    /// container on the host (5 s on a near-empty test engine, minutes on a
    /// big one) and refuses a second caller while one runs.
    pub fn volume_usage(&self, volumes: &[&str], image: &str) -> Result<HashMap<String, u64>> {
        if volumes.is_empty() {
            return Ok(HashMap::new());
        }
        let targets: Vec<String> = (0..volumes.len()).map(|i| format!("/v/{i}")).collect();
        let mounts: Vec<(&str, &str, bool)> = volumes
            .iter()
            .zip(&targets)
            .map(|(v, t)| (*v, t.as_str(), true))
            .collect();
        let mut cmd = vec!["du", "-sk"];
        cmd.extend(targets.iter().map(String::as_str));
        let (code, out) = self.run_with_volumes(image, &cmd, &mounts)?;
        if code != 0 {
            bail!("`du` in {image} failed (exit {code}): {}", out.trim());
        }
        parse_du(&out, volumes)
    }
}

/// As root in a helper, the volume at /v read-only: `recent` when a path's
/// ctime is within 2 s of now (the kernel's coarse clock could give a
/// change right after the listing the same ctime), else the SHA-256 of
/// the volume's name and every path's type, size, mtime, ctime, inode,
/// link count, owner, mode and link target. ctime moves on every write,
/// chmod, chown, rename or xattr change, and nobody can set it back.
const LISTING: &str = r#"cd /v || exit 1
cutoff=$(( $(date +%s) - 2 ))
if [ -n "$(find . -newerct "@$cutoff" -print -quit)" ]; then echo recent; exit 0; fi
{ printf '%s\0' "$1"; find . -printf '%P\0%y %s %T@ %C@ %i %n %U %G %m %l\0'; } | sha256sum
"#;

impl Engine {
    /// The digest of `volume`'s listing ([`LISTING`]), read by GNU find in
    /// a helper of `image`: equal digests mean no path of the volume was
    /// written, added, removed or changed in between. `None` when a path
    /// changed in the last seconds.
    pub fn volume_listing(&self, volume: &str, image: &str) -> Result<Option<String>> {
        let (code, out) = self.run_with_volumes(
            image,
            &["sh", "-c", LISTING, "sh", volume],
            &[(volume, "/v", true)],
        )?;
        if code != 0 {
            bail!(
                "listing volume {volume} in {image} failed (exit {code}): {}",
                out.trim()
            );
        }
        parse_listing(&out)
    }
}

/// [`LISTING`]'s answer.
fn parse_listing(out: &str) -> Result<Option<String>> {
    let out = out.trim();
    if out == "recent" {
        return Ok(None);
    }
    match out.split_whitespace().collect::<Vec<_>>().as_slice() {
        [hash, "-"] if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(hash.to_string()))
        }
        _ => bail!("unexpected listing output: {out}"),
    }
}

/// `du -sk /v/0 /v/1 …` output as bytes per volume, or why it is not that.
fn parse_du(out: &str, volumes: &[&str]) -> Result<HashMap<String, u64>> {
    let mut sizes = HashMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line
            .split_once(char::is_whitespace)
            .and_then(|(kib, path)| {
                let i: usize = path.trim().strip_prefix("/v/")?.parse().ok()?;
                Some((kib.parse::<u64>().ok()?, volumes.get(i)?))
            });
        let (kib, volume) = parsed.with_context(|| format!("unexpected `du` output: {line}"))?;
        sizes.insert(volume.to_string(), kib * 1024);
    }
    if sizes.len() != volumes.len() {
        bail!(
            "`du` measured {} of {} volumes: {}",
            sizes.len(),
            volumes.len(),
            out.trim()
        );
    }
    Ok(sizes)
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_listing_is_a_digest_or_recent() {
        let h = "a".repeat(64);
        assert_eq!(super::parse_listing(&format!("{h}  -\n")).unwrap(), Some(h));
        assert_eq!(super::parse_listing("recent\n").unwrap(), None);
        for bad in [
            "",
            "sh: find: not found",
            "abc  -",
            &format!("{}  -", "g".repeat(64)),
        ] {
            assert!(super::parse_listing(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn du_output_is_read_per_volume() {
        let vols = ["a_data", "b_uploads"];
        let sizes = super::parse_du("46892\t/v/0\n8\t/v/1\n", &vols).unwrap();
        assert_eq!(sizes["a_data"], 46_892 * 1024);
        assert_eq!(sizes["b_uploads"], 8 * 1024);
        assert!(
            super::parse_du("46892\t/v/0\n", &vols).is_err(),
            "one missing"
        );
        assert!(super::parse_du("du: not found\n", &vols).is_err());
        assert!(
            super::parse_du("12\t/v/7\n4\t/v/0\n", &vols).is_err(),
            "no such index"
        );
    }
}
