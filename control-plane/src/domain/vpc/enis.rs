//! Elastic network interfaces: CreateNetworkInterface,
//! DescribeNetworkInterfaces, DeleteNetworkInterface,
//! ModifyNetworkInterfaceAttribute (attach and detach, and the attachment
//! at launch and release at terminate, are in [`super::eni_attach`]).
//!
//! Records: the interface (`network-interfaces/<account>/<eni-…>`) and the
//! claim of its primary private address in its subnet
//! (`ipam/addrs/<subnet>/<ip>`, holder the interface), created together
//! compare-absent and deleted together by DeleteNetworkInterface (or the
//! terminate of the instance it is attached to with deleteOnTermination):
//! the address is released exactly once, whichever replica deletes. Creating
//! or changing an interface rewrites its subnet and groups unchanged (their
//! `mod_revision` moves), so a racing DeleteSubnet or DeleteSecurityGroup,
//! which deletes only an unchanged record, cannot leave it dangling.
//!
//! Every instance in a VPC has a primary interface (device index 0). An
//! instance launched with an interface of its own has that one (its
//! address, MAC and groups are the interface's); every other instance has a
//! derived one, not stored: id `eni-` + the instance's hex, attachment
//! `eni-attach-` + the instance's hex, address, MAC and groups those of the
//! instance record. Deriving keeps launch latency unchanged (no extra
//! record per launch). The MAC of an interface is a function of its address
//! ([`crate::domain::network::mac_for`], locally administered), so an
//! instance launched with an interface has the interface's MAC.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::private_addresses::{check_requested, in_use, subnet_full};
use super::{group_not_found, Cidr, MAX_ATTEMPTS};
use crate::domain::filters::{self, Filter};
use crate::domain::ipam::AddressClaim;
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance};
use crate::domain::network::mac_for;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{
    AccountId, InstanceId, NetworkInterfaceAttachmentId, NetworkInterfaceId, SecurityGroupId,
    SubnetId, VpcId,
};
use crate::store::{Record, Tx, Versioned};

/// EC2's limit of security groups per interface.
pub const MAX_GROUPS: usize = 5;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 255;

/// Filter names DescribeNetworkInterfaces supports.
pub const INTERFACE_FILTERS: &[&str] = &[
    "network-interface-id",
    "vpc-id",
    "subnet-id",
    "availability-zone",
    "status",
    "private-ip-address",
    "addresses.private-ip-address",
    "mac-address",
    "description",
    "group-id",
    "owner-id",
    "attachment.instance-id",
    "attachment.attachment-id",
    "attachment.device-index",
    "attachment.status",
    "attachment.delete-on-termination",
    "tag:",
    "tag-key",
    "tag-value",
];

/// An interface's attachment to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAttachment {
    /// Id.
    pub id: NetworkInterfaceAttachmentId,
    /// The instance.
    pub instance_id: InstanceId,
    /// Device index on the instance (0: its primary interface).
    pub device_index: u32,
    /// Deleted with the instance's terminate (otherwise detached, its
    /// address kept).
    pub delete_on_termination: bool,
    /// When.
    pub attached_ms: i64,
}

/// An elastic network interface (`network-interfaces/<account>/<eni-…>`),
/// or (not stored) an instance's derived primary interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Id.
    pub id: NetworkInterfaceId,
    /// Owner.
    pub account: AccountId,
    /// Its VPC.
    pub vpc_id: VpcId,
    /// Its subnet.
    pub subnet_id: SubnetId,
    /// The subnet's zone.
    pub availability_zone: String,
    /// Primary private address, claimed in the subnet.
    pub private_ip: String,
    /// aa:bb:cc:dd:ee:ff (locally administered, from the address).
    pub mac: String,
    /// Security groups of its VPC (at most [`MAX_GROUPS`]).
    pub security_group_ids: Vec<SecurityGroupId>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Its attachment, if any (`status` is `in-use` exactly then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<InterfaceAttachment>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
    /// Derived from an instance (not stored; display only).
    #[serde(skip)]
    pub derived: bool,
}

impl NetworkInterface {
    /// `available` or `in-use`.
    pub fn status(&self) -> &'static str {
        match self.attachment {
            Some(_) => "in-use",
            None => "available",
        }
    }
}

impl Record for NetworkInterface {
    const KIND: &'static str = "network-interface";
    const SCHEMA: u32 = 1;
}

