//! VPC subnets: CreateSubnet (a /16../28 block inside its VPC's, in one
//! zone of the region, overlapping no other subnet of the VPC),
//! DescribeSubnets (with EC2's available address count: the block minus
//! its five reserved addresses minus the IPAM claims in it), DeleteSubnet
//! (`DependencyViolation` while an address of it is claimed or an instance
//! not terminated is in it) and
//! ModifySubnetAttribute `MapPublicIpOnLaunch`.

use super::vpcs::{bool_str, PREFIX_RANGE};
use super::{dependency, subnet_not_found, Cidr, VpcSubnet, MAX_ATTEMPTS};
use crate::domain::filters::{self, Filter};
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, SubnetId, VpcId};
use crate::store::{Tx, Versioned};

/// Filter names DescribeSubnets supports.
pub const SUBNET_FILTERS: &[&str] = &[
    "subnet-id",
    "vpc-id",
    "availability-zone",
    "availability-zone-id",
    "cidr-block",
    "cidr",
    "cidrBlock",
    "default-for-az",
    "defaultForAz",
    "map-public-ip-on-launch",
    "state",
    "owner-id",
    "tag:",
    "tag-key",
    "tag-value",
];

/// Most subnets in one VPC (EC2's default quota).
pub const MAX_SUBNETS_PER_VPC: usize = 200;

/// CreateSubnet's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateSubnetInput {
    /// `VpcId`.
    pub vpc_id: String,
    /// `CidrBlock`.
    pub cidr: String,
    /// `AvailabilityZone`.
    pub availability_zone: Option<String>,
    /// `AvailabilityZoneId` (`<region>-az<n>`).
    pub availability_zone_id: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// A subnet as DescribeSubnets shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetView {
    /// The record.
    pub subnet: VpcSubnet,
    /// Zone id.
    pub zone_id: String,
    /// Addresses still free.
    pub available_ips: u64,
}

impl Domain {
    /// The zone id of zone `name` (`<region>-az<n>`), if it is a zone here.
    pub fn zone_id(&self, name: &str) -> Option<String> {
        let i = self.cfg.zones.iter().position(|z| z == name)?;
        Some(format!("{}-az{}", self.cfg.region, i + 1))
    }

