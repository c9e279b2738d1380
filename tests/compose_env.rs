//! Issue 11 item 2: an administrator's `.env` line survives an upgrade as
//! compose reads it. For each hostile line (the table, escapes, a
//! multi-line value, a `${VAR}` reference, CRLF), a v1.0.0 instance runs with
//! it, is upgraded to v1.1.0 (which changes that key's default), and the
//! value inside the new app container equals the one inside the old.

mod common;

use std::process::Command;

use common::*;

/// Lines assigning `APP_GREETING`, which the sample app receives through
/// `environment: APP_GREETING: ${APP_GREETING}`.
const HOSTILE: &[&str] = &[
    "APP_GREETING='pa$word'\n",
    "APP_GREETING=\"s3cret\" # c\n",
    "APP_GREETING=\"it's\"\n",
    "export APP_GREETING=\"keep # this\"\n",
    "APP_GREETING= # c\n",
    "APP_GREETING=\"tab\\there \\\"q\\\" back\\\\slash\"\n",
    "APP_GREETING=\"line one\nline two # still the value\"\n",
    "APP_GREETING=${POSTGRES_USER}-and-$POSTGRES_DB\n",
    "APP_GREETING=crlf line\r\n",
];

/// The value of `var` in the environment of `service`'s container, as the
/// engine holds it.
fn container_env(project: &str, service: &str, var: &str) -> Option<String> {
    let id = container(project, service);
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.Env}}", &id])
        .output()
        .unwrap();
    let env: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        let err = String::from_utf8_lossy(&out.stderr);
        panic!("docker inspect {id}: {e}: {err}")
    });
    let prefix = format!("{var}=");
    env.iter()
        .find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
}

/// `.env` text with the `APP_GREETING` line replaced by `line`.
fn with_line(env: &str, line: &str) -> String {
    let mut out: String = env
        .lines()
        .filter(|l| !l.starts_with("APP_GREETING="))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(line);
    out
}

/// Runs one hostile line through an upgrade on `site`; `Err` says how the
/// value changed.
fn upgrade_with(site: &TestSite, line: &str) -> Result<(), String> {
    let (old, new) = (unique("envold"), unique("envnew"));
    site.track(&old);
    site.track(&new);
    site.ok(&["up", "v1.0.0", "--as", &old]);
    let env_path = site.root.join("instances").join(&old).join(".env");
    let vendor = std::fs::read_to_string(&env_path).unwrap();
    std::fs::write(&env_path, with_line(&vendor, line)).unwrap();
    site.ok(&["up", "v1.0.0", "--as", &old]);
    let before = container_env(&old, "app", "APP_GREETING");
    assert_ne!(
        before.as_deref(),
        Some("Hello from upkeep-sample v1.0.0"),
        "{line:?}: the admin's line is in effect before the upgrade"
    );

    site.ok(&["upgrade", &old, "--to", "v1.1.0", "--as", &new, "--yes"]);
    let after = container_env(&new, "app", "APP_GREETING");
    let carried =
        std::fs::read_to_string(site.root.join("instances").join(&new).join(".env")).unwrap();
    site.ok(&["down", &new]);
    site.ok(&["down", &old]);
    if after != before || !carried.contains(line) {
        return Err(format!(
            "{line:?}: compose read {before:?} before the upgrade and {after:?} after; \
             the new .env:\n{carried}"
        ));
    }
    Ok(())
}

#[test]
fn hostile_env_values_read_the_same_inside_the_upgraded_container() {
    // Three sites side by side: each upgrade mostly waits on the engine.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = HOSTILE
            .chunks(HOSTILE.len().div_ceil(3))
            .map(|lines| {
                scope.spawn(move || {
                    let site = TestSite::new();
                    for v in ["v1.0.0", "v1.1.0"] {
                        site.ok(&["install", bundle(v).to_str().unwrap()]);
                    }
                    lines
                        .iter()
                        .filter_map(|line| upgrade_with(&site, line).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
