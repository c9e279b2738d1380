//! Compose's `.env` file and `${VAR}` interpolation, so upkeep reads a
//! release's image names, ports and credentials exactly as compose will.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Variables from a `.env` file, in file order of last assignment.
pub type EnvMap = BTreeMap<String, String>;

/// Parses dotenv text: `KEY=value`, optional `export `, quotes, comments.
pub fn parse_env(text: &str) -> EnvMap {
    let mut vars = EnvMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        vars.insert(key.trim().to_string(), unquote(value.trim()));
    }
    vars
}

fn unquote(value: &str) -> String {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return value[1..value.len() - 1].to_string();
        }
    }
    // An unquoted value ends at an inline comment.
    match value.find(" #") {
        Some(i) => value[..i].trim_end().to_string(),
        None => value.to_string(),
    }
}

/// Reads `<dir>/.env`; empty when the file does not exist.
pub fn read_env_file(dir: &Path) -> Result<EnvMap> {
    let path = dir.join(".env");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_env(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnvMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?err}`, `${VAR?err}` and `$$` the way compose does.
pub fn interpolate(input: &str, vars: &EnvMap) -> Result<String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end =
                closing_brace(body).with_context(|| format!("unclosed `${{` in `{input}`"))?;
            out.push_str(&expand_braced(&body[..end], vars)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(vars.get(&after[..len]).map(String::as_str).unwrap_or(""));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` that closes an already opened `${`, skipping nested ones.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn expand_braced(expr: &str, vars: &EnvMap) -> Result<String> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (use_default, arg) = match op {
        "" => return Ok(value.cloned().unwrap_or_default()),
        _ if op.starts_with(":-") => (!set_nonempty, &op[2..]),
        _ if op.starts_with('-') => (value.is_none(), &op[1..]),
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let missing = if op.starts_with(':') {
                !set_nonempty
            } else {
                value.is_none()
            };
            if missing {
                let msg = op.trim_start_matches(':').trim_start_matches('?');
                bail!("required variable {name} is not set: {msg}");
            }
            return Ok(value.cloned().unwrap_or_default());
        }
        _ => bail!("unsupported substitution `${{{expr}}}`"),
    };
    if use_default {
        interpolate(arg, vars)
    } else {
        Ok(value.cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> EnvMap {
        parse_env("# comment\nexport A=1\nB=\"two words\"\nC='x # y'\nE=\nD=4 # trailing\n")
    }

    #[test]
    fn dotenv_parsing_handles_quotes_and_comments() {
        let v = vars();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two words");
        assert_eq!(v["C"], "x # y");
        assert_eq!(v["D"], "4");
        assert_eq!(v["E"], "");
    }

    #[test]
    fn interpolation_follows_compose_rules() {
        let v = vars();
        assert_eq!(interpolate("img:${A}", &v).unwrap(), "img:1");
        assert_eq!(interpolate("$A-$$A", &v).unwrap(), "1-$A");
        assert_eq!(interpolate("${E:-d}|${E-d}|${X-d}", &v).unwrap(), "d||d");
        assert_eq!(interpolate("${X:-${A}0}", &v).unwrap(), "10");
        assert!(interpolate("${X:?set X}", &v)
            .unwrap_err()
            .to_string()
            .contains("set X"));
        assert!(interpolate("${A", &v).is_err());
    }
}
