//! Over the gateway: the root volume size (refused below the image's,
//! recorded, sent to the node, shown), image sharing, CopyImage, image
//! attributes and filters with tenant isolation, and ModifyInstanceAttribute
//! `groupSet`.

use super::{cloud, texts, Cloud, V};
use crate::ids::{AccountId, InstanceId};

/// The account id of `who` (from a DescribeSecurityGroups answer).
async fn account_of(c: &Cloud, who: &(String, String)) -> String {
    let (s, xml) = c
        .call_as(who, &format!("Action=DescribeSecurityGroups&{V}"))
        .await;
    assert_eq!(s, 200, "{xml}");
    texts(&xml, "ownerId").remove(0)
}

/// RegisterImage of `hello` as `who`, with `extra` parameters; its id.
async fn register(c: &Cloud, who: &(String, String), name: &str, extra: &str) -> String {
    let (s, xml) = c
        .call_as(
            who,
            &format!("Action=RegisterImage&{V}&Name={name}&ImageLocation=hello{extra}"),
        )
        .await;
    assert_eq!(s, 200, "{xml}");
    texts(&xml, "imageId").remove(0)
}

/// CreateSecurityGroup as account A in `vpc`; its id.
async fn create_group(c: &Cloud, name: &str, vpc: &str) -> String {
    let body = format!(
        "Action=CreateSecurityGroup&{V}&GroupName={name}&GroupDescription=test&VpcId={vpc}"
    );
    texts(&c.ok(&body).await, "groupId").remove(0)
}

