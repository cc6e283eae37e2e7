//! Elastic IPs: AllocateAddress (an address of the region's public pool,
//! `[vpc] public_pool`; at most `[vpc] elastic_ips_per_account` per account:
//! `AddressLimitExceeded`; none left: `InsufficientAddressCapacity`),
//! ReleaseAddress (`InvalidIPAddress.InUse` while associated),
//! AssociateAddress (to an instance of the caller, not terminated, in a VPC
//! with an attached internet gateway its subnet routes 0.0.0.0/0 to:
//! `Gateway.NotAttached` otherwise; `Resource.AlreadyAssociated` unless
//! `AllowReassociation`), DisassociateAddress, DescribeAddresses. An
//! instance the Elastic IP leaves gets a new auto-assigned address when its
//! subnet maps them ([`super::auto_ips`]).
//!
//! Records: the Elastic IP (`elastic-ips/<account>/<eipalloc>`), the
//! account's index (`elastic-ip-accounts/<account>`, compared by every
//! allocate and release: the limit holds under races), the claim of the
//! address (`public-ips/<ip>`, created compare-absent: one address is never
//! handed out twice, whichever replica allocates), and the instance's
//! current public address (`instance-public-ips/<account>/<instance>`, one
//! per instance: an Elastic IP's or an auto-assigned one, see
//! [`super::public_ips`]). Associating compares the instance record and the
//! gateway, so a racing terminate or detach wins or loses as a whole.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::gateways::not_attached;
use super::{Cidr, MAX_ATTEMPTS};
use crate::domain::filters::{self, Filter};
use crate::domain::lifecycle::State;
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, AddressAssociationId, AllocationId, InstanceId, SubnetId, VpcId};
use crate::store::{Record, Store, Tx, Versioned};

/// The region's public IPv4 pool (`[vpc] public_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicPool(Cidr);

impl PublicPool {
    /// Parses the configured block: /16 to /30, aligned.
    pub fn parse(s: &str) -> Result<Self> {
        let c = Cidr::parse(s)
            .map_err(|e| Error::invalid(format!("configuration: vpc.public_pool: {e}")))?;
        if !(16..=30).contains(&c.prefix_len()) {
            return Err(Error::invalid(format!(
                "configuration: vpc.public_pool must be a /16 to /30 block, not {s}"
            )));
        }
        Ok(Self(c))
    }

    /// The addresses handed out: the block without its first and last.
    pub fn size(&self) -> u64 {
        self.0.size() - 2
    }

    /// The `n`th address handed out (`n < size()`).
    pub fn nth(&self, n: u64) -> Ipv4Addr {
        let base = u32::from(self.0.base());
        Ipv4Addr::from(base.wrapping_add(1).wrapping_add(n as u32))
    }

    /// A random address of the pool not in `used` (so racing replicas
    /// rarely pick the same one).
    pub fn pick_free(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let size = self.size();
        let start = rand::random::<u64>() % size;
        (0..size)
            .map(|i| self.nth((start + i) % size))
            .find(|ip| !used.contains(ip))
    }

    /// Whether `ip` is an address of the pool that is handed out.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let off = u32::from(ip).wrapping_sub(u32::from(self.0.base()));
        self.0.contains_ip(ip) && off >= 1 && u64::from(off) <= self.size()
    }
}

/// An Elastic IP's association with an instance's primary interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipAssociation {
    /// Id.
    pub id: AddressAssociationId,
    /// The instance.
    pub instance_id: InstanceId,
    /// Its VPC.
    pub vpc_id: VpcId,
    /// Its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// Its private address when associated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// The interface the instance was launched with (its primary one),
    /// if any; otherwise the instance's derived primary interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface_id: Option<crate::ids::NetworkInterfaceId>,
}

/// An Elastic IP (`elastic-ips/<account>/<eipalloc>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticIp {
    /// Id.
    pub id: AllocationId,
    /// Owner.
    pub account: AccountId,
    /// The address.
    pub public_ip: String,
    /// Its association, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association: Option<EipAssociation>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Allocated.
    pub created_ms: i64,
}

