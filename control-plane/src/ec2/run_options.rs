//! RunInstances' optional parameter groups of API version 2016-11-15.
//!
//! Owns, for every RunInstances parameter beyond the basics read in
//! [`super::requests`], one of three answers: honoured (parsed into
//! [`LaunchOptions`]), accepted because its value asks for what Nubis does
//! anyway (e.g. `Placement.Tenancy=default`), or refused with the error EC2
//! gives when the feature is unavailable. No parameter EC2 defines for
//! RunInstances is answered `UnknownParameter`: `requests_tests.rs` checks
//! that against the list generated from botocore's service model
//! (`testdata/run_instances_params.txt`, made by
//! `tests/ec2/gen_run_instances_params.py`). One function per parameter
//! group, so that groups other work adds (metadata options, launch templates)
//! merge as their own function. docs/ec2-api.md lists every answer.

use crate::domain::model::{LaunchOptions, ShutdownBehavior, ROOT_DEVICE_NAME};

use super::error::{Ec2Error, ErrorCode};
use super::query::Reader;

/// Largest root volume (GiB), EC2's limit for gp2/gp3.
pub const MAX_VOLUME_GIB: u32 = crate::domain::launch::MAX_ROOT_VOLUME_GIB;

/// Reads every optional RunInstances parameter group into launch options.
pub fn parse(r: &mut Reader) -> Result<LaunchOptions, Ec2Error> {
    let mut o = LaunchOptions::default();
    api_flags(r, &mut o)?;
    monitoring(r, &mut o)?;
    block_device_mappings(r, &mut o)?;
    placement(r)?;
    cpu_and_credits(r)?;
    capacity_reservation(r)?;
    hibernation_and_enclave(r)?;
    maintenance_and_network_performance(r)?;
    networking(r, &mut o)?;
    unavailable_features(r)?;
    Ok(o)
}

fn unsupported(what: &str) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::Unsupported,
        format!("{what} is not supported by this endpoint"),
    )
}

/// `DisableApiTermination`, `DisableApiStop`,
/// `InstanceInitiatedShutdownBehavior`, `EbsOptimized`, `AdditionalInfo`.
fn api_flags(r: &mut Reader, o: &mut LaunchOptions) -> Result<(), Ec2Error> {
    o.disable_api_termination = r.bool("DisableApiTermination")?.unwrap_or(false);
    o.disable_api_stop = r.bool("DisableApiStop")?.unwrap_or(false);
    o.shutdown_behavior = match r.opt("InstanceInitiatedShutdownBehavior").as_deref() {
        None | Some("stop") => ShutdownBehavior::Stop,
        Some("terminate") => ShutdownBehavior::Terminate,
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter instanceInitiatedShutdownBehavior is invalid. \
                 Expected: 'stop' or 'terminate'."
            )))
        }
    };
    if r.bool("EbsOptimized")? == Some(true) {
        return Err(unsupported("EBS optimization (EbsOptimized=true)"));
    }
    // Free text EC2 itself ignores for most callers.
    if let Some(info) = r.opt("AdditionalInfo") {
        if info.len() > 1024 {
            return Err(Ec2Error::invalid_value(
                "AdditionalInfo must be at most 1024 characters",
            ));
        }
    }
    Ok(())
}

/// `Monitoring.Enabled`: recorded and shown.
fn monitoring(r: &mut Reader, o: &mut LaunchOptions) -> Result<(), Ec2Error> {
    o.monitoring = r.bool("Monitoring.Enabled")?.unwrap_or(false);
    // Metric categories of detailed monitoring (MetricCategoryId.N).
    if let Some((key, _)) = r
        .take_prefix("Monitoring.MetricCategoryId")
        .into_iter()
        .next()
    {
        return Err(unsupported(&format!("The parameter {key}")));
    }
    Ok(())
}

