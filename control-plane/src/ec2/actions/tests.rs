//! The gateway over the real domain layer: a real etcd, a control-plane
//! replica, simulated node agents (crate::sim), and signed EC2 requests
//! through the whole pipeline. (aws-cli/boto3 against real agents: tests/ec2.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nubis_testsupport::Etcd;
use time::OffsetDateTime;

use crate::config::Config;
use crate::domain::images::RegisterImageInput;
use crate::domain::Caller;
use crate::ec2::tests::signed_as;
use crate::ec2::{handle, Gateway, GatewayConfig};
use crate::server::Replica;
use crate::sim::{SimAgent, SimOptions};

struct Cloud {
    gw: Gateway,
    replica: Option<Replica>,
    sims: Vec<SimAgent>,
    region: String,
    a: (String, String),
    b: (String, String),
    _etcd: Etcd,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        for s in &mut self.sims {
            s.kill();
        }
        if let Some(r) = self.replica.take() {
            r.abort();
        }
    }
}

async fn cloud() -> Option<Cloud> {
    let etcd = Etcd::start()?;
    let cfg = Config::from_toml(&format!(
        r#"
[etcd]
endpoints = ["{}"]
[grpc]
listen = "127.0.0.1:0"
[instance_types]
seed = "compact"
[auth]
admin_access_key_id = "NBADMIN0001"
admin_secret_access_key = "admin-secret-0123456789"
enrolment_tokens = [{{ id = "nbenrol0001", secret = "enrol-secret-0123456789" }}]
"#,
        etcd.endpoint
    ))
    .unwrap();
    let region = cfg.region.clone();
    let zones = cfg.zones.clone();
    // Etcd::start returns once etcd has a leader: the replica starts at once.
    let replica = Replica::start(cfg).await.expect("control plane starts");
    let d = replica.domain.clone();
    let (_, ka, sa) = d.create_account(&Caller::Operator, "ec2-a").await.unwrap();
    let (_, kb, sb) = d.create_account(&Caller::Operator, "ec2-b").await.unwrap();
    d.register_image(
        &Caller::Operator,
        RegisterImageInput {
            name: "hello".into(),
            description: "test guest".into(),
            image_location: "hello".into(),
            public: true,
            ..RegisterImageInput::default()
        },
    )
    .await
    .unwrap();
    let endpoint = format!("http://{}", replica.grpc_addr.unwrap());
    let mut sims = Vec::new();
    for (i, z) in zones.iter().take(2).enumerate() {
        let enrol = nubis_proto::auth::Credentials::new("nbenrol0001", "enrol-secret-0123456789");
        let opts = SimOptions::new(&format!("nbsim-{i}"), z, 8, 2048);
        sims.push(SimAgent::start(&endpoint, enrol, opts).await.unwrap());
    }
    let gw = crate::ec2::tests::gateway_over(
        Arc::new(crate::ec2::DomainBackend::new(d)),
        GatewayConfig::default(),
    );
    Some(Cloud {
        gw,
        replica: Some(replica),
        sims,
        region,
        a: (ka, sa),
        b: (kb, sb),
        _etcd: etcd,
    })
}

impl Cloud {
    async fn call_as(&self, who: &(String, String), body: &str) -> (u16, String) {
        let req = signed_as(
            &who.0,
            &who.1,
            &self.region,
            body,
            OffsetDateTime::now_utc(),
        );
        let r = handle(&self.gw, req, OffsetDateTime::now_utc()).await;
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Calls as account A; panics unless 200.
    async fn ok(&self, body: &str) -> String {
        let (s, xml) = self.call_as(&self.a, body).await;
        assert_eq!(s, 200, "{body} -> {xml}");
        xml
    }

    /// Calls as `who`; returns (status, error code).
    async fn err_as(&self, who: &(String, String), body: &str) -> (u16, String) {
        let (s, xml) = self.call_as(who, body).await;
        assert_ne!(s, 200, "{body} -> {xml}");
        let code = texts(&xml, "Code").into_iter().next().unwrap_or_default();
        (s, code)
    }

    async fn err(&self, body: &str) -> (u16, String) {
        self.err_as(&self.a, body).await
    }

    /// An Auto Scaling request (scope service `autoscaling`) as `who`.
    async fn asg_as(&self, who: &(String, String), body: &str) -> (u16, String) {
        let t = OffsetDateTime::now_utc();
        let req =
            crate::ec2::tests::signed_for(&who.0, &who.1, &self.region, "autoscaling", body, t);
        let r = handle(&self.gw, req, t).await;
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }
}

/// Every text of `<tag>..</tag>` in document order.
fn texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].to_owned());
        rest = &rest[j..];
    }
    out
}