/// An account's Elastic IP index (`elastic-ip-accounts/<account>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticIpAccount {
    /// Every allocation of the account (the limit counts these).
    pub allocations: Vec<AllocationId>,
}

/// The claim of one public address (`public-ips/<ip>`): who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIpClaim {
    /// The address.
    pub ip: String,
    /// The holder's account.
    pub account: AccountId,
    /// The Elastic IP holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<AllocationId>,
    /// The instance holding it (an auto-assigned address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    /// Claimed.
    pub claimed_ms: i64,
}

/// The public address an instance has now
/// (`instance-public-ips/<account>/<instance>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePublicIp {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its account.
    pub account: AccountId,
    /// Its VPC.
    pub vpc_id: VpcId,
    /// Its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// The address.
    pub public_ip: String,
    /// The Elastic IP it comes from (`None`: auto-assigned at launch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<AllocationId>,
    /// The Elastic IP's association.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_id: Option<AddressAssociationId>,
    /// Assigned.
    pub assigned_ms: i64,
}

impl Record for ElasticIp {
    const KIND: &'static str = "elastic-ip";
    const SCHEMA: u32 = 1;
}
impl Record for ElasticIpAccount {
    const KIND: &'static str = "elastic-ip-account";
    const SCHEMA: u32 = 1;
}
impl Record for PublicIpClaim {
    const KIND: &'static str = "public-ip";
    const SCHEMA: u32 = 1;
}
impl Record for InstancePublicIp {
    const KIND: &'static str = "instance-public-ip";
    const SCHEMA: u32 = 1;
}

/// Filter names DescribeAddresses supports.
pub const ADDRESS_FILTERS: &[&str] = &[
    "allocation-id",
    "association-id",
    "domain",
    "instance-id",
    "network-interface-id",
    "network-interface-owner-id",
    "private-ip-address",
    "public-ip",
    "tag:",
    "tag-key",
    "tag-value",
];

/// An Elastic IP named by its allocation id or by its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRef {
    /// `AllocationId`.
    Allocation(String),
    /// `PublicIp`.
    PublicIp(String),
}

/// AssociateAddress's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociateInput {
    /// The Elastic IP.
    pub address: AddressRef,
    /// `InstanceId`.
    pub instance_id: Option<String>,
    /// `NetworkInterfaceId` (an instance's primary interface, `eni-…`).
    pub network_interface_id: Option<String>,
    /// `PrivateIpAddress` (must be the interface's address).
    pub private_ip: Option<String>,
    /// `AllowReassociation`.
    pub allow_reassociation: bool,
}

/// The primary interface id of an instance (`eni-` + the instance's hex).
pub fn primary_interface_of(id: &InstanceId) -> String {
    format!("eni-{}", &id.as_str()["i-".len()..])
}

impl EipAssociation {
    /// The interface the address is associated with: the instance's own
    /// interface, or its derived primary one.
    pub fn interface_id(&self) -> String {
        match &self.network_interface_id {
            Some(e) => e.to_string(),
            None => primary_interface_of(&self.instance_id),
        }
    }
}

/// Every address of the region claimed now (one prefix read).
pub(crate) async fn used_public_ips(store: &Store) -> Result<HashSet<Ipv4Addr>> {
    Ok(store
        .public_net()
        .claims()
        .await?
        .into_iter()
        .filter_map(|c| c.value.ip.parse().ok())
        .collect())
}

fn allocation_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidAllocationID.NotFound",
        format!("The allocation ID '{id}' does not exist"),
    )
}

fn address_not_found(ip: &str) -> Error {
    Error::not_found(
        "InvalidAddress.NotFound",
        format!("Address '{ip}' not found."),
    )
}

fn association_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidAssociationID.NotFound",
        format!("The association ID '{id}' does not exist"),
    )
}

