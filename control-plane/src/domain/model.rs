//! The records Nubis keeps in etcd (JSON), shared by the domain modules, the
//! scheduler and the reconcilers. Their keys are in [`crate::store::keys`].
//!
//! Every record is a [`Record`] with a schema version, written as the first
//! JSON field (see [`crate::store::record`] for the upgrade rule). Schema 1 is
//! the wave-1 layout (records without `schema` are wave-1 main's, schema 0,
//! and decode unchanged: control-plane/tests/fixtures/records/v0/). A field
//! added later must carry `#[serde(default)]` and bump the kind's `SCHEMA`;
//! never `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::{Desired, Phase, State};
use crate::ids::{AccountId, ImageId, InstanceId, NodeId, ReservationId};
use crate::store::Record;

macro_rules! record {
    ($($ty:ty => $kind:literal, $schema:literal;)*) => {
        $(impl Record for $ty {
            const KIND: &'static str = $kind;
            const SCHEMA: u32 = $schema;
        })*
    };
}

record! {
    Instance => "instance", 4;
    Assignment => "assignment", 3;
    Node => "node", 3;
    NodeAlloc => "node-alloc", 1;
    NodeAlive => "node-alive", 1;
    ClientTokenRecord => "client-token", 1;
    Account => "account", 2;
    AccessKey => "access-key", 2;
    EnrolmentTokenRecord => "enrolment-token", 1;
    Image => "image", 2;
    KeyPair => "keypair", 1;
    ConsoleRecord => "console", 1;
    ConsoleRequest => "console-request", 1;
    crate::domain::events::InstanceEvent => "instance-event", 1;
    crate::domain::ipam::Subnet => "subnet", 1;
    crate::domain::ipam::AddressClaim => "address-claim", 1;
    crate::domain::liveness::LostConfirmation => "lost-confirmation", 1;
    crate::domain::catalogue::InstanceType => "instance-type", 2;
    // `node-hosts/…` and `ip-blocks/…`: a bare JSON string, not versioned.
    NodeId => "node-id", 0;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// EC2 StateReason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReason {
    /// e.g. `Client.UserInitiatedShutdown`.
    pub code: String,
    /// e.g. `Client.UserInitiatedShutdown: User initiated shutdown`.
    pub message: String,
}

impl StateReason {
    /// A reason with code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// vCPUs and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// vCPUs.
    pub vcpus: u32,
    /// MiB.
    pub memory_mib: u32,
}

/// Network identity of a placed instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAssignment {
    /// Host number within the node's block (the allocation's index of used hosts).
    pub host: u32,
    /// a.b.c.d
    pub ip: String,
    /// Prefix length of the node block.
    pub prefix_len: u8,
    /// The node block's gateway.
    pub gateway: String,
    /// aa:bb:cc:dd:ee:ff
    pub mac: String,
    /// The subnet the address is claimed in ([`crate::domain::ipam`]); none
    /// for instances placed before IPAM (their first update adopts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<crate::ids::SubnetId>,
    /// The address is a VPC address (instance schema 4, assignment schema
    /// 3): `subnet_id` is the VPC subnet it is claimed in, `prefix_len` and
    /// `gateway` are the subnet's, `host` is the offset in the subnet (not a
    /// node-block host number). `None`: a node-block address on the legacy
    /// bridge (instances without a VPC, or placed before VPC addressing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<crate::domain::vpc::private_addresses::VpcNet>,
}

impl NetworkAssignment {
    /// Whether the address is a node-block address (its `host` is in the
    /// node allocation's `hosts`).
    pub fn is_node_block(&self) -> bool {
        self.vpc.is_none()
    }
}

/// What the agent last reported about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Observed phase.
    pub phase: Phase,
    /// Generation the observation belongs to.
    pub generation: u64,
    /// When the phase was entered (agent clock).
    pub since_ms: i64,
    /// When the guest reported ready (0 = not yet).
    pub ready_ms: i64,
    /// Agent-reported reason.
    pub reason: Option<StateReason>,
}

