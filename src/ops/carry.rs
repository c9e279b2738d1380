//! Carrying an instance's config into a new release. A key or file the
//! administrator never changed (equal to the old vendor default) takes the
//! new release's default; one they changed keeps their value; where both
//! the administrator and the vendor changed something, the administrator's
//! value is kept and the conflict is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::compose::env::{parse_env, EnvMap};
use crate::durable;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CarryReport {
    /// Keys the administrator set, carried over.
    pub env_carried: Vec<String>,
    /// Keys the new release adds, with its defaults.
    pub env_added: Vec<String>,
    /// Keys the new release no longer has and the administrator never set.
    pub env_dropped: Vec<String>,
    /// Files the administrator changed (or created), carried over.
    pub files_carried: Vec<String>,
    /// Where both sides changed a value or file; the administrator's is kept.
    pub conflicts: Vec<String>,
}

/// Merges `.env`: returns the new file's text.
pub fn merge_env(
    old_instance: &EnvMap,
    old_vendor: &EnvMap,
    new_default_text: &str,
    report: &mut CarryReport,
) -> String {
    let new_default = parse_env(new_default_text);
    let admin_set = |k: &str| {
        old_instance
            .get(k)
            .is_some_and(|v| old_vendor.get(k) != Some(v))
    };
    let mut out = Vec::new();
    for line in new_default_text.lines() {
        let key = line
            .trim()
            .trim_start_matches("export ")
            .split_once('=')
            .map(|(k, _)| k.trim().to_string());
        match key {
            Some(k) if admin_set(&k) => {
                let v = &old_instance[&k];
                if old_vendor.get(&k) != new_default.get(&k) {
                    report.conflicts.push(format!(
                        ".env {k}: kept your value; the new release changed its default too"
                    ));
                }
                report.env_carried.push(k.clone());
                out.push(format!("{k}={}", quote(v)));
            }
            Some(k) => {
                if !old_vendor.contains_key(&k) && !old_instance.contains_key(&k) {
                    report.env_added.push(k);
                }
                out.push(line.to_string());
            }
            None => out.push(line.to_string()),
        }
    }
    let extra: Vec<&String> = old_instance
        .keys()
        .filter(|k| !new_default.contains_key(*k) && admin_set(k))
        .collect();
    if !extra.is_empty() {
        out.push(
            "# carried by upkeep: set by the administrator, not in the new release's defaults"
                .into(),
        );
        for k in extra {
            report.env_carried.push(k.clone());
            out.push(format!("{k}={}", quote(&old_instance[k])));
        }
    }
    for k in old_vendor
        .keys()
        .filter(|k| !new_default.contains_key(*k) && !admin_set(k))
    {
        report.env_dropped.push(k.clone());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn quote(v: &str) -> String {
    if v.chars()
        .any(|c| c.is_whitespace() || c == '#' || c == '"' || c == '\'')
    {
        format!("'{v}'")
    } else {
        v.to_string()
    }
}

/// Copies the administrator's files under `paths` from `old_home` to
/// `new_home`, leaving the new release's default where the administrator
/// never changed the old default. `.env` is merged separately.
pub fn carry_files(
    old_home: &Path,
    new_home: &Path,
    paths: &[String],
    old_vendor: &BTreeMap<String, String>,
    new_vendor: &BTreeMap<String, String>,
    report: &mut CarryReport,
) -> Result<()> {
    let mut files = BTreeSet::new();
    for p in paths.iter().filter(|p| p.as_str() != ".env") {
        collect_files(old_home, Path::new(p), &mut files)?;
    }
    for rel in files {
        let from = old_home.join(&rel);
        let digest = durable::sha256_file(&from)?;
        let untouched = old_vendor.get(&rel) == Some(&digest);
        if untouched && new_vendor.contains_key(&rel) {
            continue; // the new default stands
        }
        if !untouched
            && new_vendor
                .get(&rel)
                .is_some_and(|n| Some(n) != old_vendor.get(&rel))
            && old_vendor.contains_key(&rel)
        {
            report.conflicts.push(format!(
                "{rel}: kept your version; the new release changed its default too"
            ));
        }
        copy_exact(&from, &new_home.join(&rel))?;
        report.files_carried.push(rel);
    }
    Ok(())
}

fn collect_files(home: &Path, rel: &Path, out: &mut BTreeSet<String>) -> Result<()> {
    let path = home.join(rel);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return Ok(());
    };
    if meta.is_dir() {
        for entry in fs::read_dir(&path)? {
            collect_files(home, &rel.join(entry?.file_name()), out)?;
        }
    } else if meta.is_file() {
        out.insert(rel.to_string_lossy().into_owned());
    }
    Ok(())
}

/// Copies a file with its mode, time and (as root) owner.
pub fn copy_exact(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let meta = fs::metadata(from)?;
    let tmp = to.with_extension("upkeep-tmp");
    fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    fs::File::options()
        .write(true)
        .open(&tmp)?
        .set_modified(meta.modified()?)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, to)?;
    // the rename is durable only once its folder is synced
    let folder = to.parent().filter(|p| !p.as_os_str().is_empty());
    durable::sync_dir(folder.unwrap_or(Path::new(".")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keeps_admin_values_and_new_defaults() {
        let old_vendor = parse_env("GREETING=hi\nPASSWORD=default\nOLD_ONLY=1\nTIMEOUT=30\n");
        let old_instance =
            parse_env("GREETING=hi\nPASSWORD=s3cret\nOLD_ONLY=1\nTIMEOUT=60\nMINE=x y\n");
        let new_default = "# app\nGREETING=hello\nPASSWORD=default\nTIMEOUT=45\nFEATURE_X=on\n";
        let mut r = CarryReport::default();
        let text = merge_env(&old_instance, &old_vendor, new_default, &mut r);
        let merged = parse_env(&text);
        assert_eq!(
            merged["GREETING"], "hello",
            "never set by the admin: new default"
        );
        assert_eq!(merged["PASSWORD"], "s3cret", "set by the admin: kept");
        assert_eq!(merged["TIMEOUT"], "60");
        assert_eq!(merged["FEATURE_X"], "on");
        assert_eq!(merged["MINE"], "x y");
        assert!(!merged.contains_key("OLD_ONLY"));
        assert!(text.starts_with("# app\n"));
        assert_eq!(r.env_added, ["FEATURE_X"]);
        assert_eq!(r.env_dropped, ["OLD_ONLY"]);
        assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
        assert!(r.conflicts[0].contains("TIMEOUT"));
    }

    #[test]
    fn files_carry_only_admin_changes() {
        let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(old.path().join("Caddyfile"), "old default\n").unwrap();
        fs::create_dir_all(old.path().join("etc/ssl")).unwrap();
        fs::write(old.path().join("etc/ssl/server.key"), "my key\n").unwrap();
        fs::set_permissions(
            old.path().join("etc/ssl/server.key"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::write(new.path().join("Caddyfile"), "new default\n").unwrap();
        let digest = |s: &str| crate::durable::sha256_reader(s.as_bytes()).unwrap();
        let old_vendor: BTreeMap<String, String> = [
            ("Caddyfile".to_string(), digest("old default\n")),
            ("etc/ssl/server.key".into(), digest("vendor key\n")),
        ]
        .into();
        let new_vendor: BTreeMap<String, String> = [
            ("Caddyfile".to_string(), digest("new default\n")),
            ("etc/ssl/server.key".into(), digest("vendor key\n")),
        ]
        .into();
        let mut r = CarryReport::default();
        carry_files(
            old.path(),
            new.path(),
            &["Caddyfile".into(), "etc/ssl".into(), "missing".into()],
            &old_vendor,
            &new_vendor,
            &mut r,
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(new.path().join("Caddyfile")).unwrap(),
            "new default\n"
        );
        let key = new.path().join("etc/ssl/server.key");
        assert_eq!(fs::read_to_string(&key).unwrap(), "my key\n");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(r.files_carried, ["etc/ssl/server.key"]);
        assert!(r.conflicts.is_empty());
    }
}
