//! The control plane's TOML configuration (documented in docs/compute-api.md,
//! example in deploy/control-plane.example.toml). Every field has a default
//! except the credentials.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Region name, e.g. `nubis-local-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The availability zones of the region. Nodes must report one of them.
    #[serde(default = "default_zones")]
    pub zones: Vec<String>,
    /// etcd connection.
    #[serde(default)]
    pub etcd: EtcdConfig,
    /// gRPC listeners.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// EC2 Query gateway listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Placement policy.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Node liveness.
    #[serde(default)]
    pub nodes: NodesConfig,
    /// Background tasks (`[reconciler]`; `[tasks]` is accepted too).
    #[serde(default, alias = "tasks")]
    pub reconciler: ReconcilerConfig,
    /// Instance addressing.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The lifecycle event outbox.
    #[serde(default)]
    pub events: EventsConfig,
    /// Usage ledger: prices and the hourly export (docs/billing.md).
    #[serde(default)]
    pub billing: BillingConfig,
    /// Prometheus exposition of the replica's metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The instance-type catalogue's seed set.
    #[serde(default)]
    pub instance_types: InstanceTypesConfig,
    /// Operator credential and agent enrolment tokens.
    pub auth: AuthConfig,
    /// VPC limits (docs/networking.md).
    #[serde(default)]
    pub vpc: VpcConfig,
    /// `[images]`.
    #[serde(default)]
    pub images: ImagesConfig,
    /// Per-account quota defaults (docs/operations.md, "Quotas").
    #[serde(default)]
    pub quotas: QuotasConfig,
}

/// `[quotas]`: the default limits of every account; the operator overrides
/// them per account (`nubis admin quotas set`, [`crate::domain::quotas`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// Instances pending, running, stopping or shutting down.
    #[serde(default = "default_quota_instances")]
    pub running_instances: u64,
    /// vCPUs of those instances.
    #[serde(default = "default_quota_vcpus")]
    pub vcpus: u64,
    /// Registered images.
    #[serde(default = "default_quota_images")]
    pub images: u64,
    /// Key pairs (EC2's quota: 5,000 per region).
    #[serde(default = "default_quota_key_pairs")]
    pub key_pairs: u64,
    /// Launch templates (EC2's quota: 5,000 per region).
    #[serde(default = "default_quota_key_pairs")]
    pub launch_templates: u64,
    /// Auto Scaling groups (AWS's default quota: 500 per region).
    #[serde(default = "default_quota_asgs")]
    pub auto_scaling_groups: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            running_instances: default_quota_instances(),
            vcpus: default_quota_vcpus(),
            images: default_quota_images(),
            key_pairs: default_quota_key_pairs(),
            launch_templates: default_quota_key_pairs(),
            auto_scaling_groups: default_quota_asgs(),
        }
    }
}

fn default_quota_instances() -> u64 {
    1000
}
fn default_quota_vcpus() -> u64 {
    2048
}
fn default_quota_images() -> u64 {
    1000
}
fn default_quota_key_pairs() -> u64 {
    5000
}
fn default_quota_asgs() -> u64 {
    500
}

/// `[vpc]`: per-account VPC limits ([`crate::domain::vpc`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcConfig {
    /// VPCs per account, the default VPC included (EC2's default quota: 5).
    #[serde(default = "default_vpcs_per_account")]
    pub vpcs_per_account: u32,
    /// The region's public IPv4 pool (`a.b.c.d/len`, /16../30): Elastic IPs
    /// and auto-assigned public addresses come from it (its first and last
    /// address excepted). Unset: AllocateAddress answers
    /// `InsufficientAddressCapacity` and launches get no public address.
    #[serde(default)]
    pub public_pool: Option<String>,
    /// Elastic IPs per account (EC2's default quota: 5).
    #[serde(default = "default_elastic_ips_per_account")]
    pub elastic_ips_per_account: u32,
}

impl Default for VpcConfig {
    fn default() -> Self {
        Self {
            vpcs_per_account: default_vpcs_per_account(),
            public_pool: None,
            elastic_ips_per_account: default_elastic_ips_per_account(),
        }
    }
}

fn default_elastic_ips_per_account() -> u32 {
    5
}

fn default_vpcs_per_account() -> u32 {
    5
}

