//! Containers of a compose project, found by compose's labels (container
//! names differ between compose v1 `p_s_1` and v2 `p-s-1`).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig, Mount, MountType};
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

/// A container as listed, for finding installs made outside upkeep.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeContainer {
    pub id: String,
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
    /// Named volumes mounted: (volume name, path in the container).
    pub volumes: Vec<(String, String)>,
    /// Published ports: (container port, host port, host address, protocol).
    pub ports: Vec<(u16, u16, Option<String>, String)>,
}

impl ComposeContainer {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

impl From<ContainerSummary> for ComposeContainer {
    fn from(c: ContainerSummary) -> Self {
        let volumes = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.typ.as_deref() == Some("volume"))
            .filter_map(|m| Some((m.name?, m.destination?)))
            .collect();
        let ports = c
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let ip = p.ip.filter(|ip| ip != "0.0.0.0" && ip != "::");
                let proto = p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into());
                Some((p.private_port, p.public_port?, ip, proto))
            })
            .collect();
        ComposeContainer {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            labels: c.labels.unwrap_or_default(),
            volumes,
            ports,
        }
    }
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
        let mut out = Vec::new();
        for c in self.containers_labelled(&format!("com.docker.compose.project={project}"))? {
            out.push(self.container_info(&c.id.unwrap_or_default())?);
        }
        out.sort_by(|a, b| a.service.cmp(&b.service).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// The labels of every container of compose project `project`.
    pub fn project_labels(&self, project: &str) -> Result<Vec<HashMap<String, String>>> {
        Ok(self
            .containers_labelled(&format!("com.docker.compose.project={project}"))?
            .into_iter()
            .map(|c| c.labels.unwrap_or_default())
            .collect())
    }

    /// Every container that compose made, whoever ran it, with its labels,
    /// volume mounts and published ports.
    pub fn compose_containers(&self) -> Result<Vec<ComposeContainer>> {
        Ok(self
            .containers_labelled("com.docker.compose.project")?
            .into_iter()
            .map(ComposeContainer::from)
            .collect())
    }

    /// Every container (running or not) carrying `label` (`key=value`).
    pub(super) fn containers_labelled(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label", vec![label])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.block_on(self.api.list_containers(Some(opts)))
            .with_context(|| format!("listing containers labelled {label}"))
    }

    /// One container's state and health, by id or name.
    pub fn container_info(&self, id: &str) -> Result<ContainerInfo> {
        let inspect = self
            .block_on(self.api.inspect_container(id, None))
            .with_context(|| format!("inspecting container {id}"))?;
        let state = inspect.state.unwrap_or_default();
        let config = inspect.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        Ok(ContainerInfo {
            name: inspect
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            service: labels
                .get("com.docker.compose.service")
                .cloned()
                .unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            exit_code: state.exit_code,
            id: inspect.id.unwrap_or_else(|| id.to_string()),
        })
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
        self.run_as(image, None, cmd, mounts)
    }

    /// [`Engine::run_with_volumes`] as `user` of the image (Postgres's own
    /// tools refuse to run as root).
    pub fn run_as(
        &self,
        image: &str,
        user: Option<&str>,
        cmd: &[&str],
        mounts: &[(&str, &str, bool)],
    ) -> Result<(i64, String)> {
        let mounts = mounts
            .iter()
            .map(|(volume, target, read_only)| {
                helper_mount(volume, target, MountType::VOLUME, *read_only)
            })
            .collect();
        let entrypoint = cmd.iter().map(|s| s.to_string()).collect();
        let running = || format!("running `{}` in {image}", cmd.join(" "));
        let id = self
            .start_helper(image, entrypoint, user, "run", mounts)
            .with_context(running)?;
        let result = (|| {
            Ok::<_, anyhow::Error>((self.container_exit_code(&id)?, self.helper_output(&id)?))
        })();
        self.remove_container(&id);
        result.with_context(running)
    }

    /// Creates and starts a helper container of `image` running
    /// `entrypoint` (the image's own replaced) as `user`, with no network,
    /// labelled `org.upkeep.helper=label`; removed again if it cannot start.
    pub(super) fn start_helper(
        &self,
        image: &str,
        entrypoint: Vec<String>,
        user: Option<&str>,
        label: &str,
        mounts: Vec<Mount>,
    ) -> Result<String> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(entrypoint),
            cmd: Some(Vec::new()),
            network_disabled: Some(true),
            user: user.map(str::to_string),
            labels: Some(self.owned_labels([("org.upkeep.helper", label)])),
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
        if let Err(e) = self.block_on(self.api.start_container(&id, None)) {
            self.remove_container(&id);
            return Err(e).with_context(|| format!("starting a container from {image}"));
        }
        Ok(id)
    }

    /// Waits for a started container to end; its exit code.
    pub(super) fn container_exit_code(&self, id: &str) -> Result<i64> {
        use bollard::query_parameters::WaitContainerOptions;
        use futures_util::StreamExt;
        self.block_on(async {
            let mut wait = self.api.wait_container(id, None::<WaitContainerOptions>);
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
            Ok(code)
        })
        .with_context(|| format!("waiting for container {id}"))
    }

    /// What a container printed, stdout and stderr.
    pub(super) fn helper_output(&self, id: &str) -> Result<String> {
        use bollard::query_parameters::LogsOptionsBuilder;
        use futures_util::StreamExt;
        self.block_on(async {
            let opts = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            let mut logs = self.api.logs(id, Some(opts));
            let mut text = String::new();
            while let Some(line) = logs.next().await {
                text.push_str(&line?.to_string());
            }
            Ok::<_, bollard::errors::Error>(text)
        })
        .with_context(|| format!("reading the output of container {id}"))
    }

    /// Copies every file of volume `from` into volume `to` inside one helper
    /// container (`cp -a`: owners, modes, times, links), so the data never
    /// leaves the engine. Needs `cp` in `image`.
    pub fn copy_volume(&self, from: &str, to: &str, image: &str) -> Result<()> {
        self.copy_volumes(&[(from, to)], image, None)
    }

    /// Copies volumes pairwise (`from` mounted read-only) in one helper
    /// container, all pairs at once. Without `since`, a full `cp -a`. With
    /// `since` (Unix seconds), the second pass of a pre-copy: `to` already
    /// holds a copy made after `since`, and every path whose ctime is newer
    /// (written, renamed, chmod-ed since: the kernel sets ctime and nobody
    /// can set it back) or that `to` lacks is copied again, every path `from`
    /// no longer has is removed, and directories get their owner, mode and
    /// time back, so `to` ends up equal to `from`. Needs `sh`, `find`
    /// (with GNU's `-cnewer`: POSIX find has no ctime comparison), `cp`,
    /// `stat`, `touch` in `image`.
    pub fn copy_volumes(
        &self,
        pairs: &[(&str, &str)],
        image: &str,
        since: Option<i64>,
    ) -> Result<()> {
        let into: Vec<(&str, &str, &str)> = pairs.iter().map(|(f, t)| (*f, *t, "")).collect();
        self.copy_volumes_into(&into, image, since)
    }

    /// [`Engine::copy_volumes`] into folder `sub` of each `to` volume (made
    /// when missing; `""` is the volume's root), for a staging copy beside
    /// what the volume holds.
    pub fn copy_volumes_into(
        &self,
        pairs: &[(&str, &str, &str)],
        image: &str,
        since: Option<i64>,
    ) -> Result<()> {
        let mut mounts = Vec::new();
        let dirs: Vec<(String, String)> = (0..pairs.len())
            .map(|n| (format!("/upkeep/{n}/from"), format!("/upkeep/{n}/vol")))
            .collect();
        let mut prelude = String::new();
        for ((from, to, sub), (f, t)) in pairs.iter().zip(&dirs) {
            mounts.push((*from, f.as_str(), true));
            mounts.push((*to, t.as_str(), false));
            if sub.contains(['\'', '\\']) || sub.split('/').any(|c| c == "..") {
                anyhow::bail!("unsafe staging folder {sub:?}");
            }
            // `to` is the volume's root or a link to the staging folder in it
            let link = t.replace("/vol", "/to");
            if sub.is_empty() {
                prelude += &format!("ln -s vol '{link}' || exit 91\n");
            } else {
                prelude +=
                    &format!("mkdir -p '{t}/{sub}' && ln -s 'vol/{sub}' '{link}' || exit 91\n");
            }
        }
        let script = match since {
            None => FULL_COPY.to_string(),
            Some(secs) => format!("UPKEEP_STAMP={}\n{DELTA_COPY}", touch_stamp(secs)?),
        };
        let names = pairs
            .iter()
            .map(|(f, t, _)| format!("{f} → {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (code, out) = self.run_with_volumes(
            image,
            &["sh", "-c", &format!("{prelude}{script}\n{EACH_PAIR}")],
            &mounts,
        )?;
        if code != 0 {
            anyhow::bail!(
                "copying volumes {names} in {image} failed (exit {code}): {}",
                out.trim()
            );
        }
        Ok(())
    }
}

