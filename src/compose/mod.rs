//! Compose: naming rules, the `.env` file as written, the model compose
//! resolves for a file, the generation of an instance's effective file, and
//! running the compose CLI.

pub mod env;
pub mod file;
pub mod model;
pub mod naming;
pub mod rewrite;
pub mod runner;

pub use file::ComposeFile;
pub use runner::{Compose, ComposeFlavor};
