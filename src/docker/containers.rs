//! Containers of a compose project, found by compose's labels (container
//! names differ between compose v1 `p_s_1` and v2 `p-s-1`).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::ListContainersOptionsBuilder;
use serde::Serialize;

use super::Engine;

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub service: String,
    pub image: String,
    /// Engine state: running, exited, created, restarting…
    pub state: String,
    /// Health check status when the service has one: starting, healthy, unhealthy.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
}

impl ContainerInfo {
    /// Running, and healthy if it has a health check.
    pub fn is_ready(&self) -> bool {
        self.state == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }
}

impl Engine {
    /// All containers (running or not) of compose project `project`.
    pub fn project_containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        let label = format!("com.docker.compose.project={project}");
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .block_on(self.api.list_containers(Some(opts)))
            .with_context(|| format!("listing containers of {project}"))?;
        let mut out = Vec::new();
        for c in list {
            let id = c.id.unwrap_or_default();
            let inspect = self
                .block_on(self.api.inspect_container(&id, None))
                .with_context(|| format!("inspecting container {id}"))?;
            let state = inspect.state.unwrap_or_default();
            let labels = c.labels.unwrap_or_default();
            out.push(ContainerInfo {
                name: inspect
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                service: labels
                    .get("com.docker.compose.service")
                    .cloned()
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                state: state.status.map(|s| s.to_string()).unwrap_or_default(),
                health: state
                    .health
                    .and_then(|h| h.status)
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty() && s != "none"),
                exit_code: state.exit_code,
                id,
            });
        }
        out.sort_by(|a, b| a.service.cmp(&b.service).then(a.name.cmp(&b.name)));
        Ok(out)
    }
}

impl Engine {
    /// The environment of a container, as `NAME → value`.
    pub fn container_env(&self, container: &str) -> Result<HashMap<String, String>> {
        let inspect = self
            .block_on(self.api.inspect_container(container, None))
            .with_context(|| format!("inspecting container {container}"))?;
        let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
        Ok(env
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// Runs `cmd` once in a fresh container of `image` (entrypoint
    /// replaced, no network) and returns what it printed.
    pub fn run_once(&self, image: &str, cmd: &[&str]) -> Result<String> {
        Ok(self.run_with_volumes(image, cmd, &[])?.1)
    }

    /// Runs `cmd` once in a fresh container of `image` with `mounts`
    /// (volume, path, read-only) attached; returns its exit code and output.
    pub fn run_with_volumes(
        &self,
        image: &str,
        cmd: &[&str],
        mounts: &[(&str, &str, bool)],
    ) -> Result<(i64, String)> {
        use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
        use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptions};
        use futures_util::StreamExt;
        let mounts = mounts
            .iter()
            .map(|(volume, target, read_only)| Mount {
                source: Some(volume.to_string()),
                target: Some(target.to_string()),
                typ: Some(MountType::VOLUME),
                read_only: Some(*read_only),
                ..Default::default()
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(cmd.iter().map(|s| s.to_string()).collect()),
            cmd: Some(Vec::new()),
            network_disabled: Some(true),
            labels: Some([("org.upkeep.helper".to_string(), "run".to_string())].into()),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .block_on(self.api.create_container(None, body))
            .with_context(|| format!("creating a container from {image}"))?
            .id;
        let result = self.block_on(async {
            self.api.start_container(&id, None).await?;
            let mut wait = self.api.wait_container(&id, None::<WaitContainerOptions>);
            let mut code = -1;
            while let Some(item) = wait.next().await {
                match item {
                    Ok(r) => code = r.status_code,
                    // A non-zero exit arrives as this error.
                    Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                        code = c
                    }
                    Err(e) => return Err(e),
                }
            }
            let opts = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            let mut logs = self.api.logs(&id, Some(opts));
            let mut text = String::new();
            while let Some(line) = logs.next().await {
                text.push_str(&line?.to_string());
            }
            Ok::<_, bollard::errors::Error>((code, text))
        });
        self.remove_container(&id);
        result.with_context(|| format!("running `{}` in {image}", cmd.join(" ")))
    }

    /// Copies every file of volume `from` into volume `to` inside one helper
    /// container (`cp -a`: owners, modes, times, links), so the data never
    /// leaves the engine. Needs `cp` in `image`.
    pub fn copy_volume(&self, from: &str, to: &str, image: &str) -> Result<()> {
        let mounts = [(from, "/upkeep-from", true), (to, "/upkeep-to", false)];
        let (code, out) = self.run_with_volumes(
            image,
            &["cp", "-a", "/upkeep-from/.", "/upkeep-to/"],
            &mounts,
        )?;
        if code != 0 {
            anyhow::bail!(
                "copying volume {from} to {to} with cp in {image} failed (exit {code}): {}",
                out.trim()
            );
        }
        Ok(())
    }
}
