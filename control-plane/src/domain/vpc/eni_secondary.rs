//! Secondary network interfaces: elastic network interfaces ([`super::enis`])
//! attached to an instance at device index 1 or more.
//!
//! An instance has at most [`MAX_INTERFACES`] interfaces (device indexes
//! `0..MAX_INTERFACES`, the primary at 0), whatever its type: a flat limit,
//! as small EC2 types have (t3.micro 2, t3.small..large 3, m5.large 3,
//! m5.xlarge 4). A secondary interface is in the instance's VPC and zone
//! (its subnet may be any subnet of that zone).
//!
//! Microvms have no hot-plug (virtio-mmio devices are fixed at boot, as in
//! Firecracker): AttachNetworkInterface and DetachNetworkInterface of a
//! secondary interface are refused unless the instance is `stopped`
//! (`IncorrectInstanceState`); the interface takes effect at the next start.
//! RunInstances names existing interfaces or asks for new ones
//! (`NetworkInterface.N` with `DeviceIndex` >= 1 and `NetworkInterfaceId`,
//! or `SubnetId` with groups and an address): checked once
//! ([`Domain::resolve_launch_secondaries`], which also fixes the launch's
//! zone) and taken again by every placement attempt
//! ([`Domain::lease_secondaries`]: an existing one re-read, a new one given
//! an address held in the attempt's address pool, so the launch's other
//! addresses differ from it). The launch transaction attaches an existing
//! one, compared, or creates a new one attached, with its address claim,
//! both compare-absent ([`SecondaryLease::stage_attach`]).
//!
//! Records: the interface's attachment (`attachment`, id `eni-attach-` +
//! the interface's hex) and, in the instance record, a copy of what the
//! data plane needs ([`SecondaryInterface`] in
//! [`super::InstanceVpc::secondary_interfaces`]): the node's network view
//! and the instance's assignment are made from the instance record alone.
//! Attach and detach rewrite both records in one transaction, each compared
//! on its `mod_revision`, so two replicas racing (two attachments at one
//! device index, an attachment and a start) commit at most one; a refused
//! call writes nothing. ModifyNetworkInterfaceAttribute rewrites the copy's
//! groups with the interface's, and `Attachment.DeleteOnTermination` (false
//! after AttachNetworkInterface, as in EC2) in both records. At terminate
//! ([`Domain::stage_secondaries_leave`], in the terminate's transaction)
//! each secondary interface is deleted with its address
//! (deleteOnTermination) or detached back to `available`.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::enis::{
    interface_in_use, stage_attached, stage_delete, InterfaceAttachment, NamedInterface,
    NetworkInterface,
};
use super::private_addresses::check_requested;
use super::{Cidr, MAX_ATTEMPTS};
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{
    AccountId, InstanceId, NetworkInterfaceAttachmentId, NetworkInterfaceId, SecurityGroupId,
    SubnetId,
};
use crate::store::Tx;

/// Interfaces per instance (device indexes `0..MAX_INTERFACES`).
pub const MAX_INTERFACES: u32 = 4;

/// A secondary interface asked for at launch (`NetworkInterface.N` with
/// `DeviceIndex` >= 1; request only): an existing interface
/// (`interface_id`) or a new one in `subnet_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSecondary {
    /// Device index (1..[`MAX_INTERFACES`]).
    pub device_index: u32,
    /// An existing interface; `None`: one created at launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_id: Option<NetworkInterfaceId>,
    /// A new interface's subnet (of the instance's VPC and zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// A new interface's groups (none: the VPC's default group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<SecurityGroupId>,
    /// A new interface's address (none: the subnet's lowest free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip_address: Option<String>,
    /// `DeleteOnTermination` (default false for an existing interface,
    /// true for a new one).
    #[serde(default)]
    pub delete_on_termination: bool,
}

/// A secondary interface taken by one launch attempt: its record as read
/// (or, `created`, as this launch creates it) and the instance's copy of it.
#[derive(Debug, Clone)]
pub struct SecondaryLease {
    eni: crate::store::Versioned<NetworkInterface>,
    /// Created by the launch (with its address claim), not read.
    created: bool,
    /// What the instance records.
    pub copy: SecondaryInterface,
}

