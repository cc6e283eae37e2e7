//! RunInstances in the VPC model: the requested subnet (`SubnetId`, which
//! pins the zone) and security groups (`SecurityGroupId.N`, or
//! `SecurityGroup.N` names of the default VPC) are checked against the
//! caller's own objects and recorded on each instance; without a subnet the
//! instance is in the default VPC (the default subnet of the zone it is
//! placed in), without groups in its VPC's default group.
//!
//! A launch naming a network interface of its own is resolved into the
//! interface's subnet and groups ([`super::eni_attach`]).
//!
//! The private address comes from the instance's subnet
//! ([`super::addresses`]), in the placement transaction; a requested
//! `PrivateIpAddress` (one instance only) pins the subnet holding it (the
//! default subnet containing it, when no subnet is named).

use super::{group_not_found, InstanceVpc};
use crate::domain::instances::RunInstancesInput;
use crate::domain::vpc::groups::GroupRef;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, SubnetId, VpcId};

impl Domain {
    /// Resolves `input.options.vpc` (see the module docs). An account
    /// without a default VPC (deleted) that names no subnet and no group
    /// launches without VPC placement, as before VPCs existed.
    pub(crate) async fn resolve_launch_vpc(
        &self,
        account: &AccountId,
        input: &mut RunInstancesInput,
    ) -> Result<()> {
        let mut req = input.options.vpc.take().map(|b| *b).unwrap_or_default();
        let explicit = req != InstanceVpc::default();
        if req.private_ip_address.is_some() && input.max_count > 1 {
            return Err(Error::invalid_code(
                "InvalidParameterCombination",
                "A private IP address can only be given when launching one instance",
            ));
        }
        self.ensure_default_vpc(account).await?;
        self.resolve_launch_interface(
            account,
            &mut req,
            input.max_count,
            input.availability_zone.as_deref(),
        )
        .await?;
        let interface = req.interface.take();
        let named_subnet = req.subnet_id.is_some();
        if let (None, Some(ip)) = (&req.subnet_id, &req.private_ip_address) {
            req.subnet_id = Some(self.default_subnet_holding(account, ip).await?);
        }
        let (vpc_id, subnet_id): (VpcId, Option<SubnetId>) = match &req.subnet_id {
            Some(sid) => {
                let s = self.own_subnet(account, sid.as_str()).await?.value;
                if let Some(z) = &input.availability_zone {
                    if z != &s.availability_zone {
                        return Err(Error::invalid(format!(
                            "The subnet {sid} is in availability zone {}, not in the requested {z}",
                            s.availability_zone
                        )));
                    }
                }
                input.availability_zone = Some(s.availability_zone.clone());
                let cidr = super::Cidr::parse(&s.cidr)?;
                if let Some(ip) = &req.private_ip_address {
                    super::private_addresses::check_requested(ip, &s.id, &cidr)?;
                }
                req.subnet_cidrs.insert(s.id.clone(), cidr);
                (s.vpc_id, Some(s.id))
            }
            None => match self.default_vpc(account).await? {
                Some(v) => (v.id, None),
                None if !explicit => return Ok(()),
                None => {
                    return Err(Error::invalid_code(
                        "VPCIdNotSpecified",
                        "No default VPC for this user: give a SubnetId",
                    ))
                }
            },
        };
        // Secondary interfaces fix the launch's zone (theirs).
        if let Some(z) = self
            .resolve_launch_secondaries(account, &req, &vpc_id, input.max_count)
            .await?
        {
            match &input.availability_zone {
                Some(want) if want != &z => {
                    return Err(Error::invalid_code(
                        "InvalidParameterCombination",
                        format!(
                            "The secondary network interfaces are in availability zone {z}, the instance in {want}"
                        ),
                    ))
                }
                _ => input.availability_zone = Some(z),
            }
        }
        let mut groups = Vec::new();
        for g in &req.security_group_ids {
            let grp = self
                .store
                .vpcs()
                .group(account, g)
                .await?
                .ok_or_else(|| group_not_found(g.as_str()))?;
            if grp.value.vpc_id != vpc_id {
                return Err(Error::invalid_code(
                    "InvalidParameter",
                    format!("Security group {g} and the instance's subnet belong to different networks."),
                ));
            }
            groups.push(grp.value.id);
        }
        for n in &req.security_group_names {
            if named_subnet {
                return Err(Error::invalid_code(
                    "InvalidParameterCombination",
                    "The parameter groupName cannot be used with the parameter subnet",
                ));
            }
            let grp = self
                .resolve_group(account, &GroupRef::Name(n.clone()))
                .await?;
            groups.push(grp.value.id);
        }
        let mut default_subnets = std::collections::BTreeMap::new();
        if subnet_id.is_none() {
            for s in self.store.vpcs().subnets_of(account).await? {
                if s.value.vpc_id == vpc_id && s.value.default_for_az {
                    req.subnet_cidrs
                        .insert(s.value.id.clone(), super::Cidr::parse(&s.value.cidr)?);
                    default_subnets.insert(s.value.availability_zone.clone(), s.value.id);
                }
            }
        }
        let vpc = self.own_vpc(account, &vpc_id).await?;
        if groups.is_empty() {
            groups.push(vpc.value.default_security_group_id.clone());
        }
        let vni = match vpc.value.vni {
            0 => self.vpc_vni(account, &vpc_id).await?,
            v => v,
        };
        groups.sort();
        groups.dedup();
        input.options.vpc = Some(Box::new(InstanceVpc {
            vpc_id: Some(vpc_id),
            subnet_id,
            security_group_ids: groups,
            security_group_names: Vec::new(),
            private_ip_address: req.private_ip_address,
            network_interface_id: req.network_interface_id,
            interface_delete_on_termination: req.interface_delete_on_termination,
            associate_public_ip: req.associate_public_ip,
            secondary_interfaces: Vec::new(),
            launch_secondaries: req.launch_secondaries,
            interface,
            vni,
            subnet_cidrs: req.subnet_cidrs,
            default_subnets,
            public_ip: None,
        }));
        Ok(())
    }

