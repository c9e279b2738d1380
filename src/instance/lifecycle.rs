//! Bringing an instance up, stopping it, taking it down, and its status.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::compose::Compose;
use crate::docker::{ContainerInfo, Engine};
use crate::durable;
use crate::release;
use crate::site::{Site, SiteLock};

use super::ports::reassign_taken_ports;
use super::startup::{exited_cleanly, wait_ready};
use super::*;

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
    let containers = engine.project_containers(&rec.name)?;
    let shared = vendor_compose(&site.release_dir(&rec.release))
        .map(|c| c.external_volumes())
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| !rec.volumes.contains_key(key));
    let all = rec
        .volumes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), false))
        .chain(shared.map(|(k, v)| (k, v, true)));
    let mut volumes = Vec::new();
    for (key, name, external) in all {
        volumes.push(VolumeStatus {
            exists: engine.volume(&name)?.is_some(),
            key,
            name,
            size: None,
            external,
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
}