/// CreateNetworkInterface's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateInterfaceInput {
    /// `SubnetId`.
    pub subnet_id: String,
    /// `PrivateIpAddress`.
    pub private_ip: Option<String>,
    /// `SecurityGroupId.N` (none: the VPC's default group).
    pub group_ids: Vec<String>,
    /// `Description`.
    pub description: Option<String>,
    /// Tags (`network-interface`).
    pub tags: Vec<(String, String)>,
}

/// What ModifyNetworkInterfaceAttribute changes (one attribute a call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceChange {
    /// `SecurityGroupId.N`.
    Groups(Vec<String>),
    /// `Description.Value`.
    Description(String),
    /// `Attachment.AttachmentId` and `Attachment.DeleteOnTermination` of a
    /// stored interface's attachment ([`super::eni_secondary`]).
    DeleteOnTermination {
        /// The interface's attachment.
        attachment: String,
        /// The new deleteOnTermination.
        delete: bool,
    },
}

/// `InvalidNetworkInterfaceID.NotFound`.
pub(crate) fn interface_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidNetworkInterfaceID.NotFound",
        format!("The networkInterface ID '{id}' does not exist"),
    )
}

/// `InvalidNetworkInterface.InUse`.
pub(crate) fn interface_in_use(id: &NetworkInterfaceId, what: &str) -> Error {
    Error::incorrect_state(
        "InvalidNetworkInterface.InUse",
        format!("Interface {id} is currently in use{what}."),
    )
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "The description must be at most {MAX_DESCRIPTION} printable characters"
        )));
    }
    Ok(())
}

/// The derived primary interface of an instance in a VPC with an address
/// (none for a terminated instance or one launched with an interface of
/// its own).
pub fn derived_primary(i: &Instance) -> Option<NetworkInterface> {
    let (v, net) = (i.vpc.as_ref()?, i.network.as_ref()?);
    if i.state == State::Terminated || v.network_interface_id.is_some() {
        return None;
    }
    let vpc = net.vpc.as_ref()?;
    Some(NetworkInterface {
        id: NetworkInterfaceId::primary_of(&i.id),
        account: i.account.clone(),
        vpc_id: vpc.vpc_id.clone(),
        subnet_id: net.subnet_id.clone()?,
        availability_zone: i.availability_zone.clone(),
        private_ip: net.ip.clone(),
        mac: net.mac.clone(),
        security_group_ids: v.security_group_ids.clone(),
        description: "Primary network interface".into(),
        attachment: Some(InterfaceAttachment {
            id: NetworkInterfaceAttachmentId::primary_of(&i.id),
            instance_id: i.id.clone(),
            device_index: 0,
            delete_on_termination: true,
            attached_ms: i.launch_time_ms,
        }),
        tags: BTreeMap::new(),
        created_ms: i.launch_time_ms,
        derived: true,
    })
}

/// An interface named by a caller: stored, or an instance's derived one.
#[derive(Debug, Clone)]
pub(crate) enum NamedInterface {
    /// A stored interface.
    Stored(Box<Versioned<NetworkInterface>>),
    /// The derived primary interface of this instance (read at this
    /// version).
    Derived(Box<Versioned<Instance>>),
}

