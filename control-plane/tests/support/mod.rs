//! Test support: a real etcd per test (nubis-testsupport), control-plane
//! replicas over it, signed gRPC clients and the `NUBIS_REQUIRE_KVM`
//! prerequisite policy (nubis-testsupport).

#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nubis_control_plane::config::Config;
use nubis_control_plane::server::Replica;
use nubis_proto::auth::Credentials;
use nubis_proto::compute::v1 as pb;

pub const ADMIN_KEY: &str = "NKIAADMINTEST000001";
pub const ADMIN_SECRET: &str = "admin-secret-for-tests-only-0123456789";
pub const ENROL_ID: &str = "enrol-test";
pub const ENROL_SECRET: &str = "enrol-secret-for-tests-0123456789";
pub const ZONES: [&str; 3] = ["test-1a", "test-1b", "test-1c"];

pub mod ca;

pub use nubis_testsupport::Etcd;

/// Logs to the test output (RUST_LOG, default warn).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Starts a throw-away etcd (test logs on), or None (SKIPPED) when it is
/// not installed.
pub fn start_etcd() -> Option<Etcd> {
    init_logs();
    Etcd::start()
}

/// A test configuration over `etcd` (gRPC on a free port, short leases).
pub fn config(etcd: &Etcd) -> Config {
    let mut text = String::new();
    text.push_str("region = \"test-1\"\nzones = [\"test-1a\", \"test-1b\", \"test-1c\"]\n");
    text.push_str(&format!("[etcd]\nendpoints = [\"{}\"]\n", etcd.endpoint));
    text.push_str("[grpc]\nlisten = \"127.0.0.1:0\"\n");
    text.push_str("[instance_types]\nseed = \"compact\"\n");
    text.push_str("[nodes]\nlease_ttl_seconds = 8\nheartbeat_interval_seconds = 1\n");
    text.push_str("[reconciler]\ninterval_seconds = 1\nelection_ttl_seconds = 3\ngc_terminated_after_seconds = 3600\n");
    text.push_str(&format!(
        "[auth]\nadmin_access_key_id = \"{ADMIN_KEY}\"\nadmin_secret_access_key = \"{ADMIN_SECRET}\"\n[[auth.enrolment_tokens]]\nid = \"{ENROL_ID}\"\nsecret = \"{ENROL_SECRET}\"\n"
    ));
    Config::from_toml(&text).expect("test config")
}

pub fn enrol() -> Credentials {
    Credentials::new(ENROL_ID, ENROL_SECRET)
}

pub fn admin() -> Credentials {
    Credentials::new(ADMIN_KEY, ADMIN_SECRET)
}

pub async fn start(cfg: Config) -> Replica {
    Replica::start(cfg).await.expect("replica starts")
}

pub fn endpoint(r: &Replica) -> String {
    format!("http://{}", r.grpc_addr.expect("tcp listener"))
}

pub type Compute = pb::compute_client::ComputeClient<nubis_proto::auth::SignedChannel>;
pub type Admin = pb::admin_client::AdminClient<nubis_proto::auth::SignedChannel>;

pub async fn compute(endpoint: &str, creds: Credentials) -> Compute {
    let ch = nubis_proto::transport::connect(endpoint)
        .await
        .expect("connect");
    pb::compute_client::ComputeClient::new(nubis_proto::auth::Signed::new(ch, creds))
}

pub async fn admin_client(endpoint: &str) -> Admin {
    let ch = nubis_proto::transport::connect(endpoint)
        .await
        .expect("connect");
    pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(ch, admin()))
}

/// Creates a tenant account, returns its credentials.
pub async fn tenant(endpoint: &str, name: &str) -> Credentials {
    let mut a = admin_client(endpoint).await;
    let r = a
        .create_account(pb::CreateAccountRequest { name: name.into() })
        .await
        .expect("create account")
        .into_inner();
    Credentials::new(r.access_key_id, r.secret_access_key)
}

/// Registers the public `hello` image as operator; returns its id.
pub async fn hello_image(endpoint: &str) -> String {
    let mut c = compute(endpoint, admin()).await;
    c.register_image(pb::RegisterImageRequest {
        name: "hello".into(),
        description: "test".into(),
        image_location: "hello".into(),
        manifest_sha256: String::new(),
        public: true,
        min_memory_mib: 0,
        architecture: String::new(),
        root_volume_gib: 0,
    })
    .await
    .expect("register image")
    .into_inner()
    .image_id
}

