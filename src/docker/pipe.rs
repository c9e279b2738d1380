//! A whole volume's tar stream through a FIFO instead of the engine's
//! archive endpoint, when the engine runs on this machine.
//!
//! A helper container with the volume mounted runs the image's own GNU tar
//! on a FIFO in a private folder of ours, bind-mounted read-only, so the
//! bytes go from tar to upkeep through the kernel. The archive endpoint
//! carries them through the engine's own process: 600 MiB took 1.7 s that
//! way against 0.34 s for tar on the folder (`bench/archive-cost.sh`), and
//! that CPU was the critical path of a first backup with `pg_dump` beside
//! it. The volume is still mounted by the engine, so volume drivers and
//! rootless engines work as before.
//!
//! Whatever keeps the pipe from working before its first byte (a remote
//! engine, an image without GNU tar, or without `sh` to write, a folder the
//! engine cannot see, a user-namespaced helper that may not open it) falls
//! back to the archive endpoint. The streams agree: entries rooted at `./`, numeric owners,
//! whole-second times, `security.capability` the only extended attribute
//! (what the engine's archive keeps). `UPKEEP_VOLUME_TRANSPORT=archive`
//! turns the pipe off; `pipe` forbids the fallback (tests).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::models::MountType;

use super::containers::helper_mount;
use super::volume_data::MOUNT;
use super::Engine;

const IO_DIR: &str = "/upkeep-io";
const FIFO: &str = "/upkeep-io/pipe";
/// How long a started helper may take to open its end of the FIFO.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
const POLL_STEP: Duration = Duration::from_millis(50);

/// GNU tar's options shared by both directions: the archive endpoint's
/// stream, as tar writes and reads it.
const TAR_COMMON: [&str; 5] = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=security.capability",
    "--file",
    FIFO,
];

/// Runs `"$@"` (tar unpacking into the volume) and flushes the volume's
/// file system every half second meanwhile, then once more: what a restore
/// wrote is on disk when it says it is done, and the flush overlaps the
/// write, which waits on upkeep's decryption anyway, instead of following
/// it (Postgres also syncs its whole data folder when it starts after a
/// physical restore: 0.7 s for 1.4 GiB here, left to the end otherwise).
/// `sync -f` is syncfs(2); plain `sync` where it is missing.
const FLUSHING: &str = r#"flush() { sync -f /upkeep-volume 2>/dev/null || sync; }
( while sleep 0.5; do flush; done ) &
"$@"; status=$?
kill $! 2>/dev/null
[ "$status" -ne 0 ] || flush
exit "$status""#;

/// How whole-volume streams travel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VolumeTransport {
    /// The pipe when it works, else the archive endpoint.
    Auto,
    Archive,
    /// The pipe or an error.
    Pipe,
}

impl VolumeTransport {
    /// From `UPKEEP_VOLUME_TRANSPORT` (`auto` when unset).
    pub fn from_env() -> Result<VolumeTransport> {
        match std::env::var("UPKEEP_VOLUME_TRANSPORT").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(VolumeTransport::Auto),
            Ok("archive") => Ok(VolumeTransport::Archive),
            Ok("pipe") => Ok(VolumeTransport::Pipe),
            Ok(other) => bail!(
                "UPKEEP_VOLUME_TRANSPORT={other:?} is not one of auto, archive, pipe; \
                 unset it for auto"
            ),
        }
    }
}

/// True when the engine is on this machine: only then can a folder of ours
/// be mounted into its containers. bollard connects by `DOCKER_HOST` alone.
fn engine_is_local() -> bool {
    match std::env::var("DOCKER_HOST") {
        Err(_) => true,
        Ok(h) => h.is_empty() || h.starts_with("unix://"),
    }
}

/// A FIFO in a private temporary folder; both go when it is dropped.
pub(super) struct Fifo {
    dir: tempfile::TempDir,
}

