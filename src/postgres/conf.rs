//! Carrying an old cluster's `postgresql.conf` and `postgresql.auto.conf`
//! settings into a cluster of a newer major, which `pg_upgrade` does not do.
//! A setting the new server does not know makes it refuse to start, so each
//! line is kept byte for byte when its name is one the new server knows,
//! and commented out (and reported) when not.

/// What carrying made: the text for the new file, and a note per line
/// that was commented out instead of carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    pub text: String,
    pub dropped: Vec<String>,
}

/// The setting a line sets (lowercase, as Postgres compares names), or
/// `None` for a blank line or a comment. `Some("")` for a line Postgres
/// would not accept as a setting.
pub fn setting_name(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let name: String = t
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    Some(name.to_ascii_lowercase())
}

/// Every active line of `old` whose setting `known` accepts, as it was;
/// the others (unknown names, `include` directives, lines that set
/// nothing) as comments, with a note each. `what` names the file in notes.
pub fn carry_settings(old: &str, what: &str, known: impl Fn(&str) -> bool) -> Carried {
    let mut out = Carried::default();
    for line in old.lines() {
        let Some(name) = setting_name(line) else {
            continue;
        };
        let why = if name.starts_with("include") {
            Some("an include directive (copy the file it names and add the line by hand)")
        } else if name.is_empty() {
            Some("not a setting")
        } else if line.chars().any(|c| c.is_control() && c != '\t') {
            Some("a line with control characters")
        } else if !known(&name) {
            Some("a setting the new Postgres does not have")
        } else {
            None
        };
        match why {
            None => {
                out.text.push_str(line);
                out.text.push('\n');
            }
            Some(why) => {
                let shown: String = line.chars().filter(|c| !c.is_control()).collect();
                out.text
                    .push_str(&format!("# upkeep: not carried, {why}: {shown}\n"));
                out.dropped
                    .push(format!("{what}: `{}` is {why}", shown.trim()));
            }
        }
    }
    out
}

/// The parameter names `postgres --describe-config` prints (its first,
/// tab-separated column), lowercase.
pub fn described_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once('\t').map(|(name, _)| name.trim()))
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# comment\n\
        listen_addresses = '*'\t\t# what to listen on\n\
        \n\
        Max_Connections=100\n\
        old_snapshot_threshold = -1\n\
        include_dir 'conf.d'\n\
        = 3\n\
        shared_buffers 128MB\n";

    #[test]
    fn known_lines_are_carried_byte_for_byte_and_the_others_commented() {
        let known = ["listen_addresses", "max_connections", "shared_buffers"];
        let c = carry_settings(OLD, "postgresql.conf", |n| known.contains(&n));
        assert_eq!(
            c.text,
            "listen_addresses = '*'\t\t# what to listen on\n\
             Max_Connections=100\n\
             # upkeep: not carried, a setting the new Postgres does not have: old_snapshot_threshold = -1\n\
             # upkeep: not carried, an include directive (copy the file it names and add the line by hand): include_dir 'conf.d'\n\
             # upkeep: not carried, not a setting: = 3\n\
             shared_buffers 128MB\n"
        );
        assert_eq!(c.dropped.len(), 3, "{:?}", c.dropped);
        assert!(c.dropped[0].contains("old_snapshot_threshold"));
    }

    #[test]
    fn describe_config_names() {
        let text = "allow_system_table_mods\tpostmaster\tDeveloper Options\tBOOL\tfalse\n\
                    DateStyle\tuser\tClient\tSTRING\tISO, MDY\n\
                    garbage line\n";
        assert_eq!(
            described_names(text),
            ["allow_system_table_mods", "datestyle"]
        );
    }

    #[test]
    fn a_comment_never_hides_a_setting_in_the_output() {
        // a control character cannot end the comment early in the output
        let c = carry_settings("bad_name = 1\r\nx", "f", |_| false);
        assert!(c.text.lines().all(|l| l.starts_with('#')), "{:?}", c.text);
        let c = carry_settings("port = 5432\rmax_connections = 9", "f", |_| true);
        assert!(c.text.starts_with("# upkeep: not carried"), "{:?}", c.text);
    }
}