/// `BlockDeviceMapping.N.*`: only the root device can be mapped, to an EBS
/// volume of a general-purpose type; its size becomes the root disk's.
fn block_device_mappings(r: &mut Reader, o: &mut LaunchOptions) -> Result<(), Ec2Error> {
    for n in r.indices("BlockDeviceMapping")? {
        let p = format!("BlockDeviceMapping.{n}");
        let device = r.required(&format!("{p}.DeviceName"))?;
        if r.opt(&format!("{p}.VirtualName")).is_some() {
            return Err(unsupported("Instance store volumes (VirtualName)"));
        }
        let no_device = r.opt(&format!("{p}.NoDevice")).is_some();
        let ebs = r.take_prefix(&format!("{p}.Ebs"));
        if device != ROOT_DEVICE_NAME {
            // Suppressing a device the image does not have changes nothing.
            if no_device && ebs.is_empty() {
                continue;
            }
            return Err(Ec2Error::new(
                ErrorCode::InvalidBlockDeviceMapping,
                format!(
                    "Only the root device {ROOT_DEVICE_NAME} can be mapped: \
                     additional volumes are not supported (got {device})"
                ),
            ));
        }
        if no_device {
            return Err(Ec2Error::new(
                ErrorCode::InvalidBlockDeviceMapping,
                "The root device cannot be suppressed with NoDevice",
            ));
        }
        for (key, value) in ebs {
            let field = key.rsplit('.').next().unwrap_or("");
            match field {
                "VolumeSize" => o.root_volume_gib = Some(volume_size(&key, &value)?),
                "DeleteOnTermination" => {
                    match value.to_ascii_lowercase().as_str() {
                        "true" => {}
                        "false" => return Err(unsupported(
                            "Keeping the root volume after termination (DeleteOnTermination=false)",
                        )),
                        _ => {
                            return Err(Ec2Error::invalid_value(format!(
                                "Value ({value}) for parameter {key} is invalid. \
                             Expected: 'true' or 'false'."
                            )))
                        }
                    }
                }
                "VolumeType" => match value.as_str() {
                    "gp2" | "gp3" | "standard" => {}
                    "io1" | "io2" | "st1" | "sc1" => {
                        return Err(unsupported(&format!("Volume type {value}")))
                    }
                    _ => {
                        return Err(Ec2Error::invalid_value(format!(
                            "Value ({value}) for parameter volumeType is invalid."
                        )))
                    }
                },
                "Encrypted" if value.eq_ignore_ascii_case("false") => {}
                "Encrypted" => return Err(unsupported("Encrypted volumes")),
                _ => return Err(unsupported(&format!("The parameter {key}"))),
            }
        }
    }
    Ok(())
}

/// An `Ebs.VolumeSize` (GiB, 1..=[`MAX_VOLUME_GIB`]).
pub fn volume_size(key: &str, value: &str) -> Result<u32, Ec2Error> {
    match value.parse::<u32>() {
        Ok(g) if (1..=MAX_VOLUME_GIB).contains(&g) => Ok(g),
        _ => Err(Ec2Error::invalid_value(format!(
            "Value ({value}) for parameter {key} is invalid. \
             Expected an integer from 1 to {MAX_VOLUME_GIB}."
        ))),
    }
}

/// `Placement.*` beyond `AvailabilityZone` (read by the caller).
fn placement(r: &mut Reader) -> Result<(), Ec2Error> {
    match r.opt("Placement.Tenancy").as_deref() {
        None | Some("default") => {}
        Some("dedicated" | "host") => {
            return Err(unsupported("Dedicated tenancy (Placement.Tenancy)"))
        }
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter tenancy is invalid."
            )))
        }
    }
    for key in ["Placement.GroupName", "Placement.GroupId"] {
        if let Some(g) = r.opt(key).filter(|g| !g.is_empty()) {
            return Err(Ec2Error::new(
                ErrorCode::InvalidPlacementGroupUnknown,
                format!("The placement group '{g}' is unknown."),
            ));
        }
    }
    for key in [
        "Placement.AvailabilityZoneId",
        "Placement.Affinity",
        "Placement.PartitionNumber",
        "Placement.HostId",
        "Placement.SpreadDomain",
        "Placement.HostResourceGroupArn",
    ] {
        if r.opt(key).is_some() {
            return Err(unsupported(key));
        }
    }
    Ok(())
}

/// `CpuOptions.*` and `CreditSpecification.CpuCredits`.
fn cpu_and_credits(r: &mut Reader) -> Result<(), Ec2Error> {
    // No CPU credits are accounted: every instance runs as `unlimited` would,
    // and a request for either mode is accepted.
    match r.opt("CreditSpecification.CpuCredits").as_deref() {
        None | Some("standard" | "unlimited") => {}
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
            "Value ({v}) for parameter CpuCredits is invalid. Expected 'standard' or 'unlimited'."
        )))
        }
    }
    for (key, value) in r.take_prefix("CpuOptions") {
        let neutral = matches!(
            (key.as_str(), value.as_str()),
            (
                "CpuOptions.AmdSevSnp" | "CpuOptions.NestedVirtualization",
                "disabled"
            )
        );
        if !neutral {
            return Err(Ec2Error::new(
                ErrorCode::InvalidParameterCombination,
                format!("{key} is not supported for the instance types of this endpoint"),
            ));
        }
    }
    Ok(())
}

