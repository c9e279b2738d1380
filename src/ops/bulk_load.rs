//! Postgres started for one bulk load: the `pg_restore` of a restore or of
//! a dump upgrade into a fresh cluster. The server runs in a twin of the instance's Postgres
//! container (see `docker::twin`) with `wal_level=minimal`, and the dump is
//! restored in one transaction: a table created and filled in the
//! transaction that commits it is written once and synced at commit, not
//! written a second time into the WAL, and its indexes are built the same
//! way. On the benchmark's pgbench database (1 GiB) `pg_restore` takes
//! 5.7–6.0 s instead of 8.4–9.3 s (docs/BENCHMARKS.md). The settings go on
//! the twin's command line, so nothing of them stays in the cluster: the
//! instance's own container, started afterwards, runs as configured.
//!
//! When the service's command is not the `postgres` server (a wrapper
//! script), or the twin does not start, the load runs in the instance's own
//! container as configured, only slower.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Ctx, Target};
use crate::docker::{ContainerInfo, Engine};
use crate::postgres::Server;

/// Server settings for the load. `max_wal_senders=0` and `archive_mode=off`
/// are what `minimal` requires; one transaction holds a lock on every table
/// and index restored, hence room for many more than the default 6,400.
const LOAD_SETTINGS: &[&str] = &[
    "wal_level=minimal",
    "max_wal_senders=0",
    "archive_mode=off",
    "max_locks_per_transaction=1024",
];

/// Ready, when the service has no health check: the server answers on
/// TCP, which the official image's entrypoint keeps closed while it
/// initialises the cluster with a server of its own.
const READY_PROBE: &[&str] = &["pg_isready", "-q", "-h", "127.0.0.1"];

/// The command line of the load's server: the service's own with the load
/// settings appended, when it runs the `postgres` server (directly or
/// through an entrypoint that takes its flags); `None` otherwise.
fn load_command(cmd: &[String]) -> Option<Vec<String>> {
    let first = cmd.first()?;
    let runs_postgres =
        first == "postgres" || first.ends_with("/postgres") || first.starts_with('-');
    if !runs_postgres {
        return None;
    }
    let mut out = cmd.to_vec();
    for s in LOAD_SETTINGS {
        out.push("-c".into());
        out.push((*s).into());
    }
    Some(out)
}

/// A Postgres server ready for a bulk load; [`LoadServer::finish`] ends it.
pub struct LoadServer<'e> {
    engine: &'e Engine,
    pub server: Server,
    /// The twin container, when the load runs in one.
    twin: Option<String>,
}

