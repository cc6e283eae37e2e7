//! Instance addressing. The region network (`network.cidr`) is cut into
//! blocks of `network.node_prefix_len`; each node owns one block
//! (`ip-blocks/<n>`), whose first host address is the gateway (the agent's
//! bridge) and whose following addresses go to instances placed there. The
//! used host numbers live in the node's allocation record, so the placement
//! compare-and-swap also makes addresses unique. The MAC is derived from the
//! address (`02:4e:` + the four octets).

use std::net::Ipv4Addr;

use crate::config::NetworkConfig;
use crate::error::{Error, Result};

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

    /// Host numbers usable by instances in a block: 2..=max_host.
    pub fn max_host(&self) -> u32 {
        (1u32 << (32 - self.node_prefix_len)) - 2
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

    /// The smallest free host number given the used ones.
    pub fn free_host(&self, used: &[u32]) -> Option<u32> {
        (2..=self.max_host()).find(|h| !used.contains(h))
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
        assert_eq!(n.free_host(&[2, 3, 5]), Some(4));
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