/// `CapacityReservationSpecification.*`: there are no capacity reservations.
fn capacity_reservation(r: &mut Reader) -> Result<(), Ec2Error> {
    let p = "CapacityReservationSpecification";
    match r
        .opt(&format!("{p}.CapacityReservationPreference"))
        .as_deref()
    {
        None | Some("open" | "none") => {}
        Some("capacity-reservations-only") => return Err(unsupported("Capacity reservations")),
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter CapacityReservationPreference is invalid."
            )))
        }
    }
    if !r
        .take_prefix(&format!("{p}.CapacityReservationTarget"))
        .is_empty()
    {
        return Err(unsupported("Capacity reservations"));
    }
    Ok(())
}

/// `HibernationOptions.Configured` and `EnclaveOptions.Enabled`.
fn hibernation_and_enclave(r: &mut Reader) -> Result<(), Ec2Error> {
    if r.bool("HibernationOptions.Configured")? == Some(true) {
        return Err(Ec2Error::new(
            ErrorCode::UnsupportedHibernationConfiguration,
            "Hibernation is not supported by this endpoint",
        ));
    }
    if r.bool("EnclaveOptions.Enabled")? == Some(true) {
        return Err(unsupported("Nitro Enclaves (EnclaveOptions.Enabled=true)"));
    }
    Ok(())
}

/// `MaintenanceOptions.AutoRecovery` and
/// `NetworkPerformanceOptions.BandwidthWeighting`: only the defaults.
fn maintenance_and_network_performance(r: &mut Reader) -> Result<(), Ec2Error> {
    match r.opt("MaintenanceOptions.AutoRecovery").as_deref() {
        None | Some("default" | "disabled") => {}
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter AutoRecovery is invalid."
            )))
        }
    }
    match r
        .opt("NetworkPerformanceOptions.BandwidthWeighting")
        .as_deref()
    {
        None | Some("default") => Ok(()),
        Some(_) => Err(unsupported("Bandwidth weighting")),
    }
}

/// `SubnetId`, `SecurityGroupId.N`, `SecurityGroup.N` (resolved by the
/// domain: [`crate::domain::vpc::launch`]), `PrivateIpAddress` (checked
/// against the subnet by the domain) and `NetworkInterface.N` (the primary
/// interface only: [`network_interface`]).
fn networking(r: &mut Reader, o: &mut LaunchOptions) -> Result<(), Ec2Error> {
    let subnet = r.opt("SubnetId").filter(|s| !s.is_empty());
    let ids = r.list("SecurityGroupId", 16)?;
    let names = r.list("SecurityGroup", 16)?;
    if subnet.is_some() || !ids.is_empty() || !names.is_empty() {
        o.vpc = Some(Box::new(crate::domain::vpc::InstanceVpc {
            vpc_id: None,
            subnet_id: subnet
                .map(|s| crate::ids::SubnetId::parse(&s))
                .transpose()?,
            security_group_ids: ids
                .iter()
                .map(|g| crate::ids::SecurityGroupId::parse(g))
                .collect::<Result<_, _>>()?,
            security_group_names: names,
            ..Default::default()
        }));
    }
    if let Some(ip) = r.opt("PrivateIpAddress").filter(|s| !s.is_empty()) {
        o.vpc
            .get_or_insert_with(Default::default)
            .private_ip_address = Some(ip);
    }
    if r.int("Ipv6AddressCount", 0, 1_000)?.unwrap_or(0) > 0
        || !r.take_prefix("Ipv6Address").is_empty()
        || r.bool("EnablePrimaryIpv6")? == Some(true)
    {
        return Err(unsupported("IPv6 addressing"));
    }
    let interfaces = r.take_prefix("NetworkInterface");
    if !interfaces.is_empty() {
        network_interface(&interfaces, o)?;
    }
    if !r.take_prefix("SecondaryInterface").is_empty() {
        return Err(unsupported("Secondary interfaces"));
    }
    if !r.take_prefix("PrivateDnsNameOptions").is_empty() {
        return Err(unsupported("Private DNS name options"));
    }
    Ok(())
}