impl SecondaryLease {
    /// Stages the interface attached to `inst` (compared on the revision
    /// read: a racing launch, attach or delete makes the transaction fail).
    pub fn stage_attach(
        &self,
        keys: &crate::store::Keys,
        tx: &mut Tx,
        inst: &Instance,
    ) -> Result<()> {
        let attachment = InterfaceAttachment {
            id: NetworkInterfaceAttachmentId::secondary_of(&self.eni.value.id),
            instance_id: inst.id.clone(),
            device_index: self.copy.device_index,
            delete_on_termination: self.copy.delete_on_termination,
            attached_ms: inst.launch_time_ms,
        };
        if !self.created {
            return stage_attached(keys, tx, &self.eni, attachment);
        }
        let mut e = self.eni.value.clone();
        e.attachment = Some(attachment);
        tx.create(&keys.network_interface(&e.account, &e.id), &e)?;
        tx.create(
            &keys.address_claim(&e.subnet_id, &e.private_ip),
            &crate::domain::ipam::AddressClaim {
                subnet_id: e.subnet_id.clone(),
                ip: e.private_ip.clone(),
                instance_id: None,
                network_interface_id: Some(e.id.clone()),
                account: e.account.clone(),
                claimed_ms: e.created_ms,
            },
        )?;
        Ok(())
    }
}

/// What an instance record keeps of one secondary interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryInterface {
    /// The interface.
    pub interface_id: NetworkInterfaceId,
    /// Its device index (1..[`MAX_INTERFACES`]).
    pub device_index: u32,
    /// Its subnet (of the instance's VPC).
    pub subnet_id: SubnetId,
    /// The subnet's block, `a.b.c.d/n`.
    pub subnet_cidr: String,
    /// Its private address.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
    /// Its security groups (the interface's own, kept equal to the
    /// interface record's).
    pub security_group_ids: Vec<SecurityGroupId>,
    /// The attachment's deleteOnTermination.
    #[serde(default)]
    pub delete_on_termination: bool,
}

/// The secondary interfaces of `inst` (by device index).
pub fn secondaries_of(inst: &Instance) -> &[SecondaryInterface] {
    inst.vpc
        .as_ref()
        .map_or(&[][..], |v| v.secondary_interfaces.as_slice())
}

/// One interface attached to an instance, as DescribeInstances shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedInterface<'a> {
    /// The interface (the derived `eni-` + the instance's hex for a primary
    /// interface the instance was not launched with).
    pub interface_id: NetworkInterfaceId,
    /// Its device index (0: the primary).
    pub device_index: u32,
    /// Its attachment.
    pub attachment_id: NetworkInterfaceAttachmentId,
    /// Its subnet.
    pub subnet_id: Option<&'a SubnetId>,
    /// Its private address.
    pub ip: &'a str,
    /// Its MAC.
    pub mac: &'a str,
    /// Its security groups.
    pub security_group_ids: &'a [SecurityGroupId],
    /// Deleted with the instance (else detached back to `available`).
    pub delete_on_termination: bool,
    /// Whether the instance was launched with this primary interface's own
    /// record (false for a derived one and for secondary interfaces).
    pub own_primary: bool,
}

