//! The databases of a cluster and what makes each one more than its
//! contents: owner, encoding, locale, privileges, `ALTER DATABASE … SET`
//! and comment. `pg_dump` without `--create` leaves all of these out, and
//! with it `pg_restore` must create the database itself, outside the one
//! transaction the bulk load restores in; so they are read from the
//! catalog at backup and set again, before the contents are restored.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One database of a cluster, as `CREATE DATABASE` and its companions
/// would make it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    pub name: String,
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `libc`, `icu` or `builtin` (Postgres 15 and later; `libc` before).
    #[serde(default)]
    pub locale_provider: Option<String>,
    /// The ICU or builtin locale, when that is the provider.
    #[serde(default)]
    pub locale: Option<String>,
    /// -1 for no limit.
    pub connection_limit: i32,
    /// `None`: the default privileges (the owner all, PUBLIC connect and temp).
    pub acl: Option<Vec<Grant>>,
    #[serde(default)]
    pub settings: Vec<Setting>,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// A role name, or `PUBLIC`.
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

/// `ALTER DATABASE … SET` (no role) or `ALTER ROLE … IN DATABASE … SET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub role: Option<String>,
    /// `name=value`, as the catalog keeps it.
    pub setting: String,
}

/// Every database that accepts connections, templates aside, one JSON
/// object a line. `to_jsonb(d)` reads the locale columns whose names differ
/// between majors (`daticulocale` up to 16, `datlocale` from 17).
pub(super) const DATABASES_SQL: &str = "SELECT json_build_object(\
    'name', d.datname, 'owner', pg_get_userbyid(d.datdba), \
    'encoding', pg_encoding_to_char(d.encoding), \
    'collate', d.datcollate, 'ctype', d.datctype, \
    'locale_provider', CASE j->>'datlocprovider' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' \
        WHEN 'c' THEN 'libc' END, \
    'locale', coalesce(j->>'datlocale', j->>'daticulocale'), \
    'connection_limit', d.datconnlimit, \
    'acl', CASE WHEN d.datacl IS NULL THEN NULL ELSE coalesce((SELECT json_agg(json_build_object(\
        'grantee', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, \
        'privilege', a.privilege_type, 'grantable', a.is_grantable)) \
        FROM aclexplode(d.datacl) a), '[]'::json) END, \
    'settings', coalesce((SELECT json_agg(json_build_object(\
        'role', CASE s.setrole WHEN 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, 'setting', c)) \
        FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid), '[]'::json), \
    'comment', shobj_description(d.oid, 'pg_database')) \
    FROM pg_database d, to_jsonb(d) j \
    WHERE d.datallowconn AND NOT d.datistemplate ORDER BY d.datname;";

pub(super) fn parse_databases(out: &str) -> Result<Vec<Database>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("unexpected database row `{l}`")))
        .collect()
}

/// Settings whose values are lists of separately quoted items, as
/// `pg_dump` knows them: one literal each, or the server takes the
/// whole list for one item.
const LIST_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

impl Database {
    /// SQL that makes this database, in a cluster where it may already
    /// exist (the image creates the app's database and `postgres`):
    /// created if `exists` is false, else given its owner; then its
    /// privileges, settings and comment.
    pub fn create_sql(&self, exists: bool) -> String {
        let db = ident(&self.name);
        let owner = ident(&self.owner);
        let mut sql = Vec::new();
        if exists {
            sql.push(format!("ALTER DATABASE {db} OWNER TO {owner};"));
            sql.push(format!(
                "ALTER DATABASE {db} CONNECTION LIMIT {};",
                self.connection_limit
            ));
        } else {
            let mut create = format!(
                "CREATE DATABASE {db} WITH TEMPLATE = template0 OWNER = {owner} ENCODING = {} \
                 LC_COLLATE = {} LC_CTYPE = {} CONNECTION LIMIT = {}",
                literal(&self.encoding),
                literal(&self.collate),
                literal(&self.ctype),
                self.connection_limit
            );
            match (self.locale_provider.as_deref(), &self.locale) {
                (Some("icu"), Some(l)) => {
                    create += &format!(" LOCALE_PROVIDER = icu ICU_LOCALE = {}", literal(l))
                }
                (Some("builtin"), Some(l)) => {
                    create += &format!(" LOCALE_PROVIDER = builtin BUILTIN_LOCALE = {}", literal(l))
                }
                _ => {}
            }
            sql.push(create + ";");
        }
        if let Some(grants) = &self.acl {
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC;"));
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM {owner};"));
            for g in grants {
                let grantee = if g.grantee == "PUBLIC" {
                    "PUBLIC".to_string()
                } else {
                    ident(&g.grantee)
                };
                let option = if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                };
                sql.push(format!(
                    "GRANT {} ON DATABASE {db} TO {grantee}{option};",
                    g.privilege
                ));
            }
        }
        for s in &self.settings {
            let Some((name, value)) = s.setting.split_once('=') else {
                continue;
            };
            let target = match &s.role {
                Some(role) => format!("ROLE {} IN DATABASE {db}", ident(role)),
                None => format!("DATABASE {db}"),
            };
            sql.push(format!(
                "ALTER {target} SET {} TO {};",
                ident(name),
                setting_value(name, value)
            ));
        }
        if let Some(c) = &self.comment {
            sql.push(format!("COMMENT ON DATABASE {db} IS {};", literal(c)));
        }
        sql.join("\n")
    }

    /// What differs between this database and `made` (the same database
    /// in another cluster) that `create_sql` cannot change.
    pub fn locale_differences(&self, made: &Database) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |what: &str, a: &str, b: &str| {
            if a != b {
                out.push(format!("{what} {a} in the snapshot, {b} here"));
            }
        };
        cmp("encoding", &self.encoding, &made.encoding);
        cmp("LC_COLLATE", &self.collate, &made.collate);
        cmp("LC_CTYPE", &self.ctype, &made.ctype);
        out
    }
}

