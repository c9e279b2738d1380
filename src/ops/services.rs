//! Stopping services for a consistent copy and always starting them again.
//! What is stopped is written to a journal first, so if upkeep is killed
//! while services are down, the next upkeep run on the site starts them.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::compose::Compose;
use crate::docker::Engine;
use crate::durable;
use crate::instance::{self, InstanceRecord};
use crate::site::Site;

#[derive(Debug, Serialize, Deserialize)]
struct Stopped {
    instance: String,
    services: Vec<String>,
    why: String,
}

fn journal(site: &Site, instance: &str) -> PathBuf {
    site.journals_dir().join(format!("{instance}.stopped.json"))
}

/// Services stopped for a while; started again when dropped.
pub struct StoppedServices<'a> {
    site: &'a Site,
    engine: &'a Engine,
    compose: &'a Compose,
    rec: &'a InstanceRecord,
    services: Vec<String>,
}

/// Stops `services` of `rec` (those running) for `why`.
pub fn stop<'a>(
    site: &'a Site,
    engine: &'a Engine,
    compose: &'a Compose,
    rec: &'a InstanceRecord,
    services: Vec<String>,
    why: &str,
) -> Result<StoppedServices<'a>> {
    let entry = Stopped {
        instance: rec.name.clone(),
        services: services.clone(),
        why: why.to_string(),
    };
    durable::write_json(&journal(site, &rec.name), &entry)?;
    let mut args = vec!["stop"];
    args.extend(services.iter().map(String::as_str));
    compose.run(&rec.project(site), &args)?;
    Ok(StoppedServices {
        site,
        engine,
        compose,
        rec,
        services,
    })
}

impl StoppedServices<'_> {
    /// Starts the services again and reports failure.
    pub fn restart(mut self) -> Result<()> {
        let services = std::mem::take(&mut self.services);
        start(self.site, self.engine, self.compose, self.rec, &services)
    }
}

impl Drop for StoppedServices<'_> {
    fn drop(&mut self) {
        if !self.services.is_empty() {
            if let Err(e) = start(
                self.site,
                self.engine,
                self.compose,
                self.rec,
                &self.services,
            ) {
                tracing::error!(
                    "could not start {} of {} again: {e:#}",
                    self.services.join(", "),
                    self.rec.name
                );
            }
        }
    }
}

/// Starts the services and waits until the instance is ready again, so the
/// caller leaves it as it found it.
fn start(
    site: &Site,
    engine: &Engine,
    compose: &Compose,
    rec: &InstanceRecord,
    services: &[String],
) -> Result<()> {
    engine.remove_twins(&rec.name)?;
    let mut args = vec!["start"];
    args.extend(services.iter().map(String::as_str));
    compose.run(&rec.project(site), &args)?;
    instance::wait_ready(site, engine, rec, READY_TIMEOUT)?;
    std::fs::remove_file(journal(site, &rec.name)).ok();
    Ok(())
}

const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// Starts services that an interrupted run left stopped. Call with the site
/// lock held, before other work.
pub fn recover(site: &Site, engine: &Engine, compose: &Compose) -> Result<Vec<String>> {
    let mut recovered = Vec::new();
    for rec in instance::list(site)? {
        let path = journal(site, &rec.name);
        let Some(entry) = durable::read_json::<Stopped>(&path)? else {
            continue;
        };
        tracing::warn!(
            "starting {} of instance {} again: a run that stopped them ({}) was interrupted",
            entry.services.join(", "),
            rec.name,
            entry.why
        );
        start(site, engine, compose, &rec, &entry.services)?;
        recovered.push(rec.name);
    }
    Ok(recovered)
}
