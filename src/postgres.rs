//! Postgres by its own tools, inside its own container: `pg_dump`,
//! `pg_dumpall --globals-only`, `pg_restore`, `psql`. Credentials reach the
//! tools through the exec's environment (PGUSER, PGPASSWORD, PGDATABASE),
//! never through argv, so `ps` on the host or in the container never shows
//! the password.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::docker::{Engine, ExecReader, ExecSession, ExecSpec};
use crate::profile::PostgresProfile;

pub mod conf;
mod databases;
mod maintenance;
mod physical;
mod unchanged;
pub use databases::{Database, Grant, Setting};
pub use physical::{explain_refusal, with_root_entry};

/// A running Postgres server and how to log in to it.
#[derive(Debug, Clone)]
pub struct Server {
    pub container: String,
    pub user: String,
    password: String,
    pub database: String,
}

/// Exact row counts per table (`schema.table`), to verify a restore.
pub type RowCounts = BTreeMap<String, i64>;

/// The row counts of every database of a cluster in one map, keyed
/// `database/schema.table`: what a restore or an upgrade must reproduce.
pub fn cluster_key(database: &str, table: &str) -> String {
    format!("{database}/{table}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerFacts {
    pub major: u32,
    pub version: String,
}

impl Server {
    /// Finds the credentials in the container's environment, as the
    /// profile names them.
    pub fn from_container(
        engine: &Engine,
        container: &str,
        pg: &PostgresProfile,
    ) -> Result<Server> {
        let env = engine.container_env(container)?;
        let get = |var: &str| env.get(var).cloned();
        let user = get(&pg.user_var).unwrap_or_else(|| "postgres".into());
        let password = get(&pg.password_var).unwrap_or_default();
        let database = get(&pg.db_var).unwrap_or_else(|| user.clone());
        Ok(Server {
            container: container.to_string(),
            user,
            password,
            database,
        })
    }

    /// The same login, connected to another database of the cluster.
    pub fn on(&self, database: &str) -> Server {
        Server {
            database: database.to_string(),
            ..self.clone()
        }
    }

    fn spec(&self, cmd: &[&str]) -> ExecSpec {
        // The local socket first (trust auth in most images), with the
        // password in the environment for images that require it.
        ExecSpec::new(&self.container, cmd).env(vec![
            format!("PGUSER={}", self.user),
            format!("PGPASSWORD={}", self.password),
            format!("PGDATABASE={}", self.database),
        ])
    }

    /// Runs SQL and returns what it printed (rows only, tab-separated).
    pub fn query(&self, engine: &Engine, sql: &str) -> Result<String> {
        let out = engine.exec(&self.spec(PSQL), Some(&mut sql.as_bytes()))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Waits (bounded) until the server accepts queries.
    pub fn wait_ready(&self, engine: &Engine, timeout: std::time::Duration) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            match self.query(engine, "SELECT 1") {
                Ok(s) if s == "1" => return Ok(()),
                Ok(_) | Err(_) if start.elapsed() < timeout => {
                    std::thread::sleep(crate::instance::POLL)
                }
                Ok(other) => bail!("Postgres answered `{other}` to SELECT 1"),
                Err(e) => return Err(e).context("Postgres did not accept connections in time"),
            }
        }
    }

    pub fn facts(&self, engine: &Engine) -> Result<ServerFacts> {
        let out = self.query(engine, "SHOW server_version_num; SHOW server_version;")?;
        let mut lines = out.lines();
        let num: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("unexpected answer to SHOW server_version_num")?;
        Ok(ServerFacts {
            major: num / 10000,
            version: lines.next().unwrap_or_default().trim().to_string(),
        })
    }

    /// Exact row counts of every user table of the database.
    pub fn row_counts(&self, engine: &Engine) -> Result<RowCounts> {
        parse_row_counts(&self.query(engine, ROW_COUNTS_SQL)?)
    }

    /// Every database that accepts connections (templates aside), with
    /// its properties, by name.
    pub fn databases(&self, engine: &Engine) -> Result<Vec<Database>> {
        databases::parse_databases(&self.query(engine, databases::DATABASES_SQL)?)
    }

    /// Row counts of every database of the cluster (see [`cluster_key`]).
    pub fn cluster_row_counts(&self, engine: &Engine) -> Result<RowCounts> {
        let mut all = RowCounts::new();
        for db in self.databases(engine)? {
            let counts = self
                .on(&db.name)
                .row_counts(engine)
                .with_context(|| format!("counting the rows of database {}", db.name))?;
            all.extend(
                counts
                    .into_iter()
                    .map(|(t, n)| (cluster_key(&db.name, &t), n)),
            );
        }
        Ok(all)
    }

    /// Makes `db` in this (fresh) cluster with its owner, privileges,
    /// settings and comment, ready for its contents: created, or, when the
    /// image already created it, given its properties. A locale that
    /// differs from the snapshot's is reported, not changed: that needs
    /// a new database, and the image's is the one its server expects.
    pub fn make_database(&self, engine: &Engine, db: &Database) -> Result<()> {
        let existing = self.databases(engine)?;
        let found = existing.iter().find(|d| d.name == db.name);
        self.query(engine, &db.create_sql(found.is_some()))
            .with_context(|| {
                format!(
                    "creating database {} ({} {}); if its locale is missing in this image, install it or restore into a release that has it",
                    db.name, db.encoding, db.collate
                )
            })?;
        if let Some(found) = found {
            for d in db.locale_differences(found) {
                tracing::warn!("database {}: {d}", db.name);
            }
        }
        Ok(())
    }

    /// A psql session that stays open between statements (one transaction
    /// can span several of them).
    pub fn session<'e>(&self, engine: &'e Engine) -> Result<Session<'e>> {
        Ok(Session {
            exec: engine.exec_session(&self.spec(PSQL))?,
            answers: 0,
        })
    }

    /// `pg_dump -Fc` of the database into `consume`, with the row counts of
    /// the very MVCC snapshot the dump reads, counted while it dumps: exact
    /// for what the dump holds even while the app keeps writing.
    ///
    /// zlib level 1 rather than pg_dump's default 6: the dump runs on the
    /// production server, sharing its cores with the app and with the
    /// volumes' backup, and level 6 takes 1.4–1.8× as long for output 2–4 %
    /// smaller (docs/BENCHMARKS.md). The repository cannot compress it
    /// further either way, and an upgrade only passes it through a pipe.
    pub fn dump_counted<T>(
        &self,
        engine: &Engine,
        consume: impl FnOnce(ExecReader<'_>) -> Result<T>,
    ) -> Result<(T, RowCounts)> {
        let mut session = self.session(engine)?;
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")?;
        let snapshot = session.query("SELECT pg_export_snapshot();")?;
        let dump = engine.exec_reader(&self.spec(&[
            "pg_dump",
            "-Fc",
            "-Z1",
            "--no-password",
            &format!("--snapshot={snapshot}"),
        ]))?;
        let (consumed, counted) = std::thread::scope(|s| {
            let counter = s.spawn(|| session.row_counts());
            let consumed = consume(dump);
            (
                consumed,
                counter.join().expect("row counting thread panicked"),
            )
        });
        // The transaction that exported the snapshot ends only now: pg_dump
        // must have imported it before.
        session.finish()?;
        Ok((consumed?, counted?))
    }

    /// Roles and other cluster-wide objects (`pg_dumpall --globals-only`).
    pub fn dump_globals<'e>(&self, engine: &'e Engine) -> Result<ExecReader<'e>> {
        engine.exec_reader(&self.spec(&["pg_dumpall", "--globals-only", "--no-password"]))
    }

    /// Replays globals; roles that already exist (the image created the
    /// app's user from the restored .env) are not an error.
    pub fn restore_globals(&self, engine: &Engine, sql: &mut (dyn Read + Send)) -> Result<()> {
        let spec = self.spec(&["psql", "-X", "-q", "-d", "postgres", "-f", "-"]);
        let out = engine.exec(&spec, Some(sql))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr
            .lines()
            .filter(|l| l.contains("ERROR") && !l.contains("already exists"))
        {
            tracing::warn!("restoring roles: {line}");
        }
        Ok(())
    }

    /// `pg_restore` of a custom-format dump from `dump` into the database;
    /// `single_transaction`: all of it or nothing, in one transaction.
    pub fn restore(
        &self,
        engine: &Engine,
        dump: &mut (dyn Read + Send),
        single_transaction: bool,
    ) -> Result<()> {
        let mut argv = vec!["pg_restore", "--exit-on-error", "--no-password"];
        if single_transaction {
            argv.push("--single-transaction");
        }
        argv.extend(["-d", &self.database]);
        let spec = self.spec(&argv);
        engine
            .exec(&spec, Some(dump))
            .context("pg_restore failed; the target database may be partly restored")?;
        Ok(())
    }
}