/// The interfaces of `inst` by device index: its primary (once it has an
/// address) and the secondary ones. Empty outside a VPC.
pub fn interfaces_of(inst: &Instance) -> Vec<AttachedInterface<'_>> {
    let (Some(v), Some(net)) = (inst.vpc.as_ref(), inst.network.as_ref()) else {
        return Vec::new();
    };
    let primary = AttachedInterface {
        interface_id: v
            .network_interface_id
            .clone()
            .unwrap_or_else(|| NetworkInterfaceId::primary_of(&inst.id)),
        device_index: 0,
        attachment_id: NetworkInterfaceAttachmentId::primary_of(&inst.id),
        subnet_id: v.subnet_id.as_ref(),
        ip: &net.ip,
        mac: &net.mac,
        security_group_ids: &v.security_group_ids,
        delete_on_termination: v.network_interface_id.is_none()
            || v.interface_delete_on_termination,
        own_primary: v.network_interface_id.is_some(),
    };
    std::iter::once(primary)
        .chain(v.secondary_interfaces.iter().map(|s| AttachedInterface {
            interface_id: s.interface_id.clone(),
            device_index: s.device_index,
            attachment_id: NetworkInterfaceAttachmentId::secondary_of(&s.interface_id),
            subnet_id: Some(&s.subnet_id),
            ip: &s.ip,
            mac: &s.mac,
            security_group_ids: &s.security_group_ids,
            delete_on_termination: s.delete_on_termination,
            own_primary: false,
        }))
        .collect()
}

/// `AttachmentLimitExceeded` for a device index past [`MAX_INTERFACES`].
fn check_index(device_index: u32) -> Result<()> {
    if device_index >= MAX_INTERFACES {
        return Err(Error::invalid_code(
            "AttachmentLimitExceeded",
            format!(
                "Device index {device_index} exceeds the limit: an instance has at most {MAX_INTERFACES} network interfaces (device indexes 0-{})",
                MAX_INTERFACES - 1
            ),
        ));
    }
    Ok(())
}

fn not_stopped(iid: &InstanceId, state: State, what: &str) -> Error {
    Error::incorrect_state(
        "IncorrectInstanceState",
        format!(
            "The instance '{iid}' is '{}': a secondary network interface can only be {what} while the instance is stopped (instances have no network interface hot-plug)",
            state.name()
        ),
    )
}

impl Domain {
    /// Checks the secondary interfaces of a launch into `vpc` (one
    /// instance; each interface the caller's, available, of `vpc`, at an
    /// index below [`MAX_INTERFACES`]); returns their zone, which the
    /// launch must be in (`None`: no secondary interfaces).
    pub(crate) async fn resolve_launch_secondaries(
        &self,
        account: &AccountId,
        req: &super::InstanceVpc,
        vpc: &crate::ids::VpcId,
        max_count: u32,
    ) -> Result<Option<String>> {
        if req.launch_secondaries.is_empty() {
            return Ok(None);
        }
        if max_count > 1 {
            return Err(Error::invalid_code(
                "InvalidParameterCombination",
                "Secondary network interfaces can only be given when launching one instance",
            ));
        }
        let mut zone: Option<String> = None;
        for s in &req.launch_secondaries {
            check_index(s.device_index)?;
            let (what, in_vpc, in_zone) = match &s.interface_id {
                Some(id) => {
                    let e = self.available_secondary(account, id).await?.value;
                    (
                        format!("The network interface {}", e.id),
                        e.vpc_id,
                        e.availability_zone,
                    )
                }
                None => {
                    let sub = self.new_secondary_subnet(account, s).await?;
                    if &sub.vpc_id == vpc {
                        // Groups of the VPC, an address of the subnet.
                        self.new_secondary_groups(account, &sub, s).await?;
                        if let Some(ip) = &s.private_ip_address {
                            check_requested(ip, &sub.id, &Cidr::parse(&sub.cidr)?)?;
                        }
                    }
                    (
                        format!("The subnet {}", sub.id),
                        sub.vpc_id,
                        sub.availability_zone,
                    )
                }
            };
            if &in_vpc != vpc {
                return Err(Error::invalid(format!(
                    "{what} is in {in_vpc}, not in the instance's VPC {vpc}"
                )));
            }
            match &zone {
                Some(z) if z != &in_zone => {
                    return Err(Error::invalid_code(
                        "InvalidParameterCombination",
                        "The network interfaces of an instance must be in one availability zone",
                    ))
                }
                _ => zone = Some(in_zone),
            }
        }
        Ok(zone)
    }

    /// The subnet of a secondary interface created at launch.
    async fn new_secondary_subnet(
        &self,
        account: &AccountId,
        s: &LaunchSecondary,
    ) -> Result<super::VpcSubnet> {
        let id = s.subnet_id.as_ref().ok_or_else(|| {
            Error::invalid("A network interface needs a NetworkInterfaceId or a SubnetId")
        })?;
        Ok(self.own_subnet(account, id.as_str()).await?.value)
    }