impl Domain {
    /// The interface `id` of `account` (`InvalidNetworkInterfaceID.*`).
    pub(crate) async fn own_interface(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<NamedInterface> {
        let eni = NetworkInterfaceId::parse(id)?;
        if let Some(v) = self.store.vpcs().interface(account, &eni).await? {
            return Ok(NamedInterface::Stored(Box::new(v)));
        }
        let iid = eni.derived_instance();
        match self.store.instances().get(account, &iid).await? {
            Some(v) if derived_primary(&v.value).is_some() => {
                Ok(NamedInterface::Derived(Box::new(v)))
            }
            _ => Err(interface_not_found(id)),
        }
    }

    /// Resolves `ids` to groups of `vpc` (at most [`MAX_GROUPS`]; none:
    /// the VPC's default group), each compared and rewritten unchanged in
    /// `tx` (see the module docs).
    pub(super) async fn interface_groups(
        &self,
        account: &AccountId,
        vpc: &VpcId,
        ids: &[String],
        tx: &mut Tx,
    ) -> Result<Vec<SecurityGroupId>> {
        let mut wanted: Vec<SecurityGroupId> = ids
            .iter()
            .map(|g| SecurityGroupId::parse(g))
            .collect::<Result<_>>()?;
        wanted.sort();
        wanted.dedup();
        if wanted.len() > MAX_GROUPS {
            return Err(Error::invalid_code(
                "SecurityGroupsPerInterfaceLimitExceeded",
                format!("An interface can have at most {MAX_GROUPS} security groups"),
            ));
        }
        if wanted.is_empty() {
            wanted.push(
                self.own_vpc(account, vpc)
                    .await?
                    .value
                    .default_security_group_id,
            );
        }
        let keys = self.store.keys();
        for g in &wanted {
            let grp = self
                .store
                .vpcs()
                .group(account, g)
                .await?
                .ok_or_else(|| group_not_found(g.as_str()))?;
            if &grp.value.vpc_id != vpc {
                return Err(Error::invalid_code(
                    "InvalidParameter",
                    format!(
                        "Security group {g} and the interface's subnet belong to different networks."
                    ),
                ));
            }
            tx.replace(&keys.security_group(account, g), &grp, &grp.value)?;
        }
        Ok(wanted)
    }

    /// CreateNetworkInterface.
    pub async fn create_network_interface(
        &self,
        caller: &Caller,
        input: &CreateInterfaceInput,
    ) -> Result<NetworkInterface> {
        let account = caller.account()?;
        let tags = validation::tags(&input.tags)?;
        let description = input.description.clone().unwrap_or_default();
        check_description(&description)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let subnet = self.own_subnet(&account, &input.subnet_id).await?;
            let s = &subnet.value;
            let cidr = Cidr::parse(&s.cidr)?;
            let requested = input
                .private_ip
                .as_deref()
                .map(|ip| check_requested(ip, &s.id, &cidr))
                .transpose()?;
            let mut tx = Tx::new();
            let groups = self
                .interface_groups(&account, &s.vpc_id, &input.group_ids, &mut tx)
                .await?;
            let claimed: HashSet<Ipv4Addr> = self
                .address_claims(&s.id)
                .await?
                .into_iter()
                .filter_map(|c| c.ip.parse().ok())
                .collect();
            let ip = match requested {
                Some(ip) if claimed.contains(&ip) => return Err(in_use(ip)),
                Some(ip) => ip,
                None => lowest_free(&cidr, &claimed).ok_or_else(|| subnet_full(&s.id))?,
            };
            let eni = NetworkInterface {
                id: NetworkInterfaceId::generate(),
                account: account.clone(),
                vpc_id: s.vpc_id.clone(),
                subnet_id: s.id.clone(),
                availability_zone: s.availability_zone.clone(),
                private_ip: ip.to_string(),
                mac: mac_for(ip),
                security_group_ids: groups,
                description: description.clone(),
                attachment: None,
                tags: tags.clone(),
                created_ms: now_ms(),
                derived: false,
            };
            tx.create(&keys.network_interface(&account, &eni.id), &eni)?;
            tx.create(
                &keys.address_claim(&s.id, &eni.private_ip),
                &AddressClaim {
                    subnet_id: s.id.clone(),
                    ip: eni.private_ip.clone(),
                    instance_id: None,
                    network_interface_id: Some(eni.id.clone()),
                    account: account.clone(),
                    claimed_ms: eni.created_ms,
                },
            )?;
            tx.replace(&keys.vpc_subnet(&account, &s.id), &subnet, s)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(eni);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("network interface".into()))
    }

