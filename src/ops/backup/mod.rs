//! `upkeep backup`: one snapshot of an instance — config files, the edited
//! vendor compose file if any, Postgres (the dumps of the running server,
//! its `pg_basebackup` or both, as `--postgres` or the profile says; its data
//! volume when stopped), every other named volume, and a manifest.
//! Everything streams from the engine into the repository.

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde::Serialize;

mod cluster;
mod reuse;

use cluster::capture_postgres;
pub use cluster::pg_data_major;
use reuse::Last;

use super::{services, Ctx, Target};
use crate::docker::Engine;
use crate::durable::Digesting;
use crate::profile::PostgresCopies;
use crate::release;
use crate::repo::{Repository, SnapshotInfo, SnapshotMeta, SnapshotWriter};
use crate::site::{now_rfc3339, Site};
use crate::snapshot::{self, manifest, ImageRef, Item, ItemKind, Manifest};

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    /// Copy volumes without stopping the services that use them.
    pub online: bool,
    /// Which copies of a running Postgres to take; `None`: the profile's
    /// `[postgres] backup`.
    pub copies: Option<PostgresCopies>,
    /// Dump Postgres and read every volume even when unchanged since the
    /// instance's last snapshot (whose copies are otherwise reused).
    pub no_reuse: bool,
}

impl BackupOptions {
    /// A safety snapshot, taken before upkeep replaces something: with
    /// the dumps whatever the profile says, so that it restores into any
    /// release.
    pub fn safety(tags: Vec<String>) -> BackupOptions {
        BackupOptions {
            tags,
            online: false,
            copies: Some(PostgresCopies::Logical),
            no_reuse: false,
        }
    }

    /// The copies a backup of `t` takes.
    pub fn copies_of(&self, t: &Target) -> PostgresCopies {
        self.copies.unwrap_or_else(|| {
            t.profile
                .postgres
                .as_ref()
                .map(|p| p.backup)
                .unwrap_or_default()
        })
    }
}

/// One step of a backup, as `--dry-run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    /// Services stopped during this step.
    pub stops: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotInfo,
    pub manifest: Manifest,
}

/// How the instance's data will be captured.
struct Plan {
    steps: Vec<Step>,
    postgres_container: Option<String>,
    /// What to copy as files, with the services to stop meanwhile.
    copies: Vec<(Data, Vec<String>)>,
    /// The copies of the running server (none when it is stopped).
    copies_of_postgres: Option<PostgresCopies>,
}

/// Data copied as files: a named volume (owned or external) by its key,
/// or a folder or file under the home by its path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Volume(String),
    Bind(String),
}

/// The Docker name of volume `key`: the instance's own, or an external one.
pub fn volume_name(t: &Target, key: &str) -> Option<String> {
    t.data_volumes().remove(key)
}