/// etcd connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `["http://127.0.0.1:2379"]`.
    #[serde(default = "default_etcd_endpoints")]
    pub endpoints: Vec<String>,
    /// Key prefix for all Nubis keys.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `[etcd.tls]`: client TLS (endpoints must then be `https://`).
    #[serde(default)]
    pub tls: Option<EtcdTlsConfig>,
    /// etcd user (etcd's `auth enable`); needs `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the etcd user's password (first line; mode 0600).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: default_etcd_endpoints(),
            prefix: default_prefix(),
            tls: None,
            username: None,
            password_file: None,
        }
    }
}

/// `[etcd.tls]`: how the control plane verifies etcd and proves itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// CA (PEM) that signed the etcd members' server certificates.
    pub ca_file: PathBuf,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify in the server certificate instead of the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// gRPC listeners (Compute, Admin and Node services on each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// TCP listen address.
    #[serde(default = "default_grpc_listen")]
    pub listen: Option<SocketAddr>,
    /// Unix socket path (agents in network namespaces use it).
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// TLS on the TCP listener (the Unix socket is protected by file
    /// permissions instead). Absent: plaintext.
    #[serde(default)]
    pub tls: Option<GrpcTlsConfig>,
    /// Signed calls per second per account (tenants and the operator; agents
    /// are not limited), per replica. Beyond it: `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_grpc_rate")]
    pub rate_limit_per_second: f64,
    /// Largest burst per account.
    #[serde(default = "default_grpc_burst")]
    pub rate_limit_burst: f64,
    /// Open TCP connections per replica; more are closed at once.
    #[serde(default = "default_grpc_max_connections")]
    pub max_connections: usize,
    /// Open TCP connections per client IP address; more are closed at once.
    #[serde(default = "default_grpc_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// A new TCP connection must finish its TLS handshake and send the
    /// HTTP/2 preface within this many seconds of being accepted.
    #[serde(default = "default_grpc_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// Concurrent calls (HTTP/2 streams) per connection.
    #[serde(default = "default_grpc_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: default_grpc_listen(),
            unix_socket: None,
            tls: None,
            rate_limit_per_second: default_grpc_rate(),
            rate_limit_burst: default_grpc_burst(),
            max_connections: default_grpc_max_connections(),
            max_connections_per_ip: default_grpc_max_connections_per_ip(),
            handshake_timeout_seconds: default_grpc_handshake_timeout(),
            max_concurrent_streams: default_grpc_max_concurrent_streams(),
        }
    }
}

impl GrpcConfig {
    /// The TCP listener's connection limits.
    pub fn limits(&self) -> crate::grpc_listener::GrpcLimits {
        crate::grpc_listener::GrpcLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_timeout_seconds),
        }
    }

    /// The per-account rate limit.
    pub fn rate_limit(&self) -> crate::ratelimit::RateLimit {
        crate::ratelimit::RateLimit {
            rate: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
        }
    }
}

fn default_grpc_rate() -> f64 {
    50.0
}
fn default_grpc_burst() -> f64 {
    200.0
}
fn default_grpc_max_connections() -> usize {
    4096
}
fn default_grpc_max_connections_per_ip() -> usize {
    256
}
fn default_grpc_handshake_timeout() -> u64 {
    10
}
fn default_grpc_max_concurrent_streams() -> u32 {
    128
}

/// `[grpc.tls]`: the TCP listener serves TLS with this certificate; with
/// `client_ca_file`, mutual TLS for agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM, PKCS#8 or RSA/EC).
    pub key_file: PathBuf,
    /// CA (PEM) of agents' client certificates. When set, clients may present
    /// a certificate it signed, and Node API calls over TCP must: an agent
    /// needs both its certificate and its node credential. Tenants and the
    /// operator need no certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl GrpcTlsConfig {
    /// Whether Node API calls over TCP must carry a verified client certificate.
    pub fn requires_node_certificates(&self) -> bool {
        self.client_ca_file.is_some()
    }
}

