//! Instance addresses in their VPC subnet.
//!
//! An instance in a VPC gets its primary private address from its subnet:
//! the claim machinery of [`crate::domain::ipam`] (one claim record per
//! address, `ipam/addrs/<subnet>/<ip>`, created compare-absent in the
//! transaction that places the instance, deleted in the one that
//! terminates it or rolls it back) keyed by the VPC subnet's id. Two
//! placements can therefore never commit one address, on any replica.
//!
//! Before each placement attempt, [`Domain::address_pool`] reads the claims
//! of the subnets the launch may use (the subnet given, or the default
//! subnet of every zone) and keeps the lowest free addresses, never one of
//! EC2's five reserved ones, nor one another in-flight launch of this
//! replica holds ([`InFlight`], released when the launch's transaction is
//! decided), so concurrent launches of one replica do not lose their
//! compare to each other; a launch on another replica that wins the same
//! address makes the loser's transaction fail and be retried with fresh
//! claims. A requested `PrivateIpAddress` is checked here: inside the
//! subnet and not reserved (`InvalidParameterValue`), not claimed
//! (`InvalidIPAddress.InUse`).
//!
//! Reading a subnet's claims costs one bounded paged read per placement
//! attempt, proportional to the addresses in use in that subnet.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Cidr, InstanceVpc};
use crate::domain::model::NetworkAssignment;
use crate::domain::network::mac_for;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, SubnetId, VpcId};

/// The VPC side of an instance's address (see
/// [`NetworkAssignment::vpc`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcNet {
    /// The VPC.
    pub vpc_id: VpcId,
    /// Its VNI.
    pub vni: u32,
    /// The subnet's block, `a.b.c.d/n`.
    pub subnet_cidr: String,
}

/// The subnet's router address (base + 1), which the node answers for.
pub fn gateway_of(cidr: &Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.base()).wrapping_add(1))
}

/// The network assignment of address `ip` in VPC subnet `subnet`.
pub fn assignment(
    vpc_id: &VpcId,
    vni: u32,
    subnet: &SubnetId,
    cidr: &Cidr,
    ip: Ipv4Addr,
) -> NetworkAssignment {
    NetworkAssignment {
        host: u32::from(ip).wrapping_sub(u32::from(cidr.base())),
        ip: ip.to_string(),
        prefix_len: cidr.prefix_len(),
        gateway: gateway_of(cidr).to_string(),
        mac: mac_for(ip),
        subnet_id: Some(subnet.clone()),
        vpc: Some(VpcNet {
            vpc_id: vpc_id.clone(),
            vni,
            subnet_cidr: cidr.to_string(),
        }),
    }
}

/// Checks a requested `PrivateIpAddress` against the subnet: a valid
/// IPv4 address inside it and not one of its reserved addresses.
pub fn check_requested(ip: &str, subnet: &SubnetId, cidr: &Cidr) -> Result<Ipv4Addr> {
    let addr: Ipv4Addr = ip.parse().map_err(|_| {
        Error::invalid(format!(
            "Value ({ip}) for parameter privateIpAddress is invalid. Expected a valid IPv4 address."
        ))
    })?;
    if !cidr.contains_ip(addr) {
        return Err(Error::invalid(format!(
            "Address {ip} does not fall within the subnet's address range ({subnet}, {cidr})"
        )));
    }
    if cidr.is_reserved(addr) {
        return Err(Error::invalid(format!(
            "Address {ip} is in subnet's reserved address range ({cidr})"
        )));
    }
    Ok(addr)
}

/// `InsufficientFreeAddressesInSubnet`.
pub fn subnet_full(subnet: &SubnetId) -> Error {
    Error::invalid_code(
        "InsufficientFreeAddressesInSubnet",
        format!("There are not enough free addresses in subnet '{subnet}' to satisfy the requested number of instances."),
    )
}

/// `InvalidIPAddress.InUse`.
pub fn in_use(ip: Ipv4Addr) -> Error {
    Error::invalid_code("InvalidIPAddress.InUse", format!("Address {ip} is in use."))
}

/// Addresses this replica's in-flight launches hold (not yet committed).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<(SubnetId, Ipv4Addr)>>>);

impl InFlight {
    fn hold(&self, subnet: &SubnetId, ip: Ipv4Addr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((subnet.clone(), ip))
    }

    fn release(&self, held: &[(SubnetId, Ipv4Addr)]) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for h in held {
            set.remove(h);
        }
    }
}

