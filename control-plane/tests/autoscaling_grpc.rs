//! The AutoScaling gRPC service (`nubis.autoscaling.v1.AutoScaling`)
//! against a real etcd, a real replica (its controller) and simulated agents
//! in three zones: signed requests reach the same domain as the Query API
//! (a template and a group of 3 become 3 running instances, one per zone;
//! 6 is two per zone; policies, scheduled actions, protection and
//! terminate-in-group work), another tenant can neither see nor change the
//! group, and bad input is refused with the Auto Scaling error code and
//! nothing written.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::auth::{Credentials, Signed, SignedChannel};
use nubis_proto::autoscaling::v1 as apb;
use support::*;

type Asg = apb::auto_scaling_client::AutoScalingClient<SignedChannel>;

async fn asg(endpoint: &str, creds: Credentials) -> Asg {
    let ch = nubis_proto::transport::connect(endpoint).await.unwrap();
    apb::auto_scaling_client::AutoScalingClient::new(Signed::new(ch, creds))
}

async fn sims(ep: &str) -> Vec<SimAgent> {
    let mut out = Vec::new();
    for (i, z) in ZONES.iter().enumerate() {
        out.push(
            SimAgent::start(
                ep,
                enrol(),
                SimOptions::new(&format!("host-{i}"), z, 64, 32768),
            )
            .await
            .unwrap(),
        );
    }
    out
}

fn create_req(name: &str, min: u32, max: u32, desired: u32) -> apb::CreateAutoScalingGroupRequest {
    apb::CreateAutoScalingGroupRequest {
        auto_scaling_group_name: name.into(),
        launch_template: Some(apb::TemplateSpec {
            launch_template: "web".into(),
            version: "$Latest".into(),
        }),
        min_size: min,
        max_size: max,
        desired_capacity: Some(desired),
        availability_zones: ZONES.iter().map(|z| z.to_string()).collect(),
        ..Default::default()
    }
}

async fn groups(c: &mut Asg, names: &[&str]) -> Vec<apb::AutoScalingGroup> {
    c.describe_auto_scaling_groups(apb::DescribeAutoScalingGroupsRequest {
        auto_scaling_group_names: names.iter().map(|s| s.to_string()).collect(),
    })
    .await
    .unwrap()
    .into_inner()
    .groups
}