/// EC2 Query gateway listener (`[http]`): its address and what protects it
/// from slow or hostile clients ([`crate::ec2::listener`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP listen address; none disables the gateway.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// A request's headers must arrive within this time of their first byte.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// A request's body must arrive within this time of its headers.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_seconds: u64,
    /// A connection with no request in progress and no bytes moving for this
    /// long is closed (new connections and keep-alive between requests).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Open connections per replica; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections per client IP address; more are answered 503 and closed.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Largest request body; larger ones get `413 RequestEntityTooLarge`
    /// (from `Content-Length` before any byte is read, or once the
    /// streamed body passes it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Requests per second per account (EC2, Auto Scaling and CloudWatch
    /// together), per replica. Beyond it: `RequestLimitExceeded`.
    #[serde(default = "default_ec2_rate")]
    pub rate_limit_per_second: f64,
    /// Largest burst per account.
    #[serde(default = "default_ec2_burst")]
    pub rate_limit_burst: f64,
    /// Refuse a mutating request whose SigV4 signature was seen before
    /// (recorded in etcd like gRPC nonces). Off by default: an identical
    /// request re-sent within the same second has the same signature.
    #[serde(default)]
    pub replay_cache: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); goes with
    /// `tls_key_file`. Absent: plain HTTP.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            header_timeout_seconds: default_header_timeout(),
            body_timeout_seconds: default_body_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_body_bytes: default_max_body_bytes(),
            rate_limit_per_second: default_ec2_rate(),
            rate_limit_burst: default_ec2_burst(),
            replay_cache: false,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl HttpConfig {
    /// The gateway's TLS files, when it serves HTTPS.
    pub fn tls_files(&self) -> Option<crate::tls::PemFiles<'_>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::PemFiles {
                cert_setting: "http.tls_cert_file",
                cert_file: cert,
                key_setting: "http.tls_key_file",
                key_file: key,
            }),
            _ => None,
        }
    }

    /// The gateway's request settings.
    pub fn gateway(&self) -> crate::ec2::GatewayConfig {
        crate::ec2::GatewayConfig {
            max_body: self.max_body_bytes,
            rate_limit: crate::ratelimit::RateLimit {
                rate: self.rate_limit_per_second,
                burst: self.rate_limit_burst,
            },
            body_timeout: std::time::Duration::from_secs(self.body_timeout_seconds),
        }
    }
}

fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_ip() -> usize {
    64
}
fn default_max_body_bytes() -> usize {
    crate::ec2::DEFAULT_MAX_BODY
}
fn default_ec2_rate() -> f64 {
    crate::ratelimit::RateLimit::default().rate
}
fn default_ec2_burst() -> f64 {
    crate::ratelimit::RateLimit::default().burst
}

/// Placement policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Spread across zones and hosts (default).
    #[default]
    Spread,
    /// Fill the most-used hosts first.
    Binpack,
}

/// Scheduler settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// spread | binpack.
    #[serde(default)]
    pub policy: Policy,
    /// vCPUs placeable per reported vCPU.
    #[serde(default = "default_cpu_overcommit")]
    pub cpu_overcommit: f64,
    /// MiB placeable per reported MiB.
    #[serde(default = "one")]
    pub memory_overcommit: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Spread,
            cpu_overcommit: default_cpu_overcommit(),
            memory_overcommit: 1.0,
        }
    }
}

/// Node liveness settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesConfig {
    /// TTL of a node's etcd lease.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_seconds: u32,
    /// How often agents should heartbeat.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_seconds: u32,
    /// Disruption rule: when more than this fraction of the nodes look lost
    /// at once, nobody is stopped (docs/operations.md).
    #[serde(default = "default_disruption_fraction")]
    pub disruption_fraction: f64,
    /// Disruption rule: a zone with at least this many nodes that all look
    /// lost at once is a disruption too.
    #[serde(default = "default_disruption_min_zone_nodes")]
    pub disruption_min_zone_nodes: u32,
    /// Largest vCPU count a node may advertise (Register and Heartbeat).
    #[serde(default = "default_max_node_vcpus")]
    pub max_vcpus: u32,
    /// Largest memory (MiB) a node may advertise.
    #[serde(default = "default_max_node_memory_mib")]
    pub max_memory_mib: u32,
    /// New nodes start cordoned, pending `nubis admin nodes approve`.
    #[serde(default)]
    pub require_approval: bool,
    /// Default lifetime of a per-host enrolment token.
    #[serde(default = "default_enrolment_ttl")]
    pub enrolment_token_ttl_seconds: u32,
}

fn default_max_node_vcpus() -> u32 {
    1024
}
fn default_max_node_memory_mib() -> u32 {
    16 * 1024 * 1024
}
fn default_enrolment_ttl() -> u32 {
    24 * 3600
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            lease_ttl_seconds: default_lease_ttl(),
            heartbeat_interval_seconds: default_heartbeat(),
            disruption_fraction: default_disruption_fraction(),
            disruption_min_zone_nodes: default_disruption_min_zone_nodes(),
            max_vcpus: default_max_node_vcpus(),
            max_memory_mib: default_max_node_memory_mib(),
            require_approval: false,
            enrolment_token_ttl_seconds: default_enrolment_ttl(),
        }
    }
}

