//! `upkeep up`, `stop`, `down` and `status`.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::output::{table, Output};
use super::Session;
use crate::docker::Engine;
use crate::durable::human_bytes;
use crate::instance::{self, InstanceRecord, InstanceStatus};
use crate::site::Site;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Release version to run (as in releases/<version>/).
    pub version: String,
    /// Run as another copy with this name (its own project, volumes, ports, config).
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub external: ExternalVolumeArgs,
    /// Seconds to wait for every container to be running and healthy.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

/// `--external-volume KEY=NAME`, for every command that makes an instance.
#[derive(Debug, Args)]
pub struct ExternalVolumeArgs {
    /// Give the instance a volume of its own, NAME, for the release's
    /// external volume KEY (repeatable); needed when another instance of the
    /// site uses the vendor's volume.
    #[arg(long = "external-volume", value_name = "KEY=NAME", value_parser = instance::parse_mapping)]
    pub external_volumes: Vec<(String, String)>,
}

impl ExternalVolumeArgs {
    pub fn chosen(&self) -> instance::ExternalVolumes {
        self.external_volumes.iter().cloned().collect()
    }
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Instance name (see `upkeep status`).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The compose project name of the install (see `upkeep status`).
    pub name: String,
    /// The vendor's bundle the release folder was unpacked from, to tell hand
    /// edits from what the vendor shipped.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One instance; all when omitted.
    pub name: Option<String>,
    /// Measure each volume's disk usage (walks its files in a helper
    /// container: takes a while on big volumes).
    #[arg(long)]
    pub sizes: bool,
}

pub fn up(site: &Site, args: &UpArgs, out: &Output) -> Result<()> {
    let session = Session::open(site, &format!("up {}", args.version))?.with_compose_soon();
    let cx = session.cx();
    let rec = instance::prepare(
        site,
        &args.version,
        args.as_name.as_deref(),
        &args.external.chosen(),
    )?;
    let st = instance::up(
        site,
        cx.lock,
        cx.engine,
        cx.compose,
        &rec,
        Duration::from_secs(args.timeout),
    )?;
    let notes = instance::naming_notes(site, &rec)?;
    out.emit(&st, || {
        let mut text = format!("instance {} is {}\n{}", st.name, st.state, describe(&st));
        for note in &notes {
            text += &format!("\nnote: {note}");
        }
        text
    })
}

pub fn adopt(site: &Site, args: &AdoptArgs, out: &Output) -> Result<()> {
    let session = Session::open(site, &format!("adopt {}", args.name))?;
    let adopted = crate::ops::adopt::adopt(&session.cx(), &args.name, args.bundle.as_deref())?;
    out.emit(&adopted, || {
        let rec = &adopted.instance;
        let volumes: Vec<Vec<String>> = rec
            .volumes
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        let mut text = format!(
            "adopted {} (release {}, home {}); nothing on the engine or in its folder was changed\n{}",
            rec.name,
            rec.release,
            rec.home.display(),
            table(&["VOLUME", "DOCKER VOLUME"], &volumes)
        );
        for note in &adopted.notes {
            text += &format!("\nnote: {note}");
        }
        text
    })
}

pub fn stop(site: &Site, args: &NameArgs, out: &Output) -> Result<()> {
    let session = Session::open(site, &format!("stop {}", args.name))?;
    let cx = session.cx();
    let rec = super::load_instance(site, cx.engine, &args.name)?;
    instance::stop(site, cx.lock, cx.engine, cx.compose, &rec)?;
    out.emit(&rec, || {
        format!(
            "instance {} stopped (containers and volumes kept)",
            rec.name
        )
    })
}

