//! What a snapshot takes from the instance's last one instead of reading
//! it again: the dumps of a cluster that did not change since
//! (`postgres::unchanged`), and volumes whose every path has the metadata
//! it had then (`Engine::volume_listing`). Both go in by reference to the
//! blobs the last snapshot stored ([`SnapshotWriter::reuse_streams`]).

use anyhow::{Context, Result};

use super::cluster::Dumps;
use crate::postgres::Database;
use crate::repo::{Repository, SnapshotWriter};
use crate::snapshot::{self, Item, Manifest};

/// The instance's last snapshot and its manifest.
pub(super) struct Last {
    pub id: String,
    pub manifest: Manifest,
}

/// The last snapshot of `instance` in `repo`, if any; one that cannot be
/// read is reported and left alone (the backup then reads everything).
pub(super) fn last_snapshot(repo: &Repository, instance: &str) -> Option<Last> {
    let found = || -> Result<Option<Last>> {
        let tag = format!("instance={instance}");
        let Some(last) = repo
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.tags.contains(&tag))
        else {
            return Ok(None);
        };
        let Some(text) = repo.manifest(&last.id)? else {
            return Ok(None);
        };
        let manifest = serde_json::from_str(&text)
            .with_context(|| format!("the manifest of snapshot {}", last.short_id))?;
        Ok(Some(Last {
            id: last.id,
            manifest,
        }))
    };
    found().unwrap_or_else(|e| {
        tracing::warn!(
            "the last snapshot of {instance} cannot be read ({e:#}): everything is read again"
        );
        None
    })
}

impl Last {
    fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(8)]
    }

    /// Its dumps, added by reference, when it holds dumps taken with
    /// fingerprint `fingerprint` of the same databases.
    pub(super) fn reuse_dumps(
        &self,
        writer: &SnapshotWriter<'_>,
        fingerprint: &str,
        databases: &[Database],
    ) -> Result<Option<Dumps>> {
        let Some(pg) = &self.manifest.postgres else {
            return Ok(None);
        };
        let same_databases =
            pg.databases.len() == databases.len()
                && pg.databases.iter().zip(databases).all(|(had, has)| {
                    had.properties.as_ref() == Some(has) && !had.stream.is_empty()
                });
        if pg.dump_fingerprint.as_deref() != Some(fingerprint) || !same_databases {
            tracing::info!(
                "Postgres changed since snapshot {} ({}): dumping",
                self.short_id(),
                if same_databases {
                    "its WAL position, a sequence or its server start"
                } else {
                    "its databases"
                }
            );
            return Ok(None);
        }
        let mut streams = vec![snapshot::GLOBALS_STREAM.to_string()];
        streams.extend(pg.databases.iter().map(|d| d.stream.clone()));
        let items = self.reuse(writer, &streams)?;
        tracing::info!(
            "Postgres is unchanged since snapshot {} (same WAL position, sequences and server start): its dumps are reused, not taken again (--no-reuse takes them)",
            self.short_id()
        );
        Ok(Some(Dumps {
            items,
            databases: pg.databases.clone(),
            fingerprint: Some(fingerprint.to_string()),
            from: Some(self.id.clone()),
        }))
    }

    /// Its copy of volume `key`, added by reference, when it was taken
    /// with the listing `listing` the volume has now.
    pub(super) fn reuse_volume(
        &self,
        writer: &SnapshotWriter<'_>,
        key: &str,
        listing: &str,
    ) -> Result<Option<Item>> {
        let had = self
            .manifest
            .volumes()
            .find(|i| i.volume.as_deref() == Some(key));
        match had {
            Some(item) if item.listing_sha256.as_deref() == Some(listing) => {
                let mut items = self.reuse(writer, std::slice::from_ref(&item.stream))?;
                tracing::info!(
                    "volume {key} is unchanged since snapshot {} (every path's size, times, inode, owner and mode): not read again",
                    self.short_id()
                );
                let mut item = items.pop().context("one stream reused")?;
                item.reused_from = Some(self.id.clone());
                Ok(Some(item))
            }
            _ => Ok(None),
        }
    }

    /// Streams `streams` of this snapshot in the one being written, with
    /// their manifest items.
    fn reuse(&self, writer: &SnapshotWriter<'_>, streams: &[String]) -> Result<Vec<Item>> {
        let items: Vec<Item> = streams
            .iter()
            .map(|s| self.manifest.stream(s).cloned())
            .collect::<Option<_>>()
            .with_context(|| {
                format!(
                    "snapshot {}'s manifest lacks a stream it lists",
                    self.short_id()
                )
            })?;
        writer.reuse_streams(&self.id, streams)?;
        Ok(items)
    }
}
