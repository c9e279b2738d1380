//! upkeep: install, run, back up, restore and upgrade self-hosted docker-compose
//! applications. The binary in `main.rs` only parses and prints; everything it
//! does lives here, one concept per module (see DESIGN.md for the words).

pub mod bundle;
pub mod cli;
pub mod compose;
pub mod docker;
pub mod durable;
pub mod instance;
pub mod ops;
pub mod ownership;
pub mod postgres;
pub mod profile;
pub mod progress;
pub mod release;
pub mod repo;
pub mod site;
pub mod snapshot;
pub mod timeline;
pub mod untar;