/// An instance (`instances/<account>/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Id.
    pub id: InstanceId,
    /// Owner.
    pub account: AccountId,
    /// Reservation of the RunInstances call that created it.
    pub reservation_id: ReservationId,
    /// Position within the reservation.
    pub launch_index: u32,
    /// Image.
    pub image_id: ImageId,
    /// Image name agents know it by.
    pub image_location: String,
    /// Required manifest sha256 (may be empty).
    pub image_sha256: String,
    /// Instance type name.
    pub instance_type: String,
    /// Size.
    pub vcpus: u32,
    /// Size.
    pub memory_mib: u32,
    /// EC2 state.
    pub state: State,
    /// Why the last involuntary (or user) change happened.
    pub state_reason: Option<StateReason>,
    /// Human-readable transition reason.
    pub state_transition_reason: String,
    /// Zone (kept while stopped: a start stays in the zone).
    pub availability_zone: String,
    /// The node while placed.
    pub node_id: Option<NodeId>,
    /// Addressing while placed.
    pub network: Option<NetworkAssignment>,
    /// Launch (or last start) time.
    pub launch_time_ms: i64,
    /// Key pair name.
    pub key_name: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Idempotency token of the launch.
    pub client_token: String,
    /// Desired state sent to the node.
    pub desired: Desired,
    /// Bumped at every change of desired state.
    pub generation: u64,
    /// Forced stop/terminate.
    pub force: bool,
    /// Last observation from the agent.
    pub observed: Option<Observed>,
    /// When it became terminated (for garbage collection).
    pub terminated_ms: Option<i64>,
    /// Sequence number of the instance's last lifecycle event (`created` =
    /// 0); each state change writes event `event_seq + 1` in its own
    /// transaction (see [`crate::domain::events`]). Absent in records written
    /// before the outbox existed (= 0).
    #[serde(default)]
    pub event_seq: u64,
    /// RunInstances' launch options and the attributes ModifyInstanceAttribute
    /// changes (schema 2; absent in older records = EC2's defaults).
    #[serde(default)]
    pub options: LaunchOptions,
    /// Instance metadata options (absent in records written before the
    /// metadata service existed = EC2's defaults).
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// VPC, subnet and security groups (schema 3; absent in older records:
    /// no VPC placement recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<crate::domain::vpc::InstanceVpc>,
}

/// The device name the root disk is shown under (`RootDeviceName`).
pub const ROOT_DEVICE_NAME: &str = "/dev/xvda";

/// What the instance does when its guest powers itself off
/// (`InstanceInitiatedShutdownBehavior`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownBehavior {
    /// Become `stopped` (EC2's default).
    #[default]
    Stop,
    /// Become `terminated`.
    Terminate,
}

impl ShutdownBehavior {
    /// EC2's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownBehavior::Stop => "stop",
            ShutdownBehavior::Terminate => "terminate",
        }
    }
}

/// Per-instance launch options (RunInstances) and modifiable attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LaunchOptions {
    /// `DisableApiTermination`: TerminateInstances refuses.
    pub disable_api_termination: bool,
    /// `DisableApiStop`: StopInstances refuses.
    pub disable_api_stop: bool,
    /// `InstanceInitiatedShutdownBehavior`.
    pub shutdown_behavior: ShutdownBehavior,
    /// `Monitoring.Enabled` (detailed monitoring requested; recorded and shown).
    pub monitoring: bool,
    /// Root disk size in GiB from the root device's block device mapping
    /// (`None` = the image's size).
    pub root_volume_gib: Option<u32>,
    /// `SourceDestCheck` (recorded and shown).
    pub source_dest_check: bool,
    /// The requested VPC placement of RunInstances, resolved by the domain
    /// ([`crate::domain::vpc::launch`]); each instance records it as
    /// [`Instance::vpc`] (never stored here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc: Option<Box<crate::domain::vpc::InstanceVpc>>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            disable_api_termination: false,
            disable_api_stop: false,
            shutdown_behavior: ShutdownBehavior::Stop,
            monitoring: false,
            root_volume_gib: None,
            source_dest_check: true,
            vpc: None,
        }
    }
}

/// EC2 `InstanceMetadataOptions` of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataOptions {
    /// `HttpTokens=required` (IMDSv2 only).
    pub http_tokens_required: bool,
    /// `HttpPutResponseHopLimit`, 1..=64.
    pub hop_limit: u8,
    /// `HttpEndpoint=enabled`.
    pub endpoint_enabled: bool,
    /// `HttpProtocolIpv6=enabled`.
    pub ipv6_enabled: bool,
    /// `InstanceMetadataTags=enabled`.
    pub tags_enabled: bool,
}

