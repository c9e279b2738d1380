//! Compose's project-name rules: lowercase `[a-z0-9_-]`, starting with a
//! letter or digit. Current compose rejects a `-p` value that is not already
//! normalised, so instance names must pass [`check_project_name`].

use anyhow::{bail, Result};

/// The project name compose derives from a folder name (`v2.10.5` → `v2105`).
pub fn normalize_project_name(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

/// Accepts only names compose would accept as they are.
pub fn check_project_name(name: &str) -> Result<()> {
    let normal = normalize_project_name(name);
    if name.is_empty() || normal != name {
        let hint = if normal.is_empty() {
            "use lowercase letters, digits, '-' and '_', starting with a letter or digit".into()
        } else {
            format!("try `{normal}`")
        };
        bail!("`{name}` is not a valid compose project name: {hint}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_normalise_like_compose() {
        assert_eq!(normalize_project_name("v2.10.5"), "v2105");
        assert_eq!(normalize_project_name("My_Copy-2"), "my_copy-2");
        assert_eq!(normalize_project_name("__x"), "x");
        assert_eq!(normalize_project_name("..."), "");
    }

    #[test]
    fn only_normalised_names_are_accepted() {
        check_project_name("copy2").unwrap();
        check_project_name("v100").unwrap();
        let err = check_project_name("Copy 2").unwrap_err().to_string();
        assert!(err.contains("try `copy2`"), "{err}");
        assert!(check_project_name("").is_err());
        assert!(check_project_name("-x").is_err());
    }
}
