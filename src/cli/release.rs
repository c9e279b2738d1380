//! `upkeep install` and `upkeep releases`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::output::{table, Output};
use crate::docker::Engine;
use crate::instance;
use crate::release::{self, InstallOptions};
use crate::site::Site;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The bundle: a folder, or a .tar, .tar.gz or .tar.zst file.
    pub bundle: PathBuf,
    /// Version to install as, when the bundle has no VERSION file.
    #[arg(long = "version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Do not load the bundle's image archive into Docker.
    #[arg(long)]
    pub skip_load: bool,
}

pub fn install(site: &Site, args: &InstallArgs, out: &Output) -> Result<()> {
    let lock = site.lock(&format!("install {}", args.bundle.display()))?;
    let engine = Engine::connect()?;
    let opts = InstallOptions {
        version: args.version.clone(),
        skip_load: args.skip_load,
    };
    let done = release::install(site, &lock, &engine, &args.bundle, &opts)?;
    out.emit(&done, || {
        let mut text = format!(
            "installed release {} in {}",
            done.version,
            done.path.display()
        );
        if done.checksums_verified > 0 {
            text += &format!("\n  {} files match SHA256SUMS", done.checksums_verified);
        }
        for line in &done.loaded {
            text += &format!("\n  {line}");
        }
        text
    })
}

pub fn releases(site: &Site, out: &Output) -> Result<()> {
    let engine = Engine::connect()?;
    let list = release::list(site, &engine, &|v| instance::names_of_release(site, v))?;
    out.emit(&list, || {
        if list.is_empty() {
            return "no releases installed: `upkeep install BUNDLE`".into();
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                let images = if r.missing_images.is_empty() {
                    format!("{} present", r.images.len())
                } else {
                    format!("missing: {}", r.missing_images.join(", "))
                };
                vec![
                    r.version.clone(),
                    images,
                    r.instances.join(", "),
                    if r.compose_edited {
                        "edited by hand".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        table(&["RELEASE", "IMAGES", "INSTANCES", "COMPOSE FILE"], &rows)
    })
}