fn plan(engine: &Engine, t: &Target, opts: &BackupOptions, compose_edited: bool) -> Result<Plan> {
    let containers = engine.project_containers(&t.rec.name)?;
    let running = |svc: &str| {
        containers
            .iter()
            .any(|c| c.service == svc && c.state == "running")
    };
    let mut steps = vec![Step {
        what: format!(
            "archive config ({}) from {}",
            t.profile.config.join(", "),
            t.rec.home.display()
        ),
        stops: vec![],
    }];
    if compose_edited {
        steps.push(Step {
            what: "capture the hand-edited vendor docker-compose.yml".into(),
            stops: vec![],
        });
    }
    let pg = t.profile.postgres.as_ref();
    let postgres_container = match pg {
        Some(pg) if running(&pg.service) => containers
            .iter()
            .find(|c| c.service == pg.service && c.state == "running")
            .map(|c| c.id.clone()),
        _ => None,
    };
    let pg_copies = postgres_container.as_ref().map(|_| opts.copies_of(t));
    if let (Some(pg), Some(copies)) = (pg, pg_copies) {
        if copies.dumps() {
            steps.push(Step {
                what: format!(
                    "dump every database of Postgres (service {}) with pg_dump -Fc, and its roles, online{}",
                    pg.service,
                    if opts.no_reuse {
                        ""
                    } else {
                        " (or, when nothing changed since the last snapshot, reuse its dumps)"
                    }
                ),
                stops: vec![],
            });
        }
        if copies.base_backup() {
            steps.push(Step {
                what: format!(
                    "stream a physical copy of Postgres (service {}) with pg_basebackup -Ft -X fetch \
                     (its WAL included: self-consistent), online",
                    pg.service
                ),
                stops: vec![],
            });
        }
    }
    // A stopped server's data folder is copied as files instead.
    let physical_pg = pg.is_some() && postgres_container.is_none();
    let stops_for = |services: Vec<String>, passive: bool, is_pg_data: bool| -> Vec<String> {
        if (opts.online || passive) && !is_pg_data {
            vec![]
        } else {
            services.into_iter().filter(|s| running(s)).collect()
        }
    };
    let mut copies = Vec::new();
    let external = t.shared_external_volumes();
    let volumes = t
        .rec
        .volumes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), false))
        .chain(external.into_iter().map(|(k, v)| (k, v, true)));
    for (key, name, is_external) in volumes {
        let is_pg_data = pg.is_some_and(|p| p.data_volume == key);
        if is_pg_data && !physical_pg {
            continue;
        }
        let stops = stops_for(
            t.services_mounting(&key),
            t.profile.is_passive(&key),
            is_pg_data,
        );
        let external = if is_external {
            ", external: the vendor's installer created it; upkeep never removes it"
        } else {
            ""
        };
        steps.push(Step {
            what: format!("copy volume {name} ({key}{external})"),
            stops: stops.clone(),
        });
        copies.push((Data::Volume(key), stops));
    }
    let pg_bind = t.postgres_data_bind();
    for bind in t.data_binds() {
        let is_pg_data = pg_bind.as_deref() == Some(bind.path.as_str());
        if is_pg_data && !physical_pg {
            continue;
        }
        let stops = stops_for(
            bind.services.clone(),
            t.profile.is_passive(&bind.path),
            is_pg_data,
        );
        steps.push(Step {
            what: format!(
                "copy {} (mounted by {}), with owners and modes",
                t.rec.home.join(&bind.path).display(),
                bind.services.join(", ")
            ),
            stops: stops.clone(),
        });
        copies.push((Data::Bind(bind.path), stops));
    }
    for host in t.host_binds() {
        steps.push(Step {
            what: format!(
                "not backed up: {} (mounted by {} at {}): {}",
                host.source, host.service, host.target, host.reason
            ),
            stops: vec![],
        });
    }
    check_captured(t, postgres_container.is_some(), &copies)?;
    steps.push(Step {
        what: "write the manifest and commit the snapshot".into(),
        stops: vec![],
    });
    Ok(Plan {
        steps,
        postgres_container,
        copies,
        copies_of_postgres: pg_copies,
    })
}

/// Refuses a backup that would hold none of a database's data: a service
/// that runs Postgres with no data folder upkeep can find, or a stopped
/// Postgres whose data folder it cannot copy.
fn check_captured(t: &Target, dumped: bool, copies: &[(Data, Vec<String>)]) -> Result<()> {
    let pg = t.profile.postgres.as_ref();
    for service in t.vendor.service_names() {
        let image = t
            .images
            .get(&service)
            .map_or("no image read", String::as_str);
        if crate::profile::looks_like_postgres(&service, image)
            && pg.is_none_or(|p| p.service != service)
        {
            bail!(
                "service {service} runs Postgres ({image}) but upkeep found no data folder of it \
                 (a named volume, an external volume or a folder under {} mounted at \
                 /var/lib/postgresql): a backup would hold none of its data. Mount its data \
                 folder so, or name it in the release's {}",
                t.rec.home.display(),
                crate::profile::PROFILE_FILE
            );
        }
    }
    let Some(pg) = pg.filter(|_| !dumped) else {
        return Ok(());
    };
    let copied = copies.iter().any(|(d, _)| match d {
        Data::Volume(key) => *key == pg.data_volume,
        Data::Bind(path) => t.postgres_data_bind().as_deref() == Some(path.as_str()),
    });
    if !copied {
        bail!(
            "Postgres (service {}) is stopped and its data folder {} is outside {}: upkeep can \
             neither dump nor copy it. Start the instance (`upkeep up`) and back up again: the \
             running server is dumped",
            pg.service,
            pg.data_bind.as_deref().unwrap_or(&pg.data_volume),
            t.rec.home.display()
        );
    }
    Ok(())
}

