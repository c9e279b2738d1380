//! A volume's files as a tar stream, out of and into the engine. A helper
//! container is created (never started) with the volume mounted; the
//! engine's archive endpoint reads or writes through it. Any local image
//! serves, so nothing is pulled. Whole volumes go through a pipe instead
//! when the engine is local (`pipe.rs`), the archive endpoint otherwise.

use std::io::{self, Read};

use anyhow::{Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, MountType};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};

use super::containers::helper_mount;
use super::pipe::{Attempt, PipeSource};
use super::stream::{body_from_reader, StreamReader};
use super::Engine;

pub(super) const MOUNT: &str = "/upkeep-volume";

/// A volume's tar stream; removes its helper container when dropped.
pub struct VolumeArchive<'e> {
    engine: &'e Engine,
    container: String,
    source: Source,
}

enum Source {
    Archive(StreamReader),
    /// `volume` named for errors.
    Pipe(PipeSource, String),
}

impl Read for VolumeArchive<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Archive(stream) => stream.read(buf),
            Source::Pipe(pipe, volume) => {
                let n = pipe.read(buf)?;
                if n == 0 && !buf.is_empty() && !pipe.finished {
                    pipe.finished = true;
                    self.engine
                        .pipe_read_finished(&self.container, volume)
                        .map_err(|e| io::Error::other(format!("{e:#}")))?;
                }
                Ok(n)
            }
        }
    }
}

impl Drop for VolumeArchive<'_> {
    fn drop(&mut self) {
        self.engine.remove_container(&self.container);
    }
}

impl Engine {
    fn helper_container(&self, volume: &str, image: &str, read_only: bool) -> Result<String> {
        self.helper_container_on(volume, MountType::VOLUME, image, read_only)
    }

    /// A helper container with `source` (a volume name, or a host folder
    /// for `MountType::BIND`) mounted at [`MOUNT`].
    fn helper_container_on(
        &self,
        source: &str,
        typ: MountType,
        image: &str,
        read_only: bool,
    ) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            // Never started; an entrypoint is still required by some images.
            cmd: Some(vec!["true".into()]),
            labels: Some(self.owned_labels([("org.upkeep.helper", source)])),
            host_config: Some(HostConfig {
                mounts: Some(vec![helper_mount(source, MOUNT, typ, read_only)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .block_on(self.api.create_container(None, body))
            .with_context(|| {
                format!("creating a helper container for {source} from image {image}")
            })?;
        Ok(created.id)
    }

    pub(super) fn remove_container(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            // its anonymous volumes (an image's VOLUME), never named ones
            .v(true)
            .build();
        if let Err(e) = self.block_on(self.api.remove_container(id, Some(opts))) {
            tracing::warn!("could not remove helper container {id}: {e}");
        }
    }

    /// Streams the content of `volume` as a tar (entries rooted at `./`).
    pub fn read_volume(&self, volume: &str, image: &str) -> Result<VolumeArchive<'_>> {
        match self.pipe_read(volume, image)? {
            Attempt::Piped((container, pipe)) => {
                tracing::debug!("reading volume {volume} through a pipe");
                Ok(VolumeArchive {
                    engine: self,
                    container,
                    source: Source::Pipe(pipe, volume.to_string()),
                })
            }
            Attempt::Unavailable(why, ()) => {
                tracing::debug!("reading volume {volume} through the archive endpoint: {why}");
                self.read_volume_path(volume, image, ".")
            }
        }
    }

    /// Streams `path` (relative to the volume's root) as a tar.
    pub fn read_volume_path(
        &self,
        volume: &str,
        image: &str,
        path: &str,
    ) -> Result<VolumeArchive<'_>> {
        let container = self.helper_container(volume, image, true)?;
        self.download(container, path)
    }

    /// Streams `path` (relative to host folder `dir`) as a tar whose entries
    /// start with its last component, read through the engine: files only
    /// a container's user may read (a Postgres data folder) are read too.
    pub fn read_host_path(
        &self,
        dir: &std::path::Path,
        path: &str,
        image: &str,
    ) -> Result<VolumeArchive<'_>> {
        let source = dir.to_string_lossy();
        let container = self.helper_container_on(&source, MountType::BIND, image, true)?;
        self.download(container, path)
    }

    /// Unpacks a tar stream (from [`Engine::read_host_path`]) into folder
    /// `parent` of host folder `dir`, through the engine: owners, modes and
    /// times as the tar holds them.
    pub fn write_host_path<R: Read + Send + 'static>(
        &self,
        dir: &std::path::Path,
        parent: &str,
        image: &str,
        tar: R,
    ) -> Result<()> {
        let source = dir.to_string_lossy();
        let container = self.helper_container_on(&source, MountType::BIND, image, false)?;
        self.upload(container, &format!("{MOUNT}/{parent}"), tar)
            .with_context(|| format!("writing into {}/{parent}", dir.display()))
    }

    fn download(&self, container: String, path: &str) -> Result<VolumeArchive<'_>> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(&format!("{MOUNT}/{path}"))
            .build();
        let stream = self.api.download_from_container(&container, Some(opts));
        Ok(VolumeArchive {
            engine: self,
            source: Source::Archive(StreamReader::new(
                self.rt.handle().clone(),
                Box::pin(stream),
            )),
            container,
        })
    }

    /// Unpacks a tar stream into `volume`, keeping owners, modes and times.
    pub fn write_volume<R: Read + Send + 'static>(
        &self,
        volume: &str,
        image: &str,
        tar: R,
    ) -> Result<()> {
        let piped = self
            .pipe_write(volume, image, tar)
            .with_context(|| format!("writing into volume {volume}"))?;
        let tar = match piped {
            Attempt::Piped(()) => {
                tracing::debug!("wrote volume {volume} through a pipe");
                return Ok(());
            }
            Attempt::Unavailable(why, tar) => {
                tracing::debug!("writing volume {volume} through the archive endpoint: {why}");
                tar
            }
        };
        let container = self.helper_container(volume, image, false)?;
        self.upload(container, MOUNT, tar)
            .with_context(|| format!("writing into volume {volume}"))
    }

    /// Unpacks a tar stream into existing folder `sub` of `volume`.
    pub fn write_volume_at<R: Read + Send + 'static>(
        &self,
        volume: &str,
        sub: &str,
        image: &str,
        tar: R,
    ) -> Result<()> {
        let container = self.helper_container(volume, image, false)?;
        self.upload(container, &format!("{MOUNT}/{sub}"), tar)
            .with_context(|| format!("writing into {sub} of volume {volume}"))
    }

    /// Unpacks `tar` at `path` of the helper `container`, then removes it.
    fn upload<R: Read + Send + 'static>(
        &self,
        container: String,
        path: &str,
        tar: R,
    ) -> Result<()> {
        let opts = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        let body = bollard::body_try_stream(body_from_reader(tar));
        let result = self
            .block_on(self.api.upload_to_container(&container, Some(opts), body))
            .map_err(anyhow::Error::from);
        self.remove_container(&container);
        result
    }
}
