//! Work on a cluster after a major upgrade kept its files: statistics, and
//! indexes whose collation's version changed.

use anyhow::{Context, Result};

use super::Server;
use crate::docker::{Engine, ExecSpec};

/// Per database: the statements that rebuild every index depending on a
/// collation whose recorded version differs from what the library provides
/// now, then record the new versions; the database's default collation
/// too. Rows of SQL text, for the caller to run one by one (REINDEX
/// CONCURRENTLY cannot run in a transaction block).
const MISMATCHES_SQL: &str = "\
SELECT format('REINDEX INDEX CONCURRENTLY %s', i.indexrelid::regclass) \
FROM pg_index i JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid \
  AND d.refclassid = 'pg_collation'::regclass \
JOIN pg_collation c ON c.oid = d.refobjid \
WHERE c.collversion IS DISTINCT FROM pg_collation_actual_version(c.oid) \
GROUP BY i.indexrelid \
UNION ALL \
SELECT format('ALTER COLLATION %s REFRESH VERSION', c.oid::regcollation) FROM pg_collation c \
WHERE c.collversion IS DISTINCT FROM pg_collation_actual_version(c.oid) \
  AND c.collnamespace <> 'pg_catalog'::regnamespace \
UNION ALL \
SELECT 'REINDEX DATABASE CONCURRENTLY' FROM pg_database \
WHERE datname = current_database() AND datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid) \
UNION ALL \
SELECT format('ALTER DATABASE %I REFRESH COLLATION VERSION', datname) FROM pg_database \
WHERE datname = current_database() AND datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid);";

/// Indexes on collations that record a version (which a new C library or
/// ICU may change), per collation, and the database's own recorded version.
const VERSIONED_SQL: &str = "\
SELECT format('%s (%s %s)', c.collname, CASE c.collprovider WHEN 'i' THEN 'ICU' ELSE 'libc' END, c.collversion), \
  count(DISTINCT i.indexrelid) \
FROM pg_index i JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid \
  AND d.refclassid = 'pg_collation'::regclass \
JOIN pg_collation c ON c.oid = d.refobjid \
WHERE coalesce(c.collversion, '') <> '' GROUP BY 1 \
UNION ALL \
SELECT format('the default collation (%s)', datcollversion), NULL FROM pg_database \
WHERE datname = current_database() AND coalesce(datcollversion, '') <> '';";

impl Server {
    /// For the plan: per database, what depends on a versioned collation
    /// (`database: N index(es) on COLLATION (provider version)`).
    pub fn versioned_collations(&self, engine: &Engine) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for db in self.databases(engine)? {
            for line in self.on(&db.name).query(engine, VERSIONED_SQL)?.lines() {
                match line.split_once('\t') {
                    Some((what, n)) if !n.is_empty() => out.push(format!(
                        "database {}: {n} index(es) on collation {what}",
                        db.name
                    )),
                    _ => out.push(format!("database {}: {}", db.name, line.trim())),
                }
            }
        }
        Ok(out)
    }

    /// Rebuilds what a collation version change made wrong, database by
    /// database; returns what it ran (`database: statement`).
    pub fn refresh_collations(&self, engine: &Engine) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for db in self.databases(engine)? {
            let on = self.on(&db.name);
            let statements = on.query(engine, MISMATCHES_SQL)?;
            for s in statements.lines().filter(|l| !l.trim().is_empty()) {
                on.query(engine, &format!("{s};"))
                    .with_context(|| format!("{} in database {}", s, db.name))?;
                done.push(format!("{}: {s}", db.name));
            }
        }
        Ok(done)
    }

    /// `vacuumdb --all --analyze-in-stages`: usable statistics at once,
    /// complete ones after the last stage.
    pub fn analyze_in_stages(&self, engine: &Engine) -> Result<()> {
        let spec: ExecSpec = self.spec(&["vacuumdb", "--all", "--analyze-in-stages", "--quiet"]);
        engine
            .exec(&spec, None)
            .context("vacuumdb --all --analyze-in-stages")?;
        Ok(())
    }
}