fn states(xml: &str) -> Vec<String> {
    texts(xml, "instanceState")
        .iter()
        .flat_map(|s| texts(s, "name"))
        .collect()
}

const V: &str = "Version=2016-11-15";

async fn wait_state(c: &Cloud, ids: &[String], want: &str) {
    let q: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("&InstanceId.{}={id}", i + 1))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let xml = c.ok(&format!("Action=DescribeInstances&{V}{q}")).await;
        let s = states(&xml);
        if s.len() == ids.len() && s.iter().all(|x| x == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instances never reached {want}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_over_the_domain() {
    let Some(c) = cloud().await else { return };
    let zone = "nubis-local-1b";
    let ud = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n");
    let ud: String = form_urlencoded::byte_serialize(ud.as_bytes()).collect();
    let hello = texts(
        &c.ok(&format!(
            "Action=DescribeImages&{V}&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await,
        "imageId",
    );
    assert_eq!(hello.len(), 1);
    let ami = &hello[0];

    // RunInstances: one reservation, tags, user data, zone, idempotent token.
    let run = format!(
        "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.micro&MinCount=2&MaxCount=2&\
         Placement.AvailabilityZone={zone}&UserData={ud}&TagSpecification.1.ResourceType=instance&\
         TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=web&ClientToken=tok-1"
    );
    let xml = c.ok(&run).await;
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"));
    assert_eq!(texts(&xml, "reservationId").len(), 1);
    let ids = texts(&xml, "instanceId");
    assert_eq!(ids.len(), 2, "{xml}");
    assert!(states(&xml).iter().all(|s| s == "pending"));
    assert_eq!(texts(&xml, "availabilityZone"), [zone, zone]);
    assert_eq!(c.ok(&run).await.matches("<instanceId>").count(), 2);
    assert_eq!(
        texts(&c.ok(&run).await, "instanceId"),
        ids,
        "ClientToken replay"
    );

    wait_state(&c, &ids, "running").await;

    // Filters and pagination.
    let more = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=4&MaxCount=4"
        ))
        .await;
    let more_ids = texts(&more, "instanceId");
    let xml = c
        .ok(&format!(
            "Action=DescribeInstances&{V}&Filter.1.Name=tag:Name&Filter.1.Value.1=web"
        ))
        .await;
    let mut got = texts(&xml, "instanceId");
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let xml = c
        .ok(&format!(
            "Action=DescribeInstances&{V}&Filter.1.Name=instance-type&Filter.1.Value.1=t3.nano&\
             Filter.2.Name=availability-zone&Filter.2.Value.1=nubis-local-1a&Filter.2.Value.2=nubis-local-1b"
        ))
        .await;
    assert_eq!(texts(&xml, "instanceId").len(), 4);
    let page1 = c
        .ok(&format!("Action=DescribeInstances&{V}&MaxResults=5"))
        .await;
    let token = texts(&page1, "nextToken");
    assert_eq!(token.len(), 1, "{page1}");
    let page2 = c
        .ok(&format!(
            "Action=DescribeInstances&{V}&MaxResults=5&NextToken={}",
            form_urlencoded::byte_serialize(token[0].as_bytes()).collect::<String>()
        ))
        .await;
    assert!(texts(&page2, "nextToken").is_empty());
    let n = texts(&page1, "instanceId").len() + texts(&page2, "instanceId").len();
    assert_eq!(n, 6);
    assert!(page2.contains("<reservationSet>"));
    let none = c
        .ok(&format!("Action=DescribeInstances&{V}&Filter.1.Name=instance-state-name&Filter.1.Value.1=stopped"))
        .await;
    assert!(none.contains("<reservationSet/>"), "{none}");

    // Console output (base64).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let xml = c
            .ok(&format!(
                "Action=GetConsoleOutput&{V}&InstanceId={}",
                ids[0]
            ))
            .await;
        let out = texts(&xml, "output").pop().unwrap_or_default();
        let text = base64::engine::general_purpose::STANDARD
            .decode(out)
            .unwrap();
        if String::from_utf8_lossy(&text).contains(&format!("NUBIS-GUEST-READY {}", ids[0])) {
            break;
        }
        assert!(Instant::now() < deadline, "no ready line: {xml}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let st = c
        .ok(&format!(
            "Action=DescribeInstanceStatus&{V}&InstanceId.1={}",
            ids[0]
        ))
        .await;
    assert_eq!(texts(&st, "instanceId"), [ids[0].clone()]);

    // Tenant isolation.
    let (s, code) = c
        .err_as(
            &c.b,
            &format!("Action=DescribeInstances&{V}&InstanceId.1={}", ids[0]),
        )
        .await;
    assert_eq!((s, code.as_str()), (400, "InvalidInstanceID.NotFound"));
    let (_, code) = c
        .err_as(
            &c.b,
            &format!("Action=TerminateInstances&{V}&InstanceId.1={}", ids[0]),
        )
        .await;
    assert_eq!(code, "InvalidInstanceID.NotFound");
    let b_view = c
        .call_as(&c.b, &format!("Action=DescribeInstances&{V}"))
        .await;
    assert!(b_view.1.contains("<reservationSet/>"), "{}", b_view.1);

    // DryRun.
    let (s, code) = c
        .err(&format!(
            "Action=StopInstances&{V}&InstanceId.1={}&DryRun=true",
            ids[0]
        ))
        .await;
    assert_eq!((s, code.as_str()), (412, "DryRunOperation"));
    let (_, code) = c
        .err(&format!("Action=RunInstances&{V}&ImageId=ami-00000000000000000&MinCount=1&MaxCount=1&InstanceType=t3.micro&DryRun=true"))
        .await;
    assert_eq!(code, "InvalidAMIID.NotFound");

    // Stop / start / reboot / terminate.
    let xml = c
        .ok(&format!("Action=StopInstances&{V}&InstanceId.1={}", ids[0]))
        .await;
    assert_eq!(texts(&texts(&xml, "previousState")[0], "name"), ["running"]);
    wait_state(&c, &ids[..1], "stopped").await;
    let (_, code) = c
        .err(&format!(
            "Action=RebootInstances&{V}&InstanceId.1={}",
            ids[0]
        ))
        .await;
    assert_eq!(code, "IncorrectInstanceState");
    c.ok(&format!(
        "Action=StartInstances&{V}&InstanceId.1={}",
        ids[0]
    ))
    .await;
    wait_state(&c, &ids[..1], "running").await;
    let xml = c
        .ok(&format!(
            "Action=RebootInstances&{V}&InstanceId.1={}",
            ids[1]
        ))
        .await;
    assert_eq!(texts(&xml, "return"), ["true"]);
    let all: Vec<String> = ids.iter().chain(&more_ids).cloned().collect();
    let q: String = all
        .iter()
        .enumerate()
        .map(|(i, id)| format!("&InstanceId.{}={id}", i + 1))
        .collect();
    let xml = c.ok(&format!("Action=TerminateInstances&{V}{q}")).await;
    assert_eq!(texts(&xml, "currentState").len(), 6);
    wait_state(&c, &all, "terminated").await;

    // Errors the domain decides.
    let (s, code) = c
        .err(&format!("Action=RunInstances&{V}&ImageId=ami-00000000000000000&MinCount=1&MaxCount=1&InstanceType=t3.micro"))
        .await;
    assert_eq!((s, code.as_str()), (400, "InvalidAMIID.NotFound"));
    let (s, code) = c
        .err(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&MinCount=1&MaxCount=1&InstanceType=m5.xlarge"
        ))
        .await;
    assert_eq!((s, code.as_str()), (500, "InsufficientInstanceCapacity"));
    let (s, code) = c
        .err(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&MinCount=1&MaxCount=501&InstanceType=t3.nano"
        ))
        .await;
    assert_eq!((s, code.as_str()), (400, "InstanceLimitExceeded"));
    let (_, code) = c
        .err(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&MinCount=1&MaxCount=1&InstanceType=x9.huge"
        ))
        .await;
    assert_eq!(code, "InvalidParameterValue");
    let (s, code) = c
        .err(&format!("Action=DeregisterImage&{V}&ImageId={ami}"))
        .await;
    assert_eq!((s, code.as_str()), (403, "UnauthorizedOperation"));
    let (_, code) = c
        .err(&format!(
            "Action=DescribeInstances&{V}&InstanceId.1=i-00000000000000000"
        ))
        .await;
    assert_eq!(code, "InvalidInstanceID.NotFound");

    // Key pairs.
    let xml = c.ok(&format!("Action=CreateKeyPair&{V}&KeyName=k1")).await;
    assert!(texts(&xml, "keyMaterial")[0].contains("PRIVATE KEY"));
    let (_, code) = c.err(&format!("Action=CreateKeyPair&{V}&KeyName=k1")).await;
    assert_eq!(code, "InvalidKeyPair.Duplicate");
    let xml = c.ok(&format!("Action=DescribeKeyPairs&{V}")).await;
    assert_eq!(texts(&xml, "keyName"), ["k1"]);
    let (_, code) = c
        .err(&format!("Action=DescribeKeyPairs&{V}&KeyName.1=nope"))
        .await;
    assert_eq!(code, "InvalidKeyPair.NotFound");
    c.ok(&format!("Action=DeleteKeyPair&{V}&KeyName=k1")).await;
    assert!(c
        .ok(&format!("Action=DescribeKeyPairs&{V}"))
        .await
        .contains("<keySet/>"));

    // Tags on an image of one's own.
    let xml = c
        .ok(&format!(
            "Action=RegisterImage&{V}&Name=mine&ImageLocation=hello"
        ))
        .await;
    let mine = texts(&xml, "imageId").pop().unwrap();
    // Owner=amazon names the platform's (operator-registered) images only;
    // Owner=self only the caller's.
    let xml = c
        .ok(&format!("Action=DescribeImages&{V}&Owner.1=amazon"))
        .await;
    let platform = texts(&xml, "imageId");
    assert!(!platform.is_empty() && !platform.contains(&mine), "{xml}");
    let xml = c
        .ok(&format!("Action=DescribeImages&{V}&Owner.1=self"))
        .await;
    assert_eq!(texts(&xml, "imageId"), std::slice::from_ref(&mine));
    c.ok(&format!(
        "Action=CreateTags&{V}&ResourceId.1={mine}&Tag.1.Key=team&Tag.1.Value=x"
    ))
    .await;
    let xml = c
        .ok(&format!(
            "Action=DescribeTags&{V}&Filter.1.Name=resource-id&Filter.1.Value.1={mine}"
        ))
        .await;
    assert_eq!(texts(&xml, "key"), ["team"]);
    assert_eq!(texts(&xml, "resourceType"), ["image"]);
    c.ok(&format!(
        "Action=DeleteTags&{V}&ResourceId.1={mine}&Tag.1.Key=team"
    ))
    .await;
    let xml = c
        .ok(&format!(
            "Action=DescribeTags&{V}&Filter.1.Name=resource-id&Filter.1.Value.1={mine}"
        ))
        .await;
    assert!(xml.contains("<tagSet/>"), "{xml}");
    c.ok(&format!("Action=DeregisterImage&{V}&ImageId={mine}"))
        .await;

    // Region-level reads.
    let xml = c.ok(&format!("Action=DescribeAvailabilityZones&{V}")).await;
    assert_eq!(texts(&xml, "zoneName").len(), 3);
    assert!(xml.contains("<zoneState>available</zoneState>"));
    let xml = c.ok(&format!("Action=DescribeRegions&{V}")).await;
    assert_eq!(texts(&xml, "regionName"), std::slice::from_ref(&c.region));
    let xml = c
        .ok(&format!(
            "Action=DescribeInstanceTypes&{V}&InstanceType.1=t3.micro"
        ))
        .await;
    assert_eq!(texts(&xml, "sizeInMiB"), ["128"]);
    assert!(xml.contains("<supportedArchitectures><item>x86_64</item></supportedArchitectures>"));
    // Paging: MaxResults=5 hands out a nextToken that continues the list.
    let xml = c
        .ok(&format!("Action=DescribeInstanceTypes&{V}&MaxResults=5"))
        .await;
    let first = texts(&xml, "instanceType");
    let tok = texts(&xml, "nextToken");
    assert_eq!((first.len(), tok.len()), (5, 1), "{xml}");
    let xml = c
        .ok(&format!(
            "Action=DescribeInstanceTypes&{V}&MaxResults=5&NextToken={}",
            tok[0]
        ))
        .await;
    let second = texts(&xml, "instanceType");
    assert!(
        !second.is_empty() && second.iter().all(|t| !first.contains(t)),
        "{xml}"
    );

    // The operator key works on the EC2 API as account 000000000000.
    let op = (
        "NBADMIN0001".to_owned(),
        "admin-secret-0123456789".to_owned(),
    );
    let (s, _) = c.call_as(&op, &format!("Action=DescribeImages&{V}")).await;
    assert_eq!(s, 200);
    // A wrong secret.
    let (s, code) = c
        .err_as(
            &(c.a.0.clone(), "wrong".into()),
            &format!("Action=DescribeRegions&{V}"),
        )
        .await;
    assert_eq!((s, code.as_str()), (403, "SignatureDoesNotMatch"));
}

