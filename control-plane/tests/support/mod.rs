//! Test support: a real etcd per test (free loopback ports, temp dir, killed
//! on drop), control-plane replicas over it, signed gRPC clients and the
//! `NUBIS_REQUIRE_KVM` prerequisite policy (copied from nubis-tests).

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nubis_control_plane::config::Config;
use nubis_control_plane::server::Replica;
use nubis_proto::auth::{Credentials, Signer};
use nubis_proto::compute::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ADMIN_KEY: &str = "NKIAADMINTEST000001";
pub const ADMIN_SECRET: &str = "admin-secret-for-tests-only-0123456789";
pub const ENROL_ID: &str = "enrol-test";
pub const ENROL_SECRET: &str = "enrol-secret-for-tests-0123456789";
pub const ZONES: [&str; 3] = ["test-1a", "test-1b", "test-1c"];

/// True when tests must fail rather than skip on a missing prerequisite.
pub fn require_prereqs() -> bool {
    std::env::var("NUBIS_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Missing prerequisite: panic under NUBIS_REQUIRE_KVM=1, else print SKIPPED.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !require_prereqs(),
        "prerequisite missing and NUBIS_REQUIRE_KVM=1: {what}"
    );
    eprintln!("SKIPPED (prerequisite missing: {what}); set NUBIS_REQUIRE_KVM=1 to make this fatal");
    false
}

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

pub fn etcd_binary() -> Option<PathBuf> {
    let p = std::env::var_os("NUBIS_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into());
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd, killed (and its data removed) on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd, or returns None (SKIPPED) when it is not installed.
    pub async fn start() -> Option<Self> {
        init_logs();
        let bin = etcd_binary();
        if !prerequisite(bin.is_some(), "etcd at /usr/bin/etcd (Debian etcd-server)") {
            return None;
        }
        let bin = bin.unwrap();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (c, p) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{c}");
            let peer = format!("http://127.0.0.1:{p}");
            let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
            let child = Command::new(&bin)
                .arg("--name=t")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=t={peer}"))
                .arg("--log-level=error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            let mut etcd = Etcd {
                child,
                endpoint: client.clone(),
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = etcd.child.try_wait() {
                    break; // port race: retry with new ports
                }
                if let Ok(mut c) = etcd_client::Client::connect([client.as_str()], None).await {
                    if c.status().await.is_ok() {
                        return Some(etcd);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("etcd did not start");
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test configuration over `etcd` (gRPC on a free port, short leases).
pub fn config(etcd: &Etcd) -> Config {
    let mut text = String::new();
    text.push_str("region = \"test-1\"\nzones = [\"test-1a\", \"test-1b\", \"test-1c\"]\n");
    text.push_str(&format!("[etcd]\nendpoints = [\"{}\"]\n", etcd.endpoint));
    text.push_str("[grpc]\nlisten = \"127.0.0.1:0\"\n");
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

pub type Compute = pb::compute_client::ComputeClient<InterceptedService<Channel, Signer>>;
pub type Admin = pb::admin_client::AdminClient<InterceptedService<Channel, Signer>>;

pub async fn compute(endpoint: &str, creds: Credentials) -> Compute {
    let ch = nubis_proto::transport::connect(endpoint)
        .await
        .expect("connect");
    pb::compute_client::ComputeClient::with_interceptor(ch, Signer::new(creds))
}

pub async fn admin_client(endpoint: &str) -> Admin {
    let ch = nubis_proto::transport::connect(endpoint)
        .await
        .expect("connect");
    pb::admin_client::AdminClient::with_interceptor(ch, Signer::new(admin()))
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