pub fn down(site: &Site, args: &NameArgs, out: &Output) -> Result<()> {
    let session = Session::open(site, &format!("down {}", args.name))?;
    let cx = session.cx();
    let rec = super::load_instance(site, cx.engine, &args.name)?;
    instance::down(site, cx.lock, cx.engine, cx.compose, &rec)?;
    out.emit(&rec, || {
        format!(
            "instance {} is down; its volumes are kept: {}",
            rec.name,
            rec.volumes.values().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Sizes of the instance's volumes, or a warning and `?` when they cannot
/// be measured.
fn fill_volume_sizes(site: &Site, engine: &Engine, rec: &InstanceRecord, st: &mut InstanceStatus) {
    let sizes = crate::ops::Target::load(site, rec.clone()).and_then(|t| t.volume_usage(engine));
    match sizes {
        Ok(sizes) => {
            for v in &mut st.volumes {
                v.size = sizes.get(&v.name).map(|b| human_bytes(*b));
            }
        }
        Err(e) => tracing::warn!("cannot measure the volumes of {}: {e:#}", rec.name),
    }
}

pub fn status(site: &Site, args: &StatusArgs, out: &Output) -> Result<()> {
    let engine = Engine::connect()?;
    let records = match &args.name {
        Some(name) => vec![super::load_instance(site, &engine, name)?],
        None => instance::list(site)?,
    };
    let mut statuses = records
        .iter()
        .map(|r| instance::status(site, &engine, r))
        .collect::<Result<Vec<_>>>()?;
    if args.sizes {
        for (st, rec) in statuses.iter_mut().zip(&records) {
            fill_volume_sizes(site, &engine, rec, st);
        }
    }
    let upgrades = crate::ops::upgrade::journals(site)?;
    for st in &mut statuses {
        st.upgrade = upgrades
            .iter()
            .find(|j| j.old == st.name || j.new == st.name)
            .map(crate::ops::upgrade::describe);
    }
    let unmanaged = match &args.name {
        Some(_) => Vec::new(),
        None => crate::ops::adopt::discover(site, &engine)?,
    };
    statuses.extend(unmanaged.iter().map(unmanaged_status));
    out.emit(&statuses, || {
        if statuses.is_empty() {
            return "no instances: start one with `upkeep up VERSION`".into();
        }
        statuses
            .iter()
            .map(|st| {
                if st.state == UNMANAGED {
                    return format!(
                        "{} (from {}): not managed by upkeep: `upkeep adopt {}`",
                        st.name,
                        st.home.display(),
                        st.name
                    );
                }
                let upgrade = st
                    .upgrade
                    .as_ref()
                    .map(|u| format!("\nupgrade: {u}"))
                    .unwrap_or_default();
                format!(
                    "instance {} (release {}): {}{upgrade}\n{}",
                    st.name,
                    st.release,
                    st.state,
                    describe(st)
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    })
}

/// The state `status` gives a compose project that upkeep does not manage.
const UNMANAGED: &str = "unmanaged";

fn unmanaged_status(u: &crate::ops::adopt::Unmanaged) -> InstanceStatus {
    InstanceStatus {
        name: u.project.clone(),
        release: u.release.clone().unwrap_or_default(),
        home: u.working_dir.clone(),
        state: UNMANAGED.into(),
        containers: Vec::new(),
        volumes: Vec::new(),
        ports: Vec::new(),
        upgrade: Some(format!(
            "not managed by upkeep ({}): `upkeep adopt {}`",
            u.state, u.project
        )),
    }
}

fn describe(st: &InstanceStatus) -> String {
    let containers: Vec<Vec<String>> = st
        .containers
        .iter()
        .map(|c| {
            vec![
                c.service.clone(),
                c.name.clone(),
                c.state.clone(),
                c.health.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    // Sizes are measured on request only (`--sizes`); otherwise the column
    // says whether the volume exists.
    let measured = st.volumes.iter().any(|v| v.size.is_some());
    let volumes: Vec<Vec<String>> = st
        .volumes
        .iter()
        .map(|v| {
            vec![
                v.key.clone(),
                if v.external {
                    format!("{} (external)", v.name)
                } else {
                    v.name.clone()
                },
                match (v.exists, &v.size) {
                    (false, _) => "absent".into(),
                    (true, Some(size)) => size.clone(),
                    (true, None) if measured => "?".into(),
                    (true, None) => "yes".into(),
                },
            ]
        })
        .collect();
    let ports: Vec<Vec<String>> = st
        .ports
        .iter()
        .map(|p| {
            vec![
                p.service.clone(),
                format!(
                    "{}:{}",
                    p.host_ip.as_deref().unwrap_or("0.0.0.0"),
                    p.host_port
                ),
                p.vendor_port.to_string(),
            ]
        })
        .collect();
    let mut parts = vec![format!("home: {}", st.home.display())];
    if !containers.is_empty() {
        parts.push(table(
            &["SERVICE", "CONTAINER", "STATE", "HEALTH"],
            &containers,
        ));
    }
    let header: &[&str] = if measured {
        &["VOLUME", "DOCKER VOLUME", "SIZE"]
    } else {
        &["VOLUME", "DOCKER VOLUME", "PRESENT"]
    };
    parts.push(table(header, &volumes));
    if !ports.is_empty() {
        parts.push(table(&["SERVICE", "HOST PORT", "VENDOR PORT"], &ports));
    }
    parts.join("\n")
}