    /// The groups of a secondary interface created at launch in `sub`
    /// (checked: the caller's, of the subnet's VPC; none asked: the VPC's
    /// default group).
    async fn new_secondary_groups(
        &self,
        account: &AccountId,
        sub: &super::VpcSubnet,
        s: &LaunchSecondary,
    ) -> Result<Vec<SecurityGroupId>> {
        let ids: Vec<String> = s.security_group_ids.iter().map(|g| g.to_string()).collect();
        // The launch does not compare the groups (as for the primary
        // interface's): the staged compares are dropped.
        self.interface_groups(account, &sub.vpc_id, &ids, &mut Tx::new())
            .await
    }

    /// Re-reads the secondary interfaces a launch attempt takes (still the
    /// caller's and available).
    /// A new one gets an address of its subnet held in `pool` (so that the
    /// launch's other addresses differ from it).
    pub(crate) async fn lease_secondaries(
        &self,
        account: &AccountId,
        req: &super::InstanceVpc,
        pool: &mut super::private_addresses::AddressPool,
    ) -> Result<Vec<SecondaryLease>> {
        let mut out = Vec::with_capacity(req.launch_secondaries.len());
        for s in &req.launch_secondaries {
            let Some(id) = &s.interface_id else {
                out.push(self.lease_new_secondary(account, s, pool).await?);
                continue;
            };
            let eni = self.available_secondary(account, id).await?;
            let mut copy = self.copy_of(account, &eni.value, s.device_index).await?;
            copy.delete_on_termination = s.delete_on_termination;
            out.push(SecondaryLease {
                eni,
                created: false,
                copy,
            });
        }
        Ok(out)
    }

    /// A secondary interface this launch attempt creates: its record (not
    /// yet attached) with an address held in `pool`.
    async fn lease_new_secondary(
        &self,
        account: &AccountId,
        s: &LaunchSecondary,
        pool: &mut super::private_addresses::AddressPool,
    ) -> Result<SecondaryLease> {
        let sub = self.new_secondary_subnet(account, s).await?;
        let groups = self.new_secondary_groups(account, &sub, s).await?;
        let cidr = Cidr::parse(&sub.cidr)?;
        let requested = s
            .private_ip_address
            .as_deref()
            .map(|ip| check_requested(ip, &sub.id, &cidr))
            .transpose()?;
        let claimed: HashSet<Ipv4Addr> = self
            .address_claims(&sub.id)
            .await?
            .into_iter()
            .filter_map(|c| c.ip.parse().ok())
            .collect();
        let ip = pool.hold_address(&sub.id, &cidr, &claimed, requested)?;
        let eni = NetworkInterface {
            id: NetworkInterfaceId::generate(),
            account: account.clone(),
            vpc_id: sub.vpc_id.clone(),
            subnet_id: sub.id.clone(),
            availability_zone: sub.availability_zone.clone(),
            private_ip: ip.to_string(),
            mac: crate::domain::network::mac_for(ip),
            security_group_ids: groups,
            description: String::new(),
            attachment: None,
            tags: Default::default(),
            created_ms: now_ms(),
            derived: false,
        };
        let copy = SecondaryInterface {
            interface_id: eni.id.clone(),
            device_index: s.device_index,
            subnet_id: sub.id.clone(),
            subnet_cidr: cidr.to_string(),
            ip: eni.private_ip.clone(),
            mac: eni.mac.clone(),
            security_group_ids: eni.security_group_ids.clone(),
            delete_on_termination: s.delete_on_termination,
        };
        Ok(SecondaryLease {
            eni: crate::store::Versioned {
                value: eni,
                mod_revision: 0,
                newer: None,
            },
            created: true,
            copy,
        })
    }

