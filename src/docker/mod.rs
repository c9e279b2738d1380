//! The Docker Engine, through its API (bollard) behind a blocking facade.
//! Volumes are created, read and written through the engine, never through
//! `/var/lib/docker`, so remote, rootless and any storage driver work.

mod containers;
mod exec;
mod images;
mod stream;
mod twin;
mod volume_data;
mod volumes;

pub use containers::{ComposeContainer, ContainerInfo};
pub use exec::{ExecOutput, ExecReader, ExecSession, ExecSpec};
pub use stream::StreamReader;
pub use volume_data::VolumeArchive;
pub use volumes::VolumeInfo;

use std::collections::HashMap;
use std::future::Future;

use anyhow::{Context, Result};
use bollard::Docker;
use tokio::runtime::Runtime;

/// A connected engine. Cheap to share by reference; owns a small runtime.
pub struct Engine {
    rt: Runtime,
    api: Docker,
    pub server_version: String,
    pub api_version: String,
    /// The labels of the site this engine works for: every container and
    /// volume upkeep creates through the API carries them.
    owner_labels: std::sync::OnceLock<HashMap<String, String>>,
}

impl Engine {
    /// Connects as the docker CLI would (`DOCKER_HOST` or the local socket)
    /// and settles on the API version the daemon speaks.
    pub fn connect() -> Result<Engine> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = || {
            format!(
                "cannot reach the Docker Engine at {host}: is the daemon running, and may this \
                 user use it (docker group or root)? `docker version` should work first"
            )
        };
        let api = Docker::connect_with_defaults().with_context(unreachable)?;
        let api = rt
            .block_on(api.negotiate_version())
            .with_context(unreachable)?;
        let version = rt.block_on(api.version()).with_context(unreachable)?;
        Ok(Engine {
            rt,
            api,
            server_version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            owner_labels: std::sync::OnceLock::new(),
        })
    }

    /// Sets the site's ownership labels (once, when a command starts).
    pub fn set_owner_labels(&self, labels: HashMap<String, String>) {
        let _ = self.owner_labels.set(labels);
    }

    /// The site's ownership labels plus `extra`, for something upkeep creates.
    fn owned_labels<const N: usize>(&self, extra: [(&str, &str); N]) -> HashMap<String, String> {
        let mut labels = self.owner_labels.get().cloned().unwrap_or_default();
        labels.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Docker's data root (`/var/lib/docker`), where images and volumes live.
    pub fn data_root(&self) -> Result<String> {
        let info = self
            .block_on(self.api.info())
            .context("asking the engine for its info")?;
        Ok(info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into()))
    }
}

/// True when the engine answered 404 (no such object).
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
