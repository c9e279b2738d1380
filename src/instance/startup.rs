//! Starting an instance's containers through the engine in `depends_on`
//! order, and waiting until they are ready.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::compose::{Compose, ComposeFile};
use crate::docker::{ContainerInfo, Engine};
use crate::site::Site;

use super::*;

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

pub(super) fn exited_badly(c: &ContainerInfo) -> bool {
    c.state == "exited" && c.exit_code.unwrap_or(0) != 0
}

pub(super) fn exited_cleanly(c: &ContainerInfo) -> bool {
    c.state == "exited" && c.exit_code == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
