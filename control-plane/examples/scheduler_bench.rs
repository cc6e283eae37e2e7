//! Scheduler benchmark (run by tests/bench/scheduler.sh; not a test).
//!
//! Against the etcd at `--etcd`: measures the raw rate of compare+put
//! transactions from `--concurrency` tasks, then starts a control-plane
//! replica, registers `--nodes` nodes over the zones, launches
//! `--instances` instances through the gRPC Compute API in RunInstances
//! calls of `--batch` from `--concurrency` clients, measures the raw rate
//! again (side by side), then DescribeInstances latencies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nubis_control_plane::config::Config;
use nubis_control_plane::domain::model::{NodeImage, Resources};
use nubis_control_plane::domain::nodes::RegisterInput;
use nubis_control_plane::domain::Caller;
use nubis_control_plane::server::Replica;
use nubis_control_plane::store::{Store, Tx};
use nubis_proto::auth::Credentials;
use nubis_proto::compute::v1 as pb;

#[derive(Debug, Parser)]
struct Args {
    /// etcd client URL.
    #[arg(long)]
    etcd: String,
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 10000)]
    instances: usize,
    #[arg(long, default_value_t = 10)]
    batch: u32,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Raw transactions per measurement.
    #[arg(long, default_value_t = 2000)]
    raw_txns: usize,
    /// DescribeInstances calls per latency measurement.
    #[arg(long, default_value_t = 500)]
    describes: usize,
}

