//! Runs the compose CLI, v2 (`docker compose`) or v1 (`docker-compose`),
//! detected at run time. There is no compose engine in Rust, and the CLI is
//! what administrators already trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComposeFlavor {
    /// `docker compose` (Go).
    V2,
    /// `docker-compose` (Python, 1.x).
    V1,
}

/// The compose CLI, found on first use: commands that never run compose
/// (most backups) do not pay for starting it to ask its version.
#[derive(Debug)]
pub struct Compose {
    found: Arc<OnceLock<Result<Found, String>>>,
    /// Only this flavour, whatever `UPKEEP_COMPOSE` says (tests of both).
    only: Option<ComposeFlavor>,
}

impl Default for Compose {
    /// Compose as this process finds it, once for every user.
    fn default() -> Compose {
        static FOUND: OnceLock<Arc<OnceLock<Result<Found, String>>>> = OnceLock::new();
        Compose {
            found: Arc::clone(FOUND.get_or_init(Default::default)),
            only: None,
        }
    }
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

    /// Compose of one flavour only, found when first used.
    pub fn of_flavor(flavor: ComposeFlavor) -> Compose {
        Compose {
            found: Arc::default(),
            only: Some(flavor),
        }
    }

    /// Starts finding compose on another thread, for a command that will
    /// run it: asking its version (a Python start-up with v1, 0.35 s here)
    /// then overlaps the command's first steps.
    pub fn prefetch(&self) {
        let (found, only) = (Arc::clone(&self.found), self.only);
        std::thread::spawn(move || {
            found.get_or_init(|| find_reported(only));
        });
    }

    fn found(&self) -> Result<&Found> {
        self.found
            .get_or_init(|| find_reported(self.only))
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    pub fn flavor(&self) -> Result<ComposeFlavor> {
        Ok(self.found()?.flavor)
    }

    /// The model compose resolves for `project` with its `.env`: every
    /// service whatever its profile, anchors, merge keys, `extends` and
    /// `env_file` applied, variables expanded. v2 prints JSON, v1 YAML.
    pub fn config(&self, project: &Project) -> Result<serde_yaml_ng::Value> {
        let flavor = self.found()?.flavor;
        let mut cmd = self.command(project)?;
        match flavor {
            ComposeFlavor::V2 => cmd.args(["--profile", "*", "config", "--format", "json"]),
            // v1 prints the services of every profile.
            ComposeFlavor::V1 => cmd.arg("config"),
        };
        cmd.stdin(Stdio::null());
        tracing::debug!("running {cmd:?}");
        let out = cmd.output().context("running compose config")?;
        if !out.status.success() {
            bail!(
                "compose cannot read {} (for {}): {}\nfix the compose file or the .env in {}",
                project.file.display(),
                project.name,
                String::from_utf8_lossy(&out.stderr).trim(),
                project.directory.display()
            );
        }
        let text = String::from_utf8(out.stdout).context("compose config printed non-UTF-8")?;
        match flavor {
            ComposeFlavor::V2 => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).context("reading compose config's JSON")?;
                serde_yaml_ng::to_value(json).context("reading compose config's JSON")
            }
            ComposeFlavor::V1 => {
                serde_yaml_ng::from_str(&text).context("reading compose config's YAML")
            }
        }
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

fn find_reported(only: Option<ComposeFlavor>) -> Result<Found, String> {
    find(only).map_err(|e| format!("{e:#}"))
}

/// Finds a working compose: `only`, else the one `UPKEEP_COMPOSE=v1|v2`
/// forces, else v2 then v1.
fn find(only: Option<ComposeFlavor>) -> Result<Found> {
    let forced = std::env::var("UPKEEP_COMPOSE").ok();
    let order: &[ComposeFlavor] = match (only, forced.as_deref()) {
        (Some(ComposeFlavor::V1), _) | (None, Some("v1")) => &[ComposeFlavor::V1],
        (Some(ComposeFlavor::V2), _) | (None, Some("v2")) => &[ComposeFlavor::V2],
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
    match order {
        [ComposeFlavor::V2] => bail!(
            "compose v2 (`docker compose`) does not work here, and v2 was asked for: install \
             the Docker Compose plugin (package docker-compose-plugin, or set DOCKER_CONFIG to \
             a folder whose cli-plugins/ holds it), or unset UPKEEP_COMPOSE"
        ),
        [ComposeFlavor::V1] => bail!(
            "compose v1 (`docker-compose`) does not work here, and v1 was asked for: install \
             docker-compose, or unset UPKEEP_COMPOSE"
        ),
        _ => bail!(
            "neither `docker compose` (v2) nor `docker-compose` (v1) works here: install the \
             Docker Compose plugin (package docker-compose-plugin) or docker-compose"
        ),
    }
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