/// The steps a backup of `t` would take, without doing anything.
pub fn dry_run(
    site: &Site,
    engine: &Engine,
    t: &Target,
    opts: &BackupOptions,
) -> Result<Vec<Step>> {
    let edited = release::compose_edited(site, &t.rec.release)?;
    Ok(plan(engine, t, opts, edited)?.steps)
}

/// Adds one stream to the snapshot and records it as a manifest item.
/// Several threads may add streams to one snapshot at once.
pub(super) fn add(
    writer: &SnapshotWriter<'_>,
    stream: String,
    kind: ItemKind,
    volume: Option<String>,
    reader: impl Read,
) -> Result<Item> {
    let mut digesting = Digesting::new(reader);
    writer
        .add_stream(&stream, &mut digesting)
        .with_context(|| format!("storing {stream}"))?;
    let (size, sha256) = digesting.finish();
    Ok(Item {
        stream,
        kind,
        volume,
        external: false,
        path: None,
        size,
        sha256,
        listing_sha256: None,
        reused_from: None,
    })
}

pub fn backup(
    cx: &Ctx,
    repo: &Repository,
    t: &Target,
    opts: &BackupOptions,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> Result<BackupReport> {
    let Ctx { site, engine, .. } = *cx;
    let release_rec = release::record(site, &t.rec.release)?;
    let compose_path = crate::bundle::compose_file_in(&t.release_dir).context("no compose file")?;
    let compose_sha256 = crate::durable::sha256_file(&compose_path)?;
    let compose_edited = release_rec.is_some_and(|r| r.compose_sha256 != compose_sha256);
    if compose_edited {
        tracing::warn!(
            "the vendor compose file of {} was edited by hand; the edited file is captured in the snapshot",
            t.rec.release
        );
    }
    let plan = plan(engine, t, opts, compose_edited)?;
    let mut tags = vec![
        format!("instance={}", t.rec.name),
        format!("release={}", t.rec.release),
    ];
    tags.extend(opts.tags.iter().cloned());
    let meta = SnapshotMeta {
        tags,
        paths: vec![format!("/upkeep/{}", t.rec.name)],
        ..Default::default()
    };
    let mut writer = repo.begin_snapshot(meta)?;
    if let Some(p) = progress {
        writer.set_progress(p);
    }
    let last = if opts.no_reuse {
        None
    } else {
        reuse::last_snapshot(repo, &t.rec.name)
    };
    let last = last.as_ref();
    let mut items = Vec::new();

    let config = snapshot::config::archive(&t.rec.home, &t.profile.config)?;
    items.push(add(
        &writer,
        snapshot::CONFIG_STREAM.into(),
        ItemKind::Config,
        None,
        config,
    )?);
    if compose_edited {
        let f = std::fs::File::open(&compose_path)?;
        items.push(add(
            &writer,
            snapshot::COMPOSE_STREAM.into(),
            ItemKind::ComposeFile,
            None,
            f,
        )?);
    }

    // The dump (CPU in the Postgres container) and the volume copies (CPU
    // here) run side by side; a copy that stops Postgres waits for the dump.
    let pg_service = t.profile.postgres.as_ref().map(|p| p.service.as_str());
    let (with_dump, after_dump): (Vec<_>, Vec<_>) = plan.copies.iter().partition(|(_, stops)| {
        plan.postgres_container.is_none() || !stops.iter().any(|s| Some(s.as_str()) == pg_service)
    });
    let (postgres, volume_items) = std::thread::scope(|s| {
        let volumes = s.spawn(|| copy_volumes(cx, &writer, t, &with_dump, last));
        let postgres = capture_postgres(engine, &writer, t, &plan, last);
        (postgres, volumes.join().expect("volume copy panicked"))
    });
    let (postgres, pg_items) = postgres?;
    items.extend(pg_items);
    items.extend(volume_items?);
    items.extend(copy_volumes(cx, &writer, t, &after_dump, last)?);

    let mut images = std::collections::BTreeMap::new();
    for (svc, reference) in &t.images {
        images.insert(
            svc.clone(),
            ImageRef {
                reference: reference.clone(),
                id: engine.image_id(reference)?,
            },
        );
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        created: now_rfc3339(),
        host: crate::repo::hostname(),
        instance: t.rec.name.clone(),
        release: t.rec.release.clone(),
        profile: t.profile.clone(),
        compose_sha256,
        compose_edited,
        images,
        postgres,
        items,
    };
    writer.set_manifest(serde_json::to_string_pretty(&manifest)?);
    let snapshot = writer.commit()?;
    Ok(BackupReport { snapshot, manifest })
}

/// Streams volumes and folders into the snapshot one after the other,
/// stopping the services listed with each while it is copied.
fn copy_volumes(
    cx: &Ctx,
    writer: &SnapshotWriter<'_>,
    t: &Target,
    copies: &[&(Data, Vec<String>)],
    last: Option<&Last>,
) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (data, stops) in copies {
        let stopped = if stops.is_empty() {
            None
        } else {
            Some(services::stop(
                cx.site,
                cx.engine,
                cx.compose,
                &t.rec,
                stops.clone(),
                &format!("backup of {}", describe(t, data)),
            )?)
        };
        items.push(match data {
            Data::Volume(key) => {
                let mut item = copy_volume(cx.engine, writer, t, key, last)?;
                item.external = !t.rec.volumes.contains_key(key);
                item
            }
            Data::Bind(path) => {
                let image = t.helper_image(None)?;
                let mut item = add(
                    writer,
                    snapshot::bind_stream(path),
                    ItemKind::Bind,
                    None,
                    cx.engine.read_host_path(&t.rec.home, path, &image)?,
                )?;
                item.path = Some(path.clone());
                item
            }
        });
        if let Some(s) = stopped {
            s.restart()?;
        }
    }
    Ok(items)
}

