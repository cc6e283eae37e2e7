//! Shared by the network interface tests: a VPC with a subnet and a
//! group, RunInstances parameters, a launch through the gateway.

#![allow(dead_code, clippy::unwrap_used)]

use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::ids::{AccountId, SubnetId};

use super::{text, Ec2};

/// A VPC 10.0.0.0/16 with a subnet 10.0.1.0/24 in `zone` and a group
/// "web": (vpc, subnet, group).
pub async fn network(e: &Ec2, zone: &str) -> (String, String, String) {
    let vpc = text(
        &e.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let subnet = text(
        &e.ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
                ("AvailabilityZone", zone),
            ],
        )
        .await,
        "subnetId",
    );
    let sg = text(
        &e.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "web"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    (vpc, subnet, sg)
}

pub fn run(image: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&str, String)> = vec![
        ("ImageId", image.to_string()),
        ("InstanceType", "t3.nano".into()),
        ("MinCount", "1".into()),
        ("MaxCount", "1".into()),
    ];
    p.extend(extra.iter().cloned());
    p
}

pub async fn launch(e: &Ec2, p: &[(&'static str, String)]) -> Result<String, String> {
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    e.call("RunInstances", &p)
        .await
        .map(|x| text(&x, "instanceId"))
        .map_err(|x| x.code.as_str().to_string())
}

/// The `networkInterfaceSet` of a DescribeInstances answer.
pub fn interfaces_of(xml: &str) -> String {
    text(xml, "networkInterfaceSet")
}

pub fn with_eni(eni: &str, delete: bool) -> Vec<(&'static str, String)> {
    vec![
        ("NetworkInterface.1.DeviceIndex", "0".into()),
        ("NetworkInterface.1.NetworkInterfaceId", eni.into()),
        ("NetworkInterface.1.DeleteOnTermination", delete.to_string()),
    ]
}

/// The caller of `e`'s account.
pub fn caller(e: &Ec2) -> Caller {
    Caller::Tenant(AccountId::parse(&e.account).unwrap())
}

/// (key, mod_revision) of every record an attachment may write.
pub async fn snapshot(d: &Domain) -> Vec<(String, i64)> {
    let keys = d.store().keys();
    let all_vpcs = keys.all_vpcs();
    let root = all_vpcs.trim_end_matches("vpcs/");
    let mut out = Vec::new();
    for p in [
        "network-interfaces/",
        "ipam/addrs/",
        "security-groups/",
        "vpc-subnets/",
        "vpcs/",
        "instances/",
    ] {
        let (kvs, _) = d.store().list_raw(&format!("{root}{p}")).await.unwrap();
        out.extend(kvs.into_iter().map(|(k, _, r)| (k, r)));
    }
    out
}

pub async fn claims(d: &Domain, subnet: &str) -> Vec<String> {
    d.address_claims(&SubnetId::parse(subnet).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.ip)
        .collect()
}

pub async fn subnet(e: &Ec2, vpc: &str, cidr: &str, zone: &str) -> String {
    text(
        &e.ok(
            "CreateSubnet",
            &[
                ("VpcId", vpc),
                ("CidrBlock", cidr),
                ("AvailabilityZone", zone),
            ],
        )
        .await,
        "subnetId",
    )
}

pub async fn eni(e: &Ec2, subnet: &str, extra: &[(&str, &str)]) -> String {
    let mut p = vec![("SubnetId", subnet)];
    p.extend_from_slice(extra);
    text(
        &e.ok("CreateNetworkInterface", &p).await,
        "networkInterfaceId",
    )
}

/// The spec the node is given for `inst` (its assignment, as sent).
pub async fn assigned_spec(
    d: &Domain,
    inst: &nubis_control_plane::domain::model::Instance,
) -> nubis_proto::node::v1::InstanceSpec {
    let asg = d
        .store()
        .assignments()
        .get(inst.node_id.as_ref().unwrap(), &inst.id)
        .await
        .unwrap()
        .unwrap()
        .value;
    nubis_control_plane::api::node::assignment_out(&asg)
        .spec
        .unwrap()
}