/// Background loop settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Terminated instances are deleted this long after termination.
    #[serde(default = "default_gc")]
    pub gc_terminated_after_seconds: u64,
    /// Period of each full pass.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    /// TTL of the leadership lease.
    #[serde(default = "default_election_ttl")]
    pub election_ttl_seconds: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            gc_terminated_after_seconds: default_gc(),
            interval_seconds: default_interval(),
            election_ttl_seconds: default_election_ttl(),
        }
    }
}

/// Instance addressing: each node gets a block of `cidr`; its first address
/// is the gateway (the agent's bridge), instances get the following ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The region's instance network, e.g. `10.0.0.0/8`.
    #[serde(default = "default_cidr")]
    pub cidr: String,
    /// Prefix length of each node's block, e.g. 22 (1021 instances per node).
    #[serde(default = "default_node_prefix")]
    pub node_prefix_len: u8,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            cidr: default_cidr(),
            node_prefix_len: default_node_prefix(),
        }
    }
}

/// `[events]`: the lifecycle event outbox ([`crate::domain::events`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Events older than this are deleted by the reconciler (>= 1).
    #[serde(default = "default_event_retention")]
    pub retention_days: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_days: default_event_retention(),
        }
    }
}

/// `[billing]`: the price table and the hourly usage export
/// ([`crate::domain::billing`], docs/billing.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// ISO 4217 currency code of the prices (three capital letters).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Price per instance type per hour, as a decimal string with at most
    /// 9 decimals (`"t3.micro" = "0.0104"`). A type without a price is
    /// metered and rated at 0.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, String>,
    /// Directory the leader writes one FOCUS CSV file per hour into; none
    /// disables the export.
    #[serde(default)]
    pub export_dir: Option<PathBuf>,
    /// How long after an hour ends it is exported (seconds; room for
    /// replicas' clock skew in event times).
    #[serde(default = "default_export_delay")]
    pub export_delay_seconds: u64,
    /// How many past hours the export catches up on (files already written
    /// are rewritten identically).
    #[serde(default = "default_export_backfill")]
    pub export_backfill_hours: u32,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: default_currency(),
            prices: Default::default(),
            export_dir: None,
            export_delay_seconds: default_export_delay(),
            export_backfill_hours: default_export_backfill(),
        }
    }
}

/// `[images]`: which image locations tenants may register
/// (domain/image_locations.rs).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Locations (names in the agents' image directory, `*`/`?` wildcards)
    /// every tenant may register besides those of public images.
    #[serde(default)]
    pub tenant_locations: Vec<String>,
}

/// `[instance_types]`: how a new cluster's catalogue is seeded (once per
/// cluster; later the operator manages it with `nubis admin instance-types`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InstanceTypesConfig {
    /// `ec2` (default: EC2's sizes) or `compact` (the small sizes test
    /// clusters and the quickstart use).
    #[serde(default)]
    pub seed: crate::domain::catalogue::SeedProfile,
}

/// `[metrics]`: Prometheus text exposition (`GET /metrics`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// TCP listen address of `/metrics`; none disables it.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// Credentials known from configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The operator's access key id (Admin API; acts as account 000000000000
    /// on the Compute API).
    pub admin_access_key_id: String,
    /// The operator's secret.
    pub admin_secret_access_key: String,
    /// Tokens with which agents may register.
    #[serde(default)]
    pub enrolment_tokens: Vec<EnrolmentToken>,
    /// File with the key (64 hex digits, mode 0600) that seals access-key
    /// secrets in etcd (AES-256-GCM); none stores them in plaintext.
    #[serde(default)]
    pub secrets_key_file: Option<PathBuf>,
    /// Keys `secrets_key_file` replaced: they only open, and every replica
    /// reseals what they sealed with the current key at start.
    #[serde(default)]
    pub previous_secrets_key_files: Vec<PathBuf>,
}

/// An agent enrolment token (key id + secret, used to sign `Register`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentToken {
    /// Public id.
    pub id: String,
    /// Secret.
    pub secret: String,
}

impl std::fmt::Debug for EnrolmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolmentToken")
            .field("id", &self.id)
            .finish()
    }
}