    /// The default subnet (of the account's default VPC) whose block holds
    /// `ip`: where a `PrivateIpAddress` given without a subnet goes.
    async fn default_subnet_holding(&self, account: &AccountId, ip: &str) -> Result<SubnetId> {
        let addr: std::net::Ipv4Addr = ip.parse().map_err(|_| {
            Error::invalid(format!(
                "Value ({ip}) for parameter privateIpAddress is invalid. Expected a valid IPv4 address."
            ))
        })?;
        let default = self.default_vpc(account).await?;
        for s in self.store.vpcs().subnets_of(account).await? {
            let s = s.value;
            if default.as_ref().is_some_and(|d| d.id == s.vpc_id)
                && s.default_for_az
                && super::Cidr::parse(&s.cidr)?.contains_ip(addr)
            {
                return Ok(s.id);
            }
        }
        Err(Error::invalid(format!(
            "Address {ip} does not fall within the address range of any default subnet: give a SubnetId"
        )))
    }

    /// The default subnet of `zone` in the account's default VPC, if any:
    /// the subnet of instances recorded without one.
    pub async fn default_subnet_of_zone(
        &self,
        account: &AccountId,
        vpc: &VpcId,
        zone: &str,
    ) -> Result<Option<SubnetId>> {
        Ok(self
            .store
            .vpcs()
            .subnets_of(account)
            .await?
            .into_iter()
            .map(|s| s.value)
            .find(|s| &s.vpc_id == vpc && s.default_for_az && s.availability_zone == zone)
            .map(|s| s.id))
    }
}

impl Domain {
    /// Fills in, for display, the subnet of instances recorded without one
    /// (the default subnet of their zone in their VPC) and each instance's
    /// public address.
    pub async fn with_default_subnets(
        &self,
        mut reservations: Vec<crate::domain::views::Reservation>,
    ) -> Result<Vec<crate::domain::views::Reservation>> {
        let mut cache: std::collections::HashMap<(AccountId, VpcId, String), Option<SubnetId>> =
            std::collections::HashMap::new();
        for r in &mut reservations {
            for i in &mut r.instances {
                let zone = i.availability_zone.clone();
                let account = i.account.clone();
                let Some(v) = i.vpc.as_mut() else {
                    continue;
                };
                let (Some(vpc), None) = (v.vpc_id.clone(), &v.subnet_id) else {
                    continue;
                };
                let key = (account.clone(), vpc.clone(), zone.clone());
                if !cache.contains_key(&key) {
                    let found = self.default_subnet_of_zone(&account, &vpc, &zone).await?;
                    cache.insert(key.clone(), found);
                }
                v.subnet_id = cache.get(&key).cloned().flatten();
            }
        }
        self.with_public_ips(reservations).await
    }
}

impl Domain {
    /// The first instance of `account` not terminated for which `uses`
    /// holds (DeleteSubnet and DeleteSecurityGroup dependencies).
    pub(crate) async fn instance_using(
        &self,
        account: &AccountId,
        uses: impl Fn(&crate::domain::model::Instance, &InstanceVpc) -> bool,
    ) -> Result<Option<crate::ids::InstanceId>> {
        let all = self.store.instances().of(account).collect().await?;
        Ok(all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|i| i.state != crate::domain::lifecycle::State::Terminated)
            .find(|i| i.vpc.as_ref().is_some_and(|v| uses(i, v)))
            .map(|i| i.id))
    }
}
