//! IPv4 CIDR blocks as VPCs, subnets and security group rules use them:
//! strict parsing (`a.b.c.d/len`, the address aligned to its prefix),
//! containment and overlap, and EC2's five reserved addresses of a subnet.

use std::fmt;
use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// An IPv4 block: a base address aligned to `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    base: u32,
    len: u8,
}

/// Addresses EC2 reserves in every subnet: network, router (+1), DNS (+2),
/// future use (+3) and broadcast.
pub const RESERVED_PER_SUBNET: u64 = 5;

impl Cidr {
    /// Parses `a.b.c.d/len` (len 0..=32). The address must be the block's
    /// first (EC2 answers a misaligned block with an error too).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "Value ({s}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
            ))
        };
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        // Only plain decimal lengths: no sign, no leading zeros beyond "0".
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if len.len() == 2 && len.starts_with('0') {
            return Err(bad());
        }
        let len: u8 = len.parse().map_err(|_| bad())?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let base = u32::from(addr);
        if base & !Self::mask_of(len) != 0 {
            return Err(Error::invalid(format!(
                "Value ({s}) for parameter cidrBlock is invalid: the address has bits set beyond the /{len} prefix (did you mean {}/{len}?)",
                Ipv4Addr::from(base & Self::mask_of(len))
            )));
        }
        Ok(Self { base, len })
    }

    fn mask_of(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// A block from its parts (`base` is masked to `len`; `len` at most 32).
    pub fn new(base: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Self {
            base: u32::from(base) & Self::mask_of(len),
            len,
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The first address.
    pub fn base(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The last address.
    fn last(&self) -> u32 {
        self.base | !Self::mask_of(self.len)
    }

    /// Whether `ip` lies in the block.
    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.len) == self.base
    }

    /// Whether `other` lies wholly inside this block.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains_ip(other.base())
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }

    /// Whether `ip` is one of EC2's five reserved addresses of this subnet.
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip.wrapping_sub(self.base) < 4 || ip == self.last()
    }

    /// The addresses an instance can get (size minus the five reserved).
    pub fn usable(&self) -> u64 {
        self.size().saturating_sub(RESERVED_PER_SUBNET)
    }

    /// The addresses an instance can get, lowest first (all but the first
    /// four and the last: [`Cidr::is_reserved`]).
    pub fn usable_hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = self.base;
        let size = u32::try_from(self.size()).unwrap_or(u32::MAX);
        (4..size.saturating_sub(1)).map(move |off| Ipv4Addr::from(base.wrapping_add(off)))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_hosts_are_the_unreserved_ones_lowest_first() {
        let c = Cidr::parse("10.0.1.0/28").unwrap();
        let hosts: Vec<Ipv4Addr> = c.usable_hosts().collect();
        assert_eq!(hosts.len() as u64, c.usable());
        assert_eq!(hosts.first(), Some(&Ipv4Addr::new(10, 0, 1, 4)));
        assert_eq!(hosts.last(), Some(&Ipv4Addr::new(10, 0, 1, 14)));
        assert!(hosts
            .iter()
            .all(|ip| c.contains_ip(*ip) && !c.is_reserved(*ip)));
    }

    #[test]
    fn parse_and_arithmetic() {
        let v = Cidr::parse("10.0.0.0/16").unwrap();
        assert_eq!(v.size(), 65536);
        assert_eq!(v.usable(), 65531);
        assert_eq!(v.to_string(), "10.0.0.0/16");
        let s = Cidr::parse("10.0.1.0/24").unwrap();
        assert!(v.contains(&s) && !s.contains(&v));
        assert!(v.overlaps(&s) && s.overlaps(&v));
        let t = Cidr::parse("10.0.2.0/24").unwrap();
        assert!(!s.overlaps(&t));
        assert!(!v.contains(&Cidr::parse("10.1.0.0/24").unwrap()));
        assert!(s.is_reserved("10.0.1.0".parse().unwrap()));
        assert!(s.is_reserved("10.0.1.3".parse().unwrap()));
        assert!(s.is_reserved("10.0.1.255".parse().unwrap()));
        assert!(!s.is_reserved("10.0.1.4".parse().unwrap()));
        assert!(!s.is_reserved("10.0.1.254".parse().unwrap()));
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().size(), 1 << 32);
        assert_eq!(Cidr::parse("10.0.0.0/28").unwrap().usable(), 11);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/016",
            "10.0.0.1/16",
            "10.0.0/16",
            "x/16",
            "10.0.0.0/16/1",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