    /// What an instance records of interface `e` at `device_index`
    /// (deleteOnTermination false).
    async fn copy_of(
        &self,
        account: &AccountId,
        e: &NetworkInterface,
        device_index: u32,
    ) -> Result<SecondaryInterface> {
        let subnet = self
            .store
            .vpcs()
            .subnet(account, &e.subnet_id)
            .await?
            .ok_or_else(|| super::subnet_not_found(e.subnet_id.as_str()))?;
        let cidr = Cidr::parse(&subnet.value.cidr)?;
        Ok(SecondaryInterface {
            interface_id: e.id.clone(),
            device_index,
            subnet_id: e.subnet_id.clone(),
            subnet_cidr: cidr.to_string(),
            ip: e.private_ip.clone(),
            mac: e.mac.clone(),
            security_group_ids: e.security_group_ids.clone(),
            delete_on_termination: false,
        })
    }

    /// The stored interface `id` of `account`, available.
    async fn available_secondary(
        &self,
        account: &AccountId,
        id: &NetworkInterfaceId,
    ) -> Result<crate::store::Versioned<NetworkInterface>> {
        let eni = match self.own_interface(account, id.as_str()).await? {
            NamedInterface::Stored(v) => *v,
            NamedInterface::Derived(i) => {
                return Err(interface_in_use(
                    id,
                    &format!(" (the primary interface of {})", i.value.id),
                ))
            }
        };
        if let Some(a) = &eni.value.attachment {
            return Err(interface_in_use(
                id,
                &format!(" (attached to {})", a.instance_id),
            ));
        }
        Ok(eni)
    }