#[derive(Debug)]
struct SubnetFree {
    cidr: Cidr,
    free: VecDeque<Ipv4Addr>,
}

/// Free addresses of the subnets one launch attempt may use, held in
/// [`InFlight`] until this is dropped (after the attempt's transaction is
/// decided).
#[derive(Debug)]
pub struct AddressPool {
    vpc_id: VpcId,
    vni: u32,
    subnets: BTreeMap<SubnetId, SubnetFree>,
    /// Without a named subnet: the default subnet of each zone.
    default_subnets: BTreeMap<String, SubnetId>,
    held: Vec<(SubnetId, Ipv4Addr)>,
    inflight: InFlight,
    /// A launch with an interface of its own: the interface, whose
    /// address the (one) instance takes instead of a claim.
    interface: Option<super::eni_attach::InterfaceLease>,
    /// The secondary interfaces the (one) instance takes.
    secondaries: Vec<super::eni_secondary::SecondaryLease>,
}

impl AddressPool {
    /// How many addresses the pool has in `subnet` (the only subnet of a
    /// launch that names one).
    pub fn free_in(&self, subnet: &SubnetId) -> usize {
        if self.interface.is_some() {
            return 1;
        }
        self.subnets.get(subnet).map_or(0, |s| s.free.len())
    }

    /// The subnet of an instance placed in `zone` that names `subnet`
    /// (or none: the zone's default subnet).
    pub fn subnet_for(&self, subnet: Option<&SubnetId>, zone: &str) -> Option<SubnetId> {
        subnet
            .cloned()
            .or_else(|| self.default_subnets.get(zone).cloned())
    }

    /// The next address for an instance in `subnet`
    /// (`InsufficientFreeAddressesInSubnet` when none is left).
    pub fn take(&mut self, subnet: &SubnetId) -> Result<NetworkAssignment> {
        if let Some(l) = &self.interface {
            return Ok(l.network.clone());
        }
        let s = self
            .subnets
            .get_mut(subnet)
            .ok_or_else(|| Error::Internal(format!("no address pool for subnet {subnet}")))?;
        let ip = s.free.pop_front().ok_or_else(|| subnet_full(subnet))?;
        Ok(assignment(&self.vpc_id, self.vni, subnet, &s.cidr, ip))
    }
}

impl AddressPool {
    /// Holds an address of `subnet` for a secondary interface created at
    /// launch: `requested` (`InvalidIPAddress.InUse` when claimed or held),
    /// else the lowest neither reserved, claimed nor held.
    pub(crate) fn hold_address(
        &mut self,
        subnet: &SubnetId,
        cidr: &Cidr,
        claimed: &HashSet<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        let ip = match requested {
            Some(ip) if claimed.contains(&ip) || !self.inflight.hold(subnet, ip) => {
                return Err(in_use(ip))
            }
            Some(ip) => ip,
            None => cidr
                .usable_hosts()
                .find(|ip| !claimed.contains(ip) && self.inflight.hold(subnet, *ip))
                .ok_or_else(|| subnet_full(subnet))?,
        };
        self.held.push((subnet.clone(), ip));
        Ok(ip)
    }

    /// Stages what `inst` holds of its address: the claim of it, or (a
    /// launch with an interface of its own) the interface attached.
    pub fn stage_hold(
        &self,
        store: &crate::store::Store,
        tx: &mut crate::store::Tx,
        inst: &crate::domain::model::Instance,
        network: &NetworkAssignment,
    ) -> Result<()> {
        for s in &self.secondaries {
            s.stage_attach(store.keys(), tx, inst)?;
        }
        match &self.interface {
            Some(l) => l.stage_attach(store.keys(), tx, inst),
            None => store.ipam().stage_claim(tx, inst, network),
        }
    }

    /// What the instance records of its secondary interfaces.
    pub fn secondary_copies(&self) -> Vec<super::eni_secondary::SecondaryInterface> {
        self.secondaries.iter().map(|s| s.copy.clone()).collect()
    }
}

impl Drop for AddressPool {
    fn drop(&mut self) {
        self.inflight.release(&self.held);
    }
}

