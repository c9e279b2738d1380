//! Instances: running copies of a release, each its own compose project
//! with its own volume names and host ports. The default copy of a release
//! lives in the release folder (as administrators run it today); further
//! copies (`--as NAME`) get a home of their own under `instances/NAME/`,
//! seeded from the release, so their config and local data never mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::bundle::{self, copy_tree};
use crate::compose::model::PublishedPort;
use crate::compose::naming::{check_project_name, normalize_project_name};
use crate::compose::rewrite::InstanceRewrite;
use crate::compose::runner::Project;
use crate::compose::{Compose, ComposeFile};
use crate::docker::{ContainerInfo, Engine};
use crate::durable;
use crate::release;
use crate::site::{now_rfc3339, Site, SiteLock};

/// What upkeep remembers of an instance (`.upkeep/instances/NAME.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Also the compose project name.
    pub name: String,
    pub release: String,
    /// Compose's project directory: `.env` and relative paths resolve here.
    pub home: PathBuf,
    /// Volume key in the compose file → Docker volume name.
    pub volumes: BTreeMap<String, String>,
    pub ports: Vec<PortAssignment>,
    pub created_at: String,
    /// When upkeep took over this instance, made by hand or by plain
    /// compose (`upkeep adopt`); `None` for instances upkeep made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_at: Option<String>,
}

/// A vendor-published port and the host port this instance uses for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAssignment {
    pub service: String,
    pub index: usize,
    pub host_ip: Option<String>,
    pub vendor_port: u16,
    pub host_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    pub key: String,
    pub name: String,
    pub exists: bool,
    pub size: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub release: String,
    pub home: PathBuf,
    /// running, starting, unhealthy, stopped or down.
    pub state: String,
    pub containers: Vec<ContainerInfo>,
    pub volumes: Vec<VolumeStatus>,
    pub ports: Vec<PortAssignment>,
    /// An upgrade this instance takes part in, described for people.
    pub upgrade: Option<String>,
}

/// The default instance name of a release: compose's name for its folder.
pub fn default_name(version: &str) -> Result<String> {
    let name = normalize_project_name(version);
    if name.is_empty() {
        bail!("release {version} gives no usable compose project name: pass --as NAME");
    }
    Ok(name)
}

fn record_path(site: &Site, name: &str) -> PathBuf {
    site.instance_state_dir().join(format!("{name}.json"))
}

/// The generated effective compose file of an instance.
pub fn effective_file(site: &Site, name: &str) -> PathBuf {
    site.instance_state_dir()
        .join(name)
        .join("docker-compose.yml")
}

