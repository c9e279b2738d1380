//! A snapshot of an instance: its config files, each volume, each database
//! dump, and a manifest that says what they are, with sizes and digests.
//! The streams' names inside the repository are fixed here.

pub mod config;
pub mod manifest;

pub use manifest::{ImageRef, Item, ItemKind, Manifest, PostgresItem};

/// Stream names inside a snapshot.
pub const CONFIG_STREAM: &str = "config.tar";
pub const COMPOSE_STREAM: &str = "compose/docker-compose.yml";
pub const GLOBALS_STREAM: &str = "postgres/globals.sql";

pub fn dump_stream(database: &str) -> String {
    format!("postgres/{database}.dump")
}

pub fn volume_stream(key: &str) -> String {
    format!("volumes/{key}.tar")
}
