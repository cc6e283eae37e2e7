use super::*;

fn assignment(desired: pb::DesiredState) -> pb::Assignment {
    pb::Assignment {
        instance_id: "i-0abc".into(),
        desired: desired as i32,
        generation: 3,
        spec: Some(pb::InstanceSpec {
            image_name: "hello".into(),
            vcpus: 1,
            memory_mib: 64,
            network: Some(pb::NetworkSpec {
                ip: "10.200.0.20".into(),
                prefix_len: 24,
                gateway: "10.200.0.1".into(),
                mac: "02:00:00:00:00:01".into(),
                ..Default::default()
            }),
            cmdline_extra: "nubis.id=i-0abc".into(),
            ..Default::default()
        }),
        force: false,
    }
}

#[test]
fn vpc_fields_are_converted_and_validated() {
    let mut a = assignment(pb::DesiredState::Running);
    assert_eq!(
        desired_from_assignment(&a).unwrap().spec.vpc,
        None,
        "vni 0: the bridge"
    );
    let net = a.spec.as_mut().unwrap().network.as_mut().unwrap();
    net.vni = 0x101;
    net.vpc_id = "vpc-1".into();
    net.subnet_id = "subnet-1".into();
    net.subnet_cidr = "10.200.0.0/24".into();
    net.security_group_ids = vec!["sg-1".into(), "sg-2".into()];
    let v = desired_from_assignment(&a).unwrap().spec.vpc.unwrap();
    assert_eq!(v.vni, 0x101);
    assert_eq!(v.vpc_id, "vpc-1");
    assert_eq!(v.subnet_cidr, "10.200.0.0/24");
    assert_eq!(v.security_group_ids, ["sg-1", "sg-2"]);
    // A VNI beyond 24 bits, or a VPC instance without its address.
    let net = a.spec.as_mut().unwrap().network.as_mut().unwrap();
    net.vni = 1 << 24;
    assert!(desired_from_assignment(&a).is_err());
    let net = a.spec.as_mut().unwrap().network.as_mut().unwrap();
    net.vni = 7;
    net.ip = String::new();
    assert!(desired_from_assignment(&a).is_err());
}

#[test]
fn root_volume_size_is_converted() {
    let mut a = assignment(pb::DesiredState::Running);
    let d = desired_from_assignment(&a).unwrap();
    assert_eq!(d.spec.root_volume_gib, None, "0 is the image's size");
    a.spec.as_mut().unwrap().root_volume_gib = 5;
    let d = desired_from_assignment(&a).unwrap();
    assert_eq!(d.spec.root_volume_gib, Some(5));
    a.spec.as_mut().unwrap().root_volume_gib = 16_385;
    assert!(desired_from_assignment(&a).is_err());
}

