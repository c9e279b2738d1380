//! Errors of the repository layer; each message says what happened and, where
//! there is one, what to do.

use std::io;

/// Errors of [`Repository`](super::Repository) operations.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("wrong repository password: no key in {location} opens with it (check the password file or variable you gave)")]
    WrongPassword { location: String },

    #[error("no repository at {location}: run `upkeep init` (or `restic init`) there first, or check the location")]
    NotARepository { location: String },

    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },

    #[error("repository {location} is locked by {holder}; wait for it to finish, or if that process is gone, remove the lock with `restic unlock` (upkeep ignores locks older than 30 minutes and removes those of processes gone from this host)")]
    Locked { location: String, holder: String },

    #[error("stopped: {0}. Another host could soon take it for stale and prune data this run still needs, so nothing more was written and no snapshot was saved; check the connection to the repository and run again")]
    LockLost(String),

    #[error("no snapshot matches {0:?}: list them with `upkeep snapshots`")]
    SnapshotNotFound(String),

    #[error("snapshot id prefix {0:?} matches several snapshots: give more digits")]
    AmbiguousSnapshot(String),

    #[error("snapshot {snapshot} has no stream {name:?} (it has: {available})")]
    StreamNotFound {
        snapshot: String,
        name: String,
        available: String,
    },

    #[error("invalid stream name {0:?}: use non-empty path segments separated by '/', without '.' or '..'")]
    InvalidStreamName(String),

    #[error("stream {0:?} was already added to this snapshot")]
    DuplicateStream(String),

    #[error("invalid repository location {0:?}: give a folder path or s3:http(s)://host[:port]/bucket[/prefix]")]
    InvalidLocation(String),

    #[error("reading stream {name:?} failed: {source}; the snapshot was not saved")]
    Source {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("writing restored stream failed: {0}")]
    Sink(#[source] io::Error),

    #[error("repository {location}: {op} {path} failed: {message}")]
    Backend {
        location: String,
        op: &'static str,
        path: String,
        message: String,
    },

    #[error("{path} not found in the repository")]
    NotFound { path: String },

    #[error("repository data is damaged: {0}; run `upkeep check --read-data` for details")]
    Corrupt(String),

    #[error("unsupported repository: {0}")]
    Unsupported(String),

    #[error("{0}")]
    Invalid(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Result of repository operations.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

impl RepoError {
    /// The storage could not be read (network, permissions, a server error
    /// after retries): says nothing about the data itself.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, RepoError::Backend { .. } | RepoError::Io { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> RepoError {
        RepoError::Io {
            context: context.into(),
            source,
        }
    }
}
