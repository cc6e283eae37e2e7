//! Instance actions: RunInstances, DescribeInstances, Start/Stop/Reboot/
//! TerminateInstances, GetConsoleOutput, DescribeInstanceStatus,
//! ModifyInstanceMetadataOptions; and the XML
//! of an instance (`instancesSet` item) as botocore reads it.

use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;

use super::{domain_filters, dry_run_ok, return_true, tag_pairs, time_ms};
use crate::domain::autoscaling::templates::parse_version;
use crate::domain::instances::{root_volume_id, DescribeInput, RunInstancesInput};
use crate::domain::lifecycle::State;
use crate::domain::metadata;
use crate::domain::model::{Instance, MetadataOptions, ROOT_DEVICE_NAME};
use crate::domain::views::{InstanceStatus, Reservation, StateChange};
use crate::domain::{Caller, Domain};
use crate::ec2::error::{Ec2Error, ErrorCode};
use crate::ec2::requests::{
    DescribeInstanceStatus, DescribeInstances, GetConsoleOutput, InstanceIds,
    ModifyInstanceMetadataOptions, RunInstances,
};
use crate::ec2::xml::XmlWriter;
use crate::ids::ImageId;

/// How long GetConsoleOutput waits for a fresh copy from the node.
const CONSOLE_WAIT: Duration = Duration::from_secs(3);

/// RunInstances: one reservation holding every instance launched.
pub async fn run(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: RunInstances,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        let account = caller.account()?;
        if let Some(t) = &r.instance_type {
            d.types.get(t).ok_or_else(|| {
                Ec2Error::invalid_value(format!("the instance type '{t}' does not exist"))
            })?;
        }
        if let Some(z) = &r.availability_zone {
            d.check_zone(z)?;
        }
        let mut image = r.image_id.clone();
        if let Some((what, version)) = &r.launch_template {
            let sel = parse_version(version.as_deref())?;
            let v = d.launch_template_version(&account, what, sel).await?;
            if image.is_empty() {
                image = v.data.image_id.unwrap_or_default();
            }
        }
        if image.is_empty() {
            return Err(Ec2Error::missing("ImageId"));
        }
        d.visible_image(&account, &ImageId::parse(&image)?).await?;
        if let Some(k) = &r.key_name {
            d.keypair_by_name(&account, k).await?;
        }
        metadata::apply_options(MetadataOptions::default(), &r.metadata_options)?;
        return dry_run_ok();
    }
    let input = RunInstancesInput {
        image_id: r.image_id.clone(),
        instance_type: r.instance_type.unwrap_or_default(),
        min_count: r.min_count,
        max_count: r.max_count,
        availability_zone: r.availability_zone,
        tags: tag_pairs(&r.tags),
        user_data: r.user_data.unwrap_or_default(),
        key_name: r.key_name,
        client_token: r.client_token,
        options: r.options,
        metadata_options: r.metadata_options,
    };
    let res = match &r.launch_template {
        None => d.run_instances(caller, input).await?,
        Some((what, version)) => {
            d.run_instances_with_template(caller, what, version.as_deref(), input)
                .await?
        }
    };
    let res = d
        .with_default_subnets(vec![res])
        .await?
        .pop()
        .ok_or_else(|| Ec2Error::new(ErrorCode::InternalError, "no reservation"))?;
    let mut w = XmlWriter::response("RunInstances", rid);
    reservation_body(&mut w, &res);
    Ok(w.finish())
}

/// DescribeInstances with filters and pagination.
pub async fn describe(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeInstances,
) -> Result<String, Ec2Error> {
    let input = DescribeInput {
        instance_ids: r.instance_ids,
        filters: domain_filters(r.filters),
        max_results: r.page.max_results.unwrap_or(0),
        next_token: r.page.next_token,
    };
    let (reservations, next) = d.describe_instances(caller, input).await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let reservations = d.with_default_subnets(reservations).await?;
    let mut w = XmlWriter::response("DescribeInstances", rid);
    w.list("reservationSet", &reservations, reservation_body);
    w.leaf_opt("nextToken", next);
    Ok(w.finish())
}

