//! GetConsoleOutput throttling with a real etcd and a simulated agent: a
//! tenant polling its console in a loop, or many callers at once, cost the
//! instance's host one capture and etcd one write per
//! `CONSOLE_REFRESH_MIN`, and every caller still gets the output.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_control_plane::domain::instances::CONSOLE_REFRESH_MIN;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

/// How many times the console record of `id` was written (etcd's per-key
/// version counts the puts since the key was created).
async fn console_writes(etcd_endpoint: &str, prefix: &str, id: &str) -> i64 {
    let mut c = etcd_client::Client::connect([etcd_endpoint], None)
        .await
        .unwrap();
    let r = c
        .get(format!("{prefix}/v1/console/{id}"), None)
        .await
        .unwrap();
    r.kvs().first().map(|kv| kv.version()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_polling_is_coalesced_and_throttled() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let prefix = cfg.etcd.prefix.clone();
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let creds = tenant(&ep, "alice").await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("host-a", ZONES[0], 4, 1024))
        .await
        .unwrap();
    let c = compute(&ep, creds).await;
    let id = {
        let mut c = c.clone();
        c.run_instances(run_req(&image, 1))
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap()
            .instances[0]
            .instance_id
            .clone()
    };
    wait_state(&c, &id, "running").await;
    assert_eq!(console_writes(&etcd.endpoint, &prefix, &id).await, 0);

    // 20 callers at once: one request reaches the agent, one write to etcd,
    // and every caller gets the output.
    let calls = (0..20).map(|_| {
        let mut c = c.clone();
        let id = id.clone();
        tokio::spawn(async move {
            c.get_console_output(pb::GetConsoleOutputRequest {
                instance_id: id,
                latest: true,
            })
            .await
            .map(|r| r.into_inner().output)
        })
    });
    for out in futures::future::join_all(calls).await {
        let text = String::from_utf8(out.unwrap().unwrap()).unwrap();
        assert!(text.contains(&format!("NUBIS-GUEST-READY {id}")), "{text}");
    }
    assert_eq!(console_writes(&etcd.endpoint, &prefix, &id).await, 1);

    // A caller polling in a tight loop within the refresh interval gets the
    // stored copy: no new capture, no new write.
    let mut c1 = c.clone();
    let start = std::time::Instant::now();
    let mut polls = 0;
    while start.elapsed() < CONSOLE_REFRESH_MIN / 2 {
        let out = c1
            .get_console_output(pb::GetConsoleOutputRequest {
                instance_id: id.clone(),
                latest: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!out.output.is_empty());
        polls += 1;
    }
    assert!(polls > 1, "{polls} polls");
    assert_eq!(console_writes(&etcd.endpoint, &prefix, &id).await, 1);

    // Once the stored copy is older than the interval, the next call asks
    // the agent again: the throttle delays, it does not freeze the output.
    tokio::time::sleep(CONSOLE_REFRESH_MIN + Duration::from_millis(200)).await;
    c1.get_console_output(pb::GetConsoleOutputRequest {
        instance_id: id.clone(),
        latest: true,
    })
    .await
    .unwrap();
    assert_eq!(console_writes(&etcd.endpoint, &prefix, &id).await, 2);

    // Another tenant cannot read it (nor trigger a capture).
    let mut bob = compute(&ep, tenant(&ep, "bob").await).await;
    let err = bob
        .get_console_output(pb::GetConsoleOutputRequest {
            instance_id: id.clone(),
            latest: true,
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&err), "InvalidInstanceID.NotFound");
    assert_eq!(console_writes(&etcd.endpoint, &prefix, &id).await, 2);
}
