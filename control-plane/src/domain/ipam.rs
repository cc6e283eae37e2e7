//! IP address management as its own aggregate: subnets
//! (`ipam/subnets/<subnet>`) and one claim record per address in use
//! (`ipam/addrs/<subnet>/<a.b.c.d>` → the instance or network interface
//! holding it).
//!
//! A claim is created with compare-absent in the same transaction as the
//! placement that hands the address out (with the capacity claim on the
//! node's allocation), so two placements can never commit the same
//! address; it is deleted in the transaction that terminates the instance
//! (or rolls it back), after which the address can be handed out again. A
//! stopped instance keeps its claim (it keeps its address).
//!
//! Until VPCs exist, each node's address block is one subnet
//! ([`SubnetId::for_block`], created with the node at Register, or by the
//! first claim in it for nodes registered earlier), and addresses are
//! picked in the subnet of the node chosen by the scheduler; the node
//! allocation's `hosts` list is the allocator's index of used host
//! numbers, kept in step with the claims in the same transactions. The
//! agent's view (ip, prefix, gateway, MAC) is unchanged.
//!
//! Migration: instances placed before IPAM carry no `subnet_id` and have no
//! claim. The first update of such an instance ([`Domain::update_instance`](super::placement))
//! derives its subnet from its address and writes its claim (and the
//! subnet record if missing) in that update's transaction, so it keeps its
//! address.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::domain::model::{now_ms, Instance, NetworkAssignment};
use crate::domain::network::Network;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, NodeId, SubnetId};
use crate::store::{Keys, Tx};

/// A subnet (`ipam/subnets/<subnet>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Id.
    pub id: SubnetId,
    /// `a.b.c.d/len`.
    pub cidr: String,
    /// Zone.
    pub availability_zone: String,
    /// The node whose bridge serves it (every subnet, until VPCs exist).
    pub node_id: Option<NodeId>,
    /// Created.
    pub created_ms: i64,
}

/// The claim of one address (`ipam/addrs/<subnet>/<ip>`): created once
/// (compare-absent), deleted when the instance leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    /// Subnet.
    pub subnet_id: SubnetId,
    /// a.b.c.d
    pub ip: String,
    /// Holder: an instance (its primary address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    /// Holder: an elastic network interface (its primary address, kept
    /// while the interface exists, whichever instance it is attached to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_id: Option<crate::ids::NetworkInterfaceId>,
    /// Holder's account.
    pub account: AccountId,
    /// When.
    pub claimed_ms: i64,
}

/// The subnet record of node address block `block`.
pub fn block_subnet(network: &Network, block: u32, zone: &str, node: &NodeId) -> Subnet {
    Subnet {
        id: SubnetId::for_block(block),
        cidr: network.block_cidr(block),
        availability_zone: zone.to_string(),
        node_id: Some(node.clone()),
        created_ms: now_ms(),
    }
}

/// Adds the claim of `net`'s address by `inst` to `tx` (compare-absent:
/// an address already claimed fails the transaction).
pub fn stage_claim(
    keys: &Keys,
    tx: &mut Tx,
    inst: &Instance,
    net: &NetworkAssignment,
) -> Result<()> {
    let subnet = net
        .subnet_id
        .clone()
        .ok_or_else(|| Error::Internal(format!("address of {} has no subnet", inst.id)))?;
    let k = keys.address_claim(&subnet, &net.ip);
    tx.expect_absent(&k);
    tx.put(
        &k,
        &AddressClaim {
            subnet_id: subnet,
            ip: net.ip.clone(),
            instance_id: Some(inst.id.clone()),
            network_interface_id: None,
            account: inst.account.clone(),
            claimed_ms: now_ms(),
        },
    )?;
    Ok(())
}

/// Adds the release of `net`'s address to `tx` (its claim deleted).
pub fn stage_release(keys: &Keys, tx: &mut Tx, network: &Network, net: &NetworkAssignment) {
    if let Some(subnet) = subnet_of(network, net) {
        tx.delete(&keys.address_claim(&subnet, &net.ip));
    }
}

/// The subnet of an address: recorded, or (placed before IPAM) the subnet
/// of the node block it lies in.
pub fn subnet_of(network: &Network, net: &NetworkAssignment) -> Option<SubnetId> {
    if let Some(s) = &net.subnet_id {
        return Some(s.clone());
    }
    let ip: Ipv4Addr = net.ip.parse().ok()?;
    network.block_of(ip).map(SubnetId::for_block)
}

impl Domain {
    /// Migration of an instance placed before IPAM (no `subnet_id`): records
    /// its subnet in `inst` and adds its claim to `tx` (and the subnet
    /// record, when its node registered before IPAM too). The instance keeps
    /// its address. No-op for instances that have a subnet or no address.
    pub(super) async fn adopt_address(&self, inst: &mut Instance, tx: &mut Tx) -> Result<()> {
        let Some(net) = inst.network.as_mut() else {
            return Ok(());
        };
        if net.subnet_id.is_some() {
            return Ok(());
        }
        let ip: Ipv4Addr = net
            .ip
            .parse()
            .map_err(|_| Error::Internal(format!("instance {} has a bad address", inst.id)))?;
        let block = self.network.block_of(ip).ok_or_else(|| {
            Error::Internal(format!(
                "address {ip} of instance {} is outside the region network",
                inst.id
            ))
        })?;
        let subnet = SubnetId::for_block(block);
        net.subnet_id = Some(subnet.clone());
        let sk = self.store.ipam().subnet_key(&subnet);
        if self.store.get_raw(&sk).await?.is_none() {
            if let Some(node) = &inst.node_id {
                tx.expect_absent(&sk);
                tx.put(
                    &sk,
                    &block_subnet(&self.network, block, &inst.availability_zone, node),
                )?;
            }
        }
        let net = net.clone();
        self.store.ipam().stage_claim(tx, inst, &net)
    }

    /// The claims of a subnet (address order of their keys).
    pub async fn address_claims(&self, subnet: &SubnetId) -> Result<Vec<AddressClaim>> {
        let all = self.store.ipam().claims(subnet).await?;
        Ok(all.into_iter().map(|(_, v)| v.value).collect())
    }

    /// A subnet record.
    pub async fn subnet(&self, id: &SubnetId) -> Result<Option<Subnet>> {
        Ok(self.store.ipam().subnet(id).await?.map(|v| v.value))
    }
}