async fn instance_ids(c: &Cloud, who: &(String, String)) -> Vec<String> {
    let (s, xml) = c
        .call_as(who, &format!("Action=DescribeInstances&{V}"))
        .await;
    assert_eq!(s, 200, "{xml}");
    texts(&xml, "instanceId")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_volume_size_is_checked_recorded_sent_and_shown() {
    let Some(c) = cloud().await else { return };
    let bdm = "&BlockDeviceMapping.1.DeviceName=/dev/xvda&BlockDeviceMapping.1.Ebs.VolumeSize";
    let ami = register(
        &c,
        &c.a,
        "sized",
        &format!("{bdm}=4&RootDeviceName=/dev/xvda"),
    )
    .await;
    let xml = c
        .ok(&format!("Action=DescribeImages&{V}&ImageId.1={ami}"))
        .await;
    assert_eq!(texts(&xml, "volumeSize"), ["4"]);
    assert_eq!(texts(&xml, "rootDeviceType"), ["ebs"]);
    let snap = format!("snap-{}", &ami["ami-".len()..]);
    assert_eq!(texts(&xml, "snapshotId"), std::slice::from_ref(&snap));
    let run = |extra: &str| {
        format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1{extra}"
        )
    };

    // Smaller than the image: refused as EC2 refuses it, nothing written.
    let (s, xml) = c.call_as(&c.a, &run(&format!("{bdm}=2"))).await;
    assert_eq!(s, 400);
    assert_eq!(texts(&xml, "Code"), ["InvalidBlockDeviceMapping"]);
    assert!(
        xml.contains(&format!(
            "Volume of size 2GB is smaller than snapshot '{snap}', expect size &gt;= 4GB"
        )),
        "{xml}"
    );
    assert!(instance_ids(&c, &c.a).await.is_empty());
    // Out of EC2's range, and other devices: refused at the edge.
    for (extra, code) in [
        (format!("{bdm}=0"), "InvalidParameterValue"),
        (format!("{bdm}=16385"), "InvalidParameterValue"),
        (
            "&BlockDeviceMapping.1.DeviceName=/dev/sdb&BlockDeviceMapping.1.Ebs.VolumeSize=8"
                .to_string(),
            "InvalidBlockDeviceMapping",
        ),
    ] {
        assert_eq!(c.err(&run(&extra)).await.1, code, "{extra}");
    }
    assert!(instance_ids(&c, &c.a).await.is_empty());

    // Larger: launched, recorded, in the node's assignment, shown.
    let xml = c.ok(&run(&format!("{bdm}=8"))).await;
    let id = texts(&xml, "instanceId").remove(0);
    let owner = AccountId::parse(&texts(&xml, "ownerId").remove(0)).unwrap();
    let d = &c.replica.as_ref().unwrap().domain;
    let iid = InstanceId::parse(&id).unwrap();
    let inst = d
        .store
        .instances()
        .get(&owner, &iid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inst.value.options.root_volume_gib, Some(8));
    let node = inst.value.node_id.clone().unwrap();
    let a = d
        .store
        .assignments()
        .get(&node, &iid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.value.root_volume_gib, 8);
    let pb = crate::api::node::assignment_out(&a.value);
    assert_eq!(pb.spec.unwrap().root_volume_gib, 8);
    let vol = format!("vol-{}", &id["i-".len()..]);
    let xml = c
        .ok(&format!("Action=DescribeInstances&{V}&InstanceId.1={id}"))
        .await;
    assert_eq!(texts(&xml, "rootDeviceType"), ["ebs"]);
    assert_eq!(texts(&xml, "volumeId"), std::slice::from_ref(&vol));
    assert!(xml.contains("<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName>"));
    let xml = c
        .ok(&format!(
            "Action=DescribeInstanceAttribute&{V}&InstanceId={id}&Attribute=blockDeviceMapping"
        ))
        .await;
    assert_eq!(texts(&xml, "volumeId"), std::slice::from_ref(&vol));
    assert_eq!(texts(&xml, "deleteOnTermination"), ["true"]);
    let xml = c
        .ok(&format!(
            "Action=DescribeInstances&{V}&Filter.1.Name=block-device-mapping.volume-id&Filter.1.Value.1={vol}"
        ))
        .await;
    assert_eq!(texts(&xml, "instanceId"), std::slice::from_ref(&id));

    // An image of unknown size takes any size; without one, none is sent.
    let hello = texts(
        &c.ok(&format!(
            "Action=DescribeImages&{V}&Owner.1=amazon&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await,
        "imageId",
    )
    .remove(0);
    let xml = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={hello}&InstanceType=t3.nano&MinCount=1&MaxCount=1"
        ))
        .await;
    let plain = InstanceId::parse(&texts(&xml, "instanceId")[0]).unwrap();
    let inst = d
        .store
        .instances()
        .get(&owner, &plain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inst.value.options.root_volume_gib, None);
    let node = inst.value.node_id.clone().unwrap();
    let a = d
        .store
        .assignments()
        .get(&node, &plain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.value.root_volume_gib, 0);
    c.ok(&format!(
        "Action=RunInstances&{V}&ImageId={hello}&InstanceType=t3.nano&MinCount=1&MaxCount=1{bdm}=1"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_shared_copied_and_isolated() {
    let Some(c) = cloud().await else { return };
    let b_id = account_of(&c, &c.b).await;
    let a_id = account_of(&c, &c.a).await;
    let ami = register(
        &c,
        &c.a,
        "private-a",
        "&Description=mine&TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=team&TagSpecification.1.Tag.1.Value=a",
    )
    .await;
    let run = |ami: &str| {
        format!("Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1")
    };
    let modify = |q: &str| format!("Action=ModifyImageAttribute&{V}&ImageId={ami}{q}");
    let attr = |a: &str| format!("Action=DescribeImageAttribute&{V}&ImageId={ami}&Attribute={a}");
    let copy = |name: &str, extra: &str| {
        format!(
            "Action=CopyImage&{V}&SourceRegion={}&SourceImageId={ami}&Name={name}{extra}",
            c.region
        )
    };
    let describe = |q: &str| format!("Action=DescribeImages&{V}{q}");

    // B can neither see, launch, copy, modify, read nor tag A's private image.
    let isolated = [
        describe(&format!("&ImageId.1={ami}")),
        run(&ami),
        copy("stolen", ""),
        modify(&format!("&LaunchPermission.Add.1.UserId={b_id}")),
        modify("&Description.Value=x"),
        attr("launchPermission"),
        format!("Action=CreateTags&{V}&ResourceId.1={ami}&Tag.1.Key=k&Tag.1.Value=v"),
        format!("Action=DeregisterImage&{V}&ImageId={ami}"),
    ];
    for call in &isolated {
        assert_eq!(
            c.err_as(&c.b, call).await.1,
            "InvalidAMIID.NotFound",
            "{call}"
        );
    }
    let (_, xml) = c.call_as(&c.b, &describe("")).await;
    assert!(!xml.contains(&ami), "{xml}");
    assert!(instance_ids(&c, &c.b).await.is_empty());

    // Bad input, each answered with EC2's code and nothing changed.
    for (q, code) in [
        (
            "&LaunchPermission.Add.1.UserId=abc".to_string(),
            "InvalidUserID.Malformed",
        ),
        (
            "&LaunchPermission.Add.1.Group=everyone".into(),
            "InvalidParameterValue",
        ),
        (format!("&UserId.1={b_id}"), "MissingParameter"),
        (
            format!("&OperationType=swap&UserId.1={b_id}"),
            "InvalidParameterValue",
        ),
        (
            "&LaunchPermission.Add.1.Group=all".into(),
            "UnauthorizedOperation",
        ),
        (
            "&Attribute=kernel&Value=aki-1".into(),
            "InvalidParameterValue",
        ),
        (
            format!("&Description.Value={}", "d".repeat(256)),
            "InvalidParameterValue",
        ),
        ("&ProductCode.1=abc".into(), "Unsupported"),
        (
            format!("&Description.Value=x&LaunchPermission.Add.1.UserId={b_id}"),
            "InvalidParameterCombination",
        ),
        ("".into(), "MissingParameter"),
    ] {
        assert_eq!(c.err(&modify(&q)).await.1, code, "{q}");
    }
    for (call, code) in [
        (attr("nope"), "InvalidParameterValue"),
        (
            format!("Action=CopyImage&{V}&SourceRegion=elsewhere-1&SourceImageId={ami}&Name=copy"),
            "InvalidParameterValue",
        ),
        (copy("copy", "&Encrypted=true"), "Unsupported"),
        (copy("x", ""), "InvalidParameterValue"),
        (copy("private-a", ""), "InvalidAMIName.Duplicate"),
        (describe("&Owner.1=nobody"), "InvalidParameterValue"),
        (
            describe("&Filter.1.Name=kernel-id&Filter.1.Value.1=x"),
            "InvalidParameterValue",
        ),
        (describe("&ImageId.1=ami-nope"), "InvalidAMIID.Malformed"),
    ] {
        assert_eq!(c.err(&call).await.1, code, "{call}");
    }
    // DryRun: checked as far as possible, nothing changed.
    for (who, call, code) in [
        (&c.a, copy("dry-copy", "&DryRun=true"), "DryRunOperation"),
        (
            &c.b,
            copy("dry-copy", "&DryRun=true"),
            "InvalidAMIID.NotFound",
        ),
        (
            &c.a,
            modify("&Description.Value=dry&DryRun=true"),
            "DryRunOperation",
        ),
        (
            &c.a,
            modify("&LaunchPermission.Add.1.Group=all&DryRun=true"),
            "UnauthorizedOperation",
        ),
        (
            &c.a,
            format!("{}&DryRun=true", attr("description")),
            "DryRunOperation",
        ),
    ] {
        assert_eq!(c.err_as(who, &call).await.1, code, "{call}");
    }
    let xml = c.ok(&attr("launchPermission")).await;
    assert!(xml.contains("<launchPermission/>"), "{xml}");
    assert_eq!(texts(&c.ok(&attr("description")).await, "value"), ["mine"]);
    assert_eq!(
        texts(&c.ok(&attr("blockDeviceMapping")).await, "deviceName"),
        ["/dev/xvda"]
    );
    assert_eq!(
        texts(&c.ok(&attr("bootMode")).await, "value"),
        ["legacy-bios"]
    );

    // Shared with B (both forms): B sees, launches and copies it.
    c.ok(&modify(&format!("&LaunchPermission.Add.1.UserId={b_id}")))
        .await;
    c.ok(&modify(&format!(
        "&Attribute=launchPermission&OperationType=add&UserId.1={b_id}"
    )))
    .await;
    assert_eq!(
        texts(&c.ok(&attr("launchPermission")).await, "userId"),
        std::slice::from_ref(&b_id)
    );
    c.ok(&modify("&Description.Value=shared")).await;
    assert_eq!(
        texts(&c.ok(&attr("description")).await, "value"),
        ["shared"]
    );
    let (s, xml) = c
        .call_as(&c.b, &describe(&format!("&ImageId.1={ami}")))
        .await;
    assert_eq!(s, 200, "{xml}");
    assert_eq!(texts(&xml, "imageOwnerId"), std::slice::from_ref(&a_id));
    assert!(xml.contains("<tagSet/>"), "A's tags are A's: {xml}");
    let (_, xml) = c.call_as(&c.b, &describe("&ExecutableBy.1=self")).await;
    assert_eq!(texts(&xml, "imageId"), std::slice::from_ref(&ami));
    let (_, xml) = c.call_as(&c.b, &describe("&Owner.1=self")).await;
    assert!(!xml.contains(&ami), "{xml}");
    let (_, xml) = c
        .call_as(&c.a, &describe(&format!("&ExecutableBy.1={b_id}")))
        .await;
    assert_eq!(texts(&xml, "imageId"), std::slice::from_ref(&ami));
    let (s, xml) = c.call_as(&c.b, &run(&ami)).await;
    assert_eq!(s, 200, "{xml}");
    // ...but may not change it or read its attributes.
    for call in [modify("&Description.Value=b"), attr("launchPermission")] {
        assert_eq!(
            c.err_as(&c.b, &call).await.1,
            "UnauthorizedOperation",
            "{call}"
        );
    }
    let tok = "&ClientToken=copy-1";
    let (s, xml) = c.call_as(&c.b, &copy("b-copy", tok)).await;
    assert_eq!(s, 200, "{xml}");
    let b_copy = texts(&xml, "imageId").remove(0);
    assert_ne!(b_copy, ami);
    let (_, again) = c.call_as(&c.b, &copy("b-copy", tok)).await;
    assert_eq!(
        texts(&again, "imageId"),
        std::slice::from_ref(&b_copy),
        "ClientToken replay"
    );
    assert_eq!(
        c.err_as(&c.b, &copy("b-other", tok)).await.1,
        "IdempotentParameterMismatch"
    );
    let (_, xml) = c.call_as(&c.b, &describe("&Owner.1=self")).await;
    assert_eq!(texts(&xml, "imageId"), std::slice::from_ref(&b_copy));
    assert_eq!(texts(&xml, "description"), ["shared"]);
    assert_eq!(texts(&xml, "isPublic"), ["false"]);

    // Unshared: B loses it again; its copy stays its own.
    c.ok(&modify(&format!(
        "&LaunchPermission.Remove.1.UserId={b_id}"
    )))
    .await;
    for call in &isolated[..3] {
        assert_eq!(
            c.err_as(&c.b, call).await.1,
            "InvalidAMIID.NotFound",
            "{call}"
        );
    }
    let (s, _) = c.call_as(&c.b, &run(&b_copy)).await;
    assert_eq!(s, 200);
    assert_eq!(c.err(&run(&b_copy)).await.1, "InvalidAMIID.NotFound");

    // The operator makes images public (Group=all) and private again.
    let admin = (
        "NBADMIN0001".to_string(),
        "admin-secret-0123456789".to_string(),
    );
    let (s, xml) = c
        .call_as(&admin, &modify("&LaunchPermission.Add.1.Group=all"))
        .await;
    assert_eq!(s, 200, "{xml}");
    let (s, xml) = c
        .call_as(&c.b, &describe(&format!("&ImageId.1={ami}")))
        .await;
    assert_eq!(
        (s, texts(&xml, "isPublic")),
        (200, vec!["true".to_string()])
    );
    let (_, xml) = c
        .call_as(
            &c.b,
            &describe("&ExecutableBy.1=all&Filter.1.Name=name&Filter.1.Value.1=private-*"),
        )
        .await;
    assert_eq!(texts(&xml, "imageId"), std::slice::from_ref(&ami));
    let (s, _) = c
        .call_as(&admin, &modify("&LaunchPermission.Remove.1.Group=all"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        c.err_as(&c.b, &describe(&format!("&ImageId.1={ami}")))
            .await
            .1,
        "InvalidAMIID.NotFound"
    );

    // Owners and filters.
    let names = |xml: &str| {
        let mut n = texts(xml, "name");
        n.sort();
        n
    };
    assert_eq!(names(&c.ok(&describe("&Owner.1=amazon")).await), ["hello"]);
    let xml = c.ok(&describe("&Owner.1=amazon")).await;
    assert_eq!(texts(&xml, "imageOwnerAlias"), ["amazon"]);
    assert_eq!(
        names(&c.ok(&describe("&Owner.1=self")).await),
        ["private-a"]
    );
    assert_eq!(
        names(
            &c.ok(&describe(&format!("&Owner.1={a_id}&Owner.2=amazon")))
                .await
        ),
        ["hello", "private-a"]
    );
    for (f, want) in [
        ("owner-alias&Filter.1.Value.1=amazon", vec!["hello"]),
        ("is-public&Filter.1.Value.1=false", vec!["private-a"]),
        ("description&Filter.1.Value.1=sha*", vec!["private-a"]),
        ("tag:team&Filter.1.Value.1=a", vec!["private-a"]),
        ("tag-key&Filter.1.Value.1=team", vec!["private-a"]),
        ("tag-value&Filter.1.Value.1=a", vec!["private-a"]),
        (
            "root-device-type&Filter.1.Value.1=ebs",
            vec!["hello", "private-a"],
        ),
        (
            "root-device-name&Filter.1.Value.1=/dev/xvda",
            vec!["hello", "private-a"],
        ),
        (
            "image-type&Filter.1.Value.1=machine",
            vec!["hello", "private-a"],
        ),
        ("virtualization-type&Filter.1.Value.1=paravirtual", vec![]),
        (
            "hypervisor&Filter.1.Value.1=xen",
            vec!["hello", "private-a"],
        ),
        ("architecture&Filter.1.Value.1=arm64", vec![]),
        (
            "state&Filter.1.Value.1=available",
            vec!["hello", "private-a"],
        ),
        ("owner-id&Filter.1.Value.1=000000000000", vec!["hello"]),
        ("name&Filter.1.Value.1=priv*", vec!["private-a"]),
        (
            &format!("image-id&Filter.1.Value.1={ami}"),
            vec!["private-a"],
        ),
    ] {
        let xml = c.ok(&describe(&format!("&Filter.1.Name={f}"))).await;
        assert_eq!(names(&xml), want, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_set_is_changed_within_the_instance_vpc() {
    let Some(c) = cloud().await else { return };
    let xml = c
        .ok(&format!(
            "Action=DescribeImages&{V}&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await;
    let ami = texts(&xml, "imageId").remove(0);
    let xml = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1"
        ))
        .await;
    let id = texts(&xml, "instanceId").remove(0);
    let vpc = texts(&xml, "vpcId").remove(0);
    let before = texts(&texts(&xml, "groupSet").remove(0), "groupId");
    let web = create_group(&c, "web", &vpc).await;
    let db = create_group(&c, "db", &vpc).await;
    let other_vpc = texts(
        &c.ok(&format!("Action=CreateVpc&{V}&CidrBlock=10.77.0.0/16"))
            .await,
        "vpcId",
    )
    .remove(0);
    let elsewhere = create_group(&c, "elsewhere", &other_vpc).await;
    let (s, xml) = c
        .call_as(&c.b, &format!("Action=DescribeSecurityGroups&{V}"))
        .await;
    assert_eq!(s, 200, "{xml}");
    let b_group = texts(&xml, "groupId").remove(0);

    let modify = |q: &str| format!("Action=ModifyInstanceAttribute&{V}&InstanceId={id}&{q}");
    let shown = |xml: &str| texts(&texts(xml, "groupSet").remove(0), "groupId");
    let attr = format!("Action=DescribeInstanceAttribute&{V}&InstanceId={id}&Attribute=groupSet");
    assert_eq!(shown(&c.ok(&attr).await), before);

    // Bad groups: nothing changes.
    for (q, code) in [
        (format!("GroupId.1={b_group}"), "InvalidGroup.NotFound"),
        (
            "GroupId.1=sg-0123456789abcdef0".to_string(),
            "InvalidGroup.NotFound",
        ),
        (
            format!("GroupId.1={web}&GroupId.2={elsewhere}"),
            "InvalidParameterValue",
        ),
        ("GroupId.1=web".to_string(), "InvalidGroupId.Malformed"),
        (
            (1..=6)
                .map(|n| format!("GroupId.{n}={web}"))
                .collect::<Vec<_>>()
                .join("&"),
            "SecurityGroupsPerInstanceLimitExceeded",
        ),
    ] {
        assert_eq!(c.err(&modify(&q)).await.1, code, "{q}");
    }
    assert_eq!(shown(&c.ok(&attr).await), before);
    // B may not touch A's instance, even with its own group.
    assert_eq!(
        c.err_as(&c.b, &modify(&format!("GroupId.1={b_group}")))
            .await
            .1,
        "InvalidInstanceID.NotFound"
    );

    // Both forms replace the set; DescribeInstances shows it.
    c.ok(&modify(&format!("GroupId.1={web}&GroupId.2={db}")))
        .await;
    let mut want = vec![web.clone(), db.clone()];
    want.sort();
    assert_eq!(shown(&c.ok(&attr).await), want);
    let xml = c
        .ok(&format!("Action=DescribeInstances&{V}&InstanceId.1={id}"))
        .await;
    let inst = texts(&xml, "instancesSet").remove(0);
    assert_eq!(shown(&inst), want);
    c.ok(&modify(&format!("Attribute=groupSet&Value={db}")))
        .await;
    assert_eq!(shown(&c.ok(&attr).await), std::slice::from_ref(&db));
    let xml = c
        .ok(&format!(
            "Action=DescribeInstances&{V}&Filter.1.Name=instance.group-id&Filter.1.Value.1={db}"
        ))
        .await;
    assert_eq!(texts(&xml, "instanceId"), std::slice::from_ref(&id));
    // A group in use by the instance cannot be deleted.
    assert_eq!(
        c.err(&format!("Action=DeleteSecurityGroup&{V}&GroupId={db}"))
            .await
            .1,
        "DependencyViolation"
    );
}
