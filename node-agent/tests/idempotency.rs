//! Multi-step launch and tear-down are idempotent: repeating a step, or
//! failing half-way and repeating, ends in the same state.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{have_prereqs, Env};
use nubis_agent::config::Config;
use nubis_agent::context::HostContext;
use nubis_agent::host::tap::tap_name;
use nubis_agent::launch;
use nubis_agent::layout::{read_json, NetAlloc};
use nubis_agent::types::{ImageName, InstanceId, InstanceSpec};

fn ctx(config: Config) -> Arc<HostContext> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    HostContext::new(config, tx).unwrap()
}

#[test]
fn prepare_and_destroy_repeat_and_resume_after_partial_failure() {
    // Needs no KVM: nothing is booted, but the hello image must exist.
    if !have_prereqs(false)
        || !common::prerequisite(
            common::image_dir().join("hello/manifest.json").is_file(),
            "hello image",
        )
    {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let id = InstanceId::new("i-idem0001").unwrap();
        let spec = InstanceSpec {
            id: id.clone(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: String::new(),
            ip: None,
            mac: None,
            prefix_len: None,
            gateway: None,
            image_manifest_sha256: None,
            metadata: None,
            root_volume_gib: None,
            limits: None,
            vpc: None,
            extra_networks: Vec::new(),
        };

        // First attempt fails half-way (cgroup step) after disk, address and TAP.
        let fake = tempfile::tempdir().unwrap();
        let mut broken = env.config.clone();
        broken.cgroup.mount = Some(fake.path().to_path_buf());
        broken.cgroup.enforce_limits = true;
        let bctx = ctx(broken);
        let dir = bctx.layout.instance(&id);
        let e = launch::prepare(&bctx, &spec, &dir).await.unwrap_err();
        assert_eq!(e.code.code(), "Server.CgroupSetupFailed");
        let net1: NetAlloc = read_json(&dir.net()).unwrap().unwrap();
        let tap = tap_name("nbt", &id);
        assert!(env.netns.link_exists(&tap));
        // The guest may have written to the disk; a repeat must keep it.
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.disk())
            .map(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"guest data", 4096))
            .unwrap()
            .unwrap();

        // Repeating with a working host completes, reusing every earlier step.
        let good = ctx(env.config.clone());
        let l1 = launch::prepare(&good, &spec, &dir).await.unwrap();
        let l2 = launch::prepare(&good, &spec, &dir).await.unwrap();
        assert_eq!(l1.args(), l2.args());
        let net2: NetAlloc = read_json(&dir.net()).unwrap().unwrap();
        assert_eq!(net1, net2, "address changed on repeat");
        assert!(l1
            .cmdline
            .contains(&format!("ip={}/24 gw=10.213.0.1", net1.ip)));
        assert!(l1.cmdline.contains("nubis.id=i-idem0001"));
        assert!(!l1.cmdline.contains("nubis.id=unknown"));
        let disk = std::fs::read(dir.disk()).unwrap();
        assert_eq!(&disk[4096..4106], b"guest data");
        assert_eq!(env.netns.links_with_prefix("nbt"), vec![tap.clone()]);
        let cg = env.cgroup.dir().unwrap().join("i-idem0001");
        assert!(cg.is_dir());

        // Destroy twice: the second is a no-op.
        launch::destroy(&good, &spec, &dir).await.unwrap();
        launch::destroy(&good, &spec, &dir).await.unwrap();
        assert!(!dir.path().exists());
        assert!(!env.netns.link_exists(&tap));
        assert!(!cg.exists());
    });
}

/// The same for a VPC instance: a repeated prepare keeps one routed port
/// (its rule once, its route, not on the bridge), destroy twice removes the
/// VPC from the host (device-less: no underlay configured).
#[test]
fn routed_port_prepare_and_destroy_repeat() {
    if !have_prereqs(false)
        || !common::prerequisite(
            common::image_dir().join("hello/manifest.json").is_file(),
            "hello image",
        )
    {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let id = InstanceId::new("i-idemvpc01").unwrap();
        let spec = InstanceSpec {
            id: id.clone(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: String::new(),
            // The same address as the bridge range's first: VPCs may overlap.
            ip: Some("10.213.0.10".parse().unwrap()),
            mac: None,
            prefix_len: Some(24),
            gateway: Some("10.213.0.1".parse().unwrap()),
            image_manifest_sha256: None,
            metadata: None,
            root_volume_gib: None,
            limits: None,
            vpc: Some(nubis_agent::types::VpcAttachment {
                vni: 0x42,
                vpc_id: "vpc-i".into(),
                subnet_id: "subnet-i".into(),
                subnet_cidr: "10.213.0.0/24".into(),
                security_group_ids: vec![],
            }),
            extra_networks: Vec::new(),
        };
        let good = ctx(env.config.clone());
        let dir = good.layout.instance(&id);
        let l1 = launch::prepare(&good, &spec, &dir).await.unwrap();
        let l2 = launch::prepare(&good, &spec, &dir).await.unwrap();
        assert_eq!(l1.args(), l2.args());
        assert!(l1.cmdline.contains("ip=10.213.0.10/24 gw=10.213.0.1"));
        let tap = tap_name("nbt", &id);
        let (_, link) = env.netns.ip(&["link", "show", "dev", &tap]);
        assert!(!link.contains("master"), "{link}");
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        let ours = format!("iif {tap} lookup {}", 0x0100_0000 + 0x42);
        assert_eq!(rules.matches(&ours).count(), 1, "{rules}");
        let table = (0x0100_0000 + 0x42).to_string();
        let (_, routes) = env.netns.ip(&["route", "show", "table", &table]);
        assert!(
            routes.contains(&format!("10.213.0.10 dev {tap}")),
            "{routes}"
        );
        assert_eq!(good.vpc.status().last_error, None);

        launch::destroy(&good, &spec, &dir).await.unwrap();
        launch::destroy(&good, &spec, &dir).await.unwrap();
        assert!(!env.netns.link_exists(&tap));
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        assert!(!rules.contains(&table), "{rules}");
        let (_, routes) = env.netns.ip(&["route", "show", "table", &table]);
        assert!(routes.trim().is_empty(), "{routes}");
    });
}
