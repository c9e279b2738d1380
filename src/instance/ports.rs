//! Host ports of instances: the vendor's where free, else the next one that
//! no other instance holds and nothing on the host listens on.

use std::collections::BTreeSet;
use std::net::TcpListener;

use anyhow::{Context, Result};

use crate::compose::model::PublishedPort;
use crate::durable;
use crate::site::Site;

use super::*;

/// Keeps the vendor's host port where it is free; otherwise the next port
/// that no other instance holds and nothing on the host listens on.
pub(super) fn assign_ports(
    site: &Site,
    name: &str,
    vendor: &[PublishedPort],
) -> Result<Vec<PortAssignment>> {
    let mut taken = ports_held_by_others(site, name)?;
    let mut out = Vec::new();
    for port in vendor {
        let Some(vendor_port) = port.published else {
            continue;
        };
        let ip = port.host_ip.as_deref().unwrap_or("0.0.0.0");
        let host_port = free_port_from(ip, vendor_port, &taken).with_context(|| {
            format!(
                "no free host port near {vendor_port} for {}/{}",
                port.service, port.target
            )
        })?;
        taken.insert(host_port);
        out.push(PortAssignment {
            service: port.service.clone(),
            index: port.index,
            host_ip: port.host_ip.clone(),
            vendor_port,
            host_port,
        });
    }
    Ok(out)
}

/// Host ports recorded for every instance of the site but `name`.
fn ports_held_by_others(site: &Site, name: &str) -> Result<BTreeSet<u16>> {
    Ok(list(site)?
        .into_iter()
        .filter(|r| r.name != name)
        .flat_map(|r| r.ports.into_iter().map(|p| p.host_port))
        .collect())
}

/// The first port from `start` (searching at most 2000) that no instance
/// holds and nothing on the host listens on.
fn free_port_from(ip: &str, start: u16, taken: &BTreeSet<u16>) -> Option<u16> {
    (start..=u16::MAX)
        .take(2000)
        .find(|p| !taken.contains(p) && port_is_free(ip, *p))
}

fn port_is_free(ip: &str, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// Moves the instance's ports that something else now holds.
pub(super) fn reassign_taken_ports(site: &Site, rec: &mut InstanceRecord) -> Result<()> {
    let mut taken = ports_held_by_others(site, &rec.name)?;
    for port in &mut rec.ports {
        let ip = port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
        if port_is_free(&ip, port.host_port) {
            continue;
        }
        let from = port.host_port;
        port.host_port = free_port_from(&ip, from.saturating_add(1), &taken)
            .with_context(|| format!("no free host port near {from}"))?;
        taken.insert(port.host_port);
        tracing::warn!(
            "host port {from} of {} is taken by something else; instance {} now uses {}",
            port.service,
            rec.name,
            port.host_port
        );
    }
    durable::write_json(&record_path(site, &rec.name), rec)?;
    rec.write_effective(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_skip_ones_held_by_other_instances() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::create(dir.path()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap().port();
        let vendor = vec![PublishedPort {
            service: "app".into(),
            index: 0,
            host_ip: Some("127.0.0.1".into()),
            published: Some(busy),
            target: "80".into(),
            protocol: None,
        }];
        let got = assign_ports(&site, "copy", &vendor).unwrap();
        assert_ne!(
            got[0].host_port, busy,
            "a port in use on the host is skipped"
        );
        assert_eq!(got[0].vendor_port, busy);
    }
}