/// psql reading SQL from stdin: no psqlrc, stop at the first error, rows
/// only (no headers, footers or command tags), unaligned, tab-separated.
const PSQL: &[&str] = &[
    "psql",
    "-X",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-tA",
    "-F",
    "\t",
    "-f",
    "-",
];

/// Every user table with its exact row count, one `schema.table<TAB>n` line each.
const ROW_COUNTS_SQL: &str = "SELECT format('%I.%I', table_schema, table_name), \
    (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', \
    table_schema, table_name), false, true, '')))[1]::text \
    FROM information_schema.tables \
    WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') \
    ORDER BY 1;";

fn parse_row_counts(out: &str) -> Result<RowCounts> {
    let mut counts = RowCounts::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (table, n) = line
            .split_once('\t')
            .context("unexpected row count output")?;
        counts.insert(table.to_string(), n.trim().parse().context("row count")?);
    }
    Ok(counts)
}

/// An open psql session: statements are sent one at a time and their
/// output read back, so a transaction can stay open across them.
pub struct Session<'e> {
    exec: ExecSession<'e>,
    answers: u64,
}

impl Session<'_> {
    /// Runs SQL (complete statements, ending with `;`) and returns what it printed.
    pub fn query(&mut self, sql: &str) -> Result<String> {
        debug_assert!(sql.trim_end().ends_with(';'), "unterminated SQL: {sql}");
        self.answers += 1;
        let marker = format!("-- upkeep answer {} --", self.answers);
        self.exec
            .send(format!("{sql}\n\\echo '{marker}'\n").as_bytes())?;
        Ok(self.exec.read_until(&marker)?.trim().to_string())
    }

    pub fn row_counts(&mut self) -> Result<RowCounts> {
        parse_row_counts(&self.query(ROW_COUNTS_SQL)?)
    }

    /// Ends the session (an open transaction is rolled back).
    pub fn finish(self) -> Result<()> {
        self.exec.finish()
    }
}

/// The Postgres major version an image runs, asked of the image itself.
pub fn image_major(engine: &Engine, image: &str) -> Result<u32> {
    let out = engine.run_once(image, &["postgres", "--version"])?;
    parse_version_major(&out)
        .with_context(|| format!("`postgres --version` in {image} printed `{}`", out.trim()))
}

/// `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)` → 15.
fn parse_version_major(text: &str) -> Option<u32> {
    let after = text.split("PostgreSQL)").nth(1)?.trim();
    after.split(['.', ' ']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn major_from_version_text() {
        assert_eq!(
            super::parse_version_major("postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(
            super::parse_version_major("postgres (PostgreSQL) 17.2"),
            Some(17)
        );
        assert_eq!(
            super::parse_version_major("bash: postgres: not found"),
            None
        );
    }
}
