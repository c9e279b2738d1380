//! The snapshot repository: restic's repository format (version 2), written and
//! read natively, on a local folder or S3-compatible storage.
//!
//! ```no_run
//! use upkeep::repo::{RepoLocation, Repository, SnapshotMeta};
//! # fn main() -> Result<(), upkeep::repo::RepoError> {
//! let repo = Repository::open_or_init(&RepoLocation::parse("/srv/backups")?, "secret")?;
//! let w = repo.begin_snapshot(SnapshotMeta { tags: vec!["instance=graphistry".into()], ..Default::default() })?;
//! w.add_stream("config.tar", &mut std::io::empty())?;
//! let snap = w.commit()?;
//! repo.restore_stream(&snap.short_id, "config.tar", &mut std::io::sink())?;
//! # Ok(()) }
//! ```
//!
//! See `docs/REPOSITORY.md` for the design and why it is not built on `rustic_core`.

pub mod backend;
mod check;
mod chunker;
mod crypto;
mod error;
mod forget;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod index;
mod location;
mod lock;
mod pack;
mod pipeline;
mod repository;
mod transfer;
mod writer;

pub use check::{CheckReport, Damage, Verdict};
pub use error::{RepoError, Result};
pub use forget::{ForgetReport, KeepPolicy, PruneReport};
pub use location::RepoLocation;
pub use repository::{hostname, Repository, SnapshotInfo, StreamInfo, MANIFEST_STREAM};
pub use writer::{SnapshotMeta, SnapshotWriter};
