//! Operations that change things: backup, restore, upgrade. Each builds a
//! plan (printed by `--dry-run`) and then carries it out under the site lock.

pub mod adopt;
pub mod backup;
pub mod binds;
pub mod bulk_load;
pub mod carry;
pub mod physical;
pub mod pipe;
pub mod repository;
pub mod restore;
pub mod services;
pub mod upgrade;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bundle;
use crate::compose::runner::Project;
use crate::compose::ComposeFile;
use crate::docker::Engine;
use crate::instance::InstanceRecord;
use crate::postgres::{RowCounts, Server};
use crate::profile::{self, PostgresProfile, Profile};
use crate::site::Site;

/// What every operation works with: the site (and proof its lock is held),
/// the engine and compose.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub site: &'a Site,
    pub lock: &'a crate::site::SiteLock,
    pub engine: &'a crate::docker::Engine,
    pub compose: &'a crate::compose::Compose,
}

/// An instance with what its release says about it.
pub struct Target {
    pub rec: InstanceRecord,
    pub release_dir: PathBuf,
    pub vendor: ComposeFile,
    pub profile: Profile,
    /// Service → image reference, as compose resolves them for this instance.
    pub images: std::collections::BTreeMap<String, String>,
}

impl Target {
    pub fn load(site: &Site, rec: InstanceRecord) -> Result<Target> {
        let release_dir = crate::release::release_dir(site, &rec.release)?;
        let compose_path = bundle::compose_file_in(&release_dir)
            .with_context(|| format!("{} holds no docker-compose.yml", release_dir.display()))?;
        let vendor = ComposeFile::resolve(
            &crate::compose::Compose::default(),
            &Project::new(&rec.name, &rec.home, &compose_path),
        )?;
        let profile = profile::detect(&release_dir, &rec.home, &vendor)?;
        let images = vendor.images()?;
        Ok(Target {
            rec,
            release_dir,
            vendor,
            profile,
            images,
        })
    }

    /// External volumes the instance uses under the vendor's names, key →
    /// Docker name (those it owns, from `--external-volume`, are in
    /// `rec.volumes`).
    pub fn shared_external_volumes(&self) -> Vec<(String, String)> {
        self.vendor
            .external_volumes()
            .into_iter()
            .filter(|(key, _)| !self.rec.volumes.contains_key(key))
            .collect()
    }

    /// Every named volume holding the instance's data, its own and the
    /// shared external ones: key → Docker name.
    pub fn data_volumes(&self) -> std::collections::BTreeMap<String, String> {
        let mut all = self.rec.volumes.clone();
        all.extend(self.shared_external_volumes());
        all
    }

    /// Bytes used by each of the instance's data volumes that exists, by
    /// `du` in a helper of its Postgres image (else any of its images).
    pub fn volume_usage(&self, engine: &Engine) -> Result<std::collections::HashMap<String, u64>> {
        let mut volumes: Vec<String> = Vec::new();
        for name in self.data_volumes().into_values() {
            if !volumes.contains(&name) && engine.volume(&name)?.is_some() {
                volumes.push(name);
            }
        }
        let pg = self.profile.postgres.as_ref().map(|p| p.service.as_str());
        let image = self.helper_image(pg)?;
        let names: Vec<&str> = volumes.iter().map(String::as_str).collect();
        engine.volume_usage(&names, &image)
    }

    /// An image of this release to create helper containers from (never
    /// started): the one of `service` if given, else any.
    pub fn helper_image(&self, service: Option<&str>) -> Result<String> {
        service
            .and_then(|s| self.images.get(s))
            .or_else(|| self.images.values().next())
            .cloned()
            .context("the release's compose file names no image")
    }

    /// The release's Postgres service, or why there is none.
    pub fn postgres(&self) -> Result<&PostgresProfile> {
        self.profile
            .postgres
            .as_ref()
            .context("the release has no Postgres service")
    }

    /// The instance's Postgres server if its container is running.
    pub fn running_postgres(&self, engine: &Engine) -> Result<Option<Server>> {
        let Some(pg) = &self.profile.postgres else {
            return Ok(None);
        };
        let container = engine
            .project_containers(&self.rec.name)?
            .into_iter()
            .find(|c| c.service == pg.service && c.state == "running");
        container
            .map(|c| Server::from_container(engine, &c.id, pg))
            .transpose()
    }

    /// Creates the instance's containers (none started) and starts only the
    /// Postgres service, through the engine; waits until it answers queries.
    /// The rest can then start with `instance::start_created`.
    pub fn start_postgres_alone(&self, cx: &Ctx, timeout: Duration) -> Result<Server> {
        let pg = self.postgres()?;
        crate::instance::create_containers(cx.site, cx.compose, &self.rec, &[&pg.service])?;
        crate::instance::start_created(
            cx.site,
            cx.engine,
            cx.compose,
            &self.rec,
            &[&pg.service],
            timeout,
        )?;
        let server = self.running_postgres(cx.engine)?.with_context(|| {
            format!(
                "Postgres ({}) of {} did not start",
                pg.service, self.rec.name
            )
        })?;
        server.wait_ready(cx.engine, timeout)?;
        Ok(server)
    }

    /// Starts the containers `instance::create_containers` made and, with
    /// `count`, counts the database's rows meanwhile, as soon as Postgres
    /// answers (the count reads every table: it overlaps the other
    /// services' start rather than delaying it).
    pub fn start_counting(
        &self,
        cx: &Ctx,
        count: bool,
        timeout: Duration,
    ) -> Result<Option<RowCounts>> {
        let gave_up = AtomicBool::new(false);
        std::thread::scope(|s| {
            let counter =
                count.then(|| s.spawn(|| self.row_counts_once_up(cx.engine, &gave_up, timeout)));
            let started = crate::instance::start_created(
                cx.site,
                cx.engine,
                cx.compose,
                &self.rec,
                &[],
                timeout,
            );
            if started.is_err() {
                gave_up.store(true, Ordering::Relaxed);
            }
            let counts = counter
                .map(|h| h.join().expect("row counting thread panicked"))
                .transpose();
            started?;
            counts
        })
    }

    /// The row counts of every database as soon as the server answers queries.
    fn row_counts_once_up(
        &self,
        engine: &Engine,
        gave_up: &AtomicBool,
        timeout: Duration,
    ) -> Result<RowCounts> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(server) = self.running_postgres(engine)? {
                if server.query(engine, "SELECT 1").is_ok_and(|s| s == "1") {
                    return server.cluster_row_counts(engine);
                }
            }
            if gave_up.load(Ordering::Relaxed) || Instant::now() > deadline {
                bail!("Postgres of {} did not answer queries", self.rec.name);
            }
            std::thread::sleep(crate::instance::POLL);
        }
    }

    /// Services that mount the named volume `key`.
    pub fn services_mounting(&self, key: &str) -> Vec<String> {
        let mut s: Vec<String> = self
            .vendor
            .volume_mounts(key)
            .into_iter()
            .map(|(svc, _)| svc)
            .collect();
        s.dedup();
        s
    }
}