impl Default for MetadataOptions {
    /// EC2's defaults: tokens optional, hop limit 1, endpoint enabled, IPv6
    /// and tags disabled.
    fn default() -> Self {
        Self {
            http_tokens_required: false,
            hop_limit: 1,
            endpoint_enabled: true,
            ipv6_enabled: false,
            tags_enabled: false,
        }
    }
}

/// What an assignment tells the node's metadata service beyond the rest of
/// the assignment (see [`crate::domain::metadata`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AssignmentMetadata {
    /// `ami-...`.
    pub image_id: String,
    /// Key pair name (empty: none).
    pub key_name: String,
    /// Zone.
    pub availability_zone: String,
    /// Region.
    pub region: String,
    /// Launch time.
    pub launch_time_ms: i64,
    /// Options.
    pub options: MetadataOptions,
    /// Tags (only when `options.tags_enabled`).
    pub tags: BTreeMap<String, String>,
}

/// An assignment (`desired/<node>/a/<instance>`): what the node must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Instance.
    pub instance_id: InstanceId,
    /// Owner (to find the instance record from an agent report).
    pub account: AccountId,
    /// Desired state.
    pub desired: Desired,
    /// Generation.
    pub generation: u64,
    /// Forced stop/terminate.
    pub force: bool,
    /// Image name.
    pub image_name: String,
    /// Required manifest sha256.
    pub image_sha256: String,
    /// Instance type.
    pub instance_type: String,
    /// Size.
    pub vcpus: u32,
    /// Size.
    pub memory_mib: u32,
    /// Raw user data, base64.
    pub user_data_b64: String,
    /// Addressing.
    pub network: NetworkAssignment,
    /// Extra kernel command line.
    pub cmdline_extra: String,
    /// OpenSSH public key.
    pub ssh_public_key: String,
    /// For the node's metadata service (absent in assignments written
    /// before it existed: no metadata service).
    #[serde(default)]
    pub metadata: Option<AssignmentMetadata>,
    /// Root disk size in GiB the agent grows the instance's disk to (schema
    /// 2; 0 or absent: the image's own size).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub root_volume_gib: u32,
    /// The instance type's device rate limits when the assignment was
    /// written (schema 2; None: the type has none, or an older record, and
    /// the agent's `[limits]` apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::domain::catalogue::TypeLimits>,
    /// The instance's security groups when the assignment was written
    /// (schema 3; the live set is in the node's network view).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_ids: Vec<crate::ids::SecurityGroupId>,
    /// The instance's secondary interfaces when the assignment was written
    /// (rewritten at every start: they change only while it is stopped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_interfaces: Vec<crate::domain::vpc::eni_secondary::SecondaryInterface>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A node record (`n/rec/<node>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Id.
    pub id: NodeId,
    /// Host identity the agent reports.
    pub host_id: String,
    /// Zone.
    pub availability_zone: String,
    /// Reported capacity.
    pub capacity: Resources,
    /// Images present.
    pub images: Vec<NodeImage>,
    /// Agent version.
    pub agent_version: String,
    /// No new placements.
    pub cordoned: bool,
    /// Being drained.
    pub draining: bool,
    /// First registration.
    pub registered_ms: i64,
    /// Current lease.
    pub lease_id: i64,
    /// Current node credential key id.
    pub credential_key_id: String,
    /// Index of the node's address block.
    pub ip_block: u32,
    /// Where the agent serves `nubis.node.v1.AgentMetrics` (`host:port`;
    /// empty: no metrics).
    #[serde(default)]
    pub metrics_endpoint: String,
    /// Held for the operator's approval (cordoned until approved).
    #[serde(default)]
    pub pending_approval: bool,
    /// The host's underlay IPv4 address, the VXLAN endpoint of its VPC
    /// traffic (schema 3; empty: the agent has no VPC data plane).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub underlay_ip: String,
}

/// An image present on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    /// Name.
    pub name: String,
    /// Manifest sha256.
    pub manifest_sha256: String,
}

/// What the scheduler placed on a node (`n/alloc/<node>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAlloc {
    /// Sum of placed instances.
    pub used: Resources,
    /// Placed instances.
    pub instances: u32,
    /// Host numbers in the node's address block in use (gateway = 1).
    pub hosts: Vec<u32>,
}