/// Start/Stop/Reboot/TerminateInstances.
pub async fn change(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    action: &'static str,
    r: InstanceIds,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        // Existence and ownership: the same lookup DescribeInstances does.
        let input = DescribeInput {
            instance_ids: r.instance_ids,
            ..DescribeInput::default()
        };
        d.describe_instances(caller, input).await?;
        return dry_run_ok();
    }
    let ids = &r.instance_ids;
    let changes = match action {
        "StartInstances" => d.start_instances(caller, ids).await?,
        "StopInstances" => d.stop_instances(caller, ids, r.force).await?,
        "TerminateInstances" => d.terminate_instances(caller, ids).await?,
        _ => {
            d.reboot_instances(caller, ids).await?;
            return Ok(return_true("RebootInstances", rid));
        }
    };
    let mut w = XmlWriter::response(action, rid);
    w.list("instancesSet", &changes, |w, c: &StateChange| {
        w.leaf("instanceId", &c.instance_id);
        w.elem("currentState", |w| state(w, c.current));
        w.elem("previousState", |w| state(w, c.previous));
    });
    Ok(w.finish())
}

/// GetConsoleOutput: the console log, base64-encoded.
pub async fn console(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: GetConsoleOutput,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        d.instance(caller, &r.instance_id).await?;
        return dry_run_ok();
    }
    let out = d
        .console_output(caller, &r.instance_id, CONSOLE_WAIT)
        .await?;
    let when = if out.timestamp_ms > 0 {
        time_ms(out.timestamp_ms)
    } else {
        OffsetDateTime::now_utc()
    };
    let mut w = XmlWriter::response("GetConsoleOutput", rid);
    w.leaf("instanceId", &out.instance_id);
    w.time("timestamp", when);
    w.leaf(
        "output",
        base64::engine::general_purpose::STANDARD.encode(&out.output),
    );
    Ok(w.finish())
}

/// DescribeInstanceStatus.
pub async fn status(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeInstanceStatus,
) -> Result<String, Ec2Error> {
    let input = DescribeInput {
        instance_ids: r.instance_ids,
        filters: domain_filters(r.filters),
        max_results: r.page.max_results.unwrap_or(0),
        next_token: r.page.next_token,
    };
    let (statuses, next) = d
        .describe_instance_status(caller, input, r.include_all_instances)
        .await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeInstanceStatus", rid);
    w.list("instanceStatusSet", &statuses, |w, s: &InstanceStatus| {
        w.leaf("instanceId", &s.instance_id);
        w.leaf("availabilityZone", &s.availability_zone);
        w.elem("instanceState", |w| state(w, s.state));
        w.elem("systemStatus", |w| status_summary(w, s.system_status));
        w.elem("instanceStatus", |w| status_summary(w, s.instance_status));
        w.empty("eventsSet");
    });
    w.leaf_opt("nextToken", next);
    Ok(w.finish())
}

fn status_summary(w: &mut XmlWriter, status: &str) {
    w.leaf("status", status);
    w.list("details", [status], |w, s| {
        w.leaf("name", "reachability");
        w.leaf(
            "status",
            match s {
                "ok" => "passed",
                "impaired" => "failed",
                "initializing" => "initializing",
                _ => "insufficient-data",
            },
        );
    });
}

fn state(w: &mut XmlWriter, s: State) {
    w.leaf("code", s.code());
    w.leaf("name", s.name());
}

/// The children of a reservation item (also the body of RunInstances).
fn reservation_body(w: &mut XmlWriter, res: &Reservation) {
    w.leaf("reservationId", &res.reservation_id);
    w.leaf("ownerId", &res.owner);
    w.empty("groupSet");
    w.list("instancesSet", &res.instances, instance);
}