/// `touch -t` form (UTC, whole seconds) of Unix time `secs`.
fn touch_stamp(secs: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)?;
    let f = time::macros::format_description!("[year][month][day][hour][minute].[second]");
    Ok(t.format(&f)?)
}

/// Sets `one`: copies the pair whose directories are `$F` and `$T` in full,
/// into an emptied `$T` (a retry may find an earlier attempt's files).
const FULL_COPY: &str = r#"one() {
  (cd "$T" && find . ! -name . -prune -exec rm -rf {} +) && cp -a "$F/." "$T/"
}"#;

/// Sets `one`: the delta pass (see `copy_volumes`). Paths travel as `find`
/// arguments, never as lines, so any file name is safe.
const DELTA_COPY: &str = r#"
export TZ=UTC0
touch -t "$UPKEEP_STAMP" /tmp/upkeep-since || exit 90
export COPY='for p; do
  if [ -d "$F/$p" ] && [ ! -L "$F/$p" ]; then
    if [ -L "$T/$p" ] || { [ -e "$T/$p" ] && [ ! -d "$T/$p" ]; }; then rm -rf "$T/$p" || exit 1; fi
    [ -d "$T/$p" ] || mkdir "$T/$p" || exit 1
  else
    if [ -e "$T/$p" ] || [ -L "$T/$p" ]; then rm -rf "$T/$p" || exit 1; fi
    cp -a "$F/$p" "$T/$p" || exit 1
  fi
