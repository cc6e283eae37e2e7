//! Attaching elastic network interfaces ([`super::enis`]) to instances.
//!
//! At launch (`NetworkInterface.N.NetworkInterfaceId` with device index 0)
//! an available interface becomes the instance's primary interface: the
//! launch is resolved into the interface's subnet, zone and groups
//! ([`Domain::resolve_launch_interface`]); each placement attempt re-reads
//! the interface, and the placement transaction compares its
//! `mod_revision` and rewrites it attached (status `in-use`, attachment
//! `eni-attach-` + the instance's hex, device index 0) instead of claiming
//! an address: the instance's address and MAC are the interface's, its
//! claim stays the interface's. Two launches (on any replicas) naming one
//! interface: exactly one commits, the other finds it in use
//! (`InvalidNetworkInterface.InUse`).
//!
//! At terminate ([`Domain::stage_interface_leave`], in the terminate's
//! transaction) an interface attached with deleteOnTermination is deleted
//! with its address; otherwise it is detached back to `available`, its
//! address kept.
//!
//! AttachNetworkInterface and DetachNetworkInterface check the interface,
//! the instance, VPC and zone here; an attachment at device index 1 or more
//! (a secondary interface, only while the instance is stopped) is made and
//! undone by [`super::eni_secondary`]. A primary interface cannot be
//! detached (`OperationNotPermitted`), as in EC2.

use super::enis::{interface_in_use, InterfaceAttachment, NamedInterface, NetworkInterface};
use super::InstanceVpc;
use crate::domain::lifecycle::State;
use crate::domain::model::{Instance, NetworkAssignment};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, NetworkInterfaceAttachmentId, NetworkInterfaceId};
use crate::store::{Keys, Tx, Versioned};

fn instance_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

/// An interface taken by one launch attempt: its record as read, and the
/// instance's address from it.
#[derive(Debug, Clone)]
pub struct InterfaceLease {
    /// The interface as read by this attempt.
    pub eni: Versioned<NetworkInterface>,
    /// The network assignment of the instance that takes it.
    pub network: NetworkAssignment,
}

impl InterfaceLease {
    /// Stages the interface attached to `inst` (compared on the revision
    /// read: a racing launch or delete makes the transaction fail).
    pub fn stage_attach(&self, keys: &Keys, tx: &mut Tx, inst: &Instance) -> Result<()> {
        let attachment = InterfaceAttachment {
            id: NetworkInterfaceAttachmentId::primary_of(&inst.id),
            instance_id: inst.id.clone(),
            device_index: 0,
            delete_on_termination: inst
                .vpc
                .as_ref()
                .is_some_and(|v| v.interface_delete_on_termination),
            attached_ms: inst.launch_time_ms,
        };
        super::enis::stage_attached(keys, tx, &self.eni, attachment)
    }
}

impl Domain {
    /// Resolves a launch naming an interface (see the module docs): the
    /// interface must be the caller's and available, the launch one
    /// instance, without instance-level subnet, groups or address.
    pub(crate) async fn resolve_launch_interface(
        &self,
        account: &AccountId,
        req: &mut InstanceVpc,
        max_count: u32,
        zone: Option<&str>,
    ) -> Result<()> {
        let Some(id) = req.network_interface_id.clone() else {
            return Ok(());
        };
        if max_count > 1 {
            return Err(Error::invalid_code(
                "InvalidParameterCombination",
                "A network interface can only be given when launching one instance",
            ));
        }
        if req.subnet_id.is_some()
            || !req.security_group_ids.is_empty()
            || !req.security_group_names.is_empty()
            || req.private_ip_address.is_some()
        {
            return Err(Error::invalid_code(
                "InvalidParameterCombination",
                "Network interfaces and an instance-level subnet, security groups or private IP address may not be specified on the same request",
            ));
        }
        let eni = match self.own_interface(account, id.as_str()).await? {
            NamedInterface::Stored(v) => v.value,
            NamedInterface::Derived(i) => {
                return Err(interface_in_use(
                    &id,
                    &format!(" (the primary interface of {})", i.value.id),
                ))
            }
        };
        if eni.attachment.is_some() {
            return Err(interface_in_use(&id, ""));
        }
        if let Some(z) = zone {
            if z != eni.availability_zone {
                return Err(Error::invalid_code(
                    "InvalidParameterCombination",
                    format!(
                        "The network interface {id} is in availability zone {}, not in the requested {z}",
                        eni.availability_zone
                    ),
                ));
            }
        }
        req.subnet_id = Some(eni.subnet_id.clone());
        req.security_group_ids = eni.security_group_ids.clone();
        req.interface = Some(Box::new(eni));
        Ok(())
    }