/// One instance as an `instancesSet` item.
pub fn instance(w: &mut XmlWriter, i: &Instance) {
    w.leaf("instanceId", &i.id);
    w.leaf("imageId", &i.image_id);
    w.elem("instanceState", |w| state(w, i.state));
    let ip = i.network.as_ref().map(|n| n.ip.as_str());
    match ip {
        Some(ip) => w.leaf(
            "privateDnsName",
            format!("ip-{}.nubis.internal", ip.replace('.', "-")),
        ),
        None => w.empty("privateDnsName"),
    };
    w.empty("dnsName");
    w.leaf("reason", &i.state_transition_reason);
    w.leaf_opt("keyName", i.key_name.as_ref());
    w.leaf("amiLaunchIndex", i.launch_index);
    w.empty("productCodes");
    w.leaf("instanceType", &i.instance_type);
    w.time("launchTime", time_ms(i.launch_time_ms));
    w.elem("placement", |w| {
        w.leaf("availabilityZone", &i.availability_zone);
        w.empty("groupName");
        w.leaf("tenancy", "default");
    });
    w.elem("monitoring", |w| {
        w.leaf(
            "state",
            if i.options.monitoring {
                "enabled"
            } else {
                "disabled"
            },
        );
    });
    w.leaf_opt("privateIpAddress", ip);
    let vpc = i.vpc.as_ref();
    w.leaf_opt(
        "ipAddress",
        vpc.and_then(|v| v.public_ip.as_ref()).map(|p| &p.public_ip),
    );
    w.leaf_opt("subnetId", vpc.and_then(|v| v.subnet_id.as_ref()));
    w.leaf_opt("vpcId", vpc.and_then(|v| v.vpc_id.as_ref()));
    group_set(w, i);
    if let Some(reason) = &i.state_reason {
        w.elem("stateReason", |w| {
            w.leaf("code", &reason.code);
            w.leaf("message", &reason.message);
        });
    }
    w.leaf("architecture", "x86_64");
    w.leaf("rootDeviceType", "ebs");
    w.leaf("rootDeviceName", ROOT_DEVICE_NAME);
    block_device_mapping(w, i);
    w.leaf("virtualizationType", "hvm");
    w.leaf("hypervisor", "xen");
    w.leaf("ebsOptimized", false);
    w.leaf("enaSupport", false);
    w.leaf("sourceDestCheck", i.options.source_dest_check);
    w.leaf("platformDetails", "Linux/UNIX");
    w.leaf("usageOperation", "RunInstances");
    w.leaf("bootMode", "legacy-bios");
    w.leaf("currentInstanceBootMode", "legacy-bios");
    w.elem("capacityReservationSpecification", |w| {
        w.leaf("capacityReservationPreference", "open");
    });
    w.elem("hibernationOptions", |w| {
        w.leaf("configured", false);
    });
    w.elem("enclaveOptions", |w| {
        w.leaf("enabled", false);
    });
    w.leaf("clientToken", &i.client_token);
    w.list("tagSet", &i.tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
    network_interfaces(w, i);
    w.elem("cpuOptions", |w| {
        w.leaf("coreCount", i.vcpus);
        w.leaf("threadsPerCore", 1);
    });
    metadata_options_body(w, &i.metadata_options, metadata::options_state(i));
}

/// `metadataOptions` / `instanceMetadataOptions`.
fn metadata_options_body(w: &mut XmlWriter, o: &MetadataOptions, state: &str) {
    w.elem("metadataOptions", |w| {
        w.leaf("state", state);
        w.leaf("httpTokens", metadata::http_tokens(o));
        w.leaf("httpPutResponseHopLimit", o.hop_limit);
        w.leaf("httpEndpoint", metadata::enabled(o.endpoint_enabled));
        w.leaf("httpProtocolIpv6", metadata::enabled(o.ipv6_enabled));
        w.leaf("instanceMetadataTags", metadata::enabled(o.tags_enabled));
    });
}

/// ModifyInstanceMetadataOptions.
pub async fn modify_metadata_options(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: ModifyInstanceMetadataOptions,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        let input = DescribeInput {
            instance_ids: vec![r.instance_id],
            ..DescribeInput::default()
        };
        d.describe_instances(caller, input).await?;
        return dry_run_ok();
    }
    let (id, o) = d
        .modify_instance_metadata_options(caller, &r.instance_id, &r.options)
        .await?;
    let mut w = XmlWriter::response("ModifyInstanceMetadataOptions", rid);
    w.leaf("instanceId", id);
    w.elem("instanceMetadataOptions", |w| {
        w.leaf("state", "pending");
        w.leaf("httpTokens", metadata::http_tokens(&o));
        w.leaf("httpPutResponseHopLimit", o.hop_limit);
        w.leaf("httpEndpoint", metadata::enabled(o.endpoint_enabled));
        w.leaf("httpProtocolIpv6", metadata::enabled(o.ipv6_enabled));
        w.leaf("instanceMetadataTags", metadata::enabled(o.tags_enabled));
    });
    Ok(w.finish())
}