fn default_region() -> String {
    "nubis-local-1".into()
}
fn default_zones() -> Vec<String> {
    vec![
        "nubis-local-1a".into(),
        "nubis-local-1b".into(),
        "nubis-local-1c".into(),
    ]
}
fn default_etcd_endpoints() -> Vec<String> {
    vec!["http://127.0.0.1:2379".into()]
}
fn default_prefix() -> String {
    "/nubis".into()
}
fn default_grpc_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 50051)))
}
fn default_cpu_overcommit() -> f64 {
    4.0
}
fn one() -> f64 {
    1.0
}
fn default_lease_ttl() -> u32 {
    15
}
fn default_heartbeat() -> u32 {
    5
}
fn default_disruption_fraction() -> f64 {
    1.0 / 3.0
}
fn default_disruption_min_zone_nodes() -> u32 {
    2
}
fn default_gc() -> u64 {
    3600
}
fn default_interval() -> u64 {
    5
}
fn default_election_ttl() -> u32 {
    10
}
fn default_event_retention() -> u32 {
    400
}
fn default_currency() -> String {
    "USD".into()
}
fn default_export_delay() -> u64 {
    120
}
fn default_export_backfill() -> u32 {
    24
}
fn default_cidr() -> String {
    "10.0.0.0/8".into()
}
fn default_node_prefix() -> u8 {
    22
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| Error::invalid(format!("configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-field constraints.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("configuration: {m}")));
        if self.zones.is_empty() {
            return bad("zones must not be empty".into());
        }
        for z in &self.zones {
            if !crate::domain::validation::is_name(z, 64) {
                return bad(format!("bad zone name {z:?}"));
            }
        }
        let f = self.nodes.disruption_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return bad(format!(
                "nodes.disruption_fraction must be in (0, 1], not {f}"
            ));
        }
        if self.etcd.endpoints.is_empty() {
            return bad("etcd.endpoints must not be empty".into());
        }
        if let Some(t) = &self.etcd.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return bad("etcd.tls: cert_file and key_file go together".into());
            }
            if let Some(e) = self
                .etcd
                .endpoints
                .iter()
                .find(|e| !e.starts_with("https://"))
            {
                return bad(format!("etcd.tls needs https:// endpoints, not {e:?}"));
            }
        }
        if self.grpc.max_connections == 0
            || self.grpc.max_connections_per_ip == 0
            || self.grpc.handshake_timeout_seconds == 0
            || self.grpc.max_concurrent_streams == 0
        {
            return bad(
                "grpc: connection limits and the handshake timeout must be positive".into(),
            );
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            return bad("http: tls_cert_file and tls_key_file go together".into());
        }
        if self.etcd.username.is_some() != self.etcd.password_file.is_some() {
            return bad("etcd: username and password_file go together".into());
        }
        if !(self.scheduler.cpu_overcommit >= 1.0 && self.scheduler.cpu_overcommit <= 64.0) {
            return bad("scheduler.cpu_overcommit must be within 1..=64".into());
        }
        if !(self.scheduler.memory_overcommit >= 1.0 && self.scheduler.memory_overcommit <= 4.0) {
            return bad("scheduler.memory_overcommit must be within 1..=4".into());
        }
        if self.nodes.lease_ttl_seconds < 2
            || self.nodes.heartbeat_interval_seconds == 0
            || self.nodes.heartbeat_interval_seconds >= self.nodes.lease_ttl_seconds
        {
            return bad(
                "nodes: need 0 < heartbeat_interval_seconds < lease_ttl_seconds, ttl >= 2".into(),
            );
        }
        crate::domain::network::Network::from_config(&self.network)?;
        if let Some(p) = &self.vpc.public_pool {
            crate::domain::vpc::addresses::PublicPool::parse(p)?;
        }
        if !(1..=36_500).contains(&self.events.retention_days) {
            return bad("events.retention_days must be within 1..=36500".into());
        }
        let c = &self.billing.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad(format!(
                "billing.currency must be an ISO 4217 code, not {c:?}"
            ));
        }
        for (ty, price) in &self.billing.prices {
            // Types live in etcd (the operator may add one after pricing
            // it): only the name's form is checked here.
            if !crate::domain::catalogue::name_ok(ty) {
                return bad(format!("billing.prices: invalid instance type name {ty:?}"));
            }
            crate::domain::billing::rating::HourlyPrice::parse(price)?;
        }
        if self.billing.export_backfill_hours > 24 * 400 {
            return bad("billing.export_backfill_hours must be at most 9600".into());
        }
        if self.auth.admin_access_key_id.len() < 8 || self.auth.admin_secret_access_key.len() < 16 {
            return bad("auth: admin key id >= 8 chars and secret >= 16 chars required".into());
        }
        let h = &self.http;
        if h.header_timeout_seconds == 0
            || h.body_timeout_seconds == 0
            || h.idle_timeout_seconds == 0
        {
            return bad("http: the timeouts must be at least 1 second".into());
        }
        if h.max_connections == 0 || h.max_connections_per_ip == 0 {
            return bad("http: max_connections and max_connections_per_ip must be positive".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&h.max_body_bytes) {
            return bad("http.max_body_bytes must be within 1024..=16777216".into());
        }
        for (what, rate, burst) in [
            ("http", h.rate_limit_per_second, h.rate_limit_burst),
            (
                "grpc",
                self.grpc.rate_limit_per_second,
                self.grpc.rate_limit_burst,
            ),
        ] {
            if !(rate > 0.0 && rate.is_finite() && burst >= 1.0 && burst.is_finite()) {
                return bad(format!(
                    "{what}: need rate_limit_per_second > 0 and rate_limit_burst >= 1"
                ));
            }
        }
        if self.grpc.listen.is_none() && self.grpc.unix_socket.is_none() {
            return bad("grpc: need listen and/or unix_socket".into());
        }
        if self.grpc.tls.is_some() && self.grpc.listen.is_none() {
            return bad("grpc.tls needs grpc.listen (TLS applies to the TCP listener)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let cfg = Config::from_toml(include_str!("../../deploy/control-plane.example.toml"))
            .expect("deploy/control-plane.example.toml is valid");
        assert_eq!(cfg.zones.len(), 3);
        assert_eq!(cfg.scheduler.policy, Policy::Spread);
        assert!(cfg.grpc.unix_socket.is_some());
        assert_eq!(cfg.auth.enrolment_tokens.len(), 1);
        assert_eq!(cfg.billing.currency, "USD");
        assert_eq!(
            cfg.billing.prices.get("t3.micro").map(String::as_str),
            Some("0.0104")
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        let auth = "[auth]\nadmin_access_key_id = \"NKIAXXXXXXXX\"\nadmin_secret_access_key = \"0123456789abcdef0\"\n";
        assert!(Config::from_toml(auth).is_ok());
        let d = Config::from_toml(auth).unwrap();
        assert!((d.nodes.disruption_fraction - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(d.nodes.disruption_min_zone_nodes, 2);
        for f in ["0.0", "1.5", "-0.1", "nan"] {
            let t = format!("[nodes]\ndisruption_fraction = {f}\n{auth}");
            assert!(Config::from_toml(&t).is_err(), "fraction {f} accepted");
        }
        let t =
            format!("[tasks]\ninterval_seconds = 2\n[nodes]\ndisruption_fraction = 1.0\n{auth}");
        let c = Config::from_toml(&t).expect("[tasks] is an alias of [reconciler]");
        assert_eq!(c.reconciler.interval_seconds, 2);
        for bad in [
            "zones = []\n",
            "unknown_key = 1\n",
            "[scheduler]\npolicy = \"random\"\n",
            "[scheduler]\ncpu_overcommit = 0.5\n",
            "[nodes]\nlease_ttl_seconds = 5\nheartbeat_interval_seconds = 5\n",
            "[network]\ncidr = \"10.0.0.0/8\"\nnode_prefix_len = 8\n",
            "[events]\nretention_days = 0\n",
            "[billing]\ncurrency = \"usd\"\n",
            "[billing]\ncurrency = \"EURO\"\n",
            "[billing.prices]\n\"T9_huge\" = \"1\"\n",
            "[billing.prices]\n\"t3.nano\" = \"-1\"\n",
            "[billing.prices]\n\"t3.nano\" = \"0.0000000001\"\n",
            "[billing.prices]\n\"t3.nano\" = 0.5\n",
            "[billing]\nexport_backfill_hours = 10000\n",
            "[metrics]\nlisten = \"nowhere\"\n",
        ] {
            assert!(Config::from_toml(&format!("{bad}{auth}")).is_err(), "{bad}");
        }
        assert!(
            Config::from_toml("region = \"x\"\n").is_err(),
            "auth is required"
        );
    }
}
