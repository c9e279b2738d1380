//! A snapshot of an instance: its config files, each volume, each database
//! dump, and a manifest that says what they are, with sizes and digests.
//! The streams' names inside the repository are fixed here.

pub mod config;
pub mod manifest;

pub use manifest::{DatabaseItem, ImageRef, Item, ItemKind, Manifest, PostgresItem};

/// Stream names inside a snapshot.
pub const CONFIG_STREAM: &str = "config.tar";
pub const COMPOSE_STREAM: &str = "compose/docker-compose.yml";
pub const GLOBALS_STREAM: &str = "postgres/globals.sql";
/// The running server's physical copy (`pg_basebackup -Ft -X fetch`).
pub const BASE_STREAM: &str = "postgres/base.tar";

/// A database's dump. Names are the database's, with bytes other than
/// letters, digits, `_`, `-` and `.` written `%XX`: a name may hold `/`.
pub fn dump_stream(database: &str) -> String {
    format!("postgres/{}.dump", escaped(database))
}

/// A folder or file under the instance's home, by its relative path.
pub fn bind_stream(path: &str) -> String {
    format!("binds/{}.tar", escaped(path))
}

fn escaped(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

pub fn volume_stream(key: &str) -> String {
    format!("volumes/{key}.tar")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dump_streams_keep_plain_names_and_escape_the_rest() {
        assert_eq!(super::dump_stream("graphistry"), "postgres/graphistry.dump");
        assert_eq!(super::dump_stream("a/b c%"), "postgres/a%2Fb%20c%25.dump");
    }
}