/// A setting's value as SQL: list settings item by item (the catalog
/// keeps them as `a, "b c"`), the rest as one literal.
fn setting_value(name: &str, value: &str) -> String {
    if !LIST_SETTINGS.contains(&name) {
        return literal(value);
    }
    split_list(value)
        .iter()
        .map(|item| literal(item))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a, "b ""c"""` → [`a`, `b "c"`]: comma-separated, double quotes
/// around items that need them, `""` for a quote inside.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                item.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut item).trim().to_string()),
            c if c.is_whitespace() && !quoted && item.is_empty() => {}
            c => item.push(c),
        }
    }
    items.push(item.trim().to_string());
    items
}

/// An SQL identifier, always quoted (names are kept exactly, case included).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings, on by default).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analytics() -> Database {
        Database {
            name: "analytics".into(),
            owner: "ana\"lyst".into(),
            encoding: "UTF8".into(),
            collate: "C.UTF-8".into(),
            ctype: "C.UTF-8".into(),
            locale_provider: Some("libc".into()),
            locale: None,
            connection_limit: 7,
            acl: Some(vec![
                Grant {
                    grantee: "ana\"lyst".into(),
                    privilege: "CONNECT".into(),
                    grantable: true,
                },
                Grant {
                    grantee: "PUBLIC".into(),
                    privilege: "TEMPORARY".into(),
                    grantable: false,
                },
            ]),
            settings: vec![
                Setting {
                    role: None,
                    setting: "work_mem=8MB".into(),
                },
                Setting {
                    role: Some("reader".into()),
                    setting: "search_path=\"my schema\", public".into(),
                },
            ],
            comment: Some("it's ours".into()),
        }
    }

    #[test]
    fn a_missing_database_is_created_with_its_properties() {
        let sql = analytics().create_sql(false);
        let lines: Vec<&str> = sql.lines().collect();
        assert_eq!(
            lines[0],
            "CREATE DATABASE \"analytics\" WITH TEMPLATE = template0 OWNER = \"ana\"\"lyst\" \
             ENCODING = 'UTF8' LC_COLLATE = 'C.UTF-8' LC_CTYPE = 'C.UTF-8' CONNECTION LIMIT = 7;"
        );
        assert_eq!(
            &lines[1..],
            &[
                "REVOKE ALL ON DATABASE \"analytics\" FROM PUBLIC;",
                "REVOKE ALL ON DATABASE \"analytics\" FROM \"ana\"\"lyst\";",
                "GRANT CONNECT ON DATABASE \"analytics\" TO \"ana\"\"lyst\" WITH GRANT OPTION;",
                "GRANT TEMPORARY ON DATABASE \"analytics\" TO PUBLIC;",
                "ALTER DATABASE \"analytics\" SET \"work_mem\" TO '8MB';",
                "ALTER ROLE \"reader\" IN DATABASE \"analytics\" SET \"search_path\" TO 'my schema', 'public';",
                "COMMENT ON DATABASE \"analytics\" IS 'it''s ours';",
            ]
        );
    }

    #[test]
    fn an_existing_database_gets_its_owner_and_an_icu_one_its_locale() {
        let mut db = analytics();
        db.acl = None;
        db.settings.clear();
        db.comment = None;
        assert_eq!(
            db.create_sql(true),
            "ALTER DATABASE \"analytics\" OWNER TO \"ana\"\"lyst\";\n\
             ALTER DATABASE \"analytics\" CONNECTION LIMIT 7;"
        );
        db.locale_provider = Some("icu".into());
        db.locale = Some("und-x-icu".into());
        assert!(db
            .create_sql(false)
            .ends_with(" LOCALE_PROVIDER = icu ICU_LOCALE = 'und-x-icu';"));
    }

    #[test]
    fn list_settings_are_split_as_the_catalog_quotes_them() {
        assert_eq!(split_list("a, \"b \"\"c\"\"\",d"), ["a", "b \"c\"", "d"]);
        assert_eq!(setting_value("work_mem", "a, b"), "'a, b'");
    }

    #[test]
    fn rows_parse_from_the_catalog_json() {
        let row = r#"{"name" : "analytics", "owner" : "analyst", "encoding" : "UTF8", "collate" : "C", "ctype" : "C", "locale_provider" : "libc", "locale" : null, "connection_limit" : -1, "acl" : null, "settings" : [], "comment" : null}"#;
        let dbs = parse_databases(&format!("{row}\n\n")).unwrap();
        assert_eq!(dbs.len(), 1);
        assert_eq!(
            (dbs[0].name.as_str(), dbs[0].acl.clone()),
            ("analytics", None)
        );
    }
}
