//! The cluster's physical network, made of network namespaces: the
//! "fabric" (`<id>-fab`, one bridge, MTU 9000) joins every host namespace
//! through a veth whose host end `ul0` carries the host's underlay address
//! `10.254.0.<10+i>/24` (the VXLAN tunnel endpoint of agent i,
//! `[network] underlay_address`), and the "edge" (`<id>-edge`,
//! `10.254.0.1`) stands in for the internet: public addresses are reached
//! from there, and hosts route public traffic to it. Nothing leaves the
//! machine: the namespaces have no other links.
//!
//! Everything here is deleted with the namespaces ([`Fabric::delete`], and
//! [`super::sys::sweep_leftovers`] for a harness killed outright).

use std::net::Ipv4Addr;
use std::process::Command;

use super::sys;

/// MTU of the underlay: a 1500-byte guest frame plus the 50 bytes of
/// VXLAN encapsulation fits.
pub const UNDERLAY_MTU: u32 = 9000;

/// The edge's address on the fabric (the agents' `edge_gateway`).
pub const EDGE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);

/// The region's public address pool (the control plane's
/// `[vpc] public_pool`), routed on-link from the edge: a host answers ARP
/// for the public addresses of its instances.
pub const PUBLIC_POOL: &str = "198.51.100.0/24";

/// The underlay address of agent `i`.
pub fn underlay_address(i: usize) -> Ipv4Addr {
    // At most 200 agents per cluster (10..=209).
    Ipv4Addr::new(10, 254, 0, 10 + (i % 200) as u8)
}

/// The fabric and edge namespaces of one cluster.
#[derive(Debug)]
pub struct Fabric {
    /// The fabric namespace.
    pub netns: String,
    /// The edge namespace.
    pub edge_netns: String,
}

fn ip(args: &[&str]) -> Result<String, String> {
    sys::run(Command::new("ip").args(args))
}

impl Fabric {
    /// Creates both namespaces and joins the edge to the fabric.
    pub fn create(cluster_id: &str) -> Result<Self, String> {
        let f = Self {
            netns: format!("{cluster_id}-fab"),
            edge_netns: format!("{cluster_id}-edge"),
        };
        sys::netns_add(&f.netns)?;
        let mtu = UNDERLAY_MTU.to_string();
        ip(&[
            "-n", &f.netns, "link", "add", "fab0", "mtu", &mtu, "type", "bridge",
        ])?;
        ip(&["-n", &f.netns, "link", "set", "fab0", "up"])?;
        sys::netns_add(&f.edge_netns)?;
        f.plug(&f.edge_netns, "edge", EDGE_ADDRESS)?;
        ip(&[
            "-n",
            &f.edge_netns,
            "route",
            "replace",
            PUBLIC_POOL,
            "dev",
            "ul0",
        ])?;
        Ok(f)
    }

    /// Plugs host namespace `host_netns` into the fabric as agent `i`;
    /// returns its underlay address. Idempotent.
    pub fn attach(&self, host_netns: &str, i: usize) -> Result<Ipv4Addr, String> {
        let addr = underlay_address(i);
        self.plug(host_netns, &format!("h{i}"), addr)?;
        Ok(addr)
    }

    fn plug(&self, netns: &str, port: &str, addr: Ipv4Addr) -> Result<(), String> {
        let exists = ip(&["-n", netns, "link", "show", "ul0"]).is_ok();
        if !exists {
            let mtu = UNDERLAY_MTU.to_string();
            ip(&[
                "-n",
                &self.netns,
                "link",
                "add",
                port,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "ul0",
                "netns",
                netns,
            ])?;
        }
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            port,
            "master",
            "fab0",
            "up",
        ])?;
        ip(&[
            "-n",
            netns,
            "addr",
            "replace",
            &format!("{addr}/24"),
            "dev",
            "ul0",
        ])?;
        // `link add ... mtu` sets the first end only.
        ip(&[
            "-n",
            netns,
            "link",
            "set",
            "ul0",
            "mtu",
            &UNDERLAY_MTU.to_string(),
            "up",
        ])?;
        Ok(())
    }

    /// Deletes both namespaces (and with them every veth end).
    pub fn delete(&self) {
        sys::netns_delete(&self.edge_netns);
        sys::netns_delete(&self.netns);
    }
}