/// Whole features Nubis does not have; any use of them is refused.
fn unavailable_features(r: &mut Reader) -> Result<(), Ec2Error> {
    for (prefix, what) in [
        ("KernelId", "Kernel images (KernelId)"),
        ("RamdiskId", "Ramdisk images (RamdiskId)"),
        ("ElasticGpuSpecification", "Elastic GPUs"),
        (
            "ElasticInferenceAccelerator",
            "Elastic Inference accelerators",
        ),
        ("LicenseSpecification", "License configurations"),
        ("Operator", "Managed instances (Operator)"),
    ] {
        if !r.take_prefix(prefix).is_empty() {
            return Err(unsupported(what));
        }
    }
    if !r.take_prefix("InstanceMarketOptions").is_empty() {
        return Err(unsupported(
            "Spot and capacity-block instances (InstanceMarketOptions)",
        ));
    }
    if let Some(profile) = r
        .take_prefix("IamInstanceProfile")
        .into_iter()
        .find(|(_, v)| !v.is_empty())
    {
        return Err(Ec2Error::invalid_value(format!(
            "Value ({}) for parameter iamInstanceProfile is invalid. \
             Invalid IAM Instance Profile: this endpoint has no IAM",
            profile.1
        )));
    }
    Ok(())
}

fn combination(message: impl Into<String>) -> Ec2Error {
    Ec2Error::new(ErrorCode::InvalidParameterCombination, message)
}

/// `NetworkInterface.N.*`: one specification, of the primary interface
/// (`DeviceIndex` 0), either an existing interface (`NetworkInterfaceId`,
/// `DeleteOnTermination`) or a new one (`SubnetId`, `SecurityGroupId.M`,
/// `PrivateIpAddress`, `AssociatePublicIpAddress`, `DeleteOnTermination`
/// true), exclusive of the instance-level subnet, groups and address.
/// Secondary interfaces (device index 1 or more) name existing interfaces
/// ([`secondary_interface`]).
fn network_interface(pairs: &[(String, String)], o: &mut LaunchOptions) -> Result<(), Ec2Error> {
    // By N: member name -> value.
    let mut specs: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
    for (k, v) in pairs {
        let rest = k.strip_prefix("NetworkInterface.").unwrap_or("");
        let (n, member) = rest.split_once('.').unwrap_or((rest, ""));
        specs.entry(n).or_default().push((member, v.as_str()));
    }
    let mut primary = None;
    let mut secondaries = Vec::new();
    for (n, members) in &specs {
        let index = members
            .iter()
            .find(|(m, _)| *m == "DeviceIndex")
            .map(|(_, v)| *v)
            .ok_or_else(|| Ec2Error::missing(&format!("NetworkInterface.{n}.DeviceIndex")))?;
        match index.parse::<u32>() {
            Ok(0) if primary.is_none() => primary = Some(members),
            Ok(0) => {
                return Err(Ec2Error::invalid_value(
                    "Each network interface requires a unique device index.",
                ))
            }
            Ok(i) => secondaries.push(secondary_interface(n, i, members)?),
            Err(_) => {
                return Err(Ec2Error::invalid_value(format!(
                    "Value ({index}) for parameter deviceIndex is invalid."
                )))
            }
        }
    }
    let Some(members) = primary else {
        if !secondaries.is_empty() {
            return Err(Ec2Error::invalid_value(
                "The network interfaces of a launch must include the primary one (DeviceIndex 0).",
            ));
        }
        return Err(Ec2Error::missing("NetworkInterface.N.DeviceIndex"));
    };
    if o.vpc.is_some() {
        return Err(combination(
            "Network interfaces and an instance-level subnet, security groups or private IP address may not be specified on the same request",
        ));
    }
    let get = |name: &str| {
        members
            .iter()
            .find(|(m, _)| *m == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let flag = |name: &str| -> Result<Option<bool>, Ec2Error> {
        match get(name).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter {name} is invalid. Expected a boolean."
            ))),
        }
    };
    let mut groups = Vec::new();
    for (m, v) in members.iter() {
        match m.split_once('.') {
            Some(("SecurityGroupId", _)) => groups.push(crate::ids::SecurityGroupId::parse(v)?),
            _ if matches!(
                *m,
                "DeviceIndex"
                    | "NetworkInterfaceId"
                    | "SubnetId"
                    | "PrivateIpAddress"
                    | "AssociatePublicIpAddress"
                    | "DeleteOnTermination"
                    | "Description"
            ) => {}
            _ => return Err(unsupported(&format!("The network interface parameter {m}"))),
        }
    }
    let delete = flag("DeleteOnTermination")?;
    let associate = flag("AssociatePublicIpAddress")?;
    let mut vpc = crate::domain::vpc::InstanceVpc::default();
    match get("NetworkInterfaceId") {
        Some(eni) => {
            if get("SubnetId").is_some()
                || !groups.is_empty()
                || get("PrivateIpAddress").is_some()
                || associate.is_some()
                || get("Description").is_some()
            {
                return Err(combination(
                    "A network interface ID cannot be combined with a subnet, security groups, private IP address, public IP address or description for that interface",
                ));
            }
            vpc.network_interface_id = Some(crate::ids::NetworkInterfaceId::parse(&eni)?);
            vpc.interface_delete_on_termination = delete.unwrap_or(false);
        }
        None => {
            if delete == Some(false) {
                return Err(Ec2Error::invalid_value(
                    "A network interface created at launch is deleted on termination (DeleteOnTermination=false is not supported)",
                ));
            }
            if get("Description").is_some() {
                return Err(unsupported(
                    "A description of a network interface created at launch",
                ));
            }
            vpc.subnet_id = get("SubnetId")
                .map(|s| crate::ids::SubnetId::parse(&s))
                .transpose()?;
            vpc.security_group_ids = groups;
            vpc.private_ip_address = get("PrivateIpAddress");
            vpc.associate_public_ip = associate;
        }
    }
    secondaries.sort_by_key(|s| s.device_index);
    if secondaries
        .windows(2)
        .any(|w| w[0].device_index == w[1].device_index)
    {
        return Err(Ec2Error::invalid_value(
            "Each network interface requires a unique device index.",
        ));
    }
    vpc.launch_secondaries = secondaries;
    o.vpc = Some(Box::new(vpc));
    Ok(())
}