    /// Re-reads the interface a launch attempt takes (still the caller's
    /// and available), with the instance's address from it.
    pub(crate) async fn lease_interface(
        &self,
        account: &AccountId,
        id: &NetworkInterfaceId,
        vni: u32,
    ) -> Result<InterfaceLease> {
        let eni = self
            .store
            .vpcs()
            .interface(account, id)
            .await?
            .ok_or_else(|| super::enis::interface_not_found(id.as_str()))?;
        if eni.value.attachment.is_some() {
            return Err(interface_in_use(id, ""));
        }
        let e = &eni.value;
        let subnet = self
            .store
            .vpcs()
            .subnet(account, &e.subnet_id)
            .await?
            .ok_or_else(|| super::subnet_not_found(e.subnet_id.as_str()))?;
        let cidr = super::Cidr::parse(&subnet.value.cidr)?;
        let ip = e
            .private_ip
            .parse()
            .map_err(|_| Error::Internal(format!("interface {id} has a bad address")))?;
        let mut network =
            super::private_addresses::assignment(&e.vpc_id, vni, &e.subnet_id, &cidr, ip);
        network.mac = e.mac.clone();
        Ok(InterfaceLease { eni, network })
    }

    /// In the transaction where `inst` leaves (terminate or roll back):
    /// its interface of its own is deleted (deleteOnTermination) or
    /// detached. Returns whether the instance's address claim is to be
    /// released by the caller (always, unless the interface stays).
    pub(crate) async fn stage_interface_leave(&self, inst: &Instance, tx: &mut Tx) -> Result<bool> {
        self.stage_secondaries_leave(inst, tx).await?;
        let Some(id) = inst
            .vpc
            .as_ref()
            .and_then(|v| v.network_interface_id.clone())
        else {
            return Ok(true);
        };
        let keys = self.store.keys();
        let Some(eni) = self.store.vpcs().interface(&inst.account, &id).await? else {
            return Ok(false);
        };
        match &eni.value.attachment {
            Some(a) if a.instance_id == inst.id => {
                if a.delete_on_termination {
                    // The interface goes; the claim key is the instance's
                    // address, released by the caller.
                    tx.delete_if_unchanged(&keys.network_interface(&inst.account, &id), &eni);
                    Ok(true)
                } else {
                    let mut next = eni.value.clone();
                    next.attachment = None;
                    tx.replace(&keys.network_interface(&inst.account, &id), &eni, &next)?;
                    Ok(false)
                }
            }
            // Not (or no longer) attached to this instance: its address
            // is the interface's.
            _ => Ok(false),
        }
    }

