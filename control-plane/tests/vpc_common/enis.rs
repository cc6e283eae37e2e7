//! Shared by the network interface tests: a VPC with a subnet and a
//! group, RunInstances parameters, a launch through the gateway.

#![allow(dead_code, clippy::unwrap_used)]

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
