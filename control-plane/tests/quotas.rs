//! Per-account quotas (issue 16: "one tenant can take the whole region"),
//! against a real etcd with simulated agents: each quota's refusal and its
//! EC2 code with nothing written; concurrent launches at the boundary on
//! two replicas launch exactly the quota; terminate and stop free it once;
//! Start is held to it; per-account overrides through the Admin API apply
//! on every replica at once and leave other accounts alone.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use nubis_control_plane::config::Config;
use nubis_control_plane::domain::images::RegisterImageInput;
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::quotas::Usage;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

/// The test configuration with `[quotas]` defaults.
fn config_with_quotas(etcd: &Etcd, quotas: &str) -> Config {
    let mut cfg = config(etcd);
    cfg.quotas = toml::from_str(quotas).unwrap();
    cfg
}

async fn usage(d: &Domain, c: &Caller) -> Usage {
    let account = c.account().unwrap();
    d.store()
        .get::<Usage>(&d.store().keys().quota_usage(&account))
        .await
        .unwrap()
        .map(|v| v.value)
        .unwrap_or_default()
}

async fn count(d: &Domain, prefix: String) -> i64 {
    d.store().count(&prefix).await.unwrap()
}

async fn instances_of(d: &Domain, c: &Caller) -> i64 {
    count(d, d.store().keys().account_instances(&c.account().unwrap())).await
}

async fn set(d: &Domain, c: &Caller, name: &str, limit: u64) {
    d.set_quota(
        &Caller::Operator,
        c.account().unwrap().as_str(),
        name,
        Some(limit),
    )
    .await
    .unwrap();
}