impl Domain {
    /// The configured public pool, if any.
    pub(crate) fn public_pool(&self) -> Result<Option<PublicPool>> {
        self.cfg
            .vpc
            .public_pool
            .as_deref()
            .map(PublicPool::parse)
            .transpose()
    }

    /// A free address of the pool (a random one, so racing replicas rarely
    /// pick the same; the claim's compare-absent decides), or
    /// `InsufficientAddressCapacity`.
    pub(crate) async fn free_public_ip(&self) -> Result<Ipv4Addr> {
        let none_left = |why: &str| {
            Error::incorrect_state(
                "InsufficientAddressCapacity",
                format!(
                    "There are not enough free public addresses to satisfy your request ({why})."
                ),
            )
        };
        let Some(pool) = self.public_pool()? else {
            return Err(none_left("this region has no public address pool"));
        };
        let used = used_public_ips(&self.store).await?;
        pool.pick_free(&used)
            .ok_or_else(|| none_left("the pool is exhausted"))
    }

    /// AllocateAddress (`Domain=vpc`).
    pub async fn allocate_address(
        &self,
        caller: &Caller,
        domain: Option<&str>,
        address: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<ElasticIp> {
        let account = caller.account()?;
        match domain {
            None | Some("vpc") => {}
            Some(d) => {
                return Err(Error::invalid(format!(
                    "Value ({d}) for parameter domain is invalid: only vpc addresses exist here"
                )))
            }
        }
        if address.is_some() {
            return Err(Error::invalid_code(
                "Unsupported",
                "Allocating a specific address (Address) is not supported: the region's pool hands one out",
            ));
        }
        let tags = validation::tags(tags)?;
        let limit = self.cfg.vpc.elastic_ips_per_account as usize;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let idx = self.store.public_net().eip_account(&account).await?;
            let mut next = idx.as_ref().map(|v| v.value.clone()).unwrap_or_default();
            if next.allocations.len() >= limit {
                return Err(Error::invalid_code(
                    "AddressLimitExceeded",
                    format!("The maximum number of addresses has been reached ({limit})."),
                ));
            }
            let ip = self.free_public_ip().await?;
            let eip = ElasticIp {
                id: AllocationId::generate(),
                account: account.clone(),
                public_ip: ip.to_string(),
                association: None,
                tags: tags.clone(),
                created_ms: now_ms(),
            };
            next.allocations.push(eip.id.clone());
            let mut tx = Tx::new();
            tx.create(
                &keys.public_ip(ip),
                &PublicIpClaim {
                    ip: eip.public_ip.clone(),
                    account: account.clone(),
                    allocation_id: Some(eip.id.clone()),
                    instance_id: None,
                    claimed_ms: eip.created_ms,
                },
            )?;
            tx.create(&keys.elastic_ip(&account, &eip.id), &eip)?;
            let k = keys.elastic_ip_account(&account);
            match &idx {
                Some(cur) => tx.replace(&k, cur, &next)?,
                None => tx.create(&k, &next)?,
            };
            if self.store.commit(tx).await?.is_some() {
                return Ok(eip);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.elastic_ip_account(&account)))
    }

    /// An Elastic IP of the caller's account, by allocation id or address.
    async fn own_eip(&self, account: &AccountId, r: &AddressRef) -> Result<Versioned<ElasticIp>> {
        match r {
            AddressRef::Allocation(id) => {
                let aid = AllocationId::parse(id)?;
                self.store
                    .public_net()
                    .eip(account, &aid)
                    .await?
                    .ok_or_else(|| allocation_not_found(id))
            }
            AddressRef::PublicIp(ip) => self
                .store
                .public_net()
                .eips_of(account)
                .await?
                .into_iter()
                .find(|e| &e.value.public_ip == ip)
                .ok_or_else(|| address_not_found(ip)),
        }
    }