/// Volume `key` into the snapshot: the last snapshot's copy when the
/// volume's listing is the one recorded with it, else read through the
/// engine, with the listing taken just before.
fn copy_volume(
    engine: &Engine,
    writer: &SnapshotWriter<'_>,
    t: &Target,
    key: &str,
    last: Option<&Last>,
) -> Result<Item> {
    let volume = volume_name(t, key).context("volume left the compose file")?;
    let image = t.helper_image(t.services_mounting(key).first().map(String::as_str))?;
    let listing = engine.volume_listing(&volume, &image).unwrap_or_else(|e| {
        tracing::info!("volume {volume} has no listing ({e:#}): it is read on every backup");
        None
    });
    if let (Some(listing), Some(last)) = (&listing, last) {
        match last.reuse_volume(writer, key, listing) {
            Ok(Some(item)) => return Ok(item),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "the last snapshot's copy of volume {volume} cannot be reused ({e:#}); reading it"
            ),
        }
    }
    let mut item = add(
        writer,
        snapshot::volume_stream(key),
        ItemKind::Volume,
        Some(key.to_string()),
        engine.read_volume(&volume, &image)?,
    )?;
    item.listing_sha256 = listing;
    Ok(item)
}

fn describe(t: &Target, data: &Data) -> String {
    match data {
        Data::Volume(key) => format!("volume {}", volume_name(t, key).unwrap_or(key.clone())),
        Data::Bind(path) => t.rec.home.join(path).display().to_string(),
    }
}