    fn subnet_zone(&self, zone: Option<&str>, zone_id: Option<&str>) -> Result<String> {
        match (zone, zone_id) {
            (Some(_), Some(_)) => Err(Error::invalid_code(
                "InvalidParameterCombination",
                "Specify either AvailabilityZone or AvailabilityZoneId, not both",
            )),
            (Some(z), None) => {
                if self.zone_id(z).is_none() {
                    return Err(Error::invalid(format!(
                        "Value ({z}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                        self.cfg.zones.join(", ")
                    )));
                }
                Ok(z.to_string())
            }
            (None, Some(id)) => self
                .cfg
                .zones
                .iter()
                .find(|z| self.zone_id(z).as_deref() == Some(id))
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "Value ({id}) for parameter availabilityZoneId is invalid."
                    ))
                }),
            (None, None) => self
                .cfg
                .zones
                .first()
                .cloned()
                .ok_or_else(|| Error::Internal("no zones configured".into())),
        }
    }

    /// CreateSubnet.
    pub async fn create_subnet(
        &self,
        caller: &Caller,
        input: CreateSubnetInput,
    ) -> Result<VpcSubnet> {
        let account = caller.account()?;
        let vpc_id = VpcId::parse(&input.vpc_id)?;
        let block = Cidr::parse(&input.cidr)?;
        let range = || {
            Error::invalid_code(
                "InvalidSubnet.Range",
                format!("The CIDR '{}' is invalid.", input.cidr),
            )
        };
        if !PREFIX_RANGE.contains(&block.prefix_len()) {
            return Err(range());
        }
        let zone = self.subnet_zone(
            input.availability_zone.as_deref(),
            input.availability_zone_id.as_deref(),
        )?;
        let tags = validation::tags(&input.tags)?;
        self.ensure_default_vpc(&account).await?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let vpc = self.own_vpc(&account, &vpc_id).await?;
            let vpc_block = Cidr::parse(&vpc.value.cidr)?;
            if !vpc_block.contains(&block) {
                return Err(range());
            }
            let siblings: Vec<VpcSubnet> = self
                .store
                .vpcs()
                .subnets_of(&account)
                .await?
                .into_iter()
                .map(|s| s.value)
                .filter(|s| s.vpc_id == vpc_id)
                .collect();
            for s in &siblings {
                if Cidr::parse(&s.cidr)?.overlaps(&block) {
                    return Err(Error::invalid_code(
                        "InvalidSubnet.Conflict",
                        format!(
                            "The CIDR '{}' conflicts with another subnet ({})",
                            input.cidr, s.id
                        ),
                    ));
                }
            }
            if siblings.len() >= MAX_SUBNETS_PER_VPC {
                return Err(Error::invalid_code(
                    "SubnetLimitExceeded",
                    format!("The VPC {vpc_id} has the maximum number of subnets ({MAX_SUBNETS_PER_VPC})."),
                ));
            }
            let subnet = VpcSubnet {
                id: SubnetId::generate_vpc(),
                account: account.clone(),
                vpc_id: vpc_id.clone(),
                cidr: block.to_string(),
                availability_zone: zone.clone(),
                default_for_az: false,
                map_public_ip_on_launch: false,
                tags: tags.clone(),
                created_ms: now_ms(),
            };
            let mut tx = Tx::new();
            tx.create(&keys.vpc_subnet(&account, &subnet.id), &subnet)?;
            // Rewriting the VPC serialises this with other subnet creates
            // (overlap) and with DeleteVpc (dependencies).
            tx.replace(&keys.vpc(&account, &vpc_id), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(subnet);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.vpc(&account, &vpc_id)))
    }

    /// A VPC subnet of the caller's account (`InvalidSubnetID.NotFound`
    /// otherwise, also for another account's subnet).
    pub async fn own_subnet(&self, account: &AccountId, id: &str) -> Result<Versioned<VpcSubnet>> {
        let sid = SubnetId::parse(id)?;
        self.store
            .vpcs()
            .subnet(account, &sid)
            .await?
            .ok_or_else(|| subnet_not_found(id))
    }

    /// DescribeSubnets.
    pub async fn describe_subnets(
        &self,
        caller: &Caller,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<SubnetView>> {
        let account = caller.account()?;
        filters::check(filters, SUBNET_FILTERS)?;
        let ids: Vec<SubnetId> = ids
            .iter()
            .map(|i| SubnetId::parse(i))
            .collect::<Result<_>>()?;
        self.ensure_default_vpc(&account).await?;
        let all: Vec<VpcSubnet> = self
            .store
            .vpcs()
            .subnets_of(&account)
            .await?
            .into_iter()
            .map(|s| s.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|s| &s.id == *i)) {
            return Err(subnet_not_found(missing.as_str()));
        }
        let mut out = Vec::new();
        for s in all {
            if !ids.is_empty() && !ids.contains(&s.id) {
                continue;
            }
            let zone_id = self.zone_id(&s.availability_zone).unwrap_or_default();
            if !filters.iter().all(|f| subnet_matches(&s, &zone_id, f)) {
                continue;
            }
            let claimed = self.store.vpcs().claimed_addresses(&s.id).await?;
            let available = Cidr::parse(&s.cidr)?
                .usable()
                .saturating_sub(u64::try_from(claimed).unwrap_or(0));
            out.push(SubnetView {
                subnet: s,
                zone_id,
                available_ips: available,
            });
        }
        Ok(out)
    }

    /// DeleteSubnet.
    pub async fn delete_subnet(&self, caller: &Caller, id: &str) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let subnet = self.own_subnet(&account, id).await?;
            let claimed = self
                .store
                .vpcs()
                .claimed_addresses(&subnet.value.id)
                .await?;
            if claimed > 0 {
                return Err(dependency(format!(
                    "The subnet '{id}' has dependencies and cannot be deleted: {claimed} addresses in use"
                )));
            }
            let sv = subnet.value.clone();
            let user = self
                .instance_using(&account, |i, v| {
                    v.subnet_id.as_ref() == Some(&sv.id)
                        || (sv.default_for_az
                            && v.subnet_id.is_none()
                            && v.vpc_id.as_ref() == Some(&sv.vpc_id)
                            && i.availability_zone == sv.availability_zone)
                })
                .await?;
            if let Some(i) = user {
                return Err(dependency(format!(
                    "The subnet '{id}' has dependencies and cannot be deleted: instance {i}"
                )));
            }
            let vpc = self.own_vpc(&account, &subnet.value.vpc_id).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&keys.vpc_subnet(&account, &subnet.value.id), &subnet);
            // Its explicit route table association goes with it (as in EC2).
            tx.delete(&keys.route_table_subnet(&account, &subnet.value.id));
            tx.replace(&keys.vpc(&account, &vpc.value.id), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(id.to_string()))
    }

    /// ModifySubnetAttribute `MapPublicIpOnLaunch`.
    pub async fn set_map_public_ip(&self, caller: &Caller, id: &str, value: bool) -> Result<()> {
        let account = caller.account()?;
        let subnet = self.own_subnet(&account, id).await?;
        let key = self.store.keys().vpc_subnet(&account, &subnet.value.id);
        let updated = self
            .store
            .repo::<VpcSubnet>()
            .update(&key, |s| {
                Ok((s.map_public_ip_on_launch != value).then(|| VpcSubnet {
                    map_public_ip_on_launch: value,
                    ..s.clone()
                }))
            })
            .await?;
        updated.map(|_| ()).ok_or_else(|| subnet_not_found(id))
    }
}

fn subnet_matches(s: &VpcSubnet, zone_id: &str, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &s.tags) {
        return m;
    }
    let v = &f.values;
    match f.name.as_str() {
        "subnet-id" => filters::any_matches(v, &[s.id.as_str()]),
        "vpc-id" => filters::any_matches(v, &[s.vpc_id.as_str()]),
        "availability-zone" => filters::any_matches(v, &[&s.availability_zone]),
        "availability-zone-id" => filters::any_matches(v, &[zone_id]),
        "cidr-block" | "cidr" | "cidrBlock" => filters::any_matches(v, &[&s.cidr]),
        "default-for-az" | "defaultForAz" => filters::any_matches(v, &[bool_str(s.default_for_az)]),
        "map-public-ip-on-launch" => {
            filters::any_matches(v, &[bool_str(s.map_public_ip_on_launch)])
        }
        "state" => filters::any_matches(v, &["available"]),
        "owner-id" => filters::any_matches(v, &[s.account.as_str()]),
        _ => false,
    }
}
