//! The Docker Engine, through its API (bollard) behind a blocking facade.
//! Volumes are created, read and written through the engine, never through
//! `/var/lib/docker`, so remote, rootless and any storage driver work
//! (mounted by the engine into helpers; whole volumes stream through a
//! FIFO when the engine is local, see `pipe.rs`).

mod containers;
mod exec;
mod images;
mod pipe;
mod stream;
mod twin;
mod volume_data;
mod volumes;

pub use containers::{ComposeContainer, ContainerInfo};
pub use exec::{ExecOutput, ExecReader, ExecSession, ExecSpec};
pub use pipe::VolumeTransport;
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
    volume_transport: VolumeTransport,
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
            volume_transport: VolumeTransport::from_env()?,
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

/// True when somewhere in `e`'s chain of causes the engine answered 404:
/// a path missing from a volume, read through [`Engine::read_volume_path`]
/// (the answer comes as an I/O error of the stream, possibly inside tar's).
pub fn is_missing_path(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<bollard::errors::Error>()
            .is_some_and(is_not_found)
        {
            return true;
        }
        // an io::Error's source() skips the error it wraps
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => c.source(),
        };
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status_code: u16) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: "Could not find the file /v/postgresql.conf in container x".into(),
        }
    }

    /// A reader that fails as the engine's archive stream does.
    struct Failing(u16);
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other(answer(self.0)))
        }
    }

    fn first_entry_error(status: u16) -> std::io::Error {
        let mut tar = tar::Archive::new(Failing(status));
        let mut entries = tar.entries().unwrap();
        match entries.next() {
            Some(Err(e)) => e,
            _ => panic!("a failing stream gave an entry"),
        }
    }

    #[test]
    fn a_404_is_found_through_the_stream_and_tar_wrappers() {
        assert!(is_missing_path(&std::io::Error::other(answer(404))));
        assert!(is_missing_path(&first_entry_error(404)));
    }

    #[test]
    fn other_failures_are_not_a_missing_path() {
        assert!(!is_missing_path(&std::io::Error::other(answer(500))));
        assert!(!is_missing_path(&first_entry_error(500)));
        assert!(!is_missing_path(&std::io::Error::other("connection reset")));
        let truncated = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!is_missing_path(&truncated));
    }
}