/// Waits until the group has `n` InService instances, `each` per zone.
async fn wait_in_service(c: &Asg, name: &str, n: usize, each: usize) -> apb::AutoScalingGroup {
    eventually(
        Duration::from_secs(30),
        &format!("{name}: {n} in service"),
        || {
            let mut c = c.clone();
            async move {
                let g = groups(&mut c, &[name]).await.into_iter().next()?;
                let live: Vec<&apb::GroupInstance> = g
                    .instances
                    .iter()
                    .filter(|i| i.lifecycle_state != "Terminated")
                    .collect();
                let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
                for i in &live {
                    *per_zone.entry(i.availability_zone.as_str()).or_default() += 1;
                }
                let ok = live.len() == n
                    && live
                        .iter()
                        .all(|i| i.lifecycle_state == "InService" && i.state == "running")
                    && ZONES.iter().all(|z| per_zone.get(z).copied() == Some(each));
                ok.then_some(g.clone())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_policies_and_schedules_over_grpc() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _sims = sims(&ep).await;
    let mut a = asg(&ep, tenant(&ep, "a").await).await;

    let t = a
        .create_launch_template(apb::CreateLaunchTemplateRequest {
            launch_template_name: "web".into(),
            image_id: image.clone(),
            instance_type: "t3.nano".into(),
            tags: vec![apb::Tag {
                key: "tier".into(),
                value: "web".into(),
                propagate_at_launch: false,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .launch_template
        .unwrap();
    assert!(t.launch_template_id.starts_with("lt-"), "{t:?}");
    assert_eq!((t.default_version, t.latest_version), (1, 1));
    let listed = a
        .describe_launch_templates(apb::DescribeLaunchTemplatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .launch_templates;
    assert_eq!(listed.len(), 1);

    let g = a
        .create_auto_scaling_group(create_req("g1", 2, 10, 3))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert!(
        g.auto_scaling_group_arn
            .ends_with(":autoScalingGroupName/g1"),
        "{g:?}"
    );
    assert_eq!(g.launch_template_id, t.launch_template_id);
    wait_in_service(&a, "g1", 3, 1).await;

    a.set_desired_capacity(apb::SetDesiredCapacityRequest {
        auto_scaling_group_name: "g1".into(),
        desired_capacity: 6,
        honor_cooldown: false,
    })
    .await
    .unwrap();
    let g = wait_in_service(&a, "g1", 6, 2).await;

    // Terminate one by hand through the group without decrement: replaced.
    let victim = g.instances[0].instance_id.clone();
    let act = a
        .terminate_instance_in_auto_scaling_group(apb::TerminateInstanceInAutoScalingGroupRequest {
            instance_id: victim.clone(),
            should_decrement_desired_capacity: false,
        })
        .await
        .unwrap()
        .into_inner()
        .activity
        .unwrap();
    assert!(act.description.contains(&victim), "{act:?}");
    let g = wait_in_service(&a, "g1", 6, 2).await;
    assert!(g.instances.iter().all(|i| i.instance_id != victim));

    // Protection shows in DescribeAutoScalingInstances.
    let keep = g.instances[1].instance_id.clone();
    a.set_instance_protection(apb::SetInstanceProtectionRequest {
        auto_scaling_group_name: "g1".into(),
        instance_ids: vec![keep.clone()],
        protected_from_scale_in: true,
    })
    .await
    .unwrap();
    let insts = a
        .describe_auto_scaling_instances(apb::DescribeAutoScalingInstancesRequest {
            instance_ids: vec![keep.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert_eq!(insts.len(), 1);
    assert!(insts[0].protected_from_scale_in, "{insts:?}");
    assert_eq!(insts[0].auto_scaling_group_name, "g1");

    // A simple policy executed: +2 (capped by max 10 later), then its
    // cooldown refuses an honoring call.
    let arn = a
        .put_scaling_policy(apb::PutScalingPolicyRequest {
            auto_scaling_group_name: "g1".into(),
            policy_name: "up".into(),
            adjustment_type: "ChangeInCapacity".into(),
            scaling_adjustment: Some(2),
            cooldown: Some(300),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policy_arn;
    assert!(
        arn.ends_with(":autoScalingGroupName/g1:policyName/up"),
        "{arn}"
    );
    a.put_scaling_policy(apb::PutScalingPolicyRequest {
        auto_scaling_group_name: "g1".into(),
        policy_name: "cpu".into(),
        policy_type: "TargetTrackingScaling".into(),
        predefined_metric_type: "ASGAverageCPUUtilization".into(),
        target_value: Some(50.0),
        ..Default::default()
    })
    .await
    .unwrap();
    let pols = a
        .describe_policies(apb::DescribePoliciesRequest {
            auto_scaling_group_name: "g1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policies;
    let by_name: BTreeMap<String, apb::ScalingPolicy> = pols
        .into_iter()
        .map(|p| (p.policy_name.clone(), p))
        .collect();
    assert_eq!(by_name.len(), 2);
    assert_eq!(by_name["cpu"].target_value, Some(50.0));
    assert_eq!(by_name["up"].policy_arn, arn);
    a.execute_policy(apb::ExecutePolicyRequest {
        auto_scaling_group_name: "g1".into(),
        policy_name: "up".into(),
        honor_cooldown: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(groups(&mut a, &["g1"]).await[0].desired_capacity, 8);
    let e = a
        .execute_policy(apb::ExecutePolicyRequest {
            auto_scaling_group_name: "g1".into(),
            policy_name: "up".into(),
            honor_cooldown: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ScalingActivityInProgress", "{e:?}");
    a.delete_policy(apb::DeletePolicyRequest {
        auto_scaling_group_name: "g1".into(),
        policy_name: "up".into(),
    })
    .await
    .unwrap();

    // Scheduled actions: created, described, deleted.
    let start = nubis_control_plane::domain::model::now_ms() + 3_600_000;
    a.put_scheduled_update_group_action(apb::PutScheduledUpdateGroupActionRequest {
        auto_scaling_group_name: "g1".into(),
        scheduled_action_name: "night".into(),
        start_ms: Some(start),
        desired_capacity: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let acts = a
        .describe_scheduled_actions(apb::DescribeScheduledActionsRequest {
            auto_scaling_group_name: "g1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .actions;
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].desired_capacity, Some(2));
    assert_eq!(acts[0].next_ms, start);
    a.delete_scheduled_action(apb::DeleteScheduledActionRequest {
        auto_scaling_group_name: "g1".into(),
        scheduled_action_name: "night".into(),
    })
    .await
    .unwrap();

    // Activities recorded the launches and the termination.
    let acts = a
        .describe_scaling_activities(apb::DescribeScalingActivitiesRequest {
            auto_scaling_group_name: "g1".into(),
            max_records: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .activities;
    assert!(acts.len() >= 3, "{acts:?}");
    assert!(acts.iter().any(|x| x.description.contains(&victim)));

    // Without force a group with instances stays; with it everything goes.
    let e = a
        .delete_auto_scaling_group(apb::DeleteAutoScalingGroupRequest {
            auto_scaling_group_name: "g1".into(),
            force_delete: false,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ResourceInUse", "{e:?}");
    a.delete_auto_scaling_group(apb::DeleteAutoScalingGroupRequest {
        auto_scaling_group_name: "g1".into(),
        force_delete: true,
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "g1 deleted", || {
        let mut a = a.clone();
        async move { groups(&mut a, &["g1"]).await.is_empty().then_some(()) }
    })
    .await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_and_bad_input_are_refused_over_grpc() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut a = asg(&ep, tenant(&ep, "a").await).await;
    let mut b = asg(&ep, tenant(&ep, "b").await).await;
    a.create_launch_template(apb::CreateLaunchTemplateRequest {
        launch_template_name: "web".into(),
        image_id: image.clone(),
        instance_type: "t3.nano".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Bad input: ValidationError (AlreadyExists for a duplicate), nothing written.
    let mut unknown_template = create_req("bad", 1, 3, 1);
    unknown_template.launch_template = Some(apb::TemplateSpec {
        launch_template: "nope".into(),
        version: String::new(),
    });
    let mut unknown_version = create_req("bad", 1, 3, 1);
    unknown_version.launch_template = Some(apb::TemplateSpec {
        launch_template: "web".into(),
        version: "7".into(),
    });
    let mut foreign_zone = create_req("bad", 1, 3, 1);
    foreign_zone.availability_zones = vec!["us-east-1a".into()];
    let mut no_zone = create_req("bad", 1, 3, 1);
    no_zone.availability_zones.clear();
    let mut bad_name = create_req("", 1, 3, 1);
    bad_name.auto_scaling_group_name = String::new();
    for (what, req) in [
        ("MinSize > MaxSize", create_req("bad", 5, 2, 2)),
        ("desired > max", create_req("bad", 1, 3, 4)),
        ("unknown template", unknown_template),
        ("unknown version", unknown_version),
        ("zone not in the region", foreign_zone),
        ("no zone", no_zone),
        ("empty name", bad_name),
    ] {
        let e = a.create_auto_scaling_group(req).await.unwrap_err();
        assert_eq!(ec2_code(&e), "ValidationError", "{what}: {e:?}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
    }
    assert!(
        groups(&mut a, &[]).await.is_empty(),
        "a refused group was written"
    );

    a.create_auto_scaling_group(create_req("g", 0, 3, 0))
        .await
        .unwrap();
    let e = a
        .create_auto_scaling_group(create_req("g", 0, 3, 0))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "AlreadyExists", "{e:?}");
    let e = a
        .set_desired_capacity(apb::SetDesiredCapacityRequest {
            auto_scaling_group_name: "g".into(),
            desired_capacity: 4,
            honor_cooldown: false,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "above max: {e:?}");
    let e = a
        .put_scaling_policy(apb::PutScalingPolicyRequest {
            auto_scaling_group_name: "g".into(),
            policy_name: "p".into(),
            policy_type: "Bogus".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "bad policy type: {e:?}");
    let e = a
        .set_instance_protection(apb::SetInstanceProtectionRequest {
            auto_scaling_group_name: "g".into(),
            instance_ids: Vec::new(),
            protected_from_scale_in: true,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "no instance: {e:?}");

    // Tenant B: sees nothing of A's and changes nothing.
    assert!(groups(&mut b, &[]).await.is_empty());
    assert!(groups(&mut b, &["g"]).await.is_empty());
    assert!(b
        .describe_launch_templates(apb::DescribeLaunchTemplatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .launch_templates
        .is_empty());
    let e = b
        .set_desired_capacity(apb::SetDesiredCapacityRequest {
            auto_scaling_group_name: "g".into(),
            desired_capacity: 1,
            honor_cooldown: false,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "{e:?}");
    let e = b
        .update_auto_scaling_group(apb::UpdateAutoScalingGroupRequest {
            auto_scaling_group_name: "g".into(),
            max_size: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "{e:?}");
    let e = b
        .delete_auto_scaling_group(apb::DeleteAutoScalingGroupRequest {
            auto_scaling_group_name: "g".into(),
            force_delete: true,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "{e:?}");
    let e = b
        .put_scaling_policy(apb::PutScalingPolicyRequest {
            auto_scaling_group_name: "g".into(),
            policy_name: "p".into(),
            adjustment_type: "ChangeInCapacity".into(),
            scaling_adjustment: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "ValidationError", "{e:?}");
    let e = b
        .create_auto_scaling_group(create_req("g", 0, 3, 0))
        .await
        .unwrap_err();
    assert_eq!(
        ec2_code(&e),
        "ValidationError",
        "A's template from B: {e:?}"
    );

    let g = groups(&mut a, &["g"]).await;
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].max_size, g[0].desired_capacity), (3, 0));
    let pols = a
        .describe_policies(apb::DescribePoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert!(pols.is_empty(), "{pols:?}");

    // Unsigned: refused.
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let mut anon = apb::auto_scaling_client::AutoScalingClient::new(ch);
    let e = anon
        .describe_auto_scaling_groups(apb::DescribeAutoScalingGroupsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    cp.shutdown().await;
}