fn image_input(name: &str) -> RegisterImageInput {
    RegisterImageInput {
        name: name.into(),
        image_location: "hello".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_quota_refuses_with_its_code_and_writes_nothing() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_with_quotas(
        &etcd,
        "running_instances = 30\nvcpus = 1000\nimages = 2\nkey_pairs = 2\n",
    ))
    .await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let _agents = [
        SimAgent::start(&ep, enrol(), SimOptions::new("a", ZONES[0], 64, 64 * 1024))
            .await
            .unwrap(),
        SimAgent::start(&ep, enrol(), SimOptions::new("b", ZONES[1], 64, 64 * 1024))
            .await
            .unwrap(),
    ];
    let image = register_image(&d).await;

    // Running instances: an override of 2.
    let a = named_account(&d, "t1").await;
    set(&d, &a, "running-instances", 2).await;
    let r = d.run_instances(&a, nano_input(&image, 2)).await.unwrap();
    let vcpus = u64::from(r.instances[0].vcpus);
    let e = d
        .run_instances(&a, nano_input(&image, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InstanceLimitExceeded", "{e}");
    assert_eq!(instances_of(&d, &a).await, 2, "nothing written");
    assert_eq!(usage(&d, &a).await.running_instances, 2);
    assert_eq!(usage(&d, &a).await.vcpus, 2 * vcpus);
    // MinCount..MaxCount: as many as fit (none left here).
    let mut up_to = nano_input(&image, 1);
    up_to.max_count = 5;
    let e = d.run_instances(&a, up_to).await.unwrap_err();
    assert_eq!(e.code(), "InstanceLimitExceeded");

    // vCPUs: room for two instances and a half.
    let b = named_account(&d, "t2").await;
    set(&d, &b, "vcpus", 2 * vcpus + vcpus / 2).await;
    let mut three = nano_input(&image, 1);
    three.max_count = 3;
    let r = d.run_instances(&b, three).await.unwrap();
    assert_eq!(r.instances.len(), 2, "MaxCount 3, room for 2: 2 launched");
    let e = d
        .run_instances(&b, nano_input(&image, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "VcpuLimitExceeded", "{e}");
    assert_eq!(instances_of(&d, &b).await, 2);

    // A call larger than one transaction (the batched saga): refused up
    // front when MinCount does not fit, capped at the quota otherwise.
    let c = named_account(&d, "t3").await;
    let e = d
        .run_instances(&c, nano_input(&image, 31))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InstanceLimitExceeded", "{e}");
    assert_eq!(instances_of(&d, &c).await, 0);
    assert_eq!(
        count(&d, d.store().keys().pending_reservations()).await,
        0,
        "no saga record left"
    );
    let mut big = nano_input(&image, 1);
    big.max_count = 40;
    let r = d.run_instances(&c, big).await.unwrap();
    assert_eq!(r.instances.len(), 30, "the default quota of 30");
    assert_eq!(usage(&d, &c).await.running_instances, 30);

    // Images (default 2): the third is refused; deregistering frees one,
    // and a repeated deregistration frees nothing more.
    let i1 = d.register_image(&a, image_input("one")).await.unwrap();
    d.register_image(&a, image_input("two")).await.unwrap();
    let before = count(&d, d.store().keys().images()).await;
    let e = d
        .register_image(&a, image_input("three"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceLimitExceeded", "{e}");
    assert_eq!(count(&d, d.store().keys().images()).await, before);
    d.deregister_image(&a, i1.id.as_str()).await.unwrap();
    let e = d.deregister_image(&a, i1.id.as_str()).await.unwrap_err();
    assert_eq!(e.code(), "InvalidAMIID.NotFound");
    assert_eq!(usage(&d, &a).await.images, 1);
    d.register_image(&a, image_input("three")).await.unwrap();

    // Key pairs (default 2): create and import count alike.
    d.create_keypair(&a, "k1", "ed25519", &[]).await.unwrap();
    // A public key to import: one made for another account.
    let donor = named_account(&d, "t4").await;
    let pubkey = d
        .create_keypair(&donor, "donor", "ed25519", &[])
        .await
        .unwrap()
        .0
        .public_key;
    d.import_keypair(&a, "k2", pubkey.as_bytes(), &[])
        .await
        .unwrap();
    let e = d
        .create_keypair(&a, "k3", "ed25519", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceLimitExceeded", "{e}");
    let e = d
        .import_keypair(&a, "k3", pubkey.as_bytes(), &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceLimitExceeded");
    assert_eq!(
        count(&d, d.store().keys().account_keypairs(&a.account().unwrap())).await,
        2
    );
    d.delete_keypair(&a, "k1", "").await.unwrap();
    d.delete_keypair(&a, "k1", "").await.unwrap();
    assert_eq!(usage(&d, &a).await.key_pairs, 1, "released once");
    d.create_keypair(&a, "k3", "ed25519", &[]).await.unwrap();

    // Another account is unaffected by a's and b's overrides and usage.
    let other = named_account(&d, "t5").await;
    d.run_instances(&other, nano_input(&image, 3))
        .await
        .unwrap();
    // The operator is not limited.
    d.register_image(&Caller::Operator, image_input("op-1"))
        .await
        .unwrap();
    d.register_image(&Caller::Operator, image_input("op-2"))
        .await
        .unwrap();
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_launches_at_the_boundary_launch_exactly_the_quota() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config_with_quotas(&etcd, "running_instances = 5\n");
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let ep = endpoint(&a);
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 64, 64 * 1024))
        .await
        .unwrap();
    let image = register_image(&a.domain).await;
    let caller = setup_account(&a.domain).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let d: Arc<Domain> = if i % 2 == 0 {
            a.domain.clone()
        } else {
            b.domain.clone()
        };
        let c = caller.clone();
        let image = image.clone();
        calls.push(tokio::spawn(async move {
            d.run_instances(&c, nano_input(&image, 1)).await
        }));
    }
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), "InstanceLimitExceeded", "{e}"),
        }
    }
    assert_eq!(ok, 5, "exactly the quota");
    assert_eq!(instances_of(&a.domain, &caller).await, 5);
    assert_eq!(usage(&a.domain, &caller).await.running_instances, 5);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_stop_free_the_quota_once_and_start_is_held_to_it() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_with_quotas(&etcd, "running_instances = 2\n")).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 64, 64 * 1024))
        .await
        .unwrap();
    let image = register_image(&d).await;
    let c = named_account(&d, "t6").await;
    let r = d.run_instances(&c, nano_input(&image, 2)).await.unwrap();
    let ids: Vec<String> = r.instances.iter().map(|i| i.id.to_string()).collect();
    for id in &ids {
        wait_domain_state(&d, &c, id, State::Running).await;
    }
    let vcpus = u64::from(r.instances[0].vcpus);

    // Terminate frees (when the instance is terminated); terminating it
    // again frees nothing more.
    d.terminate_instances(&c, &ids[..1]).await.unwrap();
    wait_domain_state(&d, &c, &ids[0], State::Terminated).await;
    assert_eq!(usage(&d, &c).await.running_instances, 1);
    d.terminate_instances(&c, &ids[..1]).await.unwrap();
    assert_eq!(usage(&d, &c).await.running_instances, 1);
    assert_eq!(usage(&d, &c).await.vcpus, vcpus);

    // Stop frees; while the room is taken, Start is refused.
    d.stop_instances(&c, &ids[1..], false).await.unwrap();
    wait_domain_state(&d, &c, &ids[1], State::Stopped).await;
    assert_eq!(usage(&d, &c).await.running_instances, 0);
    d.run_instances(&c, nano_input(&image, 2)).await.unwrap();
    let e = d.start_instances(&c, &ids[1..]).await.unwrap_err();
    assert_eq!(e.code(), "InstanceLimitExceeded", "{e}");
    let stopped = d.instance(&c, &ids[1]).await.unwrap().value;
    assert_eq!(stopped.state, State::Stopped, "nothing written");
    // Raised by the operator: Start succeeds at once.
    set(&d, &c, "running-instances", 3).await;
    d.start_instances(&c, &ids[1..]).await.unwrap();
    assert_eq!(usage(&d, &c).await.running_instances, 3);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_set_quotas_through_the_admin_api_on_every_replica() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config_with_quotas(&etcd, "images = 3\n");
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let (ep_a, ep_b) = (endpoint(&a), endpoint(&b));
    // The operator publishes `hello`, so tenants may register images of it
    // (the image-location ACL); the operator's image is not the tenant's quota.
    hello_image(&ep_a).await;
    let creds = tenant(&ep_a, "t").await;
    let mut tc = compute(&ep_b, creds.clone()).await;
    let account = a
        .domain
        .access_key_secret(&creds.access_key_id)
        .await
        .unwrap()
        .0
        .account()
        .unwrap()
        .to_string();
    let mut admin = admin_client(&ep_a).await;
    let q = admin
        .get_quotas(pb::GetQuotasRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    let images = q.quotas.iter().find(|q| q.name == "images").unwrap();
    assert_eq!(
        (images.limit, images.default_limit, images.overridden),
        (3, 3, false)
    );

    // Set on replica a to 1; replica b refuses the second image at once.
    let set = admin
        .set_quota(pb::SetQuotaRequest {
            account_id: account.clone(),
            name: "images".into(),
            limit: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(set
        .quotas
        .iter()
        .any(|q| q.name == "images" && q.limit == 1 && q.overridden));
    let reg = |name: &str| pb::RegisterImageRequest {
        name: name.into(),
        image_location: "hello".into(),
        ..Default::default()
    };
    tc.register_image(reg("first")).await.unwrap();
    let e = tc.register_image(reg("second")).await.unwrap_err();
    assert_eq!(ec2_code(&e), "ResourceLimitExceeded", "{e:?}");
    // Reset: the default (3) again.
    admin
        .set_quota(pb::SetQuotaRequest {
            account_id: account.clone(),
            name: "images".into(),
            limit: None,
        })
        .await
        .unwrap();
    tc.register_image(reg("second")).await.unwrap();
    let all = admin
        .list_quotas(pb::ListQuotasRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let mine = all.iter().find(|a| a.account_id == account).unwrap();
    let images = mine.quotas.iter().find(|q| q.name == "images").unwrap();
    assert_eq!(
        (images.usage, images.limit, images.overridden),
        (2, 3, false)
    );

    // Bad input and tenants: refused, nothing written.
    let e = admin
        .set_quota(pb::SetQuotaRequest {
            account_id: account.clone(),
            name: "elastic-ips".into(),
            limit: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidParameterValue");
    let e = admin
        .set_quota(pb::SetQuotaRequest {
            account_id: "999999999999".into(),
            name: "images".into(),
            limit: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidAccount.NotFound");
    let e = admin
        .get_quotas(pb::GetQuotasRequest {
            account_id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let mut as_tenant = pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(
        nubis_proto::transport::connect(&ep_a).await.unwrap(),
        creds,
    ));
    let e = as_tenant
        .set_quota(pb::SetQuotaRequest {
            account_id: account.clone(),
            name: "images".into(),
            limit: Some(100),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let key = a
        .domain
        .store()
        .keys()
        .quota_overrides(&nubis_control_plane::ids::AccountId::parse(&account).unwrap());
    let stored = a
        .domain
        .store()
        .get::<nubis_control_plane::domain::quotas::QuotaOverrides>(&key)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(stored.limits.is_empty(), "{stored:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_templates_and_auto_scaling_groups_are_counted() {
    use nubis_control_plane::domain::autoscaling::templates::{LaunchTemplateData, TemplateRef};
    use nubis_control_plane::domain::autoscaling::CreateGroupInput;
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_with_quotas(
        &etcd,
        "launch_templates = 1\nauto_scaling_groups = 1\n",
    ))
    .await;
    let d = cp.domain.clone();
    let image = register_image(&d).await;
    let c = named_account(&d, "t1").await;
    let data = || LaunchTemplateData {
        image_id: Some(image.clone()),
        instance_type: Some("t3.nano".into()),
        ..Default::default()
    };
    d.create_launch_template(&c, "web", "", data())
        .await
        .unwrap();
    let e = d
        .create_launch_template(&c, "dbs", "", data())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceLimitExceeded", "{e}");
    // A taken name is still a duplicate, not a quota refusal.
    let e = d
        .create_launch_template(&c, "web", "", data())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        "InvalidLaunchTemplateName.AlreadyExistsException",
        "{e}"
    );
    let group = |name: &str| CreateGroupInput {
        name: name.into(),
        template: Some(TemplateRef::Name("web".into())),
        min_size: 0,
        max_size: 1,
        desired: Some(0),
        zones: vec![ZONES[0].to_string()],
        ..Default::default()
    };
    d.create_auto_scaling_group(&c, group("g1")).await.unwrap();
    let e = d
        .create_auto_scaling_group(&c, group("g2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "LimitExceeded", "{e}");
    assert_eq!(
        count(&d, d.store().keys().account_asgs(&c.account().unwrap())).await,
        1
    );
    // Deleting frees each once.
    d.delete_auto_scaling_group(&c, "g1", false).await.unwrap();
    assert!(d.delete_auto_scaling_group(&c, "g1", false).await.is_err());
    d.create_auto_scaling_group(&c, group("g2")).await.unwrap();
    d.delete_launch_template(&c, &TemplateRef::Name("web".into()))
        .await
        .unwrap();
    assert!(d
        .delete_launch_template(&c, &TemplateRef::Name("web".into()))
        .await
        .is_err());
    let u = usage(&d, &c).await;
    assert_eq!((u.launch_templates, u.auto_scaling_groups), (0, 1));
    d.create_launch_template(&c, "dbs", "", data())
        .await
        .unwrap();
    cp.shutdown().await;
}
