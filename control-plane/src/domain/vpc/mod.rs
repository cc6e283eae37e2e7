//! The VPC model (issue 12, model and API): VPCs ([`vpcs`]), their subnets
//! ([`subnets`]), security groups and their rules ([`groups`], [`rules`]),
//! and each account's default VPC ([`default_vpc`]). CIDR arithmetic is in
//! [`cidr`]. Public addressing: Elastic IPs ([`addresses`]), instances'
//! public addresses ([`public_ips`]), internet gateways ([`gateways`]) and
//! route tables ([`routes`]); elastic network interfaces ([`enis`],
//! attached at launch or detached at terminate: [`eni_attach`]); the data plane reads them through
//! [`Domain::instance_public_ips`](crate::domain::Domain::instance_public_ips)
//! and [`Domain::subnet_internet_routes`](crate::domain::Domain::subnet_internet_routes).
//!
//! Consistency: every VPC create or delete compares and rewrites the
//! account's VPC index (`vpc-accounts/<account>`: the limit and the default
//! VPC are decided there); every subnet or security group create or delete
//! rewrites its VPC record in the same transaction, so a VPC delete (which
//! requires its record unchanged) can never leave a child behind, and two
//! racing subnet creates in one VPC cannot both pass the overlap check.
//! Security group rules live in the group record (compare-and-swap).
//!
//! The data plane's side here: each VPC's VNI ([`vni`]), instance
//! addresses claimed in their VPC subnet ([`private_addresses`]) and the network
//! view each node enforces ([`view`], served by the Node API's
//! `WatchNetwork` from a watch-fed cache, [`netcache`]).

pub mod addresses;
pub mod auto_ips;
pub mod cidr;
pub mod default_vpc;
pub mod eni_attach;
pub mod eni_secondary;
pub mod enis;
pub mod gateways;
pub mod groups;
pub mod launch;
pub mod netcache;
pub mod private_addresses;
pub mod public_ips;
pub mod routes;
pub mod rules;
pub mod subnets;
pub mod view;
pub mod vni;
pub mod vpcs;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{AccountId, SecurityGroupId, SecurityGroupRuleId, SubnetId, VpcId};
use crate::store::Record;

pub use cidr::Cidr;

/// An account's VPC index (`vpc-accounts/<account>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcAccount {
    /// Every VPC of the account (the limit counts these).
    pub vpcs: Vec<VpcId>,
    /// The default VPC, while it exists.
    pub default_vpc: Option<VpcId>,
    /// The default VPC was created once (it is not re-created after a
    /// DeleteVpc, as in EC2).
    pub default_created: bool,
}

/// A VPC (`vpcs/<account>/<vpc>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    /// Id.
    pub id: VpcId,
    /// Owner.
    pub account: AccountId,
    /// Primary IPv4 block, `a.b.c.d/len`.
    pub cidr: String,
    /// The account's default VPC.
    pub is_default: bool,
    /// Its default security group (created and deleted with it).
    pub default_security_group_id: SecurityGroupId,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
    /// The VXLAN network identifier of its overlay, 1..2^24-1, unique in
    /// the region while the VPC exists (guarded by `vpc-vnis/<vni>`;
    /// [`vni`]). Schema 2; 0 in VPCs created before: one is allocated the
    /// first time it is needed ([`Domain::vpc_vni`](crate::domain::Domain)).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vni: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A subnet of a VPC (`vpc-subnets/<account>/<subnet>`). Distinct from the
/// node-block subnets of [`crate::domain::ipam`] (ids never collide:
/// [`SubnetId::generate_vpc`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcSubnet {
    /// Id.
    pub id: SubnetId,
    /// Owner.
    pub account: AccountId,
    /// The VPC.
    pub vpc_id: VpcId,
    /// `a.b.c.d/len`, inside the VPC's block.
    pub cidr: String,
    /// Zone.
    pub availability_zone: String,
    /// A default subnet of the default VPC.
    pub default_for_az: bool,
    /// MapPublicIpOnLaunch: instances launched here get a public address
    /// of the region's pool ([`public_ips`]).
    pub map_public_ip_on_launch: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
}

/// Where a rule's traffic comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleSource {
    /// An IPv4 block.
    Cidr(String),
    /// The members of a security group of the same account.
    Group(SecurityGroupId),
}

/// One rule: a protocol, a port range and one peer. An EC2 `IpPermission`
/// with several ranges and groups is stored as one rule per peer (EC2's
/// security group rules, `sgr-…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// Id.
    pub id: SecurityGroupRuleId,
    /// `tcp`, `udp`, `icmp`, `-1` (all) or a protocol number.
    pub protocol: String,
    /// First port (ICMP: type); none for protocols without ports.
    pub from_port: Option<i32>,
    /// Last port (ICMP: code).
    pub to_port: Option<i32>,
    /// The peer.
    pub peer: RuleSource,
    /// Description (may be empty).
    #[serde(default)]
    pub description: String,
}

impl SgRule {
    /// Whether two rules allow the same traffic (ids and descriptions aside).
    pub fn same_as(&self, other: &SgRule) -> bool {
        self.protocol == other.protocol
            && self.from_port == other.from_port
            && self.to_port == other.to_port
            && self.peer == other.peer
    }
}

/// A security group with its rules (`security-groups/<account>/<sg>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// Id.
    pub id: SecurityGroupId,
    /// Owner.
    pub account: AccountId,
    /// The VPC.
    pub vpc_id: VpcId,
    /// Name, unique in the VPC.
    pub name: String,
    /// Description.
    pub description: String,
    /// Inbound rules.
    pub ingress: Vec<SgRule>,
    /// Outbound rules.
    pub egress: Vec<SgRule>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
}