impl Domain {
    /// The addresses one launch attempt of `want` instances in `vpc` may
    /// use (see the module docs). `None` for a launch without a VPC.
    pub(crate) async fn address_pool(
        &self,
        account: &AccountId,
        vpc: Option<&InstanceVpc>,
        want: u32,
    ) -> Result<Option<AddressPool>> {
        let Some(vpc) = vpc else { return Ok(None) };
        let Some(vpc_id) = &vpc.vpc_id else {
            return Ok(None);
        };
        let vni = match vpc.vni {
            0 => self.vpc_vni(account, vpc_id).await?,
            v => v,
        };
        let (cidrs, default_subnets) = match vpc.subnet_cidrs.is_empty() {
            false => (vpc.subnet_cidrs.clone(), vpc.default_subnets.clone()),
            true => self.launch_subnets(account, vpc).await?,
        };
        let mut pool = AddressPool {
            vpc_id: vpc_id.clone(),
            vni,
            subnets: BTreeMap::new(),
            default_subnets,
            held: Vec::new(),
            inflight: self.addresses_in_flight.clone(),
            interface: None,
            secondaries: Vec::new(),
        };
        pool.secondaries = self.lease_secondaries(account, vpc, &mut pool).await?;
        if let Some(eni) = &vpc.network_interface_id {
            pool.interface = Some(self.lease_interface(account, eni, vni).await?);
            return Ok(Some(pool));
        }
        for (id, cidr) in cidrs {
            let claimed: HashSet<Ipv4Addr> = self
                .store
                .ipam()
                .claims(&id)
                .await?
                .into_iter()
                .filter_map(|(_, c)| c.value.ip.parse().ok())
                .collect();
            let mut free = VecDeque::new();
            if let Some(ip) = &vpc.private_ip_address {
                let ip = check_requested(ip, &id, &cidr)?;
                if claimed.contains(&ip) || !pool.inflight.hold(&id, ip) {
                    return Err(in_use(ip));
                }
                pool.held.push((id.clone(), ip));
                free.push_back(ip);
            } else {
                for ip in cidr.usable_hosts() {
                    if free.len() >= want as usize {
                        break;
                    }
                    if !claimed.contains(&ip) && pool.inflight.hold(&id, ip) {
                        pool.held.push((id.clone(), ip));
                        free.push_back(ip);
                    }
                }
            }
            pool.subnets.insert(id, SubnetFree { cidr, free });
        }
        Ok(Some(pool))
    }

    /// The blocks of the subnets a launch may use and, without a named
    /// subnet, the default subnet of each zone (re-read when a launch
    /// resumed from its stored record lost its resolution).
    async fn launch_subnets(
        &self,
        account: &AccountId,
        vpc: &InstanceVpc,
    ) -> Result<(BTreeMap<SubnetId, Cidr>, BTreeMap<String, SubnetId>)> {
        let mut out = BTreeMap::new();
        let mut zones = BTreeMap::new();
        for s in self.store.vpcs().subnets_of(account).await? {
            let s = s.value;
            let wanted = match &vpc.subnet_id {
                Some(id) => &s.id == id,
                None => Some(&s.vpc_id) == vpc.vpc_id.as_ref() && s.default_for_az,
            };
            if wanted {
                out.insert(s.id.clone(), Cidr::parse(&s.cidr)?);
                if vpc.subnet_id.is_none() {
                    zones.insert(s.availability_zone.clone(), s.id.clone());
                }
            }
        }
        Ok((out, zones))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_addresses_are_checked_against_the_subnet() {
        let id = SubnetId::generate_vpc();
        let c = Cidr::parse("10.0.1.0/24").unwrap();
        assert_eq!(
            check_requested("10.0.1.9", &id, &c).unwrap(),
            Ipv4Addr::new(10, 0, 1, 9)
        );
        for bad in [
            "10.0.2.9",
            "10.0.1.0",
            "10.0.1.1",
            "10.0.1.3",
            "10.0.1.255",
            "x",
        ] {
            let e = check_requested(bad, &id, &c).unwrap_err();
            assert_eq!(e.code(), "InvalidParameterValue", "{bad}");
        }
        let n = assignment(&VpcId::generate(), 7, &id, &c, Ipv4Addr::new(10, 0, 1, 4));
        assert_eq!(
            (n.gateway.as_str(), n.prefix_len, n.host),
            ("10.0.1.1", 24, 4)
        );
        assert!(!n.is_node_block());
    }

    #[test]
    fn in_flight_addresses_are_held_once() {
        let f = InFlight::default();
        let id = SubnetId::generate_vpc();
        let ip = Ipv4Addr::new(10, 0, 0, 4);
        assert!(f.hold(&id, ip));
        assert!(!f.hold(&id, ip));
        f.release(&[(id.clone(), ip)]);
        assert!(f.hold(&id, ip));
    }
}