#[test]
fn metadata_is_converted_with_options_and_key() {
    let mut a = assignment(pb::DesiredState::Running);
    let spec = a.spec.as_mut().unwrap();
    spec.user_data = b"#!/bin/sh\n".to_vec();
    spec.ssh_public_key = "ssh-ed25519 AAAA k".into();
    spec.instance_type = "t3.nano".into();
    spec.metadata = Some(pb::InstanceMetadata {
        account_id: "123456789012".into(),
        image_id: "ami-0123456789abcdef0".into(),
        key_name: "k".into(),
        availability_zone: "nb-1a".into(),
        region: "nb-1".into(),
        launch_time_unix_ms: 1_765_000_000_123,
        options: Some(pb::MetadataOptions {
            http_tokens_required: true,
            http_put_response_hop_limit: 0,
            http_endpoint_disabled: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let d = desired_from_assignment(&a).unwrap();
    let md = d.spec.metadata.unwrap();
    assert_eq!(md.metadata.instance_id, "i-0abc");
    assert_eq!(md.metadata.user_data.as_deref(), Some(&b"#!/bin/sh\n"[..]));
    assert_eq!(md.metadata.public_keys[0].name, "k");
    assert_eq!(md.metadata.launch_time, "2025-12-06T05:46:40Z");
    assert_eq!(md.options.http_tokens, nubis_imds::HttpTokens::Required);
    assert_eq!(md.options.http_put_response_hop_limit, 1, "0 = default");
    assert!(!md.options.http_endpoint_enabled);
    // Without metadata (an older control plane): no metadata service.
    let d = desired_from_assignment(&assignment(pb::DesiredState::Running)).unwrap();
    assert!(d.spec.metadata.is_none());
}

#[test]
fn type_limits_are_converted_and_absent_means_none() {
    let d = desired_from_assignment(&assignment(pb::DesiredState::Running)).unwrap();
    assert_eq!(d.spec.limits, None, "an older control plane: [limits]");
    let mut a = assignment(pb::DesiredState::Running);
    a.spec.as_mut().unwrap().limits = Some(pb::DeviceLimits {
        disk_bps: 1,
        disk_iops: 2,
        net_tx_bps: 3,
        net_tx_pps: 4,
        net_rx_bps: 5,
        net_rx_pps: 6,
    });
    let d = desired_from_assignment(&a).unwrap();
    assert_eq!(
        d.spec.limits,
        Some(DeviceLimits {
            disk_bps: 1,
            disk_iops: 2,
            net_tx_bps: 3,
            net_tx_pps: 4,
            net_rx_bps: 5,
            net_rx_pps: 6,
        })
    );
}

#[test]
fn assignments_are_converted_and_validated() {
    let d = desired_from_assignment(&assignment(pb::DesiredState::Running)).unwrap();
    assert_eq!(d.desired, Desired::Running);
    assert_eq!(d.generation, 3);
    assert_eq!(d.spec.ip, Some("10.200.0.20".parse().unwrap()));
    assert_eq!(d.spec.mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(d.spec.gateway, Some("10.200.0.1".parse().unwrap()));
    assert_eq!(d.spec.prefix_len, Some(24));
    let mut a = assignment(pb::DesiredState::Running);
    if let Some(n) = a.spec.as_mut().and_then(|s| s.network.as_mut()) {
        n.gateway = "10.200.0".into();
    }
    assert!(desired_from_assignment(&a).is_err());
    assert!(desired_from_assignment(&assignment(pb::DesiredState::Unspecified)).is_err());
    let mut a = assignment(pb::DesiredState::Running);
    a.instance_id = "../etc".into();
    assert!(desired_from_assignment(&a).is_err());
    let mut a = assignment(pb::DesiredState::Running);
    a.spec = None;
    assert!(desired_from_assignment(&a).is_err());
    let mut a = assignment(pb::DesiredState::Running);
    if let Some(s) = a.spec.as_mut() {
        s.vcpus = 0;
    }
    assert!(desired_from_assignment(&a).is_err());
}

#[test]
fn only_changed_reports_are_sent_and_launch_phases_are_transitional() {
    let mut r = crate::instance::InstanceHandle::gone(InstanceId::new("i-1").unwrap(), 1).report();
    r.state = State::Running;
    let first = job_for("n", r.clone(), None).unwrap();
    assert!(transitional(first.req.phase));
    assert!(!first.first_ready && !first.push_console);
    // The same report again (only the phase's since differs): nothing.
    let mut again = r.clone();
    again.since_unix_ms += 5;
    assert!(job_for("n", again, Some(&first.req)).is_none());
    r.ready = true;
    r.ready_unix_ms = Some(1);
    let ready = job_for("n", r.clone(), Some(&first.req)).unwrap();
    assert!(ready.first_ready && !transitional(ready.req.phase));
    r.state = State::Stopped;
    let stopped = job_for("n", r, Some(&ready.req)).unwrap();
    assert!(stopped.push_console && !transitional(stopped.req.phase));
}

#[test]
fn phases_follow_readiness() {
    let mut r = crate::instance::InstanceHandle::gone(InstanceId::new("i-1").unwrap(), 1).report();
    assert_eq!(phase_of(&r), pb::ObservedPhase::Terminated);
    r.state = State::Running;
    assert_eq!(phase_of(&r), pb::ObservedPhase::Running);
    r.ready = true;
    assert_eq!(phase_of(&r), pb::ObservedPhase::Ready);
    r.state = State::Failed;
    assert_eq!(phase_of(&r), pb::ObservedPhase::Failed);
}

#[test]
fn a_reboot_is_reported_as_booting_never_stopped() {
    let mut r = crate::instance::InstanceHandle::gone(InstanceId::new("i-1").unwrap(), 1).report();
    r.rebooting = true;
    r.ready = true;
    for s in [
        State::Running,
        State::Stopping,
        State::Stopped,
        State::Starting,
    ] {
        r.state = s;
        assert_eq!(phase_of(&r), pb::ObservedPhase::Booting, "{s}");
    }
    // A reboot that fails is reported as such.
    r.state = State::Failed;
    assert_eq!(phase_of(&r), pb::ObservedPhase::Failed);
    r.rebooting = false;
    r.state = State::Stopped;
    assert_eq!(phase_of(&r), pb::ObservedPhase::Stopped);
}