    /// AttachNetworkInterface at `device_index` >= 1 of interface `eni` to
    /// `inst` (both as read; every other check was done by the caller):
    /// checks the index and the instance's state, then writes the
    /// attachment to both records (retrying on conflict with fresh reads).
    pub(crate) async fn attach_secondary(
        &self,
        account: &AccountId,
        eni_id: &NetworkInterfaceId,
        iid: &InstanceId,
        device_index: u32,
    ) -> Result<NetworkInterfaceAttachmentId> {
        check_index(device_index)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let eni = self.available_secondary(account, eni_id).await?;
            let inst = self
                .store
                .instances()
                .get(account, iid)
                .await?
                .ok_or_else(|| {
                    Error::not_found(
                        "InvalidInstanceID.NotFound",
                        format!("The instance ID '{iid}' does not exist"),
                    )
                })?;
            let used = secondaries_of(&inst.value)
                .iter()
                .any(|s| s.device_index == device_index);
            if used {
                return Err(Error::invalid(format!(
                    "Instance '{iid}' already has an interface attached at device index '{device_index}'."
                )));
            }
            if inst.value.state != State::Stopped {
                return Err(not_stopped(iid, inst.value.state, "attached"));
            }
            let copy = self.copy_of(account, &eni.value, device_index).await?;
            let attachment = NetworkInterfaceAttachmentId::secondary_of(eni_id);
            let mut next_inst = inst.value.clone();
            if let Some(v) = next_inst.vpc.as_mut() {
                v.secondary_interfaces.push(copy);
                v.secondary_interfaces.sort_by_key(|s| s.device_index);
            }
            let mut tx = Tx::new();
            let attached = InterfaceAttachment {
                id: attachment.clone(),
                instance_id: iid.clone(),
                device_index,
                // AttachNetworkInterface's default, as in EC2.
                delete_on_termination: false,
                attached_ms: now_ms(),
            };
            stage_attached(keys, &mut tx, &eni, attached)?;
            tx.replace(&self.store.instances().key(account, iid), &inst, &next_inst)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(attachment);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(eni_id.to_string()))
    }

    /// DetachNetworkInterface of a secondary attachment (`None`: `id` is
    /// not the attachment of one of the account's stored interfaces).
    pub(crate) async fn detach_secondary(
        &self,
        account: &AccountId,
        id: &NetworkInterfaceAttachmentId,
    ) -> Result<Option<()>> {
        let eni_id = id.secondary_interface();
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let Some(eni) = self.store.vpcs().interface(account, &eni_id).await? else {
                return Ok(None);
            };
            let Some(a) = eni.value.attachment.clone().filter(|a| &a.id == id) else {
                return Ok(None);
            };
            let inst = self.store.instances().get(account, &a.instance_id).await?;
            let mut tx = Tx::new();
            let mut next_eni = eni.value.clone();
            next_eni.attachment = None;
            tx.replace(&keys.network_interface(account, &eni_id), &eni, &next_eni)?;
            if let Some(inst) = inst {
                if inst.value.state != State::Stopped {
                    return Err(not_stopped(&a.instance_id, inst.value.state, "detached"));
                }
                let mut next = inst.value.clone();
                if let Some(v) = next.vpc.as_mut() {
                    v.secondary_interfaces.retain(|s| s.interface_id != eni_id);
                }
                tx.replace(
                    &self.store.instances().key(account, &a.instance_id),
                    &inst,
                    &next,
                )?;
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(Some(()));
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(id.to_string()))
    }

    /// ModifyNetworkInterfaceAttribute `Attachment.DeleteOnTermination` of
    /// stored interface `id` attached with `attachment`: rewritten in the
    /// interface's attachment and in the instance record (the copy of a
    /// secondary interface, the launch option of a primary one), both
    /// compared. An instance's derived primary interface is always deleted
    /// with it (`OperationNotPermitted`).
    pub(crate) async fn set_delete_on_termination(
        &self,
        account: &AccountId,
        id: &str,
        attachment: &str,
        delete: bool,
    ) -> Result<()> {
        let att = NetworkInterfaceAttachmentId::parse(attachment)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let eni = match self.own_interface(account, id).await? {
                NamedInterface::Stored(v) => *v,
                NamedInterface::Derived(i) => {
                    return Err(Error::invalid_code(
                        "OperationNotPermitted",
                        format!(
                            "The primary interface of {} is always deleted with the instance",
                            i.value.id
                        ),
                    ))
                }
            };
            let Some(a) = eni.value.attachment.clone().filter(|a| a.id == att) else {
                return Err(Error::not_found(
                    "InvalidAttachmentID.NotFound",
                    format!("The attachment ID '{attachment}' does not exist"),
                ));
            };
            let inst = self
                .store
                .instances()
                .get(account, &a.instance_id)
                .await?
                .ok_or_else(|| {
                    Error::Internal(format!("{id} is attached to a missing instance"))
                })?;
            let mut next_eni = eni.value.clone();
            if let Some(x) = next_eni.attachment.as_mut() {
                x.delete_on_termination = delete;
            }
            let mut next = inst.value.clone();
            if let Some(v) = next.vpc.as_mut() {
                if a.device_index == 0 {
                    v.interface_delete_on_termination = delete;
                }
                v.secondary_interfaces
                    .iter_mut()
                    .filter(|s| s.interface_id == eni.value.id)
                    .for_each(|s| s.delete_on_termination = delete);
            }
            let mut tx = Tx::new();
            tx.replace(
                &keys.network_interface(account, &eni.value.id),
                &eni,
                &next_eni,
            )?;
            tx.replace(
                &self.store.instances().key(account, &a.instance_id),
                &inst,
                &next,
            )?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(id.to_string()))
    }

    /// In the transaction where `inst` leaves (terminate or roll back):
    /// each of its secondary interfaces still attached to it is deleted
    /// with its address (deleteOnTermination) or detached.
    pub(crate) async fn stage_secondaries_leave(&self, inst: &Instance, tx: &mut Tx) -> Result<()> {
        let keys = self.store.keys();
        for s in secondaries_of(inst) {
            let Some(eni) = self
                .store
                .vpcs()
                .interface(&inst.account, &s.interface_id)
                .await?
            else {
                continue;
            };
            match &eni.value.attachment {
                Some(a) if a.instance_id == inst.id && a.delete_on_termination => {
                    stage_delete(keys, tx, &eni);
                }
                Some(a) if a.instance_id == inst.id => {
                    let mut next = eni.value.clone();
                    next.attachment = None;
                    tx.replace(
                        &keys.network_interface(&inst.account, &s.interface_id),
                        &eni,
                        &next,
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