impl SecurityGroup {
    /// The VPC's default group (cannot be deleted on its own).
    pub fn is_default(&self) -> bool {
        self.name == "default"
    }
}

/// Where an instance sits in the VPC model (recorded in its launch options).
/// RunInstances receives the requested subnet and groups here and the
/// domain resolves them ([`launch`]): afterwards `vpc_id` is set,
/// `security_group_ids` holds every group (names resolved) and
/// `security_group_names` is empty. An instance launched without a subnet
/// records the default subnet of the zone it was placed in; `subnet_id` is
/// `None` only when that zone had none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceVpc {
    /// The VPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
    /// The subnet (`None`: the default subnet of the instance's zone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// Security groups.
    pub security_group_ids: Vec<SecurityGroupId>,
    /// Group names of the request (`SecurityGroup.N`), before resolution.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_group_names: Vec<String>,
    /// The requested primary private address (`PrivateIpAddress`), a.b.c.d;
    /// request only (an instance records its address in its network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_ip_address: Option<String>,
    /// The elastic network interface that is the instance's primary
    /// interface (`NetworkInterface.N.NetworkInterfaceId` at launch): its
    /// address, MAC and groups are the instance's. `None`: the instance's
    /// primary interface is derived from the instance ([`enis`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_interface_id: Option<crate::ids::NetworkInterfaceId>,
    /// `NetworkInterface.N.DeleteOnTermination` for that interface.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interface_delete_on_termination: bool,
    /// Secondary interfaces (device index 1 or more), by device index
    /// ([`eni_secondary`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secondary_interfaces: Vec<eni_secondary::SecondaryInterface>,
    /// Request only: the secondary interfaces RunInstances names
    /// (`NetworkInterface.N` with `DeviceIndex` >= 1); the launched
    /// instance records them in `secondary_interfaces`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub launch_secondaries: Vec<eni_secondary::LaunchSecondary>,
    /// `NetworkInterface.N.AssociatePublicIpAddress`: overrides the
    /// subnet's MapPublicIpOnLaunch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub associate_public_ip: Option<bool>,
    /// Resolution only (not stored): the interface named by
    /// `network_interface_id`, as read when the launch was resolved.
    #[serde(skip)]
    pub interface: Option<Box<enis::NetworkInterface>>,
    /// Resolution only (not stored): the VPC's VNI.
    #[serde(skip)]
    pub vni: u32,
    /// Resolution only (not stored): the block of every subnet an instance
    /// of this launch may be placed in.
    #[serde(skip)]
    pub subnet_cidrs: BTreeMap<SubnetId, Cidr>,
    /// Resolution only (not stored): the default subnet of each zone, for
    /// an instance launched without a subnet ([`InstanceVpc::placed_in`]).
    #[serde(skip)]
    pub default_subnets: BTreeMap<String, SubnetId>,
    /// Display only (not stored): the instance's public address, filled in
    /// by [`Domain::with_default_subnets`](crate::domain::Domain::with_default_subnets).
    #[serde(skip)]
    pub public_ip: Option<public_ips::PublicAddressView>,
}

impl InstanceVpc {
    /// What an instance placed in `zone` records: the subnet given, or the
    /// default subnet of `zone`.
    pub fn placed_in(&self, zone: &str) -> InstanceVpc {
        InstanceVpc {
            vpc_id: self.vpc_id.clone(),
            subnet_id: self
                .subnet_id
                .clone()
                .or_else(|| self.default_subnets.get(zone).cloned()),
            security_group_ids: self.security_group_ids.clone(),
            network_interface_id: self.network_interface_id.clone(),
            interface_delete_on_termination: self.interface_delete_on_termination,
            associate_public_ip: self.associate_public_ip,
            secondary_interfaces: self.secondary_interfaces.clone(),
            ..Default::default()
        }
    }
}

/// The guard of a group name in a VPC (`security-group-names/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupNameGuard {
    /// The group holding the name.
    pub group_id: SecurityGroupId,
}

impl Record for VpcAccount {
    const KIND: &'static str = "vpc-account";
    const SCHEMA: u32 = 1;
}
impl Record for Vpc {
    const KIND: &'static str = "vpc";
    const SCHEMA: u32 = 2;
}
impl Record for VpcSubnet {
    const KIND: &'static str = "vpc-subnet";
    const SCHEMA: u32 = 1;
}
impl Record for SecurityGroup {
    const KIND: &'static str = "security-group";
    const SCHEMA: u32 = 1;
}
impl Record for GroupNameGuard {
    const KIND: &'static str = "security-group-name";
    const SCHEMA: u32 = 1;
}

/// `DependencyViolation` with a message.
pub(crate) fn dependency(message: impl Into<String>) -> Error {
    Error::incorrect_state("DependencyViolation", message)
}

/// A concurrent change made a transaction fail: the caller's retry budget.
pub(crate) const MAX_ATTEMPTS: u32 = 16;

/// `InvalidVpcID.NotFound`.
pub(crate) fn vpc_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidVpcID.NotFound",
        format!("The vpc ID '{id}' does not exist"),
    )
}

/// `InvalidSubnetID.NotFound`.
pub(crate) fn subnet_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidSubnetID.NotFound",
        format!("The subnet ID '{id}' does not exist"),
    )
}

/// `InvalidGroup.NotFound`.
pub(crate) fn group_not_found(what: &str) -> Error {
    Error::not_found(
        "InvalidGroup.NotFound",
        format!("The security group '{what}' does not exist"),
    )
}