/// `NetworkInterface.N` at device index `index` >= 1
/// ([`crate::domain::vpc::eni_secondary`]): an existing interface
/// (`NetworkInterfaceId`, `DeleteOnTermination`, default false) attached at
/// launch, or a new one (`SubnetId`, `SecurityGroupId.M`,
/// `PrivateIpAddress`, `DeleteOnTermination`, default true) created with
/// the instance.
fn secondary_interface(
    n: &str,
    index: u32,
    members: &[(&str, &str)],
) -> Result<crate::domain::vpc::eni_secondary::LaunchSecondary, Ec2Error> {
    let get = |name: &str| {
        members
            .iter()
            .find(|(m, _)| *m == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let delete = match get("DeleteOnTermination").as_deref() {
        None => None,
        Some("false") => Some(false),
        Some("true") => Some(true),
        Some(v) => {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter DeleteOnTermination is invalid. Expected a boolean."
            )))
        }
    };
    let mut spec = crate::domain::vpc::eni_secondary::LaunchSecondary {
        device_index: index,
        interface_id: None,
        subnet_id: None,
        security_group_ids: Vec::new(),
        private_ip_address: None,
        delete_on_termination: delete.unwrap_or(true),
    };
    if let Some(eni) = get("NetworkInterfaceId") {
        if let Some((m, _)) = members.iter().find(|(m, _)| {
            !matches!(
                *m,
                "DeviceIndex" | "NetworkInterfaceId" | "DeleteOnTermination"
            )
        }) {
            return Err(combination(format!(
                "NetworkInterface.{n}: a network interface ID cannot be combined with {m}"
            )));
        }
        spec.interface_id = Some(crate::ids::NetworkInterfaceId::parse(&eni)?);
        spec.delete_on_termination = delete.unwrap_or(false);
        return Ok(spec);
    }
    let Some(subnet) = get("SubnetId") else {
        return Err(Ec2Error::invalid_value(format!(
            "NetworkInterface.{n}: a network interface at device index {index} needs a NetworkInterfaceId or a SubnetId"
        )));
    };
    spec.subnet_id = Some(crate::ids::SubnetId::parse(&subnet)?);
    spec.private_ip_address = get("PrivateIpAddress");
    for (m, v) in members {
        match *m {
            "DeviceIndex" | "SubnetId" | "PrivateIpAddress" | "DeleteOnTermination" => {}
            _ if m.starts_with("SecurityGroupId.") => spec
                .security_group_ids
                .push(crate::ids::SecurityGroupId::parse(v)?),
            "AssociatePublicIpAddress" => {
                return Err(combination(
                    "The associatePublicIPAddress parameter cannot be specified when launching with multiple network interfaces.",
                ))
            }
            _ => return Err(unsupported(&format!("The network interface parameter {m}"))),
        }
    }
    Ok(spec)
}