/// A report from the instance's node that its guest powered itself off
/// (what the agent sends when the VMM exits on a guest poweroff).
async fn guest_poweroff(c: &Cloud, owner: &str, id: &str) {
    use crate::domain::lifecycle::{Event, Phase};
    use crate::domain::model::Observed;
    let d = &c.replica.as_ref().unwrap().domain;
    let account = crate::ids::AccountId::parse(owner).unwrap();
    let iid = crate::ids::InstanceId::parse(id).unwrap();
    let inst = d
        .store
        .instances()
        .get(&account, &iid)
        .await
        .unwrap()
        .unwrap();
    let key = d.store.instances().key(&account, &iid);
    let observed = Observed {
        phase: Phase::Stopped,
        generation: inst.value.generation,
        since_ms: crate::domain::model::now_ms(),
        ready_ms: 0,
        reason: None,
    };
    let event = Event::Observed {
        phase: Phase::Stopped,
        reason: None,
    };
    d.apply_event(&key, &event, false, Some(observed))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_options_attributes_and_protection() {
    let Some(c) = cloud().await else { return };
    let ami = texts(
        &c.ok(&format!(
            "Action=DescribeImages&{V}&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await,
        "imageId",
    )
    .remove(0);

    // RunInstances with the flags Nubis honours.
    let xml = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1&\
             DisableApiTermination=true&DisableApiStop=true&Monitoring.Enabled=true&\
             InstanceInitiatedShutdownBehavior=terminate&EbsOptimized=false&\
             Placement.Tenancy=default&BlockDeviceMapping.1.DeviceName=%2Fdev%2Fxvda&\
             BlockDeviceMapping.1.Ebs.VolumeSize=2&BlockDeviceMapping.1.Ebs.DeleteOnTermination=true"
        ))
        .await;
    let id = texts(&xml, "instanceId").remove(0);
    let owner = texts(&xml, "ownerId").remove(0);
    assert_eq!(texts(&xml, "monitoring"), ["<state>enabled</state>"]);
    assert_eq!(texts(&xml, "rootDeviceName"), ["/dev/xvda"]);
    wait_state(&c, std::slice::from_ref(&id), "running").await;

    // DescribeInstances filters on what Nubis has.
    let year = time::OffsetDateTime::now_utc().year();
    for (f, want) in [
        (format!("owner-id&Filter.1.Value.1={owner}"), 1),
        ("owner-id&Filter.1.Value.1=000000000000".to_owned(), 0),
        (format!("launch-time&Filter.1.Value.1={year}-*"), 1),
        ("monitoring-state&Filter.1.Value.1=enabled".to_owned(), 1),
        ("monitoring-state&Filter.1.Value.1=disabled".to_owned(), 0),
        ("root-device-name&Filter.1.Value.1=/dev/xvda".to_owned(), 1),
        ("instance-lifecycle&Filter.1.Value.1=spot".to_owned(), 0),
        ("ip-address&Filter.1.Value.1=*".to_owned(), 0),
    ] {
        let xml = c
            .ok(&format!(
                "Action=DescribeInstances&{V}&InstanceId.1={id}&Filter.1.Name={f}"
            ))
            .await;
        assert_eq!(texts(&xml, "instanceId").len(), want, "{f}");
    }
    // Account B: the owner filter does not reveal A's instances.
    let (_, xml) = c
        .call_as(
            &c.b,
            &format!(
                "Action=DescribeInstances&{V}&Filter.1.Name=owner-id&Filter.1.Value.1={owner}"
            ),
        )
        .await;
    assert_eq!(texts(&xml, "instanceId").len(), 0, "{xml}");

    // Protection: both refused, also forced.
    for call in [
        format!("Action=TerminateInstances&{V}&InstanceId.1={id}"),
        format!("Action=StopInstances&{V}&InstanceId.1={id}"),
        format!("Action=StopInstances&{V}&InstanceId.1={id}&Force=true"),
    ] {
        assert_eq!(c.err(&call).await.1, "OperationNotPermitted", "{call}");
    }
    let attr =
        |a: &str| format!("Action=DescribeInstanceAttribute&{V}&InstanceId={id}&Attribute={a}");
    for (a, want) in [
        ("disableApiTermination", "true"),
        ("disableApiStop", "true"),
        ("instanceInitiatedShutdownBehavior", "terminate"),
        ("instanceType", "t3.nano"),
        ("rootDeviceName", "/dev/xvda"),
        ("sourceDestCheck", "true"),
    ] {
        assert_eq!(texts(&c.ok(&attr(a)).await, "value"), [want], "{a}");
    }

    // Tenant isolation: account B sees no such instance.
    for call in [
        attr("instanceType"),
        format!("Action=ModifyInstanceAttribute&{V}&InstanceId={id}&DisableApiStop.Value=false"),
        format!("Action=ModifyInstanceAttribute&{V}&InstanceId={id}&EbsOptimized.Value=false"),
    ] {
        assert_eq!(
            c.err_as(&c.b, &call).await.1,
            "InvalidInstanceID.NotFound",
            "{call}"
        );
    }
    // Bad input.
    let modify = |q: &str| format!("Action=ModifyInstanceAttribute&{V}&InstanceId={id}&{q}");
    for (q, code) in [
        ("InstanceType.Value=t3.small", "IncorrectInstanceState"),
        ("UserData.Value=aGk%3D", "IncorrectInstanceState"),
        ("Attribute=nope&Value=1", "InvalidParameterValue"),
        (
            "DisableApiStop.Value=false&SourceDestCheck.Value=false",
            "InvalidParameterCombination",
        ),
        ("DisableApiStop.Value=maybe", "InvalidParameterValue"),
        ("GroupId.1=sg-12345678", "InvalidGroup.NotFound"),
        ("Kernel.Value=aki-12345678", "Unsupported"),
        ("", "MissingParameter"),
    ] {
        assert_eq!(c.err(&modify(q)).await.1, code, "{q}");
    }
    assert_eq!(
        c.err(&format!(
            "Action=DescribeInstanceAttribute&{V}&InstanceId=i-0123abcd&Attribute=userData"
        ))
        .await
        .1,
        "InvalidInstanceID.NotFound"
    );
    assert_eq!(
        c.err(&format!("Action=GetConsoleScreenshot&{V}&InstanceId={id}"))
            .await
            .1,
        "Unsupported"
    );

    // Lift stop protection (the Attribute/Value form): stop, then change
    // the type and user data while stopped.
    c.ok(&modify("Attribute=disableApiStop&Value=false")).await;
    c.ok(&format!("Action=StopInstances&{V}&InstanceId.1={id}"))
        .await;
    wait_state(&c, std::slice::from_ref(&id), "stopped").await;
    c.ok(&modify("InstanceType.Value=t3.small")).await;
    c.ok(&modify("UserData.Value=aGk%3D")).await;
    assert_eq!(
        texts(&c.ok(&attr("instanceType")).await, "value"),
        ["t3.small"]
    );
    assert_eq!(texts(&c.ok(&attr("userData")).await, "value"), ["aGk="]);
    assert_eq!(
        c.err(&modify("InstanceType.Value=t9.huge")).await.1,
        "InvalidParameterValue"
    );
    c.ok(&format!("Action=StartInstances&{V}&InstanceId.1={id}"))
        .await;
    wait_state(&c, std::slice::from_ref(&id), "running").await;
    let xml = c
        .ok(&format!("Action=DescribeInstances&{V}&InstanceId.1={id}"))
        .await;
    assert_eq!(texts(&xml, "instanceType"), ["t3.small"]);

    // The guest powers off: with `terminate`, the instance is terminated —
    // once termination protection is lifted it is not in the way: EC2 applies
    // the shutdown behaviour regardless of it.
    guest_poweroff(&c, &owner, &id).await;
    wait_state(&c, std::slice::from_ref(&id), "terminated").await;

    // With the default (`stop`), it stops.
    let xml = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.nano&MinCount=1&MaxCount=1"
        ))
        .await;
    let id2 = texts(&xml, "instanceId").remove(0);
    wait_state(&c, std::slice::from_ref(&id2), "running").await;
    guest_poweroff(&c, &owner, &id2).await;
    wait_state(&c, std::slice::from_ref(&id2), "stopped").await;
    let xml = c
        .ok(&format!("Action=DescribeInstances&{V}&InstanceId.1={id2}"))
        .await;
    assert_eq!(
        texts(&xml, "code").last().map(String::as_str),
        Some("Client.InstanceInitiatedShutdown")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_type_offerings_follow_host_sizes() {
    let Some(c) = cloud().await else { return };
    // The simulated hosts (8 vCPUs, 2048 MiB) are in the first two zones.
    let offer = |q: &str| format!("Action=DescribeInstanceTypeOfferings&{V}{q}");
    // The node cache follows registrations through a watch: wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    let xml = loop {
        let xml = c.ok(&offer("&LocationType=availability-zone")).await;
        let zones: std::collections::BTreeSet<String> =
            texts(&xml, "location").into_iter().collect();
        if zones.len() >= 2 || Instant::now() > deadline {
            break c.ok(&offer("")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let types = texts(&xml, "instanceType");
    assert!(types.contains(&"m5.large".to_owned()), "{xml}");
    assert!(
        !types.contains(&"m5.xlarge".to_owned()),
        "4 GiB fits no host: {xml}"
    );
    assert!(texts(&xml, "locationType").iter().all(|l| l == "region"));
    let xml = c
        .ok(&offer(
            "&LocationType=availability-zone&Filter.1.Name=instance-type&Filter.1.Value.1=t3.nano",
        ))
        .await;
    let mut zones = texts(&xml, "location");
    zones.sort();
    let mut want: Vec<String> = c
        .replica
        .as_ref()
        .unwrap()
        .domain
        .cfg
        .zones
        .iter()
        .take(2)
        .cloned()
        .collect();
    want.sort();
    assert_eq!(zones, want);
    let xml = c
        .ok(&offer(&format!(
            "&LocationType=availability-zone&Filter.1.Name=location&Filter.1.Value.1={}",
            want[0]
        )))
        .await;
    assert!(texts(&xml, "location").iter().all(|l| l == &want[0]));
    assert!(!texts(&xml, "instanceType").is_empty());
    for (q, code) in [
        ("&LocationType=galaxy", "InvalidParameterValue"),
        ("&LocationType=outpost", "Unsupported"),
        (
            "&Filter.1.Name=vcpus&Filter.1.Value.1=1",
            "InvalidParameterValue",
        ),
    ] {
        assert_eq!(c.err(&offer(q)).await.1, code, "{q}");
    }
}

const ASG: &str = "Version=2011-01-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_templates_and_auto_scaling_over_the_gateway() {
    let Some(c) = cloud().await else {
        return;
    };
    let image = texts(
        &c.ok(&format!("Action=DescribeImages&{V}")).await,
        "imageId",
    )[0]
    .clone();
    let xml = c
        .ok(&format!(
            "Action=CreateLaunchTemplate&{V}&LaunchTemplateName=web&LaunchTemplateData.ImageId={image}\
             &LaunchTemplateData.InstanceType=t3.nano&LaunchTemplateData.TagSpecification.1.ResourceType=instance\
             &LaunchTemplateData.TagSpecification.1.Tag.1.Key=from&LaunchTemplateData.TagSpecification.1.Tag.1.Value=lt"
        ))
        .await;
    let lt = texts(&xml, "launchTemplateId")[0].clone();
    assert!(lt.starts_with("lt-"), "{xml}");
    let (_, code) = c
        .err(&format!("Action=CreateLaunchTemplate&{V}&LaunchTemplateName=web&LaunchTemplateData.InstanceType=t3.nano"))
        .await;
    assert_eq!(code, "InvalidLaunchTemplateName.AlreadyExistsException");
    let xml = c
        .ok(&format!("Action=CreateLaunchTemplateVersion&{V}&LaunchTemplateId={lt}&SourceVersion=1&LaunchTemplateData.InstanceType=t3.micro"))
        .await;
    assert_eq!(texts(&xml, "versionNumber"), ["2"], "{xml}");
    assert_eq!(texts(&xml, "imageId"), [image], "{xml}");
    let xml = c
        .ok(&format!(
            "Action=DescribeLaunchTemplateVersions&{V}&LaunchTemplateName=web"
        ))
        .await;
    assert_eq!(
        texts(&xml, "instanceType"),
        ["t3.nano", "t3.micro"],
        "{xml}"
    );

    let zones = c.replica.as_ref().unwrap().domain.config().zones.clone();
    let create = format!(
        "Action=CreateAutoScalingGroup&{ASG}&AutoScalingGroupName=asg1\
         &LaunchTemplate.LaunchTemplateName=web&LaunchTemplate.Version=%24Default\
         &MinSize=1&MaxSize=4&DesiredCapacity=2\
         &AvailabilityZones.member.1={}&AvailabilityZones.member.2={}",
        zones[0], zones[1]
    );
    let (s, xml) = c.asg_as(&c.a, &create).await;
    assert_eq!(s, 200, "{xml}");
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<CreateAutoScalingGroupResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">"), "{xml}");
    let (s, xml) = c.asg_as(&c.a, &create).await;
    assert_eq!(
        (s, texts(&xml, "Code")),
        (400, vec!["AlreadyExists".to_string()]),
        "{xml}"
    );
    let (s, xml) = c
        .asg_as(
            &c.a,
            &create
                .replace("asg1", "asg2")
                .replace("MinSize=1", "MinSize=9"),
        )
        .await;
    assert_eq!(
        (s, texts(&xml, "Code")),
        (400, vec!["ValidationError".to_string()]),
        "{xml}"
    );
    assert!(xml.contains("<Type>Sender</Type>"), "{xml}");

    // Two instances in service, one per zone, tagged with the template's tags.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, xml) = c
            .asg_as(
                &c.a,
                &format!(
                    "Action=DescribeAutoScalingGroups&{ASG}&AutoScalingGroupNames.member.1=asg1"
                ),
            )
            .await;
        let states = texts(&xml, "LifecycleState");
        let mut z = texts(&xml, "AvailabilityZone");
        z.sort();
        if states == ["InService", "InService"] && z == [zones[0].clone(), zones[1].clone()] {
            assert_eq!(texts(&xml, "DesiredCapacity"), ["2"], "{xml}");
            break;
        }
        assert!(Instant::now() < end, "{xml}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let xml = c.ok(&format!("Action=DescribeInstances&{V}")).await;
    assert!(
        xml.contains("<key>aws:autoscaling:groupName</key><value>asg1</value>"),
        "{xml}"
    );
    assert!(xml.contains("<key>from</key><value>lt</value>"), "{xml}");

    // The other tenant sees no group and cannot touch this one.
    let (s, xml) = c
        .asg_as(&c.b, &format!("Action=DescribeAutoScalingGroups&{ASG}"))
        .await;
    assert_eq!(s, 200, "{xml}");
    assert!(texts(&xml, "AutoScalingGroupName").is_empty(), "{xml}");
    let (s, xml) = c
        .asg_as(
            &c.b,
            &format!("Action=SetDesiredCapacity&{ASG}&AutoScalingGroupName=asg1&DesiredCapacity=3"),
        )
        .await;
    assert_eq!(
        (s, texts(&xml, "Code")),
        (400, vec!["ValidationError".to_string()]),
        "{xml}"
    );

    // Deleting a group with instances needs ForceDelete.
    let (s, xml) = c
        .asg_as(
            &c.a,
            &format!("Action=DeleteAutoScalingGroup&{ASG}&AutoScalingGroupName=asg1"),
        )
        .await;
    assert_eq!(
        (s, texts(&xml, "Code")),
        (400, vec!["ResourceInUse".to_string()]),
        "{xml}"
    );
    let (s, xml) = c
        .asg_as(
            &c.a,
            &format!(
                "Action=DeleteAutoScalingGroup&{ASG}&AutoScalingGroupName=asg1&ForceDelete=true"
            ),
        )
        .await;
    assert_eq!(s, 200, "{xml}");
    let (s, xml) = c
        .asg_as(
            &c.a,
            &format!("Action=DescribeScalingActivities&{ASG}&AutoScalingGroupName=asg1"),
        )
        .await;
    assert_eq!(s, 200, "{xml}");
    assert!(
        texts(&xml, "StatusCode").iter().any(|s| s == "Successful"),
        "{xml}"
    );
}

#[path = "tests_keypairs.rs"]
mod keypairs;

#[path = "tests_asg_policies.rs"]
mod asg_policies;

#[path = "tests_types.rs"]
mod types;

#[path = "tests_tags.rs"]
mod tags;

#[path = "tests_images.rs"]
mod images;
