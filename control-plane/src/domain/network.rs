//! Address arithmetic of the region network. `network.cidr` is cut into
//! blocks of `network.node_prefix_len`; each node owns one block
//! (`ip-blocks/<n>`), which is also the node's subnet in
//! [`ipam`](super::ipam) (`subnet-<n>`): its first host address is the
//! gateway (the agent's bridge). As in EC2, the network address, the
//! gateway (+1), +2, +3 and the broadcast address are reserved; instances
//! get host numbers [`Network::FIRST_HOST`]..=[`Network::max_host`]. Which
//! addresses are taken is recorded by IPAM's claim records. The MAC is
//! derived from the address (`02:4e:` + the four octets).

use std::net::Ipv4Addr;

use crate::config::NetworkConfig;
use crate::domain::model::NetworkAssignment;
use crate::error::{Error, Result};
use crate::ids::SubnetId;

/// The parsed region network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: u32,
    prefix_len: u8,
    node_prefix_len: u8,
}

impl Network {
    /// Parses and checks the configuration.
    pub fn from_config(cfg: &NetworkConfig) -> Result<Self> {
        let bad = |m: &str| Error::invalid(format!("network: {m}"));
        let (addr, len) = cfg
            .cidr
            .split_once('/')
            .ok_or_else(|| bad("cidr must be a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("cidr address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("cidr length"))?;
        if !(8..=24).contains(&prefix_len) {
            return Err(bad("cidr length must be within 8..=24"));
        }
        if cfg.node_prefix_len <= prefix_len || cfg.node_prefix_len > 29 {
            return Err(bad(
                "node_prefix_len must be longer than the cidr's and at most 29",
            ));
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Self {
            base: u32::from(addr) & mask,
            prefix_len,
            node_prefix_len: cfg.node_prefix_len,
        })
    }

    /// Number of node blocks.
    pub fn blocks(&self) -> u32 {
        1u32 << (self.node_prefix_len - self.prefix_len)
    }

    /// The lowest host number an instance may get: network (0), gateway
    /// (1), 2 and 3 are reserved as in EC2.
    pub const FIRST_HOST: u32 = 4;

    /// The highest host number an instance may get (the broadcast address
    /// is reserved).
    pub fn max_host(&self) -> u32 {
        (1u32 << (32 - self.node_prefix_len)) - 2
    }

    /// How many instances a block can address.
    pub fn usable_hosts(&self) -> u32 {
        (self.max_host() + 1).saturating_sub(Self::FIRST_HOST)
    }

    /// Whether host number `host` of a block is reserved (never handed out).
    pub fn is_reserved(&self, host: u32) -> bool {
        host < Self::FIRST_HOST || host > self.max_host()
    }

    /// The block holding `ip`, if it is in the region network.
    pub fn block_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let ip = u32::from(ip);
        let mask = u32::MAX << (32 - self.prefix_len);
        (ip & mask == self.base).then(|| (ip - self.base) >> (32 - self.node_prefix_len))
    }

    /// The CIDR of a block, `a.b.c.d/len`.
    pub fn block_cidr(&self, block: u32) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(self.block_base(block)),
            self.node_prefix_len
        )
    }

    /// Prefix length of a node block.
    pub fn node_prefix_len(&self) -> u8 {
        self.node_prefix_len
    }

    fn block_base(&self, block: u32) -> u32 {
        self.base + (block << (32 - self.node_prefix_len))
    }

    /// The gateway of a block.
    pub fn gateway(&self, block: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.block_base(block) + 1)
    }

    /// The address of host number `host` in a block.
    pub fn address(&self, block: u32, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.block_base(block) + host)
    }

    /// The addressing of host number `host` of node block `block`: an
    /// address on the node's legacy bridge, claimed in the block's subnet.
    pub fn block_assignment(&self, block: u32, host: u32) -> NetworkAssignment {
        let ip = self.address(block, host);
        NetworkAssignment {
            host,
            ip: ip.to_string(),
            prefix_len: self.node_prefix_len,
            gateway: self.gateway(block).to_string(),
            mac: mac_for(ip),
            subnet_id: Some(SubnetId::for_block(block)),
            vpc: None,
        }
    }

    /// The smallest free, unreserved host number given the used ones.
    pub fn free_host(&self, used: &[u32]) -> Option<u32> {
        (Self::FIRST_HOST..=self.max_host()).find(|h| !used.contains(h))
    }
}

/// The MAC for an address: locally administered, `02:4e:` + octets.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:4e:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_addresses() {
        let n = Network::from_config(&NetworkConfig {
            cidr: "10.0.0.0/8".into(),
            node_prefix_len: 22,
        })
        .unwrap();
        assert_eq!(n.blocks(), 16384);
        assert_eq!(n.max_host(), 1022);
        assert_eq!(n.gateway(0), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(n.address(1, 2), Ipv4Addr::new(10, 0, 4, 2));
        assert_eq!(n.free_host(&[4, 5, 7]), Some(6));
        assert_eq!(
            n.free_host(&[]),
            Some(4),
            "network, gateway, +2, +3 reserved"
        );
        assert_eq!(n.usable_hosts(), 1019);
        assert!((0..4).all(|h| n.is_reserved(h)));
        assert!(n.is_reserved(1023), "broadcast");
        assert!(!n.is_reserved(4) && !n.is_reserved(1022));
        assert_eq!(n.block_of(Ipv4Addr::new(10, 0, 4, 2)), Some(1));
        assert_eq!(n.block_of(Ipv4Addr::new(11, 0, 0, 2)), None);
        assert_eq!(n.block_cidr(1), "10.0.4.0/22");
        // A /29 block: 8 addresses, 5 reserved, 3 for instances.
        let small = Network::from_config(&NetworkConfig {
            cidr: "10.0.0.0/24".into(),
            node_prefix_len: 29,
        })
        .unwrap();
        assert_eq!(small.usable_hosts(), 3);
        assert_eq!(small.free_host(&[4, 5, 6]), None);
        assert_eq!(mac_for(Ipv4Addr::new(10, 0, 4, 2)), "02:4e:0a:00:04:02");
        for bad in [
            ("10.0.0.0", 22),
            ("10.0.0.0/8", 8),
            ("x/8", 22),
            ("10.0.0.0/30", 31),
        ] {
            assert!(Network::from_config(&NetworkConfig {
                cidr: bad.0.into(),
                node_prefix_len: bad.1
            })
            .is_err());
        }
    }
}
