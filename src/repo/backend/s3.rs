//! A repository in an S3-compatible bucket (AWS, MinIO, Garage, Ceph, moto...):
//! requests signed with SigV4 by `rusty-s3`, sent by the blocking `ureq` client.
//! Objects are written with a single PUT, which S3 makes visible atomically.

use std::time::Duration;

use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::{is_id, Backend, FileType};
use crate::repo::error::{RepoError, Result};

const SIGN_FOR: Duration = Duration::from_secs(3600);
const ATTEMPTS: u32 = 10;
/// Bodies of listings and small files; packs are read by range.
const MAX_BODY: u64 = 512 << 20;
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Answers that say "try again": server errors, throttling, request timeout.
fn is_transient(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// 0.2 s, 0.4 s, … doubling up to 10 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(7)).min(10_000))
}

fn read_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    status: u16,
    limit: u64,
) -> std::result::Result<Vec<u8>, ureq::Error> {
    if (200..300).contains(&status) {
        return resp.body_mut().with_config().limit(limit).read_to_vec();
    }
    let mut explanation = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(resp.body_mut().as_reader(), MAX_ERROR_BODY),
        &mut explanation,
    )?;
    Ok(explanation)
}

/// A bucket (and a key prefix inside it) holding a repository.
pub struct S3Backend {
    bucket: Bucket,
    creds: Credentials,
    prefix: String,
    agent: ureq::Agent,
    display: String,
}