    /// ModifyInstanceAttribute's new groups of `inst`: the interface it
    /// was launched with (if any) takes them in the same transaction.
    pub(crate) async fn stage_interface_groups(
        &self,
        inst: &Instance,
        groups: &[crate::ids::SecurityGroupId],
        tx: &mut Tx,
    ) -> Result<()> {
        let Some(id) = inst
            .vpc
            .as_ref()
            .and_then(|v| v.network_interface_id.clone())
        else {
            return Ok(());
        };
        let Some(eni) = self.store.vpcs().interface(&inst.account, &id).await? else {
            return Ok(());
        };
        if eni
            .value
            .attachment
            .as_ref()
            .is_some_and(|a| a.instance_id == inst.id)
        {
            let mut next = eni.value.clone();
            next.security_group_ids = groups.to_vec();
            let key = self.store.keys().network_interface(&inst.account, &id);
            tx.replace(&key, &eni, &next)?;
        }
        Ok(())
    }

    /// AttachNetworkInterface (see the module docs; a refused call writes
    /// nothing).
    pub async fn attach_network_interface(
        &self,
        caller: &Caller,
        eni_id: &str,
        instance_id: &str,
        device_index: u32,
    ) -> Result<NetworkInterfaceAttachmentId> {
        let account = caller.account()?;
        let eni = match self.own_interface(&account, eni_id).await? {
            NamedInterface::Stored(v) => v.value,
            NamedInterface::Derived(i) => {
                return Err(interface_in_use(
                    &NetworkInterfaceId::primary_of(&i.value.id),
                    &format!(" (the primary interface of {})", i.value.id),
                ))
            }
        };
        let iid = InstanceId::parse(instance_id)?;
        let inst = self
            .store
            .instances()
            .get(&account, &iid)
            .await?
            .ok_or_else(|| instance_not_found(instance_id))?
            .value;
        if matches!(
            inst.state,
            State::Terminated | State::ShuttingDown | State::Stopping
        ) {
            return Err(Error::incorrect_state(
                "IncorrectInstanceState",
                format!(
                    "The instance '{iid}' is not in a valid state for this operation (it is '{}')",
                    inst.state.name()
                ),
            ));
        }
        if let Some(a) = &eni.attachment {
            return Err(interface_in_use(
                &eni.id,
                &format!(" (attached to {})", a.instance_id),
            ));
        }
        let inst_vpc = inst.vpc.as_ref().and_then(|v| v.vpc_id.clone());
        if inst_vpc.as_ref() != Some(&eni.vpc_id) {
            return Err(Error::invalid(format!(
                "The network interface {} and the instance {iid} are in different VPCs",
                eni.id
            )));
        }
        if inst.availability_zone != eni.availability_zone {
            // EC2's code for this mismatch.
            return Err(Error::invalid_code("InvalidParameterCombination", format!(
                "The network interface {} (zone {}) and the instance {iid} (zone {}) are in different availability zones",
                eni.id, eni.availability_zone, inst.availability_zone
            )));
        }
        if device_index == 0 {
            return Err(Error::invalid(format!(
                "Instance '{iid}' already has an interface attached at device index '0'."
            )));
        }
        self.attach_secondary(&account, &eni.id, &iid, device_index)
            .await
    }

    /// DetachNetworkInterface: a secondary attachment is undone (the
    /// instance stopped: [`super::eni_secondary`]); a primary one (device
    /// index 0) cannot be detached.
    pub async fn detach_network_interface(&self, caller: &Caller, attachment: &str) -> Result<()> {
        let account = caller.account()?;
        let id = NetworkInterfaceAttachmentId::parse(attachment)?;
        if self.detach_secondary(&account, &id).await?.is_some() {
            return Ok(());
        }
        let not_found = || {
            Error::not_found(
                "InvalidAttachmentID.NotFound",
                format!("The attachment ID '{attachment}' does not exist"),
            )
        };
        let iid = id.derived_instance();
        let Some(inst) = self.store.instances().get(&account, &iid).await? else {
            return Err(not_found());
        };
        let i = &inst.value;
        if i.state == State::Terminated || i.vpc.is_none() || i.network.is_none() {
            return Err(not_found());
        }
        Err(Error::invalid_code(
            "OperationNotPermitted",
            format!("The network interface at device index 0 of {iid} cannot be detached"),
        ))
    }
}