    /// DescribeAddresses.
    pub async fn describe_addresses(
        &self,
        caller: &Caller,
        allocation_ids: &[String],
        public_ips: &[String],
        filters: &[Filter],
    ) -> Result<Vec<ElasticIp>> {
        let account = caller.account()?;
        filters::check(filters, ADDRESS_FILTERS)?;
        let ids: Vec<AllocationId> = allocation_ids
            .iter()
            .map(|i| AllocationId::parse(i))
            .collect::<Result<_>>()?;
        let all: Vec<ElasticIp> = self
            .store
            .public_net()
            .eips_of(&account)
            .await?
            .into_iter()
            .map(|e| e.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|e| &e.id == *i)) {
            return Err(allocation_not_found(missing.as_str()));
        }
        if let Some(missing) = public_ips
            .iter()
            .find(|ip| !all.iter().any(|e| &e.public_ip == *ip))
        {
            return Err(address_not_found(missing));
        }
        Ok(all
            .into_iter()
            .filter(|e| ids.is_empty() || ids.contains(&e.id))
            .filter(|e| public_ips.is_empty() || public_ips.contains(&e.public_ip))
            .filter(|e| filters.iter().all(|f| address_matches(e, f)))
            .collect())
    }

    /// ReleaseAddress.
    pub async fn release_address(&self, caller: &Caller, r: &AddressRef) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let eip = self.own_eip(&account, r).await?;
            if let Some(a) = &eip.value.association {
                return Err(Error::incorrect_state(
                    "InvalidIPAddress.InUse",
                    format!(
                        "Address {} is in use (associated with {} as {}).",
                        eip.value.public_ip, a.instance_id, a.id
                    ),
                ));
            }
            let idx = self.store.public_net().eip_account(&account).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&keys.elastic_ip(&account, &eip.value.id), &eip);
            if let Ok(ip) = eip.value.public_ip.parse::<Ipv4Addr>() {
                tx.delete(&keys.public_ip(ip));
            }
            if let Some(cur) = &idx {
                let mut next = cur.value.clone();
                next.allocations.retain(|a| a != &eip.value.id);
                tx.replace(&keys.elastic_ip_account(&account), cur, &next)?;
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(format!("{r:?}")))
    }

    /// AssociateAddress: returns the association id (the existing one when
    /// the address is already associated with that instance).
    pub async fn associate_address(
        &self,
        caller: &Caller,
        input: &AssociateInput,
    ) -> Result<AddressAssociationId> {
        let account = caller.account()?;
        let iid = match (&input.instance_id, &input.network_interface_id) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_code(
                    "InvalidParameterCombination",
                    "Specify either InstanceId or NetworkInterfaceId, not both",
                ))
            }
            (Some(i), None) => InstanceId::parse(i)?,
            (None, Some(eni)) => match self.own_interface(&account, eni).await {
                // An interface of its own: the instance it is attached to.
                Ok(super::enis::NamedInterface::Stored(v)) => match &v.value.attachment {
                    // Public addresses are the primary interface's.
                    Some(a) if a.device_index > 0 => {
                        return Err(Error::invalid(format!(
                            "The network interface '{eni}' is a secondary interface (device index {}): Elastic IPs associate with an instance's primary interface",
                            a.device_index
                        )))
                    }
                    Some(a) => a.instance_id.clone(),
                    None => {
                        return Err(Error::invalid(format!(
                            "The network interface '{eni}' is not attached to an instance: only an attached interface can take an Elastic IP here"
                        )))
                    }
                },
                Ok(super::enis::NamedInterface::Derived(i)) => i.value.id,
                Err(e) => return Err(e),
            },
            (None, None) => return Err(Error::missing("InstanceId")),
        };
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let eip = self.own_eip(&account, &input.address).await?;
            let inst = self
                .store
                .instances()
                .get(&account, &iid)
                .await?
                .ok_or_else(|| match &input.network_interface_id {
                    Some(eni) => Error::not_found(
                        "InvalidNetworkInterfaceID.NotFound",
                        format!("The networkInterface ID '{eni}' does not exist"),
                    ),
                    None => Error::not_found(
                        "InvalidInstanceID.NotFound",
                        format!("The instance ID '{iid}' does not exist"),
                    ),
                })?;
            let i = &inst.value;
            if matches!(i.state, State::Terminated | State::ShuttingDown) {
                return Err(Error::incorrect_state(
                    "IncorrectInstanceState",
                    format!(
                        "The instance '{iid}' is not in a valid state for this operation ({}).",
                        i.state.name()
                    ),
                ));
            }
            let private_ip = i.network.as_ref().map(|n| n.ip.clone());
            if let Some(want) = &input.private_ip {
                if private_ip.as_ref() != Some(want) {
                    return Err(Error::invalid(format!(
                        "The private address {want} is not an address of the instance {iid}"
                    )));
                }
            }
            let Some(vpc_id) = i.vpc.as_ref().and_then(|v| v.vpc_id.clone()) else {
                return Err(Error::invalid(format!(
                    "The instance {iid} is not in a VPC"
                )));
            };
            let subnet = match i.vpc.as_ref().and_then(|v| v.subnet_id.clone()) {
                Some(s) => Some(s),
                None => {
                    self.default_subnet_of_zone(&account, &vpc_id, &i.availability_zone)
                        .await?
                }
            };
            let Some(igw) = self.igw_of_vpc(&account, &vpc_id).await? else {
                return Err(not_attached(format!(
                    "Network {vpc_id} is not attached to any internet gateway"
                )));
            };
            let routed = match &subnet {
                Some(s) => {
                    self.subnet_routes_to(&account, &vpc_id, s, &igw.value.id)
                        .await?
                }
                None => false,
            };
            if !routed {
                return Err(not_attached(format!(
                    "The subnet of instance {iid} ({}) has no route 0.0.0.0/0 to the internet gateway {} of {vpc_id}",
                    subnet.as_ref().map(|s| s.as_str()).unwrap_or("none"),
                    igw.value.id
                )));
            }
            let mut tx = Tx::new();
            if let Some(a) = &eip.value.association {
                if a.instance_id == iid {
                    return Ok(a.id.clone());
                }
                if !input.allow_reassociation {
                    return Err(Error::invalid_code(
                        "Resource.AlreadyAssociated",
                        format!(
                            "resource {} is already associated with associate-id {}",
                            eip.value.id, a.id
                        ),
                    ));
                }
                // Moved: the previous instance loses it (and gets a new
                // auto-assigned address when its subnet maps them).
                let k = keys.instance_public_ip(&account, &a.instance_id);
                match self
                    .store
                    .public_net()
                    .instance_ip(&account, &a.instance_id)
                    .await?
                {
                    Some(p) if p.value.allocation_id.as_ref() == Some(&eip.value.id) => {
                        self.stage_eip_leaves(&account, &a.instance_id, &p, &mut tx)
                            .await?;
                    }
                    Some(p) => {
                        tx.expect_rev(&k, p.mod_revision);
                    }
                    None => {
                        tx.expect_absent(&k);
                    }
                }
            }
            let assoc = EipAssociation {
                id: AddressAssociationId::generate(),
                instance_id: iid.clone(),
                vpc_id: vpc_id.clone(),
                subnet_id: subnet.clone(),
                private_ip,
                network_interface_id: i.vpc.as_ref().and_then(|v| v.network_interface_id.clone()),
            };
            let next = ElasticIp {
                association: Some(assoc.clone()),
                ..eip.value.clone()
            };
            tx.replace(&keys.elastic_ip(&account, &next.id), &eip, &next)?;
            tx.expect_rev(&keys.instance(&account, &iid), inst.mod_revision);
            tx.expect_rev(
                &keys.internet_gateway(&account, &igw.value.id),
                igw.mod_revision,
            );
            // The instance's previous public address goes: an auto-assigned
            // one is released, another Elastic IP is disassociated (EC2).
            let ip_key = keys.instance_public_ip(&account, &iid);
            let record = InstancePublicIp {
                instance_id: iid.clone(),
                account: account.clone(),
                vpc_id: vpc_id.clone(),
                subnet_id: subnet.clone(),
                public_ip: next.public_ip.clone(),
                allocation_id: Some(next.id.clone()),
                association_id: Some(assoc.id.clone()),
                assigned_ms: now_ms(),
            };
            match self.store.public_net().instance_ip(&account, &iid).await? {
                Some(cur) => {
                    self.stage_drop_public_ip(&account, &cur.value, &mut tx)
                        .await?;
                    tx.replace(&ip_key, &cur, &record)?;
                }
                None => {
                    tx.create(&ip_key, &record)?;
                }
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(assoc.id);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(iid.to_string()))
    }

    /// DisassociateAddress (by association id or address).
    pub async fn disassociate_address(&self, caller: &Caller, r: &AddressRef) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let eip = match r {
                AddressRef::Allocation(assoc_id) => {
                    let aid = AddressAssociationId::parse(assoc_id)?;
                    self.store
                        .public_net()
                        .eips_of(&account)
                        .await?
                        .into_iter()
                        .find(|e| e.value.association.as_ref().is_some_and(|a| a.id == aid))
                        .ok_or_else(|| association_not_found(assoc_id))?
                }
                AddressRef::PublicIp(_) => self.own_eip(&account, r).await?,
            };
            let Some(assoc) = eip.value.association.clone() else {
                return Err(association_not_found(&eip.value.public_ip));
            };
            let next = ElasticIp {
                association: None,
                ..eip.value.clone()
            };
            let mut tx = Tx::new();
            tx.replace(&keys.elastic_ip(&account, &next.id), &eip, &next)?;
            let k = keys.instance_public_ip(&account, &assoc.instance_id);
            match self
                .store
                .public_net()
                .instance_ip(&account, &assoc.instance_id)
                .await?
            {
                Some(p) if p.value.association_id.as_ref() == Some(&assoc.id) => {
                    self.stage_eip_leaves(&account, &assoc.instance_id, &p, &mut tx)
                        .await?;
                }
                Some(p) => {
                    tx.expect_rev(&k, p.mod_revision);
                }
                None => {
                    tx.expect_absent(&k);
                }
            }
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(format!("{r:?}")))
    }
}