impl S3Backend {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:9000`); credentials from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
    pub fn new(endpoint: &str, bucket: &str, prefix: &str, region: &str) -> Result<S3Backend> {
        let display = format!(
            "s3:{}/{}/{}",
            endpoint.trim_end_matches('/'),
            bucket,
            prefix
        );
        let url = endpoint
            .parse()
            .map_err(|_| RepoError::InvalidLocation(display.clone()))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), region.to_string())
            .map_err(|e| RepoError::Invalid(format!("invalid S3 bucket in {display}: {e}")))?;
        let key = std::env::var("AWS_ACCESS_KEY_ID").ok();
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(RepoError::Invalid(format!(
                "S3 repository {display} needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )));
        };
        let creds = match std::env::var("AWS_SESSION_TOKEN") {
            Ok(t) if !t.is_empty() => Credentials::new_with_token(key, secret, t),
            _ => Credentials::new(key, secret),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(600)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .build()
            .into();
        let prefix = prefix.trim_matches('/').to_string();
        Ok(S3Backend {
            bucket,
            creds,
            prefix,
            agent,
            display,
        })
    }

    fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{}", self.prefix, path)
        }
    }

    fn fail(&self, op: &'static str, path: &str, message: String) -> RepoError {
        RepoError::Backend {
            location: self.display.clone(),
            op,
            path: path.to_string(),
            message,
        }
    }

    /// Runs one request, retrying transport errors and the answers S3 gives
    /// when it is busy or briefly away (5xx, 429, 408) with a growing pause
    /// (about 40 s in all). Returns the status and the body: at most `limit`
    /// bytes for a success, the first 64 KiB of an error's explanation.
    fn request(
        &self,
        op: &'static str,
        path: &str,
        limit: u64,
        send: &dyn Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(retry_pause(attempt));
                tracing::debug!("S3 {op} {path}: attempt {} after {last}", attempt + 1);
            }
            match send() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    match read_body(&mut resp, status, limit) {
                        Ok(b) if !is_transient(status) => return Ok((status, b)),
                        Ok(b) => last = format!("HTTP {status}: {}", String::from_utf8_lossy(&b)),
                        Err(e @ ureq::Error::BodyExceedsLimit(_)) => {
                            return Err(self.fail(
                                op,
                                path,
                                format!(
                                    "the answer is larger than the {limit} bytes expected: {e}"
                                ),
                            ))
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.fail(
            op,
            path,
            format!("gave up after {ATTEMPTS} attempts: {last}"),
        ))
    }

    fn check(&self, op: &'static str, path: &str, status: u16, body: &[u8]) -> Result<()> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        if status == 404 && (op == "read" || op == "head") {
            return Err(RepoError::NotFound {
                path: self.key(path),
            });
        }
        let hint = match status {
            403 => " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy)",
            _ => "",
        };
        Err(self.fail(
            op,
            path,
            format!("HTTP {status}{hint}: {}", String::from_utf8_lossy(body)),
        ))
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.display.clone()
    }

    fn create(&self) -> Result<()> {
        let url = self.bucket.head_bucket(Some(&self.creds)).sign(SIGN_FOR);
        let (status, _) = self.request("head bucket", "", 0, &|| {
            self.agent.head(url.as_str()).call()
        })?;
        if status == 404 {
            let action = self.bucket.create_bucket(&self.creds);
            let url = action.sign(SIGN_FOR);
            let body = action.body();
            let (status, b) = self.request("create bucket", "", MAX_ERROR_BODY, &|| {
                self.agent.put(url.as_str()).send(body.as_bytes())
            })?;
            self.check("create bucket", "", status, &b)?;
        } else {
            self.check("head bucket", "", status, &[])?;
        }
        Ok(())
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        let dir = t.dir();
        let prefix = format!("{}/", self.key(dir));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.creds));
            action.with_prefix(prefix.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGN_FOR);
            let (status, body) = self.request("list", dir, MAX_BODY, &|| {
                self.agent.get(url.as_str()).call()
            })?;
            self.check("list", dir, status, &body)?;
            let text = String::from_utf8_lossy(&body);
            let parsed = ListObjectsV2::parse_response(&text)
                .map_err(|e| self.fail("list", dir, format!("unreadable answer: {e}")))?;
            for c in parsed.contents {
                let name = c.key.rsplit('/').next().unwrap_or_default().to_string();
                if is_id(&name) {
                    out.push((name, c.size.unwrap_or(0)));
                }
            }
            match parsed.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let path = t.path(name);
        let url = self
            .bucket
            .get_object(Some(&self.creds), &self.key(&path))
            .sign(SIGN_FOR);
        let (status, body) = self.request("read", &path, MAX_BODY, &|| {
            self.agent.get(url.as_str()).call()
        })?;
        self.check("read", &path, status, &body)?;
        Ok(body)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> Result<Vec<u8>> {
        let path = t.path(name);
        if len == 0 {
            return Ok(Vec::new());
        }
        let url = self
            .bucket
            .get_object(Some(&self.creds), &self.key(&path))
            .sign(SIGN_FOR);
        let range = format!("bytes={}-{}", offset, offset + u64::from(len) - 1);
        let (status, body) = self.request("read", &path, u64::from(len), &|| {
            self.agent
                .get(url.as_str())
                .header("Range", range.as_str())
                .call()
        })?;
        self.check("read", &path, status, &body)?;
        if body.len() != len as usize {
            return Err(self.fail(
                "read",
                &path,
                format!("asked for {len} bytes at {offset}, got {}", body.len()),
            ));
        }
        Ok(body)
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        let path = t.path(name);
        let url = self
            .bucket
            .put_object(Some(&self.creds), &self.key(&path))
            .sign(SIGN_FOR);
        let (status, body) = self.request("write", &path, MAX_ERROR_BODY, &|| {
            self.agent.put(url.as_str()).send(data)
        })?;
        self.check("write", &path, status, &body)
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        let path = t.path(name);
        let url = self
            .bucket
            .delete_object(Some(&self.creds), &self.key(&path))
            .sign(SIGN_FOR);
        let (status, body) = self.request("delete", &path, MAX_ERROR_BODY, &|| {
            self.agent.delete(url.as_str()).call()
        })?;
        if status == 404 {
            return Ok(());
        }
        self.check("delete", &path, status, &body)
    }
}