/// `blockDeviceMapping`: the root disk, as an EBS volume attached at
/// `/dev/xvda` (`vol-` + the instance's hex) that is deleted with the
/// instance. Its size (RunInstances' `Ebs.VolumeSize`) is not part of
/// EC2's instance mapping; DescribeImages shows the image's.
pub fn block_device_mapping(w: &mut XmlWriter, i: &Instance) {
    w.list("blockDeviceMapping", std::slice::from_ref(i), |w, i| {
        w.leaf("deviceName", ROOT_DEVICE_NAME);
        w.elem("ebs", |w| {
            w.leaf("volumeId", root_volume_id(&i.id));
            w.leaf("status", "attached");
            w.time("attachTime", time_ms(i.launch_time_ms));
            w.bool("deleteOnTermination", true);
        });
    });
}

/// `groupSet`: the instance's security groups (ids).
pub(super) fn group_set(w: &mut XmlWriter, i: &Instance) {
    let groups = i
        .vpc
        .as_ref()
        .map(|v| v.security_group_ids.as_slice())
        .unwrap_or_default();
    w.list("groupSet", groups, |w, g| {
        w.leaf("groupId", g);
    });
}

/// An interface's `association`: its public address (owner `amazon` when
/// auto-assigned, else the Elastic IP's account).
fn public_association(
    w: &mut XmlWriter,
    i: &Instance,
    p: &crate::domain::vpc::public_ips::PublicAddressView,
) {
    w.elem("association", |w| {
        w.leaf("publicIp", &p.public_ip);
        w.empty("publicDnsName");
        match &p.allocation_id {
            Some(_) => w.leaf("ipOwnerId", &i.account),
            None => w.leaf("ipOwnerId", "amazon"),
        };
    });
}

/// `networkInterfaceSet`: the interfaces of an instance in a VPC by device
/// index ([`crate::domain::vpc::eni_secondary::interfaces_of`]): the primary
/// (an interface it was launched with, or the one derived from it:
/// [`crate::domain::vpc::enis`]) and the secondary ones.
fn network_interfaces(w: &mut XmlWriter, i: &Instance) {
    let all = crate::domain::vpc::eni_secondary::interfaces_of(i);
    let vpc_id = i.vpc.as_ref().and_then(|v| v.vpc_id.as_ref());
    let public_ip = i.vpc.as_ref().and_then(|v| v.public_ip.as_ref());
    w.list("networkInterfaceSet", &all, |w, n| {
        let primary = n.device_index == 0;
        w.leaf("networkInterfaceId", &n.interface_id);
        w.leaf_opt("subnetId", n.subnet_id);
        w.leaf_opt("vpcId", vpc_id);
        w.leaf(
            "description",
            if primary && !n.own_primary {
                "Primary network interface"
            } else {
                ""
            },
        );
        w.leaf("ownerId", &i.account);
        w.leaf("status", "in-use");
        w.leaf("macAddress", n.mac);
        w.leaf("privateIpAddress", n.ip);
        if let Some(p) = public_ip.filter(|_| primary) {
            public_association(w, i, p);
        }
        w.bool("sourceDestCheck", !primary || i.options.source_dest_check);
        w.list("groupSet", n.security_group_ids, |w, g| {
            w.leaf("groupId", g);
        });
        w.elem("attachment", |w| {
            w.leaf("attachmentId", &n.attachment_id);
            w.leaf("deviceIndex", n.device_index);
            w.leaf("status", "attached");
            w.bool("deleteOnTermination", n.delete_on_termination);
        });
        w.list("privateIpAddressesSet", [n], |w, n| {
            w.leaf("privateIpAddress", n.ip);
            w.bool("primary", true);
        });
        w.leaf("interfaceType", "interface");
    });
}
