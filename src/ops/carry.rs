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

use crate::compose::env::{split_entries, EnvEntry};
use crate::durable;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CarryReport {
    /// Keys the administrator set, carried over.
    pub env_carried: Vec<String>,
    /// Keys the new release adds, with its defaults.
    pub env_added: Vec<String>,
    /// Keys the new release no longer has and the administrator never set:
    /// kept in the instance's `.env`, reported.
    pub env_dropped: Vec<String>,
    /// Files the administrator changed (or created), carried over.
    pub files_carried: Vec<String>,
    /// Where both sides changed a value or file; the administrator's is kept.
    pub conflicts: Vec<String>,
}

/// Merges `.env` line by line and returns the new file's text. Each
/// assignment is compared as written (quotes, comments and line ending
/// included) with the old release's pristine `.env`: a key the
/// administrator never touched takes the new release's line, one they
/// changed keeps their line byte for byte. Keys the new release adds come
/// with its lines; keys it drops are kept at the end and reported, and so
/// are the administrator's own keys.
pub fn merge_env(
    old_instance_text: &str,
    old_vendor_text: &str,
    new_default_text: &str,
    report: &mut CarryReport,
) -> String {
    let instance = last_entries(old_instance_text);
    let old_vendor = last_entries(old_vendor_text);
    let new_default = split_entries(new_default_text);
    let new_keys: BTreeSet<&str> = new_default
        .iter()
        .filter_map(|e| e.key.as_deref())
        .collect();
    let changed_by_admin = |k: &str| {
        instance
            .get(k)
            .is_some_and(|e| old_vendor.get(k).map(EnvEntry::text) != Some(e.text()))
    };
    let mut out = String::new();
    for entry in &new_default {
        match entry.key.as_deref() {
            Some(k) if changed_by_admin(k) => {
                let vendor_changed = old_vendor.get(k).map(EnvEntry::text) != Some(entry.text());
                if old_vendor.contains_key(k) && vendor_changed {
                    report.conflicts.push(format!(
                        ".env {k}: kept your line; the new release changed its default too"
                    ));
                }
                push_once(&mut report.env_carried, k);
                out.push_str(&instance[k].line());
            }
            Some(k) => {
                if !old_vendor.contains_key(k) && !instance.contains_key(k) {
                    push_once(&mut report.env_added, k);
                }
                out.push_str(&entry.line());
            }
            None => out.push_str(&entry.line()),
        }
    }
    let kept: Vec<(&String, &EnvEntry)> = instance
        .iter()
        .filter(|(k, _)| !new_keys.contains(k.as_str()))
        .collect();
    if !kept.is_empty() {
        out.push_str(
            "# carried by upkeep: not in the new release's defaults (set by the administrator, \
             or dropped by the new release)\n",
        );
        for (k, entry) in kept {
            if changed_by_admin(k) {
                report.env_carried.push(k.clone());
            } else {
                report.env_dropped.push(k.clone());
            }
            out.push_str(&entry.line());
        }
    }
    out
}

/// Each key's last assignment (the one compose reads), by key.
fn last_entries(text: &str) -> BTreeMap<String, EnvEntry> {
    split_entries(text)
        .into_iter()
        .filter_map(|e| Some((e.key.clone()?, e)))
        .collect()
}

fn push_once(list: &mut Vec<String>, key: &str) {
    if !list.iter().any(|k| k == key) {
        list.push(key.to_string());
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
        let old_vendor = "GREETING=hi\nPASSWORD=default\nOLD_ONLY=1\nTIMEOUT=30\n";
        let old_instance = "GREETING=hi\nPASSWORD=s3cret\nOLD_ONLY=1\nTIMEOUT=60\nMINE=x y\n";
        let new_default = "# app\nGREETING=hello\nPASSWORD=default\nTIMEOUT=45\nFEATURE_X=on\n";
        let mut r = CarryReport::default();
        let text = merge_env(old_instance, old_vendor, new_default, &mut r);
        assert_eq!(
            text,
            "# app\nGREETING=hello\nPASSWORD=s3cret\nTIMEOUT=60\nFEATURE_X=on\n\
             # carried by upkeep: not in the new release's defaults (set by the administrator, \
             or dropped by the new release)\nMINE=x y\nOLD_ONLY=1\n"
        );
        assert_eq!(r.env_added, ["FEATURE_X"]);
        assert_eq!(r.env_dropped, ["OLD_ONLY"], "kept and reported");
        assert_eq!(r.env_carried, ["PASSWORD", "TIMEOUT", "MINE"]);
        assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
        assert!(r.conflicts[0].contains("TIMEOUT"));
    }

    /// The table, plus escapes, multi-line values, `${VAR}`
    /// references and CRLF: each line the administrator wrote comes out
    /// byte for byte, wherever the new release puts that key.
    #[test]
    fn admin_lines_are_carried_byte_for_byte() {
        let hostile = [
            "K1='pa$word'\n",
            "K2=\"s3cret\" # c\n",
            "K3=\"it's\"\n",
            "export K4=\"keep # this\"\n",
            "K5= # c\n",
            "K6=\"tab\\there \\\"q\\\" \\\\ back\"\n",
            "K7=\"line one\nline two # not a comment\nK8=inside\"\n",
            "K9=${K1}-and-$K2\n",
            "K10=crlf value\r\n",
            "K11='multi\nline'\n",
        ];
        let old_vendor: String = (1..=11).map(|i| format!("K{i}=vendor\n")).collect();
        let new_default: String = (1..=11).rev().map(|i| format!("K{i}=new\n")).collect();
        let instance: String = hostile.concat();
        let mut r = CarryReport::default();
        let text = merge_env(&instance, &old_vendor, &new_default, &mut r);
        for line in hostile {
            assert!(
                text.contains(line),
                "{line:?} not carried as written:\n{text}"
            );
        }
        // `K8=inside` is part of K7's value: the admin never set K8.
        assert_eq!(text.matches("=new").count(), 1, "{text}");
        assert!(
            text.starts_with("K11='multi\nline'\nK10=crlf value\r\nK9="),
            "{text}"
        );
        assert!(text.contains("\nK8=new\n"), "{text}");
        assert_eq!(r.env_carried.len(), 10, "{:?}", r.env_carried);
        // Carrying the result again changes nothing.
        let mut r2 = CarryReport::default();
        assert_eq!(merge_env(&text, &old_vendor, &new_default, &mut r2), text);
    }

    #[test]
    fn untouched_lines_take_the_new_release_line_even_when_quoted() {
        let old_vendor = "A=\"same\" # vendor note\nB='x'\n";
        let new_default = "A=\"newer\" # vendor note\nB='y'\nC=\"multi\nline\"\n";
        let mut r = CarryReport::default();
        let text = merge_env(old_vendor, old_vendor, new_default, &mut r);
        assert_eq!(text, new_default);
        assert!(r.env_carried.is_empty() && r.conflicts.is_empty(), "{r:?}");
        assert_eq!(r.env_added, ["C"]);
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