done'
GONE='for p; do [ -e "$F/$p" ] || [ -L "$F/$p" ] || rm -rf "$T/$p" || exit 1; done'
# Missing from $T, or there as another kind (directory, link, other).
MISSING='for p; do
  if [ -L "$F/$p" ]; then [ -L "$T/$p" ] && continue
  elif [ -d "$F/$p" ]; then [ -d "$T/$p" ] && [ ! -L "$T/$p" ] && continue
  else [ -e "$T/$p" ] && [ ! -L "$T/$p" ] && [ ! -d "$T/$p" ] && continue; fi
  sh -c "$COPY" sh "$p" || exit 1
done'
ATTRS='for p; do
  chown "$(stat -c %u:%g "$F/$p")" "$T/$p" && chmod "$(stat -c %a "$F/$p")" "$T/$p" && touch -r "$F/$p" "$T/$p" || exit 1
done'
one() {
  (cd "$T" && find . -depth ! -name . -exec sh -c "$GONE" sh {} +) || return 1
  cd "$F" || return 1
  find . ! -name . -cnewer /tmp/upkeep-since -exec sh -c "$COPY" sh {} + || return 1
  find . ! -name . -exec sh -c "$MISSING" sh {} + || return 1
  find . -depth -type d -exec sh -c "$ATTRS" sh {} + || return 1
}
"#;

/// Runs `one` for every mounted pair at once; fails if any failed. Then
/// the copies are flushed (syncfs of each volume's file system, a global
/// sync where `sync -f` is missing): a new Postgres starts on them, and
/// its own checkpoints never fsync a file it did not write, so without
/// this a power cut in the next half minute could tear a cluster the
/// journal calls upgraded. After a pre-copy this also moves the bulk of
/// the writeback out of the downtime.
const EACH_PAIR: &str = r#"
pids=
for d in /upkeep/*; do
  (F=$d/from T=$d/to; export F T; one) &
  pids="$pids $!"
done
fail=0
for p in $pids; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || exit 1
for d in /upkeep/*; do sync -f "$d/vol" 2>/dev/null || { sync; break; }; done
exit 0
"#;

/// Containers started and stopped through the API rather than compose: one
/// round trip each instead of a compose process (about half a second of
/// Python start-up for compose v1), which matters inside an upgrade's
/// downtime.
impl Engine {
    /// Stops containers all at once, each with its own stop signal and grace
    /// period (what `compose stop` does, without its start-up cost).
    pub fn stop_containers(&self, ids: &[String]) -> Result<()> {
        let results = self.block_on(futures_util::future::join_all(
            ids.iter().map(|id| self.api.stop_container(id, None)),
        ));
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(()) => {}
                // 304: already stopped.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(e).with_context(|| format!("stopping container {id}")),
            }
        }
        Ok(())
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        match self.block_on(self.api.start_container(id, None)) {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("starting container {id}")),
        }
    }

    /// The command line of a container's health check, as an exec argv
    /// (`CMD-SHELL x` becomes `/bin/sh -c x`); `None` without one.
    pub fn health_probe(&self, id: &str) -> Result<Option<Vec<String>>> {
        let inspect = self
            .block_on(self.api.inspect_container(id, None))
            .with_context(|| format!("inspecting container {id}"))?;
        let test = inspect
            .config
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .unwrap_or_default();
        Ok(probe_argv(&test))
    }

    /// Runs a health probe once inside the container: true when it exits 0.
    pub fn probe_once(&self, id: &str, argv: &[String]) -> bool {
        let cmd: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.exec(&super::ExecSpec::new(id, &cmd), None).is_ok()
    }
}

/// A mount of `source` (a volume name, or a host folder for
/// `MountType::BIND`) at `target` in a helper container.
pub(super) fn helper_mount(source: &str, target: &str, typ: MountType, read_only: bool) -> Mount {
    Mount {
        source: Some(source.to_string()),
        target: Some(target.to_string()),
        typ: Some(typ),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Docker's health check `test` as an argv: `["CMD", a, b]` → `[a, b]`,
/// `["CMD-SHELL", s]` → `["/bin/sh", "-c", s]`; `NONE` or empty → none.
fn probe_argv(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::probe_argv;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn health_check_tests_become_exec_argvs() {
        assert_eq!(
            probe_argv(&v(&["CMD", "wget", "-q"])),
            Some(v(&["wget", "-q"]))
        );
        assert_eq!(
            probe_argv(&v(&["CMD-SHELL", "pg_isready -U $X"])),
            Some(v(&["/bin/sh", "-c", "pg_isready -U $X"]))
        );
        assert_eq!(probe_argv(&v(&["NONE"])), None);
        assert_eq!(probe_argv(&[]), None);
    }
}