pub fn run_req(image: &str, count: u32) -> pb::RunInstancesRequest {
    pb::RunInstancesRequest {
        image_id: image.into(),
        instance_type: "t3.nano".into(),
        min_count: count,
        max_count: count,
        ..Default::default()
    }
}

/// The EC2 error code of a status.
pub fn ec2_code(s: &tonic::Status) -> String {
    s.metadata()
        .get(nubis_proto::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// All instances of the caller.
pub async fn describe_all(c: &mut Compute) -> Vec<pb::Instance> {
    let r = c
        .describe_instances(pb::DescribeInstancesRequest::default())
        .await
        .expect("describe")
        .into_inner();
    r.reservations
        .into_iter()
        .flat_map(|r| r.instances)
        .collect()
}

pub async fn state_of(c: &mut Compute, id: &str) -> pb::Instance {
    let r = c
        .describe_instances(pb::DescribeInstancesRequest {
            instance_ids: vec![id.into()],
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    r.reservations[0].instances[0].clone()
}

pub async fn wait_state(c: &Compute, id: &str, state: &str) -> pb::Instance {
    eventually(
        Duration::from_secs(90),
        &format!("{id} to be {state}"),
        || {
            let mut c2 = c.clone();
            let id = id.to_string();
            let state = state.to_string();
            async move {
                let i = state_of(&mut c2, &id).await;
                (i.state.as_ref().map(|s| s.name.as_str()) == Some(state.as_str())).then_some(i)
            }
        },
    )
    .await
}

/// A fresh tenant account, as the domain's caller (domain-level tests).
pub async fn setup_account(
    d: &nubis_control_plane::domain::Domain,
) -> nubis_control_plane::domain::Caller {
    use nubis_control_plane::domain::Caller;
    let (a, _, _) = d.create_account(&Caller::Operator, "t").await.unwrap();
    Caller::Tenant(a.id)
}

/// A fresh tenant account without its default VPC (deleted): instances it
/// launches without a subnet get node-block addresses on the legacy bridge
/// (the path of instances without a VPC; docs/networking.md).
pub async fn account_without_vpc(
    d: &nubis_control_plane::domain::Domain,
) -> nubis_control_plane::domain::Caller {
    let c = setup_account(d).await;
    for s in d.describe_subnets(&c, &[], &[]).await.unwrap() {
        d.delete_subnet(&c, s.subnet.id.as_str()).await.unwrap();
    }
    for g in d.describe_internet_gateways(&c, &[], &[]).await.unwrap() {
        if let Some(vpc) = &g.vpc_id {
            d.detach_internet_gateway(&c, g.id.as_str(), vpc.as_str())
                .await
                .unwrap();
        }
        d.delete_internet_gateway(&c, g.id.as_str()).await.unwrap();
    }
    for v in d.describe_vpcs(&c, &[], &[]).await.unwrap() {
        d.delete_vpc(&c, v.id.as_str()).await.unwrap();
    }
    c
}

/// A fresh tenant account named `name` (names are unique), as the
/// domain's caller.
pub async fn named_account(
    d: &nubis_control_plane::domain::Domain,
    name: &str,
) -> nubis_control_plane::domain::Caller {
    use nubis_control_plane::domain::Caller;
    let (a, _, _) = d.create_account(&Caller::Operator, name).await.unwrap();
    Caller::Tenant(a.id)
}

/// Registers the public `hello` image as operator through the domain;
/// returns its id.
pub async fn register_image(d: &nubis_control_plane::domain::Domain) -> String {
    d.register_image(
        &nubis_control_plane::domain::Caller::Operator,
        nubis_control_plane::domain::images::RegisterImageInput {
            name: "hello".into(),
            image_location: "hello".into(),
            public: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .id
    .to_string()
}

/// RunInstances of exactly `n` `t3.nano` instances of `image` (domain input).
pub fn nano_input(
    image: &str,
    n: u32,
) -> nubis_control_plane::domain::instances::RunInstancesInput {
    nubis_control_plane::domain::instances::RunInstancesInput {
        image_id: image.into(),
        instance_type: "t3.nano".into(),
        min_count: n,
        max_count: n,
        ..Default::default()
    }
}

/// Waits (30 s at most) until the domain shows instance `id` in `state`.
pub async fn wait_domain_state(
    d: &nubis_control_plane::domain::Domain,
    c: &nubis_control_plane::domain::Caller,
    id: &str,
    state: nubis_control_plane::domain::lifecycle::State,
) -> nubis_control_plane::domain::model::Instance {
    for _ in 0..300 {
        let i = d.instance(c, id).await.unwrap().value;
        if i.state == state {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {id} to be {state:?}");
}
