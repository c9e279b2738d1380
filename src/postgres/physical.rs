//! Physical copies of a running server: `pg_basebackup` inside its
//! container, one tar on stdout with the WAL it needs (`-X fetch`), so the
//! copy is self-consistent and a server started on it only replays that WAL.

use std::io::{self, Read};

use anyhow::{bail, Result};

use super::Server;
use crate::docker::{Engine, ExecReader};

/// Tablespaces other than the two every cluster has: `pg_basebackup -D -`
/// writes one tar for the data folder alone, so their files would be missing.
const EXTRA_TABLESPACES_SQL: &str =
    "SELECT coalesce(string_agg(spcname, ', ' ORDER BY spcname), '') \
    FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global');";

impl Server {
    /// Refuses a cluster whose physical copy would not fit in one tar.
    pub fn check_base_backup(&self, engine: &Engine) -> Result<()> {
        let extra = self.query(engine, EXTRA_TABLESPACES_SQL)?;
        if !extra.is_empty() {
            bail!(
                "Postgres (container {}) has tablespaces outside its data folder ({extra}): a \
                 physical backup streams the data folder alone and would miss them. Back up \
                 without --physical (the logical dump holds every tablespace's tables), or move \
                 their tables to pg_default (`ALTER TABLE … SET TABLESPACE pg_default`) and drop them",
                self.container
            );
        }
        Ok(())
    }

    /// The `pg_current_snapshot()` of the cluster: equal before and after a
    /// base backup only if no transaction wrote (took an xid) or finished
    /// meanwhile, i.e. row counts taken before hold for the copy.
    pub fn xid_snapshot(&self, engine: &Engine) -> Result<String> {
        self.query(engine, "SELECT pg_current_snapshot()::text;")
    }

    /// `pg_basebackup` of the running server as one tar, WAL included.
    /// A fast checkpoint: the default spread one makes the backup wait for
    /// up to `checkpoint_timeout` before it copies anything.
    pub fn base_backup<'e>(&self, engine: &'e Engine) -> Result<ExecReader<'e>> {
        engine.exec_reader(&self.spec(&[
            "pg_basebackup",
            "-D",
            "-",
            "-Ft",
            "-X",
            "fetch",
            "--checkpoint=fast",
            "--no-password",
        ]))
    }
}

/// Why `pg_basebackup` was refused, and what to change, when its error
/// says so; otherwise `err` as it is.
pub fn explain_refusal(err: anyhow::Error, user: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    let fix = if text.contains("pg_hba.conf") {
        format!(
            "pg_hba.conf allows no replication connection for {user} over the local socket: add \
             the line `local replication {user} trust` (or `scram-sha-256`) to the server's \
             pg_hba.conf and reload it (`SELECT pg_reload_conf()`)"
        )
    } else if text.contains("must be superuser or replication role")
        || text.contains("permission denied to start WAL sender")
    {
        format!("role {user} may not replicate: `ALTER ROLE {user} REPLICATION`")
    } else if text.contains("max_wal_senders") || text.contains("wal_level") {
        "the server allows no WAL sender: set max_wal_senders ≥ 1 and wal_level = replica \
         (the defaults) and restart it"
            .to_string()
    } else {
        return err;
    };
    err.context(format!(
        "the physical backup (pg_basebackup) was refused: {fix}; or back up without --physical"
    ))
}

/// A base backup's tar with an entry for its root folder first, carrying
/// the owner of the backup's own files (the server's user) and mode 0700:
/// Postgres refuses to start on a data folder others may read, and an
/// image whose server does not start as root cannot fix that itself.
pub fn with_root_entry(mut tar: impl Read) -> Result<impl Read> {
    let mut first = [0u8; 512];
    tar.read_exact(&mut first)?;
    let header = tar::Header::from_byte_slice(&first);
    let mut root = tar::Header::new_ustar();
    root.set_path("./")?;
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o700);
    root.set_uid(header.uid()?);
    root.set_gid(header.gid()?);
    root.set_mtime(header.mtime()?);
    root.set_size(0);
    root.set_cksum();
    Ok(io::Cursor::new(root.as_bytes().to_vec())
        .chain(io::Cursor::new(first.to_vec()))
        .chain(tar))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn the_root_entry_takes_the_owner_of_the_first_file() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("backup_label").unwrap();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_uid(999);
        h.set_gid(998);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut out = Vec::new();
        super::with_root_entry(bytes.as_slice())
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    h.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("./".to_string(), 0o700, 999, 998),
                ("backup_label".to_string(), 0o600, 999, 998)
            ]
        );
    }

    #[test]
    fn a_short_or_garbage_first_header_is_an_error_not_a_panic() {
        assert!(super::with_root_entry(&[0u8; 100][..]).is_err());
        let garbage = [b'x'; 1024];
        assert!(super::with_root_entry(&garbage[..]).is_err());
    }

    #[test]
    fn a_refused_replication_says_what_to_change() {
        let err = anyhow::anyhow!(
            "`pg_basebackup` failed (exit 1): FATAL:  no pg_hba.conf entry for replication \
             connection from host \"[local]\", user \"app\""
        );
        let text = format!("{:#}", super::explain_refusal(err, "app"));
        assert!(text.contains("local replication app trust"), "{text}");
        let other = super::explain_refusal(anyhow::anyhow!("disk full"), "app");
        assert_eq!(format!("{other:#}"), "disk full");
    }
}
