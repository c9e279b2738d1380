//! Where a repository is: a local folder or an S3-compatible bucket.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::backend::local::LocalBackend;
use super::backend::s3::S3Backend;
use super::backend::Backend;
use super::error::{RepoError, Result};

/// A repository location, parsed from `PATH`, `local:PATH` or
/// `s3:http(s)://host[:port]/bucket[/prefix]` (also restic's `s3:host/bucket/prefix`,
/// which means https).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoLocation {
    Local(PathBuf),
    S3 {
        /// `http(s)://host[:port]`
        endpoint: String,
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
        prefix: String,
        /// From `AWS_DEFAULT_REGION` / `AWS_REGION` when parsed, else `us-east-1`.
        region: String,
    },
}

impl RepoLocation {
    /// Parses a location string (see the type's documentation).
    pub fn parse(s: &str) -> Result<RepoLocation> {
        let bad = || RepoError::InvalidLocation(s.to_string());
        if let Some(rest) = s.strip_prefix("s3:") {
            let (scheme, rest) = if let Some(r) = rest.strip_prefix("http://") {
                ("http", r)
            } else if let Some(r) = rest.strip_prefix("https://") {
                ("https", r)
            } else {
                ("https", rest)
            };
            let mut parts = rest.splitn(3, '/');
            let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(bad)?;
            let bucket = parts.next().filter(|b| !b.is_empty()).ok_or_else(bad)?;
            let prefix = parts.next().unwrap_or("").trim_matches('/').to_string();
            let region = std::env::var("AWS_DEFAULT_REGION")
                .or_else(|_| std::env::var("AWS_REGION"))
                .ok()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "us-east-1".to_string());
            return Ok(RepoLocation::S3 {
                endpoint: format!("{scheme}://{host}"),
                bucket: bucket.to_string(),
                prefix,
                region,
            });
        }
        let path = s.strip_prefix("local:").unwrap_or(s);
        if path.is_empty() || path.contains("://") {
            return Err(bad());
        }
        Ok(RepoLocation::Local(PathBuf::from(path)))
    }

    pub(crate) fn backend(&self) -> Result<Box<dyn Backend>> {
        Ok(match self {
            RepoLocation::Local(p) => Box::new(LocalBackend::new(p.clone())),
            RepoLocation::S3 {
                endpoint,
                bucket,
                prefix,
                region,
            } => Box::new(S3Backend::new(endpoint, bucket, prefix, region)?),
        })
    }
}

impl FromStr for RepoLocation {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<RepoLocation> {
        RepoLocation::parse(s)
    }
}

impl From<PathBuf> for RepoLocation {
    fn from(p: PathBuf) -> RepoLocation {
        RepoLocation::Local(p)
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::Local(p) => write!(f, "{}", p.display()),
            RepoLocation::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } if prefix.is_empty() => {
                write!(f, "s3:{endpoint}/{bucket}")
            }
            RepoLocation::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => write!(f, "s3:{endpoint}/{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            RepoLocation::parse("/srv/backups").unwrap(),
            RepoLocation::Local("/srv/backups".into())
        );
        assert_eq!(
            RepoLocation::parse("local:rel/dir").unwrap(),
            RepoLocation::Local("rel/dir".into())
        );
        match RepoLocation::parse("s3:http://127.0.0.1:9000/bucket/some/prefix/").unwrap() {
            RepoLocation::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                assert_eq!(endpoint, "http://127.0.0.1:9000");
                assert_eq!(bucket, "bucket");
                assert_eq!(prefix, "some/prefix");
            }
            l => panic!("{l:?}"),
        }
        match RepoLocation::parse("s3:s3.amazonaws.com/b").unwrap() {
            RepoLocation::S3 {
                endpoint, prefix, ..
            } => {
                assert_eq!(endpoint, "https://s3.amazonaws.com");
                assert_eq!(prefix, "");
            }
            l => panic!("{l:?}"),
        }
        assert!(RepoLocation::parse("s3:http://host").is_err());
        assert!(RepoLocation::parse("").is_err());
        assert!(RepoLocation::parse("sftp://x").is_err());
    }
}
