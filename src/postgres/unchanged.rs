//! Whether a cluster can have changed since an earlier dump, without
//! dumping it again. Every change a dump holds writes WAL, except three:
//! unlogged tables (never WAL-logged), `nextval` (it logs 32 values ahead
//! and then only counts `log_cnt` down in memory) and a server started on
//! other files (a restored volume). So the fingerprint is the WAL insert
//! position with the cluster's identity, its timeline and its server's
//! start time, plus every sequence's `last_value`, `log_cnt` and
//! `is_called`; a database with an unlogged relation has none. Equal
//! fingerprints mean no change was committed in between: the earlier
//! dump, taken after its fingerprint, holds what a new one would.

use anyhow::Result;
use sha2::{Digest, Sha256};

use super::{Database, Server};
use crate::docker::Engine;

/// What the dumps are made with: other options make other dumps.
const DUMP_FORMAT: &str = "pg_dump -Fc -Z1; pg_dumpall --globals-only";

/// The cluster's identity and WAL position; `in_recovery` first, since a
/// standby has no insert position.
const CLUSTER_SQL: &str = "SELECT pg_is_in_recovery(), current_setting('server_version_num'), \
    (SELECT system_identifier FROM pg_control_system()), \
    (SELECT timeline_id FROM pg_control_checkpoint()), \
    pg_postmaster_start_time(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END;";

/// One database's unlogged relations, then its sequences' state as
/// `name=last_value:log_cnt:is_called` (read through `query_to_xml`, one
/// statement for any number of sequences).
const DATABASE_SQL: &str = "SELECT (SELECT count(*) FROM pg_class WHERE relpersistence = 'u'), \
    coalesce((SELECT string_agg(c.oid::regclass::text || '=' || \
      (xpath('/row/v/text()', query_to_xml(format( \
        'SELECT last_value || '':'' || log_cnt || '':'' || is_called AS v FROM %s', \
        c.oid::regclass), false, true, '')))[1]::text, ',' ORDER BY c.oid) \
     FROM pg_class c WHERE c.relkind = 'S'), '');";

impl Server {
    /// The cluster's fingerprint (see the module), or why it has none.
    /// `databases`: those the backup dumps.
    pub fn change_fingerprint(
        &self,
        engine: &Engine,
        databases: &[Database],
    ) -> Result<std::result::Result<String, String>> {
        let cluster = self.query(engine, CLUSTER_SQL)?;
        let fields: Vec<&str> = cluster.split('\t').collect();
        if fields.first() != Some(&"f") {
            return Ok(Err("the server is a standby".into()));
        }
        if fields.len() != 6 || fields.iter().any(|f| f.is_empty()) {
            return Ok(Err(format!("unexpected answer `{cluster}`")));
        }
        let mut hash = Sha256::new();
        hash.update(DUMP_FORMAT);
        hash.update(format!("\n{cluster}\n"));
        for db in databases {
            let answer = self.on(&db.name).query(engine, DATABASE_SQL)?;
            match parse_database(&answer) {
                Ok(sequences) => hash.update(format!("{}\t{sequences}\n", db.name)),
                Err(why) => return Ok(Err(format!("database {}: {why}", db.name))),
            }
        }
        Ok(Ok(hex::encode(hash.finalize())))
    }
}

/// The sequences' part of [`DATABASE_SQL`]'s answer, or why the database
/// has no fingerprint.
fn parse_database(answer: &str) -> std::result::Result<&str, String> {
    // psql's answer is trimmed: no sequences, no tab
    let (unlogged, sequences) = answer.split_once('\t').unwrap_or((answer, ""));
    match unlogged.parse::<u64>() {
        Ok(0) => Ok(sequences),
        Ok(n) => Err(format!(
            "{n} unlogged relation(s), whose changes leave no trace in the WAL"
        )),
        Err(_) => Err(format!("unexpected answer `{answer}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_database;

    #[test]
    fn a_database_with_unlogged_relations_has_no_fingerprint() {
        assert_eq!(parse_database("0"), Ok(""));
        assert_eq!(parse_database("0\ts=3:30:t"), Ok("s=3:30:t"));
        assert!(parse_database("2\ts=3:30:t")
            .unwrap_err()
            .contains("2 unlogged"));
        assert!(parse_database("x\t").is_err());
        assert!(parse_database("").is_err());
    }
}
