//! Elastic IPs and instances' public addresses through the EC2 gateway's
//! parser and backend against a real etcd: allocation from the configured
//! pool (limit, exhaustion, racing replicas), release, association with
//! instances (gateway and route checks, reassociation, the auto-assigned
//! address of MapPublicIpOnLaunch), release on terminate, the data plane
//! hook (`instance_public_ips`), every refusal's EC2 code with nothing
//! written, and tenant isolation.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::Caller;
use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::ids::{AccountId, VpcId};
use support::*;
use vpc_common::{text, texts, Ec2};

fn in_pool(ip: &str, prefix: &str) -> bool {
    ip.parse::<Ipv4Addr>().is_ok() && ip.starts_with(prefix)
}

async fn claims(cp: &nubis_control_plane::server::Replica) -> usize {
    let d = &cp.domain;
    usize::try_from(
        d.store()
            .count(&d.store().keys().public_ips())
            .await
            .unwrap(),
    )
    .unwrap()
}

/// DescribeInstances of `id` once it shows a public address (10 s at most).
async fn public_ip_of(e: &Ec2, id: &str) -> String {
    for _ in 0..100 {
        let d = e.ok("DescribeInstances", &[("InstanceId.1", id)]).await;
        if !text(&d, "ipAddress").is_empty() {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{id} got no public address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_and_release_follow_the_limit_and_the_pool() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    // No pool: nothing to hand out.
    let cp0 = start(config(&etcd)).await;
    let z = Ec2::new(&cp0.domain, "z").await;
    z.fails(
        "AllocateAddress",
        &[("Domain", "vpc")],
        "InsufficientAddressCapacity",
    )
    .await;
    drop(cp0);

    let mut cfg = config(&etcd);
    // 6 usable addresses (.1 to .6).
    cfg.vpc.public_pool = Some("198.51.100.0/29".into());
    cfg.vpc.elastic_ips_per_account = 4;
    let cp = start(cfg).await;
    let a = Ec2::new(&cp.domain, "a").await;
    let b = Ec2::new(&cp.domain, "b").await;
    let mut ips = BTreeSet::new();
    let mut a_ids = Vec::new();
    for i in 0..4 {
        let params: &[(&str, &str)] = if i == 0 {
            &[
                ("Domain", "vpc"),
                ("TagSpecification.1.ResourceType", "elastic-ip"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "first"),
            ]
        } else {
            &[]
        };
        let r = a.ok("AllocateAddress", params).await;
        assert_eq!(text(&r, "domain"), "vpc");
        assert!(text(&r, "allocationId").starts_with("eipalloc-"), "{r}");
        let ip = text(&r, "publicIp");
        assert!(in_pool(&ip, "198.51.100."), "{ip}");
        assert!(!ip.ends_with(".0") && !ip.ends_with(".7"), "{ip}");
        assert!(ips.insert(ip), "an address handed out twice");
        a_ids.push(text(&r, "allocationId"));
    }
    a.fails("AllocateAddress", &[], "AddressLimitExceeded")
        .await;
    for (params, code) in [
        (vec![("Domain", "standard")], "InvalidParameterValue"),
        (vec![("Address", "198.51.100.5")], "Unsupported"),
        (vec![("PublicIpv4Pool", "amazon")], "Unsupported"),
    ] {
        b.fails("AllocateAddress", &params, code).await;
    }
    // B takes the last two; the pool is then exhausted.
    for _ in 0..2 {
        let ip = text(&b.ok("AllocateAddress", &[]).await, "publicIp");
        assert!(ips.insert(ip), "an address handed out twice");
    }
    b.fails("AllocateAddress", &[], "InsufficientAddressCapacity")
        .await;
    assert_eq!(claims(&cp).await, 6);
    assert_eq!(
        texts(&a.ok("DescribeAddresses", &[]).await, "allocationId").len(),
        4,
        "refused allocations wrote nothing"
    );
    assert_eq!(
        texts(&b.ok("DescribeAddresses", &[]).await, "allocationId").len(),
        2
    );

    // Describe by id, address and filters.
    let first = a
        .ok("DescribeAddresses", &[("AllocationId.1", &a_ids[0])])
        .await;
    let first_ip = text(&first, "publicIp");
    assert_eq!(text(&first, "domain"), "vpc");
    assert!(
        first.contains("<key>Name</key><value>first</value>"),
        "{first}"
    );
    let by_ip = a
        .ok("DescribeAddresses", &[("PublicIp.1", &first_ip)])
        .await;
    assert_eq!(
        texts(&by_ip, "allocationId"),
        std::slice::from_ref(&a_ids[0])
    );
    let tagged = a
        .ok(
            "DescribeAddresses",
            &[("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "first")],
        )
        .await;
    assert_eq!(
        texts(&tagged, "allocationId"),
        std::slice::from_ref(&a_ids[0])
    );
    let f = a
        .ok(
            "DescribeAddresses",
            &[
                ("Filter.1.Name", "public-ip"),
                ("Filter.1.Value.1", &first_ip),
            ],
        )
        .await;
    assert_eq!(texts(&f, "allocationId"), std::slice::from_ref(&a_ids[0]));
    for (params, code) in [
        (
            vec![("AllocationId.1", "eipalloc-0123456789abcdef0")],
            "InvalidAllocationID.NotFound",
        ),
        (
            vec![("AllocationId.1", "eipalloc-xyz")],
            "InvalidAllocationID.Malformed",
        ),
        (
            vec![("PublicIp.1", "203.0.113.9")],
            "InvalidAddress.NotFound",
        ),
        (
            vec![("Filter.1.Name", "no-such"), ("Filter.1.Value.1", "x")],
            "InvalidParameterValue",
        ),
    ] {
        a.fails("DescribeAddresses", &params, code).await;
    }

    // Tenant isolation: B neither sees nor releases A's.
    b.fails(
        "DescribeAddresses",
        &[("AllocationId.1", &a_ids[0])],
        "InvalidAllocationID.NotFound",
    )
    .await;
    b.fails(
        "DescribeAddresses",
        &[("PublicIp.1", &first_ip)],
        "InvalidAddress.NotFound",
    )
    .await;
    b.fails(
        "ReleaseAddress",
        &[("AllocationId", &a_ids[0])],
        "InvalidAllocationID.NotFound",
    )
    .await;
    b.fails(
        "ReleaseAddress",
        &[("PublicIp", &first_ip)],
        "InvalidAddress.NotFound",
    )
    .await;
    a.fails("ReleaseAddress", &[], "MissingParameter").await;
    a.fails(
        "ReleaseAddress",
        &[("AllocationId", &a_ids[0]), ("PublicIp", &first_ip)],
        "InvalidParameterCombination",
    )
    .await;
    assert_eq!(claims(&cp).await, 6, "refused releases wrote nothing");

    // Release (by id and by address): the addresses go back to the pool and
    // under the limit.
    a.ok("ReleaseAddress", &[("AllocationId", &a_ids[0])]).await;
    let second_ip = text(
        &a.ok("DescribeAddresses", &[("AllocationId.1", &a_ids[1])])
            .await,
        "publicIp",
    );
    a.ok("ReleaseAddress", &[("PublicIp", &second_ip)]).await;
    assert_eq!(claims(&cp).await, 4);
    a.fails(
        "ReleaseAddress",
        &[("AllocationId", &a_ids[0])],
        "InvalidAllocationID.NotFound",
    )
    .await;
    let again = b.ok("AllocateAddress", &[]).await;
    assert!(in_pool(&text(&again, "publicIp"), "198.51.100."));
    a.ok("AllocateAddress", &[]).await;
    b.fails("AllocateAddress", &[], "InsufficientAddressCapacity")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_allocations_on_two_replicas_never_share_an_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    // 14 usable addresses for 16 racing allocations.
    cfg.vpc.public_pool = Some("203.0.113.0/28".into());
    let one = start(cfg.clone()).await;
    let two = start(cfg).await;
    let mut callers = Vec::new();
    for n in 0..8 {
        let a = Ec2::new(&one.domain, &format!("t{n}")).await;
        let on_two = Ec2 {
            backend: DomainBackend::new(two.domain.clone()),
            account: a.account.clone(),
        };
        callers.push(a);
        callers.push(on_two);
    }
    let results =
        futures::future::join_all(callers.iter().map(|c| c.call("AllocateAddress", &[]))).await;
    let mut ips = BTreeSet::new();
    let mut refused = 0;
    for r in &results {
        match r {
            Ok(x) => {
                let ip = text(x, "publicIp");
                assert!(in_pool(&ip, "203.0.113."), "{ip}");
                assert!(ips.insert(ip.clone()), "{ip} handed out twice: {results:?}");
            }
            Err(e) => {
                assert_eq!(e.code.as_str(), "InsufficientAddressCapacity", "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((ips.len(), refused), (14, 2), "{results:?}");
    assert_eq!(claims(&one).await, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_follow_instances_through_association_and_termination() {
    use nubis_control_plane::sim::{SimAgent, SimOptions};
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/24".into());
    let cp = start(cfg).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let caller = Caller::Tenant(AccountId::parse(&a.account).unwrap());
    let run = |extra: &[(&'static str, String)]| {
        let mut p: Vec<(&'static str, String)> = vec![
            ("ImageId", image.clone()),
            ("InstanceType", "t3.nano".into()),
            ("MinCount", "1".into()),
            ("MaxCount", "1".into()),
            ("Placement.AvailabilityZone", ZONES[0].into()),
        ];
        p.extend(extra.iter().cloned());
        p
    };
    let launch = |e: &'static str, p: Vec<(&'static str, String)>| {
        let who = if e == "a" { &a } else { &b };
        async move {
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            text(&who.ok("RunInstances", &refs).await, "instanceId")
        }
    };

    // The default subnets map public addresses on launch (assigned in the
    // background, as EC2 does while the instance is pending).
    let i1 = launch("a", run(&[])).await;
    let desc = public_ip_of(&a, &i1).await;
    let auto_ip = text(&desc, "ipAddress");
    assert!(in_pool(&auto_ip, "198.51.100."), "{desc}");
    assert!(
        desc.contains(&format!(
            "<association><publicIp>{auto_ip}</publicIp><publicDnsName/><ipOwnerId>amazon</ipOwnerId></association>"
        )),
        "{desc}"
    );
    let default_vpc = VpcId::parse(&text(&desc, "vpcId")).unwrap();
    let acc = AccountId::parse(&a.account).unwrap();
    let hook = d.instance_public_ips(&acc, &default_vpc).await.unwrap();
    assert_eq!(hook.len(), 1);
    assert_eq!(hook.values().next().unwrap().to_string(), auto_ip);
    assert_eq!(claims(&cp).await, 1);

    // A VPC whose subnet does not map addresses, without a gateway.
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let subnet = text(
        &a.ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.0.0/24"),
                ("AvailabilityZone", ZONES[0]),
            ],
        )
        .await,
        "subnetId",
    );
    let i2 = launch("a", run(&[("SubnetId", subnet.clone())])).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let desc2 = a.ok("DescribeInstances", &[("InstanceId.1", &i2)]).await;
    assert!(texts(&desc2, "ipAddress").is_empty(), "{desc2}");
    let i3 = launch("a", run(&[])).await;
    let bi = launch("b", run(&[])).await;
    public_ip_of(&a, &i3).await;
    public_ip_of(&b, &bi).await;

    let e1 = a.ok("AllocateAddress", &[]).await;
    let (alloc1, ip1) = (text(&e1, "allocationId"), text(&e1, "publicIp"));
    let alloc2 = text(&a.ok("AllocateAddress", &[]).await, "allocationId");
    let b_alloc = text(&b.ok("AllocateAddress", &[]).await, "allocationId");
    let claims_before = claims(&cp).await;

    // Refusals, each writing nothing.
    let igw = text(
        &a.ok("CreateInternetGateway", &[]).await,
        "internetGatewayId",
    );
    for (who, params, code) in [
        (
            &a,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", i2.as_str()),
            ],
            "Gateway.NotAttached",
        ),
        (
            &a,
            vec![("AllocationId", alloc1.as_str())],
            "MissingParameter",
        ),
        (&a, vec![("InstanceId", i1.as_str())], "MissingParameter"),
        (
            &a,
            vec![
                ("AllocationId", "eipalloc-0123456789abcdef0"),
                ("InstanceId", i1.as_str()),
            ],
            "InvalidAllocationID.NotFound",
        ),
        (
            &a,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", "i-0123456789abcdef0"),
            ],
            "InvalidInstanceID.NotFound",
        ),
        (
            &a,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", bi.as_str()),
            ],
            "InvalidInstanceID.NotFound",
        ),
        (
            &a,
            vec![
                ("AllocationId", b_alloc.as_str()),
                ("InstanceId", i1.as_str()),
            ],
            "InvalidAllocationID.NotFound",
        ),
        (
            &b,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", bi.as_str()),
            ],
            "InvalidAllocationID.NotFound",
        ),
        (
            &b,
            vec![
                ("AllocationId", b_alloc.as_str()),
                ("InstanceId", i1.as_str()),
            ],
            "InvalidInstanceID.NotFound",
        ),
        (
            &a,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", i1.as_str()),
                ("PrivateIpAddress", "10.9.9.9"),
            ],
            "InvalidParameterValue",
        ),
        (
            &a,
            vec![
                ("AllocationId", alloc1.as_str()),
                ("InstanceId", i1.as_str()),
                ("NetworkInterfaceId", "eni-0123456789abcdef0"),
            ],
            "InvalidParameterCombination",
        ),
    ] {
        who.fails("AssociateAddress", &params, code).await;
    }
    // A gateway attached, but the subnet has no route to it.
    a.ok(
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    a.fails(
        "AssociateAddress",
        &[("AllocationId", &alloc1), ("InstanceId", &i2)],
        "Gateway.NotAttached",
    )
    .await;
    let described = a.ok("DescribeAddresses", &[]).await;
    assert!(texts(&described, "associationId").is_empty(), "{described}");
    assert_eq!(claims(&cp).await, claims_before);

    // Associate with i1: the EIP replaces its auto-assigned address.
    let r = a
        .ok(
            "AssociateAddress",
            &[("AllocationId", &alloc1), ("InstanceId", &i1)],
        )
        .await;
    let assoc1 = text(&r, "associationId");
    assert!(assoc1.starts_with("eipassoc-"), "{r}");
    assert_eq!(
        claims(&cp).await,
        claims_before - 1,
        "the auto address went back"
    );
    let again = a
        .ok(
            "AssociateAddress",
            &[("AllocationId", &alloc1), ("InstanceId", &i1)],
        )
        .await;
    assert_eq!(text(&again, "associationId"), assoc1, "idempotent");
    let desc = a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await;
    assert_eq!(text(&desc, "ipAddress"), ip1);
    assert!(
        desc.contains(&format!("<ipOwnerId>{}</ipOwnerId>", a.account)),
        "{desc}"
    );
    let addr = a
        .ok("DescribeAddresses", &[("AllocationId.1", &alloc1)])
        .await;
    assert_eq!(text(&addr, "instanceId"), i1);
    assert_eq!(text(&addr, "associationId"), assoc1);
    assert_eq!(
        text(&addr, "networkInterfaceId"),
        format!("eni-{}", &i1[2..])
    );
    assert_eq!(
        text(&addr, "privateIpAddress"),
        text(&desc, "privateIpAddress")
    );
    let f = a
        .ok(
            "DescribeAddresses",
            &[("Filter.1.Name", "instance-id"), ("Filter.1.Value.1", &i1)],
        )
        .await;
    assert_eq!(texts(&f, "allocationId"), std::slice::from_ref(&alloc1));
    let hook = d.instance_public_ips(&acc, &default_vpc).await.unwrap();
    assert_eq!(
        hook.get(&nubis_control_plane::ids::InstanceId::parse(&i1).unwrap())
            .map(|ip| ip.to_string()),
        Some(ip1.clone())
    );

    // In use: no release, no detach of the VPC's gateway.
    a.fails(
        "ReleaseAddress",
        &[("AllocationId", &alloc1)],
        "InvalidIPAddress.InUse",
    )
    .await;
    let default_igw = text(
        &a.ok(
            "DescribeInternetGateways",
            &[
                ("Filter.1.Name", "attachment.vpc-id"),
                ("Filter.1.Value.1", default_vpc.as_str()),
            ],
        )
        .await,
        "internetGatewayId",
    );
    a.fails(
        "DetachInternetGateway",
        &[
            ("InternetGatewayId", &default_igw),
            ("VpcId", default_vpc.as_str()),
        ],
        "DependencyViolation",
    )
    .await;

    // Moving to i3 needs AllowReassociation.
    a.fails(
        "AssociateAddress",
        &[("AllocationId", &alloc1), ("InstanceId", &i3)],
        "Resource.AlreadyAssociated",
    )
    .await;
    let moved = a
        .ok(
            "AssociateAddress",
            &[
                ("AllocationId", &alloc1),
                ("NetworkInterfaceId", &format!("eni-{}", &i3[2..])),
                ("AllowReassociation", "true"),
            ],
        )
        .await;
    let assoc3 = text(&moved, "associationId");
    assert_ne!(assoc3, assoc1);
    // i1 lost it, and its subnet maps public addresses: a new
    // auto-assigned one (as EC2).
    let d1 = a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await;
    let i1_auto = text(&d1, "ipAddress");
    assert!(in_pool(&i1_auto, "198.51.100.") && i1_auto != ip1, "{d1}");
    assert!(d1.contains("<ipOwnerId>amazon</ipOwnerId>"), "{d1}");
    // A second EIP on i3 replaces the first, which is left unassociated.
    a.ok(
        "AssociateAddress",
        &[("AllocationId", &alloc2), ("InstanceId", &i3)],
    )
    .await;
    let first = a
        .ok("DescribeAddresses", &[("AllocationId.1", &alloc1)])
        .await;
    assert!(texts(&first, "associationId").is_empty(), "{first}");
    a.fails(
        "DisassociateAddress",
        &[("AssociationId", &assoc3)],
        "InvalidAssociationID.NotFound",
    )
    .await;
    // B cannot disassociate A's.
    let assoc_i3 = text(
        &a.ok("DescribeAddresses", &[("AllocationId.1", &alloc2)])
            .await,
        "associationId",
    );
    b.fails(
        "DisassociateAddress",
        &[("AssociationId", &assoc_i3)],
        "InvalidAssociationID.NotFound",
    )
    .await;
    a.ok("DisassociateAddress", &[("AssociationId", &assoc_i3)])
        .await;
    let d3 = a.ok("DescribeInstances", &[("InstanceId.1", &i3)]).await;
    let i3_auto = text(&d3, "ipAddress");
    assert!(in_pool(&i3_auto, "198.51.100."), "a new auto address: {d3}");

    // Terminating an instance removes its association (EIP) and releases
    // its auto-assigned address.
    a.ok(
        "AssociateAddress",
        &[("AllocationId", &alloc1), ("InstanceId", &i1)],
    )
    .await;
    let before = claims(&cp).await;
    a.ok(
        "TerminateInstances",
        &[("InstanceId.1", &i1), ("InstanceId.2", &i3)],
    )
    .await;
    b.ok("TerminateInstances", &[("InstanceId.1", &bi)]).await;
    wait_domain_state(&d, &caller, &i1, State::Terminated).await;
    wait_domain_state(&d, &caller, &i3, State::Terminated).await;
    let bcaller = Caller::Tenant(AccountId::parse(&b.account).unwrap());
    wait_domain_state(&d, &bcaller, &bi, State::Terminated).await;
    let left = a
        .ok("DescribeAddresses", &[("AllocationId.1", &alloc1)])
        .await;
    assert!(texts(&left, "instanceId").is_empty(), "{left}");
    assert_eq!(
        claims(&cp).await,
        before - 2,
        "i3's and B's auto addresses went back"
    );
    assert!(d
        .instance_public_ips(&acc, &default_vpc)
        .await
        .unwrap()
        .is_empty());
    a.fails(
        "AssociateAddress",
        &[("AllocationId", &alloc1), ("InstanceId", &i1)],
        "IncorrectInstanceState",
    )
    .await;
    // Now the default VPC's gateway can be detached; released addresses
    // go back to the pool.
    a.ok(
        "DetachInternetGateway",
        &[
            ("InternetGatewayId", &default_igw),
            ("VpcId", default_vpc.as_str()),
        ],
    )
    .await;
    for id in [&alloc1, &alloc2] {
        a.ok("ReleaseAddress", &[("AllocationId", id)]).await;
    }
    assert_eq!(claims(&cp).await, 1, "only B's EIP is left");
}
