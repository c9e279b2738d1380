//! Compose: naming rules, `.env` interpolation, reading the vendor file and
//! generating an instance's effective file, and running the compose CLI.

pub mod env;
pub mod file;
pub mod naming;
pub mod runner;

pub use file::ComposeFile;
pub use runner::{Compose, ComposeFlavor};