impl Target {
    /// The server for a bulk load into this instance's (fresh) cluster: the
    /// one started for it before (`LoadServer::detach`), or the instance's
    /// own Postgres running, or a newly started one (see
    /// [`Target::start_postgres_for_load`]). Waits until it answers queries.
    pub fn postgres_for_load<'e>(&self, cx: &Ctx<'e>, timeout: Duration) -> Result<LoadServer<'e>> {
        let engine = cx.engine;
        let pg = self.postgres()?;
        let load = if let Some(twin) = engine.running_twin(&self.rec.name)? {
            LoadServer {
                engine,
                server: Server::from_container(engine, &twin.id, pg)?,
                twin: Some(twin.id),
            }
        } else if let Some(server) = self.running_postgres(engine)? {
            LoadServer {
                engine,
                server,
                twin: None,
            }
        } else {
            return self.start_postgres_for_load(cx, timeout);
        };
        load.server.wait_ready(engine, timeout)?;
        Ok(load)
    }

    /// Starts a twin of the instance's Postgres container for a bulk load;
    /// falls back to starting the container itself (see the module's
    /// comment; `start_created` removes a twin left behind first). Waits
    /// until the server answers queries.
    fn start_postgres_for_load<'e>(
        &self,
        cx: &Ctx<'e>,
        timeout: Duration,
    ) -> Result<LoadServer<'e>> {
        let engine = cx.engine;
        match self.start_load_twin(cx, timeout) {
            Ok(Some(load)) => return Ok(load),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "Postgres could not start with bulk-load settings ({e:#}); restoring into it as \
                 configured, which is slower"
            ),
        }
        Ok(LoadServer {
            engine,
            server: self.start_postgres_alone(cx, timeout)?,
            twin: None,
        })
    }

    /// Starts a twin of the instance's Postgres container (created, never
    /// started; compose creates it if needed) with the load settings and
    /// waits until it answers queries. `None` when the service's command
    /// takes no server flags or the container has run before.
    pub fn start_load_twin<'e>(
        &self,
        cx: &Ctx<'e>,
        timeout: Duration,
    ) -> Result<Option<LoadServer<'e>>> {
        let deadline = Instant::now() + timeout;
        let engine = cx.engine;
        let pg = self.postgres()?;
        let created = |engine: &Engine| -> Result<Option<ContainerInfo>> {
            Ok(engine
                .project_containers(&self.rec.name)?
                .into_iter()
                .find(|c| c.service == pg.service))
        };
        let original = match created(engine)? {
            Some(c) => c,
            None => {
                crate::instance::create_containers(cx.site, cx.compose, &self.rec, &[&pg.service])?;
                created(engine)?.context("compose created no Postgres container")?
            }
        };
        if original.state != "created" {
            // It ran before: a load is for a fresh cluster only.
            return Ok(None);
        }
        let configured = engine.container_cmd(&original.id)?;
        let Some(cmd) = load_command(&configured) else {
            tracing::info!(
                "the command of {} is not the postgres server itself ({}): loading it as configured",
                pg.service,
                configured.join(" ")
            );
            return Ok(None);
        };
        // The service's own health check tells the server from the one an
        // image's entrypoint runs while it initialises a cluster.
        let probe = engine
            .health_probe(&original.id)?
            .unwrap_or_else(|| READY_PROBE.iter().map(|s| s.to_string()).collect());
        let twin = engine.start_twin(&original, &self.rec.name, cmd)?;
        let load = LoadServer {
            engine,
            server: Server::from_container(engine, &twin.id, pg)?,
            twin: Some(twin.id.clone()),
        };
        crate::instance::wait_probe(engine, &twin, probe, deadline)?;
        load.server.wait_ready(engine, timeout)?;
        Ok(Some(load))
    }
}

impl LoadServer<'_> {
    /// `pg_restore` of a custom-format dump into `database` (made
    /// beforehand), in one transaction when the server runs with the load
    /// settings.
    pub fn restore_into(
        &self,
        database: &str,
        dump: &mut (dyn std::io::Read + Send),
    ) -> Result<()> {
        self.server
            .on(database)
            .restore(self.engine, dump, self.twin.is_some())
    }

    /// Leaves the server running for a later [`Target::postgres_for_load`]
    /// (an upgrade initialises the new cluster before its downtime).
    pub fn detach(mut self) {
        self.twin = None;
    }

    /// Ends the load: the twin shuts down cleanly and is removed, so the
    /// instance's own container can start on the loaded data.
    pub fn finish(mut self) -> Result<()> {
        match self.twin.take() {
            Some(id) => self.engine.remove_twin(&id),
            None => Ok(()),
        }
    }
}

impl Drop for LoadServer<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.twin.take() {
            if let Err(e) = self.engine.remove_twin(&id) {
                tracing::warn!("could not remove the bulk-load container {id}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_server_gets_the_load_settings_after_its_own() {
        let cmd = load_command(&argv("postgres -c shared_buffers=256MB")).unwrap();
        assert_eq!(&cmd[..3], &argv("postgres -c shared_buffers=256MB")[..]);
        let pos = |s: &str| cmd.iter().position(|a| a == s).unwrap();
        assert_eq!(cmd[pos("wal_level=minimal") - 1], "-c");
        assert!(pos("max_wal_senders=0") > 2);
        assert_eq!(cmd.len(), 3 + 2 * LOAD_SETTINGS.len());
    }

    #[test]
    fn flags_for_the_entrypoint_and_full_paths_count_as_the_server() {
        assert!(load_command(&argv("-c max_connections=50")).is_some());
        assert!(load_command(&argv("/usr/lib/postgresql/15/bin/postgres")).is_some());
    }

    #[test]
    fn other_commands_are_left_alone() {
        assert_eq!(load_command(&argv("/start-db.sh --fast")), None);
        assert_eq!(load_command(&argv("postgres-wrapper")), None);
        assert_eq!(load_command(&[]), None);
    }
}
