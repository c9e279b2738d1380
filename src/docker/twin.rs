//! Twins: a stand-in for a created (never started) container of a compose
//! project, run with another command line on the same image, environment,
//! user and mounts, then removed. A restore (and a dump upgrade) loads
//! Postgres through a twin started with bulk-load settings, so the compose container itself, started
//! afterwards, runs exactly as the vendor configured it.
//!
//! A twin and the container it stands in for share data folders: two
//! servers on one Postgres data folder corrupt it. So every twin carries its
//! project's name in a label, and whatever starts a project's containers
//! removes that project's twins first ([`Engine::remove_twins`]), also those
//! a killed run left behind.

use anyhow::{Context, Result};
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

use super::containers::ContainerInfo;
use super::Engine;

const TWIN_OF: &str = "org.upkeep.twin-of";

impl Engine {
    /// The command line a container runs (its image's when it sets none).
    pub fn container_cmd(&self, id: &str) -> Result<Vec<String>> {
        let inspect = self
            .block_on(self.api.inspect_container(id, None))
            .with_context(|| format!("inspecting container {id}"))?;
        Ok(inspect.config.and_then(|c| c.cmd).unwrap_or_default())
    }

    /// Creates and starts a twin of container `original` of compose project
    /// `project`, running `cmd`: same image, entrypoint, environment, user,
    /// working folder and mounts; no health check, no network (local sockets and
    /// loopback still work), no published ports, no restart policy. Named
    /// `<original>-upkeep-twin`; a stale one of that name is removed first.
    pub fn start_twin(
        &self,
        original: &ContainerInfo,
        project: &str,
        cmd: Vec<String>,
    ) -> Result<ContainerInfo> {
        let inspect = self
            .block_on(self.api.inspect_container(&original.id, None))
            .with_context(|| format!("inspecting container {}", original.name))?;
        let config = inspect.config.unwrap_or_default();
        let host = inspect.host_config.unwrap_or_default();
        let name = format!("{}-upkeep-twin", original.name);
        self.remove_twin(&name)?;
        let body = ContainerCreateBody {
            image: config.image,
            entrypoint: config.entrypoint,
            cmd: Some(cmd),
            env: config.env,
            user: config.user,
            working_dir: config.working_dir,
            // Docker's health check every `interval` would be an exec (a runc
            // process) beside the load each time; start-up is probed instead.
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            stop_signal: config.stop_signal,
            stop_timeout: config.stop_timeout,
            labels: Some(self.owned_labels([(TWIN_OF, project)])),
            host_config: Some(HostConfig {
                binds: host.binds,
                mounts: host.mounts,
                tmpfs: host.tmpfs,
                shm_size: host.shm_size,
                ulimits: host.ulimits,
                cap_add: host.cap_add,
                cap_drop: host.cap_drop,
                security_opt: host.security_opt,
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .block_on(self.api.create_container(Some(opts), body))
            .with_context(|| format!("creating {name}, a twin of {}", original.name))?;
        let twin = self.container_info(&created.id)?;
        if let Err(e) = self.start_container(&twin.id) {
            self.remove_twin(&twin.id)?;
            return Err(e);
        }
        Ok(twin)
    }

    /// Stops a twin (its own stop signal and grace period: a server shuts
    /// down cleanly) and removes it with its anonymous volumes; a twin that
    /// is already gone is not an error.
    pub fn remove_twin(&self, id: &str) -> Result<()> {
        match self.block_on(self.api.stop_container(id, None)) {
            Ok(()) => {}
            Err(e) if super::is_not_found(&e) => return Ok(()),
            // 304: not running
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("stopping container {id}")),
        }
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.block_on(self.api.remove_container(id, Some(opts))) {
            Ok(()) => Ok(()),
            Err(e) if super::is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing container {id}")),
        }
    }

    /// A running twin of one of `project`'s containers, if there is one.
    pub fn running_twin(&self, project: &str) -> Result<Option<ContainerInfo>> {
        for c in self.own_twins(project)? {
            let info = self.container_info(&c.id.unwrap_or_default())?;
            if info.state == "running" {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// Removes every twin of `project`'s containers, running or not.
    pub fn remove_twins(&self, project: &str) -> Result<()> {
        for c in self.own_twins(project)? {
            let id = c.id.unwrap_or_default();
            tracing::warn!(
                "removing {}, a stand-in container of {project} left by an interrupted run",
                c.names.unwrap_or_default().join(", ")
            );
            self.remove_twin(&id)?;
        }
        Ok(())
    }

    /// The twins of `project` that this site made: another site's project of
    /// the same name has its own (one made before sites had ids has no label
    /// and counts as this site's).
    fn own_twins(&self, project: &str) -> Result<Vec<bollard::models::ContainerSummary>> {
        let ours = self
            .owner_labels
            .get()
            .and_then(|l| l.get(crate::ownership::SITE_LABEL));
        Ok(self
            .containers_labelled(&format!("{TWIN_OF}={project}"))?
            .into_iter()
            .filter(|c| {
                let site = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::ownership::SITE_LABEL));
                site.is_none() || site == ours
            })
            .collect())
    }
}