/// Loads an instance's record, with a helpful error if there is none.
pub fn load(site: &Site, name: &str) -> Result<InstanceRecord> {
    durable::read_json(&record_path(site, name))?.with_context(|| {
        let known = list(site)
            .map(|l| l.into_iter().map(|r| r.name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        format!(
            "no instance named {name} (known: {}); start one with `upkeep up VERSION [--as NAME]`",
            if known.is_empty() { "none" } else { &known }
        )
    })
}

/// All instance records of the site, sorted by name.
pub fn list(site: &Site) -> Result<Vec<InstanceRecord>> {
    let dir = site.instance_state_dir();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Some(rec) = durable::read_json::<InstanceRecord>(&path)? {
                out.push(rec);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of the instances of `version`.
pub fn names_of_release(site: &Site, version: &str) -> Vec<String> {
    list(site)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.release == version)
        .map(|r| r.name)
        .collect()
}

/// The record for `up VERSION [--as NAME]`: the existing one, or a new one
/// with its home, volume names and host ports chosen (not yet saved).
pub fn prepare(site: &Site, version: &str, as_name: Option<&str>) -> Result<InstanceRecord> {
    let release_dir = release::release_dir(site, version)?;
    let default = default_name(version)?;
    let name = match as_name {
        Some(n) => {
            check_project_name(n)?;
            n.to_string()
        }
        None => default.clone(),
    };
    if let Some(existing) = durable::read_json::<InstanceRecord>(&record_path(site, &name))? {
        if existing.release != version {
            bail!(
                "instance {name} runs release {}, not {version}: to move it, use \
                 `upkeep upgrade {name} --to {version}`; for another copy, pick a new --as NAME",
                existing.release
            );
        }
        return Ok(existing);
    }
    let home = if name == default {
        release_dir.clone()
    } else {
        site.instance_homes_dir().join(&name)
    };
    let compose = vendor_compose(&release_dir)?;
    let mut volumes = BTreeMap::new();
    for key in compose.volume_keys() {
        // The vendor's fixed name is the default copy's, as with plain
        // compose; any other copy gets names of its own.
        let volume = match compose.volume_name(&key) {
            Some(fixed) if name == default => fixed,
            _ => format!("{name}_{key}"),
        };
        volumes.insert(key, volume);
    }
    let ports = assign_ports(site, &name, &compose.published_ports()?)?;
    Ok(InstanceRecord {
        name,
        release: version.to_string(),
        home,
        volumes,
        ports,
        created_at: now_rfc3339(),
        adopted_at: None,
    })
}

/// What an instance's volume names owe to the vendor's fixed `name:`s, for
/// plans and `up`: kept by the default copy, replaced for any other.
pub fn naming_notes(site: &Site, rec: &InstanceRecord) -> Result<Vec<String>> {
    let release_dir = site.release_dir(&rec.release);
    let compose = vendor_compose(&release_dir)?;
    let mut notes = Vec::new();
    for (key, volume) in &rec.volumes {
        match compose.volume_name(key) {
            Some(fixed) if &fixed == volume => notes.push(format!(
                "volume {key} keeps the vendor's fixed name {fixed}"
            )),
            Some(fixed) => notes.push(format!(
                "volume {key}: the vendor names it {fixed}; this copy uses {volume} of its own"
            )),
            None => {}
        }
    }
    Ok(notes)
}

/// The record of the instance that replaces `old` on release `version`:
/// named `as_name`, else the release's default name (when `old` is its
/// release's default copy) or `<old>-<release>`; the vendor ports `old`
/// published keep `old`'s host ports, since it replaces it.
pub fn successor(
    site: &Site,
    old: &InstanceRecord,
    version: &str,
    as_name: Option<&str>,
) -> Result<InstanceRecord> {
    let default = default_name(version)?;
    let name = match as_name {
        Some(n) => n.to_string(),
        None if old.is_default_copy(site) && old.name == default_name(&old.release)? => {
            default.clone()
        }
        None => format!("{}-{default}", old.name),
    };
    check_project_name(&name)?;
    let mut rec = prepare(site, version, Some(&name))?;
    // A vendor that fixes a volume's name in both releases would have the
    // new instance write into the old one's volume.
    for (key, volume) in &mut rec.volumes {
        if old.volumes.values().any(|v| v == volume) {
            *volume = format!("{}_{key}", rec.name);
        }
    }
    for port in &mut rec.ports {
        let inherited = old
            .ports
            .iter()
            .find(|p| p.service == port.service && p.vendor_port == port.vendor_port)
            .or_else(|| {
                old.ports
                    .iter()
                    .find(|p| p.service == port.service && p.index == port.index)
            });
        if let Some(p) = inherited {
            port.host_port = p.host_port;
        }
    }
    Ok(rec)
}

fn vendor_compose(release_dir: &Path) -> Result<ComposeFile> {
    let path = bundle::compose_file_in(release_dir)
        .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
    ComposeFile::load(&path)
}

/// Keeps the vendor's host port where it is free; otherwise the next port
/// that no other instance holds and nothing on the host listens on.
fn assign_ports(site: &Site, name: &str, vendor: &[PublishedPort]) -> Result<Vec<PortAssignment>> {
    let mut taken = ports_held_by_others(site, name)?;
    let mut out = Vec::new();
    for port in vendor {
        let Some(vendor_port) = port.published else {
            continue;
        };
        let ip = port.host_ip.as_deref().unwrap_or("0.0.0.0");
        let host_port = free_port_from(ip, vendor_port, &taken).with_context(|| {
            format!(
                "no free host port near {vendor_port} for {}/{}",
                port.service, port.target
            )
        })?;
        taken.insert(host_port);
        out.push(PortAssignment {
            service: port.service.clone(),
            index: port.index,
            host_ip: port.host_ip.clone(),
            vendor_port,
            host_port,
        });
    }
    Ok(out)
}

/// Host ports recorded for every instance of the site but `name`.
fn ports_held_by_others(site: &Site, name: &str) -> Result<BTreeSet<u16>> {
    Ok(list(site)?
        .into_iter()
        .filter(|r| r.name != name)
        .flat_map(|r| r.ports.into_iter().map(|p| p.host_port))
        .collect())
}

/// The first port from `start` (searching at most 2000) that no instance
/// holds and nothing on the host listens on.
fn free_port_from(ip: &str, start: u16, taken: &BTreeSet<u16>) -> Option<u16> {
    (start..=u16::MAX)
        .take(2000)
        .find(|p| !taken.contains(p) && port_is_free(ip, *p))
}

fn port_is_free(ip: &str, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

impl InstanceRecord {
    pub fn project(&self, site: &Site) -> Project {
        Project::new(&self.name, &self.home, &effective_file(site, &self.name))
    }

    pub fn is_default_copy(&self, site: &Site) -> bool {
        self.home == site.release_dir(&self.release)
    }

    /// Writes the effective compose file from the vendor file as it is now.
    fn write_effective(&self, site: &Site) -> Result<()> {
        let release_dir = site.release_dir(&self.release);
        let vendor_file = bundle::compose_file_in(&release_dir)
            .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
        // Resolved with the instance's own .env: its ports are remapped.
        let compose = ComposeFile::resolve(
            &Compose::default(),
            &Project::new(&self.name, &self.home, &vendor_file),
        )?;
        let rewrite = InstanceRewrite {
            volume_names: self.volumes.clone(),
            host_ports: self
                .ports
                .iter()
                .map(|p| ((p.service.clone(), p.index), p.host_port))
                .collect(),
            name_prefix: (!self.is_default_copy(site)).then(|| self.name.clone()),
            header: format!(
                "# Generated by upkeep for instance {} from {}/docker-compose.yml; do not edit.\n\
                 # Change the vendor file or the instance's .env instead: this file is rewritten\n\
                 # before every compose command.\n",
                self.name,
                release_dir.display()
            ),
            labels: crate::ownership::labels(site, &self.name),
        };
        let text = compose.effective(&rewrite)?;
        durable::write_atomic(&effective_file(site, &self.name), text.as_bytes(), 0o600)
    }
}

/// Seeds a copy's home from the release: config and local data, not the
/// vendor compose file (the effective file replaces it) nor image archives.
fn seed_home(site: &Site, rec: &InstanceRecord) -> Result<()> {
    if rec.home.exists() {
        return Ok(());
    }
    let parent = rec.home.parent().expect("home is under instances/");
    fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}-", rec.name))
        .tempdir_in(parent)?;
    let release_dir = site.release_dir(&rec.release);
    let skip = |rel: &Path| {
        let name = rel.to_string_lossy();
        !(name.starts_with("containers.tar")
            || name == "SHA256SUMS"
            || bundle::compose_file_in(&release_dir).is_some_and(|c| c.ends_with(&*name)))
    };
    copy_tree(&release_dir, staging.path(), Path::new(""), &skip)?;
    fs::rename(staging.keep(), &rec.home)
        .with_context(|| format!("creating instance home {}", rec.home.display()))?;
    durable::sync_dir(parent)?;
    Ok(())
}

/// Brings an instance up: saves its record, writes its effective file,
/// creates its volumes with compose's labels, runs `compose up -d` and waits
/// until every container is running and healthy (or `timeout` passes).
pub fn up(
    site: &Site,
    lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
    timeout: Duration,
) -> Result<InstanceStatus> {
    prepare_project(site, lock, engine, compose, rec)?;
    start(site, engine, compose, rec, &[], timeout)
}

/// Everything before containers start: images present, home seeded,
/// record saved, effective compose file written and accepted by compose,
/// volumes created (empty ones stay empty until compose or a restore fills
/// them).
pub fn prepare_project(
    site: &Site,
    lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
) -> Result<()> {
    prepare_project_unchecked(site, lock, engine, compose, rec)?;
    compose.validate(&rec.project(site))
}

/// [`prepare_project`] without compose's check of the effective file, for
/// a caller that has compose create the containers soon (which checks it).
pub fn prepare_project_unchecked(
    site: &Site,
    _lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
) -> Result<()> {
    crate::ownership::Guard::new(site, engine)?.check_instance(rec)?;
    let missing: Vec<String> = release::images(&site.release_dir(&rec.release))?
        .into_values()
        .filter(|img| !engine.image_exists(img).unwrap_or(false))
        .collect();
    if !missing.is_empty() {
        bail!(
            "images of release {} are missing from the engine: {}. Load them with \
             `docker load -i releases/{}/containers.tar` (or reinstall the bundle)",
            rec.release,
            missing.join(", "),
            rec.release
        );
    }
    seed_home(site, rec)?;
    durable::write_json(&record_path(site, &rec.name), rec)?;
    rec.write_effective(site)?;
    let label = compose.label_version()?;
    for (key, volume) in &rec.volumes {
        engine.ensure_compose_volume(volume, &rec.name, key, label)?;
    }
    Ok(())
}

/// `compose up -d` of `services` (all when empty), then waits until the
/// started containers are ready. If Docker finds a host port taken (another
/// site or program bound it since ports were chosen), the instance moves to
/// free ports, says so, and tries again.
pub fn start(
    site: &Site,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
    services: &[&str],
    timeout: Duration,
) -> Result<InstanceStatus> {
    crate::ownership::Guard::new(site, engine)?.check_project(&rec.name)?;
    engine.remove_twins(&rec.name)?;
    let mut args = vec!["up", "-d"];
    args.extend_from_slice(services);
    let mut rec = rec.clone();
    for attempt in 0.. {
        match compose.run(&rec.project(site), &args) {
            Ok(()) => break,
            Err(e) if attempt < 3 && e.to_string().contains("port is already allocated") => {
                reassign_taken_ports(site, &mut rec)?;
            }
            Err(e) => return Err(e),
        }
    }
    wait_ready(site, engine, &rec, timeout)
}

/// Moves the instance's ports that something else now holds.
fn reassign_taken_ports(site: &Site, rec: &mut InstanceRecord) -> Result<()> {
    let mut taken = ports_held_by_others(site, &rec.name)?;
    for port in &mut rec.ports {
        let ip = port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
        if port_is_free(&ip, port.host_port) {
            continue;
        }
        let from = port.host_port;
        port.host_port = free_port_from(&ip, from.saturating_add(1), &taken)
            .with_context(|| format!("no free host port near {from}"))?;
        taken.insert(port.host_port);
        tracing::warn!(
            "host port {from} of {} is taken by something else; instance {} now uses {}",
            port.service,
            rec.name,
            port.host_port
        );
    }
    durable::write_json(&record_path(site, &rec.name), rec)?;
    rec.write_effective(site)
}

/// Creates the instance's containers and networks without starting them
/// (`compose up --no-start`): of `services` and their dependencies, or all
/// when empty; starting later is one API call per container.
pub fn create_containers(
    site: &Site,
    compose: &Compose,
    rec: &InstanceRecord,
    services: &[&str],
) -> Result<()> {
    rec.write_effective(site)?;
    let mut args = vec!["up", "--no-start"];
    args.extend_from_slice(services);
    compose.run(&rec.project(site), &args)
}

/// What a service waits for before it starts (compose's `depends_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

/// Service → the services it depends on, as compose resolves the effective
/// file (anchors, `extends`; a list means `service_started`).
fn dependencies(
    site: &Site,
    rec: &InstanceRecord,
) -> Result<BTreeMap<String, Vec<(String, Condition)>>> {
    let resolved = ComposeFile::resolve(&Compose::default(), &rec.project(site))?;
    let mut out = BTreeMap::new();
    for svc in resolved.service_names() {
        let def = resolved.service(&svc).expect("a resolved service");
        let mut deps = Vec::new();
        match def.get("depends_on") {
            Some(serde_yaml_ng::Value::Sequence(list)) => {
                deps.extend(
                    list.iter()
                        .filter_map(|d| d.as_str())
                        .map(|d| (d.to_string(), Condition::Started)),
                );
            }
            Some(serde_yaml_ng::Value::Mapping(map)) => {
                for (dep, how) in map {
                    let cond = match how.get("condition").and_then(|c| c.as_str()) {
                        Some("service_healthy") => Condition::Healthy,
                        Some("service_completed_successfully") => Condition::CompletedSuccessfully,
                        _ => Condition::Started,
                    };
                    if let Some(dep) = dep.as_str() {
                        deps.push((dep.to_string(), cond));
                    }
                }
            }
            _ => {}
        }
        out.insert(svc, deps);
    }
    Ok(out)
}

/// Services ordered so that each comes after what it depends on.
fn start_order(deps: &BTreeMap<String, Vec<(String, Condition)>>) -> Result<Vec<String>> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < deps.len() {
        let next = deps.iter().find(|(svc, d)| {
            !order.contains(svc)
                && d.iter()
                    .all(|(dep, _)| order.contains(dep) || !deps.contains_key(dep))
        });
        match next {
            Some((svc, _)) => order.push(svc.clone()),
            None => bail!("the services' depends_on form a cycle"),
        }
    }
    Ok(order)
}

/// Starts the containers `create_containers` made, through the API in
/// `depends_on` order, and returns once every one is ready: all of them, or
/// only `services` (when not empty) and what they depend on. A service that
/// waits for another to be healthy starts as soon as that one's own health
/// check command succeeds, run here every 100 ms, rather than when Docker
/// next runs it (its `interval` after start: a second in the sample
/// bundles, for each service in the chain). If a host port turned out to be
/// taken, falls back to `start` (compose, which reassigns ports).
pub fn start_created(
    site: &Site,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
    services: &[&str],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    crate::ownership::Guard::new(site, engine)?.check_project(&rec.name)?;
    engine.remove_twins(&rec.name)?;
    let deps = dependencies(site, rec)?;
    let wanted = with_dependencies(&deps, services);
    let containers: Vec<ContainerInfo> = engine
        .project_containers(&rec.name)?
        .into_iter()
        .filter(|c| wanted.contains(&c.service))
        .collect();
    let of = |svc: &str| -> Vec<&ContainerInfo> {
        containers.iter().filter(|c| c.service == svc).collect()
    };
    let missing: Vec<&String> = wanted.iter().filter(|s| of(s).is_empty()).collect();
    if !missing.is_empty() {
        tracing::warn!(
            "no containers yet for {missing:?}; starting {} with compose",
            rec.name
        );
        start(site, engine, compose, rec, services, timeout)?;
        return Ok(());
    }
    for svc in start_order(&deps)?.iter().filter(|s| wanted.contains(*s)) {
        for (dep, cond) in &deps[svc] {
            for c in of(dep) {
                wait_condition(engine, c, *cond, deadline)?;
            }
        }
        for c in of(svc) {
            if let Err(e) = engine.start_container(&c.id) {
                if format!("{e:#}").contains("port is already allocated") {
                    start(site, engine, compose, rec, services, timeout)?;
                    return Ok(());
                }
                return Err(e);
            }
        }
    }
    for c in &containers {
        wait_condition(engine, c, Condition::Healthy, deadline)?;
    }
    Ok(())
}

/// `services` and everything they depend on, directly or not; every
/// service when `services` is empty.
fn with_dependencies(
    deps: &BTreeMap<String, Vec<(String, Condition)>>,
    services: &[&str],
) -> BTreeSet<String> {
    if services.is_empty() {
        return deps.keys().cloned().collect();
    }
    let mut wanted = BTreeSet::new();
    let mut todo: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    while let Some(svc) = todo.pop() {
        let Some(d) = deps.get(&svc) else { continue };
        if wanted.insert(svc) {
            todo.extend(d.iter().map(|(dep, _)| dep.clone()));
        }
    }
    wanted
}

/// Waits until container `c` is running and `probe` (an exec argv) succeeds
/// in it, trying every [`POLL`].
pub fn wait_probe(
    engine: &Engine,
    c: &ContainerInfo,
    probe: Vec<String>,
    deadline: Instant,
) -> Result<()> {
    wait_until(engine, c, Condition::Healthy, Some(probe), deadline)
}

/// Waits until container `c` meets `cond`; "healthy" without a health
/// check means running. Fails at once when it exits when it should not.
fn wait_condition(
    engine: &Engine,
    c: &ContainerInfo,
    cond: Condition,
    deadline: Instant,
) -> Result<()> {
    let probe = match cond {
        Condition::Healthy => engine.health_probe(&c.id)?,
        _ => None,
    };
    wait_until(engine, c, cond, probe, deadline)
}

fn wait_until(
    engine: &Engine,
    c: &ContainerInfo,
    cond: Condition,
    probe: Option<Vec<String>>,
    deadline: Instant,
) -> Result<()> {
    loop {
        let now = engine.container_info(&c.id)?;
        let met = match cond {
            Condition::CompletedSuccessfully => exited_cleanly(&now),
            _ if now.state != "running" => false,
            Condition::Started => true,
            Condition::Healthy => {
                now.health.as_deref() == Some("healthy")
                    || probe
                        .as_ref()
                        .is_none_or(|argv| engine.probe_once(&c.id, argv))
            }
        };
        if met {
            return Ok(());
        }
        if now.state == "exited" && cond != Condition::CompletedSuccessfully || exited_badly(&now) {
            bail!(
                "container {} exited (code {}) while starting; see `docker logs {}`",
                c.name,
                now.exit_code.unwrap_or(-1),
                c.name
            );
        }
        if now.health.as_deref() == Some("unhealthy") {
            bail!(
                "container {} is unhealthy; see `docker logs {}`",
                c.name,
                c.name
            );
        }
        if Instant::now() > deadline {
            bail!(
                "container {} did not become {cond:?} in time ({}, {})",
                c.name,
                now.state,
                now.health.as_deref().unwrap_or("no health check")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Saves an instance's record (adoption; everything else saves it on `up`).
pub fn save(site: &Site, _lock: &SiteLock, rec: &InstanceRecord) -> Result<()> {
    durable::write_json(&record_path(site, &rec.name), rec)
}

/// Forgets an instance whose containers and volumes are gone (used when a
/// restore or upgrade that created it is undone).
pub fn remove_record(site: &Site, _lock: &SiteLock, name: &str) -> Result<()> {
    for path in [record_path(site, name), effective_file(site, name)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// True when a record for `name` exists.
pub fn exists(site: &Site, name: &str) -> bool {
    record_path(site, name).is_file()
}

/// Waits (bounded by `timeout`) until every container of the instance is
/// running and healthy; fails early on a container that is unhealthy or died.
pub fn wait_ready(
    site: &Site,
    engine: &Engine,
    rec: &InstanceRecord,
    timeout: Duration,
) -> Result<InstanceStatus> {
    let start = Instant::now();
    loop {
        let st = status(site, engine, rec)?;
        if st.state == "running" {
            return Ok(st);
        }
        let failed: Vec<&ContainerInfo> = st
            .containers
            .iter()
            .filter(|c| c.health.as_deref() == Some("unhealthy") || exited_badly(c))
            .collect();
        if !failed.is_empty() || start.elapsed() > timeout {
            let culprits: Vec<String> = st
                .containers
                .iter()
                .filter(|c| !c.is_ready() && !exited_cleanly(c))
                .map(|c| {
                    format!(
                        "{} ({}{})",
                        c.name,
                        c.state,
                        c.health
                            .as_ref()
                            .map(|h| format!(", {h}"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            bail!(
                "instance {} did not become ready within {}s: {}. See `docker logs <container>`",
                rec.name,
                start.elapsed().as_secs(),
                culprits.join(", ")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// How often readiness is polled: a health probe or a container listing
/// costs a few milliseconds, and every poll interval of latency is downtime
/// in an upgrade.
pub const POLL: Duration = Duration::from_millis(100);

fn exited_badly(c: &ContainerInfo) -> bool {
    c.state == "exited" && c.exit_code.unwrap_or(0) != 0
}

fn exited_cleanly(c: &ContainerInfo) -> bool {
    c.state == "exited" && c.exit_code == Some(0)
}

/// Stops an instance's containers (keeps containers and volumes); a
/// stand-in an interrupted restore left running is removed.
pub fn stop(
    site: &Site,
    _lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
) -> Result<()> {
    without_twins(site, engine, compose, rec, "stop")
}

/// Removes an instance's containers (stand-ins included) and networks;
/// volumes are kept.
pub fn down(
    site: &Site,
    _lock: &SiteLock,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
) -> Result<()> {
    without_twins(site, engine, compose, rec, "down")
}

/// Removes the instance's stand-ins, then runs compose `command` for it.
fn without_twins(
    site: &Site,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
    command: &str,
) -> Result<()> {
    crate::ownership::Guard::new(site, engine)?.check_instance(rec)?;
    engine.remove_twins(&rec.name)?;
    rec.write_effective(site)?;
    compose.run(&rec.project(site), &[command])
}

/// Containers, health, volumes and ports of an instance.
pub fn status(site: &Site, engine: &Engine, rec: &InstanceRecord) -> Result<InstanceStatus> {
    let _ = site;
    let containers = engine.project_containers(&rec.name)?;
    let mut volumes = Vec::new();
    for (key, name) in &rec.volumes {
        volumes.push(VolumeStatus {
            key: key.clone(),
            name: name.clone(),
            exists: engine.volume(name)?.is_some(),
            size: None,
        });
    }
    let state = overall_state(&containers);
    Ok(InstanceStatus {
        name: rec.name.clone(),
        release: rec.release.clone(),
        home: rec.home.clone(),
        state,
        containers,
        volumes,
        ports: rec.ports.clone(),
        upgrade: None,
    })
}

/// Adds volume sizes to statuses (one engine-wide query for all of them).
pub fn fill_volume_sizes(engine: &Engine, statuses: &mut [InstanceStatus]) {
    let sizes = engine.volume_sizes();
    for st in statuses {
        for v in &mut st.volumes {
            v.size = sizes.get(&v.name).cloned();
        }
    }
}

fn overall_state(containers: &[ContainerInfo]) -> String {
    let live: Vec<&ContainerInfo> = containers.iter().filter(|c| !exited_cleanly(c)).collect();
    let state = if containers.is_empty() {
        "down"
    } else if live.iter().all(|c| c.is_ready()) && !live.is_empty() {
        "running"
    } else if live.iter().all(|c| c.state != "running") {
        "stopped"
    } else if live
        .iter()
        .any(|c| c.health.as_deref() == Some("unhealthy"))
    {
        "unhealthy"
    } else {
        "starting"
    };
    state.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: &str, health: Option<&str>, exit: i64) -> ContainerInfo {
        ContainerInfo {
            id: "x".into(),
            name: "x".into(),
            service: "s".into(),
            image: "i".into(),
            state: state.into(),
            health: health.map(str::to_string),
            exit_code: Some(exit),
        }
    }

    #[test]
    fn overall_state_reflects_health() {
        assert_eq!(overall_state(&[]), "down");
        assert_eq!(
            overall_state(&[c("running", Some("healthy"), 0)]),
            "running"
        );
        assert_eq!(
            overall_state(&[c("running", Some("starting"), 0)]),
            "starting"
        );
        assert_eq!(
            overall_state(&[c("running", None, 0), c("running", Some("unhealthy"), 0)]),
            "unhealthy"
        );
        assert_eq!(overall_state(&[c("exited", None, 137)]), "stopped");
        // A one-shot job that finished does not keep the instance from running.
        assert_eq!(
            overall_state(&[c("running", None, 0), c("exited", None, 0)]),
            "running"
        );
    }

    #[test]
    fn a_subset_of_services_brings_its_dependencies_along() {
        let deps: BTreeMap<String, Vec<(String, Condition)>> = [
            ("db".to_string(), vec![]),
            ("cache".into(), vec![]),
            ("api".into(), vec![("db".into(), Condition::Healthy)]),
            ("web".into(), vec![("api".into(), Condition::Started)]),
            // a dependency the file does not define is not a service to start
            (
                "cron".into(),
                vec![("elsewhere".into(), Condition::Started)],
            ),
        ]
        .into();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(with_dependencies(&deps, &["db"]), names(&["db"]));
        assert_eq!(
            with_dependencies(&deps, &["web"]),
            names(&["api", "db", "web"])
        );
        assert_eq!(with_dependencies(&deps, &["cron"]), names(&["cron"]));
        assert_eq!(with_dependencies(&deps, &[]).len(), 5);
        let cycle: BTreeMap<String, Vec<(String, Condition)>> = [
            ("a".to_string(), vec![("b".into(), Condition::Started)]),
            ("b".into(), vec![("a".into(), Condition::Started)]),
        ]
        .into();
        assert_eq!(with_dependencies(&cycle, &["a"]), names(&["a", "b"]));
    }

    #[test]
    fn default_names_follow_compose() {
        assert_eq!(default_name("v1.0.0").unwrap(), "v100");
        assert!(default_name("...").is_err());
    }

    #[test]
    fn ports_skip_ones_held_by_other_instances() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::create(dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap().port();
        let vendor = vec![PublishedPort {
            service: "app".into(),
            index: 0,
            host_ip: Some("127.0.0.1".into()),
            published: Some(busy),
            target: "80".into(),
            protocol: None,
        }];
        let got = assign_ports(&site, "copy", &vendor).unwrap();
        assert_ne!(
            got[0].host_port, busy,
            "a port in use on the host is skipped"
        );
        assert_eq!(got[0].vendor_port, busy);
    }
}