async fn raw_txn_rate(
    store: &Store,
    n: usize,
    concurrency: usize,
    tag: &str,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(concurrency) {
                let key = format!("/bench-raw/{tag}/{i}");
                let mut tx = Tx::new();
                tx.expect_absent(&key);
                tx.put_raw(&key, i.to_string().into_bytes());
                store.commit(tx).await?;
            }
            Ok::<_, nubis_control_plane::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let zones = ["bench-1a", "bench-1b", "bench-1c"];
    let cfg = Config::from_toml(&format!(
        r#"
region = "bench-1"
zones = ["bench-1a", "bench-1b", "bench-1c"]
[etcd]
endpoints = ["{}"]
[grpc]
listen = "127.0.0.1:0"
[nodes]
lease_ttl_seconds = 3600
heartbeat_interval_seconds = 60
[instance_types]
seed = "compact"
[auth]
admin_access_key_id = "NKIABENCHADMIN00001"
admin_secret_access_key = "bench-admin-secret-0123456789"
"#,
        a.etcd
    ))?;
    let store = Store::connect(std::slice::from_ref(&a.etcd), "/nubis").await?;
    let raw_before = raw_txn_rate(&store, a.raw_txns, a.concurrency, "before").await?;

    let replica = Replica::start(cfg).await.context("replica")?;
    let d = replica.domain.clone();
    let ep = format!("http://{}", replica.grpc_addr.context("listener")?);
    let t = Instant::now();
    let mut reg = Vec::new();
    for i in 0..a.nodes {
        let d = d.clone();
        let zone = zones[i % 3].to_string();
        reg.push(tokio::spawn(async move {
            d.register_node(
                &Caller::Enrolment("bench".into()),
                RegisterInput {
                    host_id: format!("bench-host-{i}"),
                    availability_zone: zone,
                    capacity: Resources {
                        vcpus: 16,
                        memory_mib: 16384,
                    },
                    images: vec![NodeImage {
                        name: "hello".into(),
                        manifest_sha256: String::new(),
                    }],
                    agent_version: "bench".into(),
                    metrics_endpoint: String::new(),
                    instances: vec![],
                    enrolment_secret: String::new(),
                    underlay_ip: String::new(),
                },
            )
            .await
        }));
        if reg.len() >= 32 {
            for r in reg.drain(..) {
                r.await??;
            }
        }
    }
    for r in reg {
        r.await??;
    }
    eprintln!(
        "registered {} nodes in {:.1} s",
        a.nodes,
        t.elapsed().as_secs_f64()
    );
    d.store().client().kv_client().get("x", None).await?;
    let image = d
        .register_image(
            &Caller::Operator,
            nubis_control_plane::domain::images::RegisterImageInput {
                name: "hello".into(),
                image_location: "hello".into(),
                public: true,
                ..Default::default()
            },
        )
        .await?
        .id
        .to_string();
    let (_, key, secret) = d.create_account(&Caller::Operator, "bench").await?;
    let creds = Credentials::new(key, secret);
    // Let the node cache catch up with the registrations.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let calls = a.instances.div_ceil(a.batch as usize);
    let t = Instant::now();
    let mut tasks = Vec::new();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    for w in 0..a.concurrency {
        let ch = nubis_proto::transport::connect(&ep).await?;
        let mut c = pb::compute_client::ComputeClient::new(nubis_proto::auth::Signed::new(
            ch,
            creds.clone(),
        ));
        let image = image.clone();
        let batch = a.batch;
        let lat = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = 0usize;
            for i in (w..calls).step_by(a.concurrency) {
                let s = Instant::now();
                let r = c
                    .run_instances(pb::RunInstancesRequest {
                        image_id: image.clone(),
                        instance_type: "t3.nano".into(),
                        min_count: batch,
                        max_count: batch,
                        client_token: format!("bench-{i}"),
                        ..Default::default()
                    })
                    .await?;
                if let Ok(mut l) = lat.lock() {
                    l.push(s.elapsed());
                }
                placed += r
                    .into_inner()
                    .reservation
                    .map(|r| r.instances.len())
                    .unwrap_or(0);
            }
            Ok::<_, tonic::Status>(placed)
        }));
    }
    let mut placed = 0;
    for t in tasks {
        placed += t.await??;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let placements = placed as f64 / elapsed;
    let mut run_lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let raw_after = raw_txn_rate(&store, a.raw_txns, a.concurrency, "after").await?;
    let raw = (raw_before + raw_after) / 2.0;

    // DescribeInstances latencies at this size.
    let ch = nubis_proto::transport::connect(&ep).await?;
    let mut c =
        pb::compute_client::ComputeClient::new(nubis_proto::auth::Signed::new(ch, creds.clone()))
            .max_decoding_message_size(64 * 1024 * 1024);
    let page = c
        .describe_instances(pb::DescribeInstancesRequest {
            max_results: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids: Vec<String> = page
        .reservations
        .iter()
        .flat_map(|r| r.instances.iter().map(|i| i.instance_id.clone()))
        .collect();
    let mut by_id = Vec::new();
    for i in 0..a.describes {
        let s = Instant::now();
        c.describe_instances(pb::DescribeInstancesRequest {
            instance_ids: vec![ids[(i * 7919) % ids.len()].clone()],
            ..Default::default()
        })
        .await?;
        by_id.push(s.elapsed());
    }
    let mut paged = Vec::new();
    for _ in 0..(a.describes / 5).max(10) {
        let s = Instant::now();
        c.describe_instances(pb::DescribeInstancesRequest {
            max_results: 100,
            filters: vec![pb::Filter {
                name: "instance-state-name".into(),
                values: vec!["pending".into(), "running".into()],
            }],
            ..Default::default()
        })
        .await?;
        paged.push(s.elapsed());
    }
    let counted = d.store().count(&d.store().keys().all_instances()).await?;

    println!(
        "nodes: {} in 3 zones; instances placed: {placed} (stored: {counted})",
        a.nodes
    );
    println!(
        "RunInstances: {calls} calls of {} from {} clients in {elapsed:.2} s: {placements:.0} placements/s, {:.0} calls/s; call p50 {:.1} ms, p99 {:.1} ms",
        a.batch,
        a.concurrency,
        calls as f64 / elapsed,
        pct(&mut run_lat, 0.5),
        pct(&mut run_lat, 0.99)
    );
    println!(
        "raw etcd compare+put txn/s ({} tasks): before {raw_before:.0}, after {raw_after:.0}, mean {raw:.0}",
        a.concurrency
    );
    println!(
        "placements/s / raw txn/s = {:.2} (goal >= 0.5)",
        placements / raw
    );
    println!(
        "DescribeInstances by id at {counted} instances: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
        pct(&mut by_id, 0.5),
        pct(&mut by_id, 0.99),
        by_id.len()
    );
    println!(
        "DescribeInstances page of 100 with a state filter: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
        pct(&mut paged, 0.5),
        pct(&mut paged, 0.99),
        paged.len()
    );
    replica.shutdown().await;
    Ok(())
}