/// Liveness of a node (`n/alive/<node>`, on the node's lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAlive {
    /// Lease id.
    pub lease_id: i64,
    /// Last heartbeat that wrote this record.
    pub heartbeat_ms: i64,
    /// Agent-reported usage.
    pub usage: Resources,
    /// Agent-reported running instances.
    pub running: u32,
}

/// Idempotency record of RunInstances (`client-tokens/<account>/<token>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenRecord {
    /// The reservation created.
    pub reservation_id: ReservationId,
    /// Its instances.
    pub instance_ids: Vec<InstanceId>,
    /// Hash of the request parameters (a retry with other parameters is an error).
    pub request_hash: String,
    /// When.
    pub created_ms: i64,
}

/// An account (`accounts/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Id.
    pub id: AccountId,
    /// Display name.
    pub name: String,
    /// Created.
    pub created_ms: i64,
    /// Its access keys.
    pub access_key_ids: Vec<String>,
    /// Disabled by the operator: its keys are refused (schema 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// Who an access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A tenant account.
    Tenant {
        /// The account.
        account: AccountId,
    },
    /// A node agent.
    Node {
        /// The node.
        node: NodeId,
    },
}

/// An access key (`access-keys/<key id>`). HMAC verification (and EC2 SigV4)
/// needs the plain secret: it is stored sealed with the operator's key when
/// one is configured (domain/secrets.rs), else as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Key id.
    pub key_id: String,
    /// Shared secret in plaintext: only without `[auth] secrets_key_file`
    /// (empty when sealed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// The secret sealed with the operator's key (schema 2; domain/secrets.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    /// Owner.
    pub principal: Principal,
    /// Created.
    pub created_ms: i64,
    /// Its account is disabled (schema 2; kept in step with
    /// [`Account::disabled`] in the same transaction, so a key lookup alone
    /// refuses it and every replica's key cache learns it from the key's
    /// watch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub account_disabled: bool,
}

/// A one-time, per-host enrolment token (`enrolment-tokens/<id>`), created
/// by the operator. Only the SHA-256 of its secret is stored: the agent
/// signs `Register` with that digest as the HMAC key and proves it holds the
/// secret itself by sending it in the request (see docs/security.md).
/// `Register` deletes the record in the transaction that creates the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentTokenRecord {
    /// Token id (`NKET...`).
    pub token_id: String,
    /// Hex SHA-256 of the token secret.
    pub secret_sha256: String,
    /// The only host id this token may register.
    pub host_id: String,
    /// The only zone it may register in (empty: any configured zone).
    #[serde(default)]
    pub availability_zone: String,
    /// Created.
    pub created_ms: i64,
    /// Unusable from then on (GC deletes it).
    pub expires_ms: i64,
}

/// An image (`images/<ami>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Id.
    pub id: ImageId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Name agents report.
    pub image_location: String,
    /// Required manifest sha256 (may be empty).
    pub manifest_sha256: String,
    /// Owner.
    pub owner: AccountId,
    /// Public (operator images).
    pub public: bool,
    /// x86_64.
    pub architecture: String,
    /// Created.
    pub created_ms: i64,
    /// Minimum memory the image needs.
    pub min_memory_mib: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Size of the image's root disk in GiB, rounded up: the smallest root
    /// volume an instance of it may ask for (schema 2; 0 or absent: not
    /// known, any size is accepted and the agent never shrinks the disk).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub root_volume_gib: u32,
    /// Accounts the owner granted a launch permission (ModifyImageAttribute
    /// `launchPermission`; schema 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launch_permissions: Vec<AccountId>,
    /// CopyImage's `ClientToken` when the image is a copy made with one
    /// (schema 2; empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_token: String,
}

/// A key pair (`keypairs/<account>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    /// Id.
    pub id: crate::ids::KeyPairId,
    /// Name.
    pub name: String,
    /// As EC2 computes it (domain::keymaterial); records written before
    /// RSA support hold `SHA256:<base64>`.
    pub fingerprint: String,
    /// ed25519 | rsa.
    pub key_type: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
}

/// Last console output (`console/<instance>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleRecord {
    /// Request answered (empty = pushed).
    pub request_id: String,
    /// Base64 output.
    pub output_b64: String,
    /// When captured.
    pub captured_ms: i64,
}

/// A console request (`desired/<node>/c/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleRequest {
    /// Request id.
    pub request_id: String,
    /// Instance.
    pub instance_id: InstanceId,
    /// Max bytes.
    pub max_bytes: u32,
}