    /// DescribeNetworkInterfaces: the account's stored interfaces and its
    /// instances' derived primary interfaces.
    pub async fn describe_network_interfaces(
        &self,
        caller: &Caller,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<NetworkInterface>> {
        let account = caller.account()?;
        filters::check(filters, INTERFACE_FILTERS)?;
        let ids: Vec<NetworkInterfaceId> = ids
            .iter()
            .map(|i| NetworkInterfaceId::parse(i))
            .collect::<Result<_>>()?;
        let mut all: Vec<NetworkInterface> = self
            .store
            .vpcs()
            .interfaces_of(&account)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        let insts = self.store.instances().of(&account).collect().await?;
        all.extend(insts.iter().filter_map(|(_, v)| derived_primary(&v.value)));
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|e| &e.id == *i)) {
            return Err(interface_not_found(missing.as_str()));
        }
        all.retain(|e| {
            (ids.is_empty() || ids.contains(&e.id))
                && filters.iter().all(|f| interface_matches(e, f))
        });
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// DeleteNetworkInterface: an interface not attached; its address is
    /// released in the same transaction.
    pub async fn delete_network_interface(&self, caller: &Caller, id: &str) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let v = match self.own_interface(&account, id).await? {
                NamedInterface::Stored(v) => *v,
                NamedInterface::Derived(i) => {
                    return Err(interface_in_use(
                        &NetworkInterfaceId::primary_of(&i.value.id),
                        &format!(" (the primary interface of {})", i.value.id),
                    ))
                }
            };
            if let Some(a) = &v.value.attachment {
                return Err(interface_in_use(
                    &v.value.id,
                    &format!(" (attached to {})", a.instance_id),
                ));
            }
            let mut tx = Tx::new();
            stage_delete(keys, &mut tx, &v);
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(id.to_string()))
    }

    /// ModifyNetworkInterfaceAttribute. A new group set of an attached
    /// interface (or of an instance's derived primary interface) is the
    /// instance's too, in the same transaction: the network view follows.
    pub async fn modify_network_interface_attribute(
        &self,
        caller: &Caller,
        id: &str,
        change: &InterfaceChange,
    ) -> Result<()> {
        let account = caller.account()?;
        if let InterfaceChange::Description(d) = change {
            check_description(d)?;
        }
        if let InterfaceChange::DeleteOnTermination { attachment, delete } = change {
            return self
                .set_delete_on_termination(&account, id, attachment, *delete)
                .await;
        }
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new();
            let (stored, inst) = match self.own_interface(&account, id).await? {
                NamedInterface::Stored(v) => {
                    let inst = match &v.value.attachment {
                        Some(a) => self.store.instances().get(&account, &a.instance_id).await?,
                        None => None,
                    };
                    (Some(*v), inst)
                }
                NamedInterface::Derived(i) => {
                    if matches!(change, InterfaceChange::Description(_)) {
                        return Err(Error::invalid_code(
                            "OperationNotPermitted",
                            format!(
                                "The description of the primary interface of {} cannot be changed",
                                i.value.id
                            ),
                        ));
                    }
                    (None, Some(*i))
                }
            };
            let vpc = match (&stored, &inst) {
                (Some(s), _) => s.value.vpc_id.clone(),
                (None, Some(i)) => i
                    .value
                    .vpc
                    .as_ref()
                    .and_then(|v| v.vpc_id.clone())
                    .ok_or_else(|| interface_not_found(id))?,
                (None, None) => return Err(interface_not_found(id)),
            };
            let groups = match change {
                InterfaceChange::Groups(g) if g.is_empty() => {
                    return Err(Error::missing("SecurityGroupId"))
                }
                InterfaceChange::Groups(g) => {
                    Some(self.interface_groups(&account, &vpc, g, &mut tx).await?)
                }
                InterfaceChange::Description(_) | InterfaceChange::DeleteOnTermination { .. } => {
                    None
                }
            };
            if let Some(s) = &stored {
                let mut next = s.value.clone();
                match change {
                    InterfaceChange::Description(d) => next.description = d.clone(),
                    InterfaceChange::Groups(_) => {
                        next.security_group_ids = groups.clone().unwrap_or_default()
                    }
                    InterfaceChange::DeleteOnTermination { .. } => {}
                }
                tx.replace(&keys.network_interface(&account, &next.id), s, &next)?;
            }
            if let (Some(i), Some(groups)) = (&inst, groups) {
                let mut next = i.value.clone();
                // A secondary interface's groups are its copy's in the
                // instance record; a primary one's are the instance's.
                let secondary = stored
                    .as_ref()
                    .filter(|s| {
                        s.value
                            .attachment
                            .as_ref()
                            .is_some_and(|a| a.device_index > 0)
                    })
                    .map(|s| s.value.id.clone());
                if let Some(v) = next.vpc.as_mut() {
                    match secondary {
                        Some(eni) => v
                            .secondary_interfaces
                            .iter_mut()
                            .filter(|s| s.interface_id == eni)
                            .for_each(|s| s.security_group_ids = groups.clone()),
                        None => v.security_group_ids = groups,
                    }
                }
                let ikey = self.store.instances().key(&account, &next.id);
                tx.replace(&ikey, i, &next)?;
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(id.to_string()))
    }

    /// The names of the caller's groups among `ids` (for display).
    pub async fn group_names(
        &self,
        caller: &Caller,
        ids: &[SecurityGroupId],
    ) -> Result<BTreeMap<String, String>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let account = caller.account()?;
        Ok(self
            .store
            .vpcs()
            .groups_of(&account)
            .await?
            .into_iter()
            .filter(|g| ids.contains(&g.value.id))
            .map(|g| (g.value.id.to_string(), g.value.name))
            .collect())
    }

    /// The first stored interface of `account` for which `uses` holds
    /// (DeleteSecurityGroup's dependencies).
    pub(crate) async fn interface_using(
        &self,
        account: &AccountId,
        uses: impl Fn(&NetworkInterface) -> bool,
    ) -> Result<Option<NetworkInterfaceId>> {
        Ok(self
            .store
            .vpcs()
            .interfaces_of(account)
            .await?
            .into_iter()
            .map(|v| v.value)
            .find(|e| uses(e))
            .map(|e| e.id))
    }
}