impl Fifo {
    fn new() -> io::Result<Fifo> {
        let dir = tempfile::Builder::new().prefix("upkeep-pipe-").tempdir()?;
        let fifo = Fifo { dir };
        let path = std::ffi::CString::new(fifo.path().into_os_string().into_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        if unsafe { libc::mkfifo(path.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fifo)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("pipe")
    }
}

/// The reading end of a connected pipe, with what must live as long.
pub(super) struct PipeSource {
    pub(super) file: File,
    pub(super) _fifo: Fifo,
    pub(super) finished: bool,
}

/// What a pipe attempt gave: its result, or why to use the archive
/// endpoint instead, with what was handed over, untouched.
pub(super) enum Attempt<T, R = ()> {
    Piped(T),
    Unavailable(String, R),
}

impl Engine {
    /// `Unavailable` when this run should not try the pipe at all.
    fn pipe_allowed(&self) -> Option<String> {
        match self.volume_transport {
            VolumeTransport::Archive => Some("the archive endpoint was asked for".into()),
            VolumeTransport::Auto if !engine_is_local() => {
                Some("the engine is not on this machine".into())
            }
            _ => None,
        }
    }

    /// Chooses how whole volumes travel (default: `UPKEEP_VOLUME_TRANSPORT`).
    pub fn set_volume_transport(&mut self, transport: VolumeTransport) {
        self.volume_transport = transport;
    }

    /// Gives up on the pipe: an error when the pipe was demanded.
    fn pipe_unavailable<T, R>(&self, why: String, back: R) -> Result<Attempt<T, R>> {
        if self.volume_transport == VolumeTransport::Pipe {
            bail!("UPKEEP_VOLUME_TRANSPORT=pipe, but the pipe cannot be used: {why}");
        }
        Ok(Attempt::Unavailable(why, back))
    }

    /// Starts a helper that runs `tar` with `args` on the FIFO, `volume`
    /// mounted at [`MOUNT`] (read-only when reading it; flushed to disk
    /// when writing it, which needs `sh` and `sync` too).
    fn start_tar_helper(
        &self,
        volume: &str,
        image: &str,
        fifo: &Fifo,
        args: &[&str],
        read_only: bool,
    ) -> Result<String> {
        let mut entrypoint: Vec<String> = if read_only {
            Vec::new()
        } else {
            ["sh", "-c", FLUSHING, "sh"].map(String::from).to_vec()
        };
        entrypoint.push("tar".into());
        entrypoint.extend(args.iter().chain(&TAR_COMMON).map(|s| s.to_string()));
        let mounts = vec![
            helper_mount(volume, MOUNT, MountType::VOLUME, read_only),
            helper_mount(
                &fifo.dir.path().to_string_lossy(),
                IO_DIR,
                MountType::BIND,
                true,
            ),
        ];
        // root, as the engine's archive endpoint: every owner kept
        self.start_helper(image, entrypoint, Some("0:0"), volume, mounts)
    }

    /// Opens `volume` as a tar stream through a pipe, with the helper
    /// container that writes it (removed by the caller).
    pub(super) fn pipe_read(
        &self,
        volume: &str,
        image: &str,
    ) -> Result<Attempt<(String, PipeSource)>> {
        if let Some(why) = self.pipe_allowed() {
            return Ok(Attempt::Unavailable(why, ()));
        }
        let fifo = Fifo::new().context("making a FIFO for a volume's tar")?;
        // Opened before tar starts, so tar's own open never waits; a reader
        // opened without O_NONBLOCK would wait for a writer forever.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo.path())
            .context("opening the FIFO")?;
        let args = ["--create", "--format=gnu", "--directory", MOUNT, "."];
        let id = match self.start_tar_helper(volume, image, &fifo, &args, true) {
            Ok(id) => id,
            Err(e) => return self.pipe_unavailable(format!("{e:#}"), ()),
        };
        match self.await_first_byte(&id, &file) {
            Ok(true) => {}
            Ok(false) => {
                let why = self.helper_failure(&id, image);
                self.remove_container(&id);
                return self.pipe_unavailable(why, ());
            }
            Err(e) => {
                self.remove_container(&id);
                return Err(e);
            }
        }
        set_blocking(&file)?;
        let source = PipeSource {
            file,
            _fifo: fifo,
            finished: false,
        };
        Ok(Attempt::Piped((id, source)))
    }

    /// Waits until the FIFO has data: false when the helper ended without
    /// writing any (tar refused its options, or could not open the FIFO).
    fn await_first_byte(&self, id: &str, file: &File) -> Result<bool> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match poll(file, libc::POLLIN, POLL_STEP)? {
                Some(revents) if revents & libc::POLLIN != 0 => return Ok(true),
                Some(_) => return Ok(false), // a writer came and went, silent
                None => {}
            }
            if !self.is_running(id)? {
                // it may have written everything just before it ended
                return Ok(poll(file, libc::POLLIN, Duration::ZERO)?
                    .is_some_and(|r| r & libc::POLLIN != 0));
            }
            if Instant::now() > deadline {
                bail!(
                    "the tar helper {id} did not write into its pipe within {}s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
        }
    }

    /// After the pipe's end of file: did the helper's tar succeed?
    pub(super) fn pipe_read_finished(&self, id: &str, volume: &str) -> Result<()> {
        match self.container_exit_code(id)? {
            0 => Ok(()),
            // GNU tar: a file changed while it was read, as the archive
            // endpoint would also have read it
            1 => {
                tracing::warn!(
                    "a file of volume {volume} changed while it was read: {}",
                    self.helper_output(id).unwrap_or_default().trim()
                );
                Ok(())
            }
            code => bail!(
                "reading volume {volume}: tar exited with {code}: {}",
                self.helper_output(id).unwrap_or_default().trim()
            ),
        }
    }

    /// Unpacks `tar` into `volume` through a pipe; `Unavailable` (with
    /// `tar` unread) when the pipe cannot be used.
    pub(super) fn pipe_write<R: Read>(
        &self,
        volume: &str,
        image: &str,
        mut tar: R,
    ) -> Result<Attempt<(), R>> {
        if let Some(why) = self.pipe_allowed() {
            return Ok(Attempt::Unavailable(why, tar));
        }
        let fifo = Fifo::new().context("making a FIFO for a volume's tar")?;
        let args = [
            "--extract",
            // a FIFO gives short reads; tar wants whole 512-byte blocks
            "--read-full-records",
            "--same-owner",
            "--preserve-permissions",
            "--directory",
            MOUNT,
        ];
        let id = match self.start_tar_helper(volume, image, &fifo, &args, false) {
            Ok(id) => id,
            Err(e) => return self.pipe_unavailable(format!("{e:#}"), tar),
        };
        let result = match self.connect_writer(&id, &fifo) {
            Ok(Some(file)) => self.feed(&id, file, &mut tar).map(|()| None),
            Ok(None) => Ok(Some(self.helper_failure(&id, image))),
            Err(e) => Err(e),
        };
        self.remove_container(&id);
        match result? {
            None => Ok(Attempt::Piped(())),
            Some(why) => self.pipe_unavailable(why, tar),
        }
    }

    /// Opens the FIFO for writing once the helper's tar has opened it for
    /// reading; `None` when the helper ended first.
    fn connect_writer(&self, id: &str, fifo: &Fifo) -> Result<Option<File>> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            // O_NONBLOCK: ENXIO while there is no reader, instead of waiting
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo.path())
            {
                Ok(file) => {
                    set_blocking(&file)?;
                    return Ok(Some(file));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => return Err(e).context("opening the FIFO"),
            }
            if !self.is_running(id)? {
                return Ok(None);
            }
            if Instant::now() > deadline {
                bail!(
                    "the tar helper {id} did not open its pipe within {}s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(POLL_STEP);
        }
    }

    /// Copies `tar` into the FIFO, then waits for the helper's verdict.
    fn feed<R: Read>(&self, id: &str, mut file: File, tar: &mut R) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let written = loop {
            let n = match tar.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // the snapshot's stream failed: the helper must not go on
                Err(e) => return Err(e).context("reading the tar stream to write"),
            };
            if let Err(e) = file.write_all(&buf[..n]) {
                break Err(e);
            }
        };
        drop(file); // tar sees its end of file
        let code = self.container_exit_code(id)?;
        match (code, written) {
            (0, Ok(())) => Ok(()),
            (code, written) => bail!(
                "tar exited with {code}{}: {}",
                written.err().map(|e| format!(" ({e})")).unwrap_or_default(),
                self.helper_output(id).unwrap_or_default().trim()
            ),
        }
    }

    /// Why a helper ended before its pipe carried anything.
    fn helper_failure(&self, id: &str, image: &str) -> String {
        let code = self.container_exit_code(id).unwrap_or(-1);
        let output = self.helper_output(id).unwrap_or_default();
        format!(
            "tar in image {image} exited with {code} before using the pipe: {}",
            output.trim()
        )
    }

    fn is_running(&self, id: &str) -> Result<bool> {
        Ok(self.container_info(id)?.state == "running")
    }
}

/// `poll(2)` on one descriptor: the events it reported, `None` on timeout.
fn poll(file: &File, events: libc::c_short, timeout: Duration) -> io::Result<Option<i16>> {
    let mut fd = libc::pollfd {
        fd: file.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one valid pollfd, count 1.
        match unsafe { libc::poll(&mut fd, 1, ms) } {
            0 => return Ok(None),
            n if n > 0 => return Ok(Some(fd.revents)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Clears `O_NONBLOCK`, once the other end is there.
fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Read for PipeSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}
