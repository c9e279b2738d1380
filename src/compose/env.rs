//! Compose's `.env` file as the administrator wrote it: split into entries
//! (one `KEY=value` assignment, which a quoted value may stretch over several
//! lines, or any other line), each kept byte for byte so that carrying it
//! into a new release never re-quotes it.
//!
//! The values upkeep needs to act on (image names, ports, credentials) come
//! from compose's own resolution (`compose config`) or from the containers'
//! environment, never from here: dotenv dialects differ between compose v1
//! (python-dotenv) and v2 (compose-go), and a guess would change secrets.
//! [`parse_env`] decodes plain values for reports and plans only.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Variables from a `.env` file, by key (the last assignment wins).
pub type EnvMap = BTreeMap<String, String>;

/// One entry of a `.env` file, exactly as written, line ending included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    /// The variable it assigns; `None` for comments, blank and other lines.
    pub key: Option<String>,
    pub raw: String,
}

impl EnvEntry {
    /// The entry without its final line ending, for comparing two files'
    /// lines (a `\r` stays: a CRLF line is the administrator's own).
    pub fn text(&self) -> &str {
        self.raw.strip_suffix('\n').unwrap_or(&self.raw)
    }

    /// The raw text, ending in a newline even when it was the file's last
    /// line without one.
    pub fn line(&self) -> String {
        let mut line = self.raw.clone();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        line
    }

    /// The value as written after `=`, quotes and comment included.
    fn written_value(&self) -> &str {
        self.text()
            .split_once('=')
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

/// Splits dotenv text into entries; concatenating their `raw` gives `text`
/// back unchanged.
pub fn split_entries(text: &str) -> Vec<EnvEntry> {
    let mut entries = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let first_end = line_end(rest, 0);
        let key = assigned_key(&rest[..first_end]);
        let end = match key {
            Some(_) => assignment_end(rest, first_end),
            None => first_end,
        };
        entries.push(EnvEntry {
            key,
            raw: rest[..end].to_string(),
        });
        rest = &rest[end..];
    }
    entries
}

/// The index just past the line ending of the line holding `from`.
fn line_end(text: &str, from: usize) -> usize {
    text[from..].find('\n').map_or(text.len(), |i| from + i + 1)
}

/// The key a line assigns: `KEY=…` or `export KEY=…`, leading blanks allowed.
fn assigned_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    };
    let (key, _) = line.split_once('=')?;
    let key = key.trim_end();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    valid.then(|| key.to_string())
}

/// Where the assignment starting at the beginning of `text` ends: at the end
/// of its first line (`first_end`), or of the line that closes its quoted
/// value. An unclosed quote ends at its own line, so one typo never swallows
/// the rest of the file.
fn assignment_end(text: &str, first_end: usize) -> usize {
    let eq = text.find('=').expect("an assignment has `=`");
    let value = text[eq + 1..first_end].trim_start_matches([' ', '\t']);
    let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return first_end;
    };
    let open = first_end - value.len();
    match closing_quote(&text[open + 1..], quote) {
        Some(i) => line_end(text, open + 1 + i),
        None => first_end,
    }
}

/// Index of the quote closing a value, skipping backslash-escaped ones (as
/// compose-go does for both kinds of quote).
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// Reads dotenv text into variables, for reports and plans (see the module
/// note: decisions use compose's resolution). Single quotes are literal,
/// double quotes take `\n`, `\t`, `\\`, `\"` escapes, an unquoted value ends
/// at ` #`; `${VAR}` references are left as written.
pub fn parse_env(text: &str) -> EnvMap {
    split_entries(text)
        .into_iter()
        .filter_map(|e| Some((e.key.clone()?, decode_value(e.written_value()))))
        .collect()
}

fn decode_value(written: &str) -> String {
    let value = written.trim_start_matches([' ', '\t']);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
        if let Some(end) = closing_quote(&value[1..], q) {
            let inner = &value[1..1 + end];
            return if q == '"' {
                unescape(inner)
            } else {
                inner.to_string()
            };
        }
    }
    if value.starts_with('#') {
        return String::new();
    }
    let value = match value.find(" #").or_else(|| value.find("\t#")) {
        Some(i) => &value[..i],
        None => value,
    };
    value.trim_end().to_string()
}

fn unescape(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('\\' | '"' | '\'' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The text of `<dir>/.env`; empty when the file does not exist.
pub fn read_env_text(dir: &Path) -> Result<String> {
    let path = dir.join(".env");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads `<dir>/.env` with [`parse_env`]; empty when the file does not exist.
pub fn read_env_file(dir: &Path) -> Result<EnvMap> {
    Ok(parse_env(&read_env_text(dir)?))
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
        let v = parse_env("K= # c\nQ=\"s3cret\" # c\nI=\"it's\"\nS='pa$word'\nN=\"a\\nb\"\n");
        assert_eq!(v["K"], "", "a comment is not a value");
        assert_eq!(v["Q"], "s3cret");
        assert_eq!(v["I"], "it's");
        assert_eq!(v["S"], "pa$word");
        assert_eq!(v["N"], "a\nb");
    }

    #[test]
    fn entries_are_kept_byte_for_byte_and_span_quoted_lines() {
        let text = "# head\r\nexport K=\"keep # this\"\r\n\nM=\"line one\nline \\\" two\"\nU='open\nNEXT=1\n  SP = x\nnot an assignment\nLAST=no-newline";
        let entries = split_entries(text);
        let joined: String = entries.iter().map(|e| e.raw.as_str()).collect();
        assert_eq!(joined, text);
        let keys: Vec<Option<&str>> = entries.iter().map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                None,
                Some("K"),
                None,
                Some("M"),
                Some("U"),
                Some("NEXT"),
                Some("SP"),
                None,
                Some("LAST")
            ]
        );
        assert_eq!(entries[1].raw, "export K=\"keep # this\"\r\n");
        assert_eq!(entries[3].raw, "M=\"line one\nline \\\" two\"\n");
        assert_eq!(
            entries[4].raw, "U='open\n",
            "an unclosed quote ends at its line"
        );
        assert_eq!(entries[8].line(), "LAST=no-newline\n");
        assert_eq!(parse_env(text)["M"], "line one\nline \" two");
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
