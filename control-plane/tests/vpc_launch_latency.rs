//! A measurement, not a check (ignored by default): RunInstances latency
//! with and without a public pool (the auto-assigned addresses of the
//! default subnets are claimed in the background). Run with
//! `cargo nextest run -p nubis-control-plane --test vpc_launch_latency --run-ignored all --no-capture`;
//! figures in docs/networking.md.

#![allow(clippy::unwrap_used)]
mod support;
mod vpc_common;
use std::time::Instant;
use support::*;
use vpc_common::Ec2;

async fn measure(pool: bool) -> (Vec<f64>, f64) {
    use nubis_control_plane::sim::{SimAgent, SimOptions};
    let etcd = start_etcd().expect("etcd is installed");
    let mut cfg = config(&etcd);
    if pool {
        cfg.vpc.public_pool = Some("198.51.100.0/22".into());
    }
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h", ZONES[0], 512, 512 * 1024),
    )
    .await
    .unwrap();
    let a = Ec2::new(&cp.domain, "a").await;
    let p = [
        ("ImageId", image.as_str()),
        ("InstanceType", "t3.nano"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("Placement.AvailabilityZone", ZONES[0]),
    ];
    a.ok("RunInstances", &p).await;
    let mut v = Vec::new();
    for _ in 0..60 {
        let t = Instant::now();
        a.ok("RunInstances", &p).await;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let p40 = [
        ("ImageId", image.as_str()),
        ("InstanceType", "t3.nano"),
        ("MinCount", "40"),
        ("MaxCount", "40"),
        ("Placement.AvailabilityZone", ZONES[0]),
    ];
    let t = Instant::now();
    let r = a.ok("RunInstances", &p40).await;
    let big = t.elapsed().as_secs_f64() * 1000.0;
    if pool {
        assert_eq!(vpc_common::texts(&r, "instanceId").len(), 40);
    }
    (v, big)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly"]
async fn measure_launch() {
    for round in 0..3 {
        for pool in [false, true] {
            let (v, big) = measure(pool).await;
            println!("round {round} pool={pool}: 1-instance RunInstances p50 {:.1} ms p90 {:.1} ms; 40 instances {:.1} ms", v[30], v[54], big);
        }
    }
}

/// One-instance RunInstances with `SubnetId` vs. with an available network
/// interface of the same subnet (`NetworkInterface.1.NetworkInterfaceId`):
/// the interface launch reads the interface twice more and rewrites it in
/// the placement transaction instead of creating a claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly"]
async fn measure_launch_with_interface() {
    use nubis_control_plane::sim::{SimAgent, SimOptions};
    use vpc_common::enis::{network, run};
    let etcd = start_etcd().expect("etcd is installed");
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h", ZONES[0], 512, 512 * 1024),
    )
    .await
    .unwrap();
    let a = Ec2::new(&cp.domain, "a").await;
    let (_, subnet, _) = network(&a, ZONES[0]).await;
    let launch = |p: Vec<(&'static str, String)>| {
        let a = &a;
        async move {
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let t = Instant::now();
            a.ok("RunInstances", &p).await;
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    launch(run(&image, &[("SubnetId", subnet.clone())])).await;
    for round in 0..3 {
        let (mut plain, mut eni) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            plain.push(launch(run(&image, &[("SubnetId", subnet.clone())])).await);
            let id = vpc_common::text(
                &a.ok("CreateNetworkInterface", &[("SubnetId", &subnet)])
                    .await,
                "networkInterfaceId",
            );
            eni.push(
                launch(run(
                    &image,
                    &[
                        ("NetworkInterface.1.DeviceIndex", "0".into()),
                        ("NetworkInterface.1.NetworkInterfaceId", id),
                    ],
                ))
                .await,
            );
        }
        for v in [&mut plain, &mut eni] {
            v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        }
        println!(
            "round {round}: 1-instance RunInstances p50 with SubnetId {:.1} ms, with an interface {:.1} ms",
            plain[15], eni[15]
        );
    }
}
