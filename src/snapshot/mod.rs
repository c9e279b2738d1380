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

/// A database's dump. Names are the database's, with bytes other than
/// letters, digits, `_`, `-` and `.` written `%XX`: a name may hold `/`.
pub fn dump_stream(database: &str) -> String {
    let mut name = String::new();
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
            name.push(b as char);
        } else {
            name += &format!("%{b:02X}");
        }
    }
    format!("postgres/{name}.dump")
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