fn address_matches(e: &ElasticIp, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &e.tags) {
        return m;
    }
    let v = &f.values;
    let a = e.association.as_ref();
    let any = |c: &[&str]| filters::any_matches(v, c);
    match f.name.as_str() {
        "allocation-id" => any(&[e.id.as_str()]),
        "association-id" => a.is_some_and(|a| any(&[a.id.as_str()])),
        "domain" => any(&["vpc"]),
        "instance-id" => a.is_some_and(|a| any(&[a.instance_id.as_str()])),
        "network-interface-id" => a.is_some_and(|a| any(&[&a.interface_id()])),
        "network-interface-owner-id" => a.is_some() && any(&[e.account.as_str()]),
        "private-ip-address" => a
            .and_then(|a| a.private_ip.as_deref())
            .is_some_and(|ip| any(&[ip])),
        "public-ip" => any(&[&e.public_ip]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_all_but_first_and_last() {
        let p = PublicPool::parse("198.51.100.0/30").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.size(), 2);
        assert_eq!(p.nth(0), Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(p.nth(1), Ipv4Addr::new(198, 51, 100, 2));
        assert!(p.contains(Ipv4Addr::new(198, 51, 100, 2)));
        assert!(!p.contains(Ipv4Addr::new(198, 51, 100, 0)));
        assert!(!p.contains(Ipv4Addr::new(198, 51, 100, 3)));
        assert!(!p.contains(Ipv4Addr::new(198, 51, 101, 1)));
        for bad in ["198.51.100.0/31", "10.0.0.0/8", "198.51.100.1/24", "x"] {
            assert!(PublicPool::parse(bad).is_err(), "{bad}");
        }
    }
}