/// Stages stored interface `v` attached with `attachment` (compared on the
/// revision read: a racing attach, launch or delete fails the transaction).
pub(crate) fn stage_attached(
    keys: &crate::store::Keys,
    tx: &mut Tx,
    v: &Versioned<NetworkInterface>,
    attachment: InterfaceAttachment,
) -> Result<()> {
    let mut next = v.value.clone();
    next.attachment = Some(attachment);
    tx.replace(&keys.network_interface(&next.account, &next.id), v, &next)?;
    Ok(())
}

/// Stages the delete of a stored interface and the release of its address.
pub(crate) fn stage_delete(
    keys: &crate::store::Keys,
    tx: &mut Tx,
    v: &Versioned<NetworkInterface>,
) {
    let e = &v.value;
    tx.delete_if_unchanged(&keys.network_interface(&e.account, &e.id), v);
    tx.delete(&keys.address_claim(&e.subnet_id, &e.private_ip));
}

/// The lowest address of `cidr` that is neither reserved nor claimed.
fn lowest_free(cidr: &Cidr, claimed: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    cidr.usable_hosts().find(|ip| !claimed.contains(ip))
}

fn interface_matches(e: &NetworkInterface, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &e.tags) {
        return m;
    }
    let v = &f.values;
    let a = e.attachment.as_ref();
    let bool_str = |b: bool| if b { "true" } else { "false" };
    match f.name.as_str() {
        "network-interface-id" => filters::any_matches(v, &[e.id.as_str()]),
        "vpc-id" => filters::any_matches(v, &[e.vpc_id.as_str()]),
        "subnet-id" => filters::any_matches(v, &[e.subnet_id.as_str()]),
        "availability-zone" => filters::any_matches(v, &[&e.availability_zone]),
        "status" => filters::any_matches(v, &[e.status()]),
        "private-ip-address" | "addresses.private-ip-address" => {
            filters::any_matches(v, &[&e.private_ip])
        }
        "mac-address" => filters::any_matches(v, &[&e.mac]),
        "description" => filters::any_matches(v, &[&e.description]),
        "group-id" => e
            .security_group_ids
            .iter()
            .any(|g| filters::any_matches(v, &[g.as_str()])),
        "owner-id" => filters::any_matches(v, &[e.account.as_str()]),
        "attachment.instance-id" => {
            a.is_some_and(|a| filters::any_matches(v, &[a.instance_id.as_str()]))
        }
        "attachment.attachment-id" => a.is_some_and(|a| filters::any_matches(v, &[a.id.as_str()])),
        "attachment.device-index" => {
            a.is_some_and(|a| filters::any_matches(v, &[&a.device_index.to_string()]))
        }
        "attachment.status" => a.is_some_and(|_| filters::any_matches(v, &["attached"])),
        "attachment.delete-on-termination" => {
            a.is_some_and(|a| filters::any_matches(v, &[bool_str(a.delete_on_termination)]))
        }
        _ => false,
    }
}

/// Whether a security group `g` is used by interface `e` (for
/// DeleteSecurityGroup).
pub fn uses_group(e: &NetworkInterface, g: &SecurityGroupId) -> bool {
    e.security_group_ids.contains(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_skips_reserved_and_claimed() {
        let c = Cidr::parse("10.0.1.0/28").unwrap();
        let mut claimed = HashSet::new();
        assert_eq!(lowest_free(&c, &claimed), Some(Ipv4Addr::new(10, 0, 1, 4)));
        for n in 4..15 {
            claimed.insert(Ipv4Addr::new(10, 0, 1, n));
        }
        assert_eq!(lowest_free(&c, &claimed), None);
    }

    #[test]
    fn descriptions_are_bounded() {
        assert!(check_description("web").is_ok());
        assert!(check_description(&"x".repeat(256)).is_err());
        assert!(check_description("a\nb").is_err());
    }

    #[test]
    fn derived_ids_round_trip() {
        let i = InstanceId::generate();
        assert_eq!(NetworkInterfaceId::primary_of(&i).derived_instance(), i);
        assert_eq!(
            NetworkInterfaceAttachmentId::primary_of(&i).derived_instance(),
            i
        );
        assert!(NetworkInterfaceId::parse("eni-attach-0123456789abcdef0").is_err());
    }
}
