//! Runs the compose CLI, v2 (`docker compose`) or v1 (`docker-compose`),
//! detected at run time. There is no compose engine in Rust, and the CLI is
//! what administrators already trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFlavor {
    /// `docker compose` (Go).
    V2,
    /// `docker-compose` (Python, 1.x).
    V1,
}

/// The compose CLI, found on first use: commands that never run compose
/// (most backups) do not pay for starting it to ask its version.
#[derive(Debug, Default)]
pub struct Compose {
    found: Arc<OnceLock<Result<Found, String>>>,
}

#[derive(Debug, Clone)]
struct Found {
    flavor: ComposeFlavor,
    version: String,
}

/// Where and as what one compose project runs.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    /// Working folder: `.env` and relative paths resolve here.
    pub directory: PathBuf,
    pub file: PathBuf,
}

impl Compose {
    /// Compose, to be found when first used.
    pub fn lazy() -> Compose {
        Compose::default()
    }

    /// Starts finding compose on another thread, for a command that will
    /// run it: asking its version (a Python start-up with v1, 0.35 s here)
    /// then overlaps the command's first steps.
    pub fn prefetch(&self) {
        let found = Arc::clone(&self.found);
        std::thread::spawn(move || {
            found.get_or_init(find_reported);
        });
    }

    fn found(&self) -> Result<&Found> {
        self.found
            .get_or_init(find_reported)
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// A compose command for `project`, ready for its subcommand.
    pub fn command(&self, project: &Project) -> Result<Command> {
        let mut cmd = base_command(self.found()?.flavor);
        cmd.arg("--project-directory")
            .arg(&project.directory)
            .arg("-p")
            .arg(&project.name)
            .arg("-f")
            .arg(&project.file);
        Ok(cmd)
    }

    /// Runs `args` for `project`, letting compose print its own progress.
    pub fn run(&self, project: &Project, args: &[&str]) -> Result<()> {
        let mut cmd = self.command(project)?;
        cmd.args(args).stdin(Stdio::null());
        tracing::debug!("running {cmd:?}");
        let out = cmd
            .output()
            .with_context(|| format!("running compose {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`compose {}` for {} failed ({}): {}",
                args.join(" "),
                project.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Checks that compose accepts the file (`config -q`).
    pub fn validate(&self, project: &Project) -> Result<()> {
        self.run(project, &["config", "-q"])
            .context("compose rejected the generated file")
    }

    /// The `com.docker.compose.version` label compose puts on what it creates.
    pub fn label_version(&self) -> Result<&str> {
        Ok(self.found()?.version.trim_start_matches('v'))
    }
}

fn find_reported() -> Result<Found, String> {
    find().map_err(|e| format!("{e:#}"))
}

/// Finds a working compose: `UPKEEP_COMPOSE=v1|v2` forces one.
fn find() -> Result<Found> {
    let forced = std::env::var("UPKEEP_COMPOSE").ok();
    let order: &[ComposeFlavor] = match forced.as_deref() {
        Some("v1") => &[ComposeFlavor::V1],
        Some("v2") => &[ComposeFlavor::V2],
        _ => &[ComposeFlavor::V2, ComposeFlavor::V1],
    };
    for &flavor in order {
        let mut cmd = base_command(flavor);
        cmd.args(["version", "--short"]);
        if let Ok(out) = cmd.stderr(Stdio::null()).output() {
            if out.status.success() {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Ok(Found { flavor, version });
            }
        }
    }
    bail!(
        "neither `docker compose` (v2) nor `docker-compose` (v1) works here: install the \
         Docker Compose plugin (package docker-compose-plugin) or docker-compose"
    )
}

fn base_command(flavor: ComposeFlavor) -> Command {
    match flavor {
        ComposeFlavor::V2 => {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        }
        ComposeFlavor::V1 => Command::new("docker-compose"),
    }
}

impl Project {
    pub fn new(name: &str, directory: &Path, file: &Path) -> Project {
        Project {
            name: name.to_string(),
            directory: directory.to_path_buf(),
            file: file.to_path_buf(),
        }
    }
}
