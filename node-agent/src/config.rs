//! The agent's TOML configuration: schema, defaults and validation. Every
//! field is documented in `docs/agent.md` and `deploy/agent.example.toml`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node API endpoint: `unix:///path/to/socket` or `http://127.0.0.1:PORT`.
    /// Required unless `standalone = true`.
    #[serde(default)]
    pub control_plane: Option<String>,
    /// Further Node API endpoints (the other control-plane replicas), same
    /// forms as `control_plane`. When a connection fails or a session ends the
    /// agent dials the next endpoint of `control_plane` + `control_planes`
    /// ([`crate::failover`]).
    #[serde(default)]
    pub control_planes: Vec<String>,
    /// Enrolment credential presented at registration.
    #[serde(default)]
    pub enrolment: Option<EnrolmentConfig>,
    /// TLS towards an `https://` control plane (mutual TLS with a client
    /// certificate). Absent: the system's roots, no client certificate.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Availability zone label of this host.
    pub availability_zone: String,
    /// Where the agent keeps its host id and one directory per instance.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory of images: `<name>/manifest.json` plus the files it names.
    #[serde(default = "default_image_dir")]
    pub image_dir: PathBuf,
    /// Path of the `nubis-vmm` binary.
    #[serde(default = "default_vmm_binary")]
    pub vmm_binary: PathBuf,
    /// Debug/operator mode: read desired state from `<state_dir>/desired.json`
    /// instead of the control plane, and write `<state_dir>/status.json`.
    #[serde(default)]
    pub standalone: bool,
    /// Bridge and instance addressing.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Capacity overrides (detected from the host when absent).
    #[serde(default)]
    pub capacity: CapacityConfig,
    /// cgroup v2 placement of VMM processes.
    #[serde(default)]
    pub cgroup: CgroupConfig,
    /// The VMM jail (unprivileged uid per VMM, capabilities, rlimits).
    #[serde(default)]
    pub jail: JailConfig,
    /// Per-instance I/O limits (cgroup `io.max`, the VMM's device rate limiters).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Instance defaults.
    #[serde(default)]
    pub instances: InstanceDefaults,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Per-instance metrics: sampling, rollups, the metrics listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the agent samples its instances every 10 s into rollups
/// under `<state_dir>/metrics/` and serves, on `listen`, the control
/// plane's signed `nubis.node.v1.AgentMetrics` queries (gRPC) and
/// Prometheus `GET /metrics` (docs/metrics.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Sample and serve at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `unix:/path` (a Unix socket: control planes on the same host, agents
    /// in network namespaces) or `ip:port` (port 0: any free port).
    /// Default: `unix:<state_dir>/metrics.sock`.
    #[serde(default)]
    pub listen: Option<String>,
    /// What the control plane dials (`host:port` or `unix:/path`; default:
    /// the bound address; set it when `listen` is a wildcard address).
    #[serde(default)]
    pub advertise: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
            advertise: None,
        }
    }
}

/// Where the metrics listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// A Unix socket.
    Unix(PathBuf),
    /// TCP.
    Tcp(std::net::SocketAddr),
}

impl MetricsConfig {
    /// The listen address, defaulted under `state_dir`.
    pub fn listen_at(&self, state_dir: &std::path::Path) -> Result<MetricsListen> {
        match self.listen.as_deref() {
            None => Ok(MetricsListen::Unix(state_dir.join("metrics.sock"))),
            Some(s) => match s.strip_prefix("unix:") {
                Some(p) if p.starts_with('/') => Ok(MetricsListen::Unix(PathBuf::from(p))),
                Some(_) => Err(Error::ConfigInvalid(format!(
                    "metrics.listen {s:?}: a unix: path must be absolute"
                ))),
                None => s.parse().map(MetricsListen::Tcp).map_err(|_| {
                    Error::ConfigInvalid(format!(
                        "metrics.listen {s:?}: expected unix:/path or ip:port"
                    ))
                }),
            },
        }
    }
}

/// The enrolment token (key id + secret) the control plane issued.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentConfig {
    /// Token id.
    pub key_id: String,
    /// Token secret (or use `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// File holding the secret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for EnrolmentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolmentConfig")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// `[tls]`: how the agent verifies the control plane and proves itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA (PEM) that signed the control plane's certificate; absent: the
    /// system's trust roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This host's client certificate (PEM), signed by the control plane's
    /// node CA (`grpc.tls.client_ca_file`); with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the control plane's certificate must carry, when it differs from
    /// the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Bridge and addressing of instance TAP devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Instance bridge (created when missing).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Optional bridge address with prefix, put on the bridge at start-up:
    /// the default subnet (gateway) for instances whose spec names no
    /// gateway and prefix (standalone mode). Specs from the control plane
    /// carry their own gateway, which the agent adds to the bridge.
    #[serde(default)]
    pub bridge_address: Option<String>,
    /// Inclusive range of instance addresses, `FIRST-LAST`, allocated when a
    /// spec names no address (requires `bridge_address`).
    #[serde(default = "default_instance_range")]
    pub instance_range: String,
    /// Prefix of TAP device names (at most 4 characters).
    #[serde(default = "default_tap_prefix")]
    pub tap_prefix: String,
    /// Enforce per-TAP anti-spoofing and host protection with nftables
    /// (`host/firewall`). On by default; the agent refuses to start when
    /// `nft` cannot be run unless this is `false`.
    #[serde(default = "default_true")]
    pub firewall: bool,
    /// This host's underlay IPv4 address: an address of an interface in the
    /// agent's network namespace, the local VXLAN tunnel endpoint of the VPC
    /// data plane (`host::vpc`, docs/networking.md), sent to the control
    /// plane at registration. Without it VPC instances still run and reach
    /// each other on this host, but not instances on other hosts.
    #[serde(default)]
    pub underlay_address: Option<String>,
    /// The interface carrying `underlay_address` (the VXLAN devices' lower
    /// device; default: found by the address at start-up).
    #[serde(default)]
    pub underlay_device: Option<String>,
    /// Next hop on the underlay towards the internet (the edge), an IPv4
    /// address on the underlay's subnet: local VPC instances with a public
    /// address are reached through it and reach it (`host::vpc::edge`,
    /// docs/networking.md). Without it instances have no public traffic.
    #[serde(default)]
    pub edge_gateway: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: default_bridge(),
            bridge_address: None,
            instance_range: default_instance_range(),
            tap_prefix: default_tap_prefix(),
            firewall: true,
            underlay_address: None,
            underlay_device: None,
            edge_gateway: None,
        }
    }
}

/// Validated network settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// Bridge (gateway) address.
    pub gateway: Ipv4Addr,
    /// Prefix length of the instance subnet.
    pub prefix: u8,
    /// First instance address.
    pub first: Ipv4Addr,
    /// Last instance address (inclusive).
    pub last: Ipv4Addr,
}

/// Capacity overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// vCPUs offered to instances (default: `nproc`).
    pub vcpus: Option<u32>,
    /// Memory offered to instances in MiB (default: MemTotal).
    pub memory_mib: Option<u64>,
}

/// cgroup v2 settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupConfig {
    /// cgroup2 mount point (default: found in /proc/self/mountinfo).
    #[serde(default)]
    pub mount: Option<PathBuf>,
    /// Parent group under the mount; instance groups are `<parent>/<instance>`.
    #[serde(default = "default_cgroup_parent")]
    pub parent: String,
    /// Require the cpu and memory controllers (fail instances without them).
    /// Set false only on hosts whose cpu/memory controllers are bound to
    /// cgroup v1: groups are still created and VMMs placed in them, limits
    /// are not enforced and a warning is logged.
    #[serde(default = "default_true")]
    pub enforce_limits: bool,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mount: None,
            parent: default_cgroup_parent(),
            enforce_limits: true,
        }
    }
}

/// The VMM jail ([`crate::host::jail`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailConfig {
    /// Jail every VMM (default). `false` runs VMMs as the agent's user with
    /// all its privileges: for debugging only.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// First uid (and gid) handed to VMMs; each running VMM gets its own.
    #[serde(default = "default_jail_uid_base")]
    pub uid_base: u32,
    /// How many uids from `uid_base` on (at least the most VMMs of the host).
    #[serde(default = "default_jail_uid_count")]
    pub uid_count: u32,
    /// RLIMIT_NOFILE of a VMM.
    #[serde(default = "default_jail_nofile")]
    pub max_open_files: u64,
    /// Run each VMM in a new mount namespace pivoted into a root holding
    /// only its binary and libraries, kernel, initrd and instance directory
    /// (default). `false` leaves it the host's file system (as its uid).
    #[serde(default = "default_true")]
    pub pivot_root: bool,
}

fn default_jail_uid_base() -> u32 {
    900_000
}

fn default_jail_uid_count() -> u32 {
    10_000
}

fn default_jail_nofile() -> u64 {
    1024
}

impl Default for JailConfig {
    fn default() -> Self {
        JailConfig {
            enabled: true,
            uid_base: default_jail_uid_base(),
            uid_count: default_jail_uid_count(),
            max_open_files: default_jail_nofile(),
            pivot_root: true,
        }
    }
}

/// `[limits]`: an instance's I/O limits, each **per vCPU** of the instance
/// (its share grows with its size, as `cpu.max` and `memory.max` do); 0 =
/// unlimited, the default. docs/agent.md, docs/vmm.md ("Device rate
/// limiters").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// cgroup v2 `io.max` on the block device holding the instance's disk:
    /// bytes read per second (`rbps`).
    #[serde(default)]
    pub io_read_bps: u64,
    /// `io.max` `wbps`: bytes written per second.
    #[serde(default)]
    pub io_write_bps: u64,
    /// `io.max` `riops`: read operations per second.
    #[serde(default)]
    pub io_read_iops: u64,
    /// `io.max` `wiops`: write operations per second.
    #[serde(default)]
    pub io_write_iops: u64,
    /// The VMM's virtio-blk token bucket: bytes read + written per second.
    #[serde(default)]
    pub disk_bps: u64,
    /// virtio-blk requests per second.
    #[serde(default)]
    pub disk_ops: u64,
    /// virtio-net, frames the guest sends: bytes per second.
    #[serde(default)]
    pub net_tx_bps: u64,
    /// virtio-net, frames the guest sends per second.
    #[serde(default)]
    pub net_tx_pps: u64,
    /// virtio-net, frames from the TAP into the guest: bytes per second.
    #[serde(default)]
    pub net_rx_bps: u64,
    /// virtio-net, frames from the TAP into the guest per second.
    #[serde(default)]
    pub net_rx_pps: u64,
}

impl LimitsConfig {
    /// The limits of an instance with `vcpus` vCPUs (every field times
    /// `vcpus`, saturating).
    pub fn for_vcpus(&self, vcpus: u32) -> LimitsConfig {
        let n = u64::from(vcpus);
        LimitsConfig {
            io_read_bps: self.io_read_bps.saturating_mul(n),
            io_write_bps: self.io_write_bps.saturating_mul(n),
            io_read_iops: self.io_read_iops.saturating_mul(n),
            io_write_iops: self.io_write_iops.saturating_mul(n),
            disk_bps: self.disk_bps.saturating_mul(n),
            disk_ops: self.disk_ops.saturating_mul(n),
            net_tx_bps: self.net_tx_bps.saturating_mul(n),
            net_tx_pps: self.net_tx_pps.saturating_mul(n),
            net_rx_bps: self.net_rx_bps.saturating_mul(n),
            net_rx_pps: self.net_rx_pps.saturating_mul(n),
        }
    }
}

/// Defaults for instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceDefaults {
    /// Size of the raw disk created for images without a disk file.
    #[serde(default = "default_disk_mib")]
    pub blank_disk_mib: u64,
    /// Memory added to the guest's for the VMM process in `memory.max`.
    #[serde(default = "default_vmm_overhead_mib")]
    pub vmm_memory_overhead_mib: u64,
    /// Console log cap passed as `--serial-max-bytes`.
    #[serde(default = "default_console_max")]
    pub console_max_bytes: u64,
    /// How many instances prepare (image check, disk, TAP, cgroup) at once;
    /// the rest of a burst queues. Guest boots are not limited by this.
    #[serde(default = "default_parallel_launches")]
    pub max_parallel_launches: usize,
}

impl Default for InstanceDefaults {
    fn default() -> Self {
        InstanceDefaults {
            blank_disk_mib: default_disk_mib(),
            vmm_memory_overhead_mib: default_vmm_overhead_mib(),
            console_max_bytes: default_console_max(),
            max_parallel_launches: default_parallel_launches(),
        }
    }
}

/// Timeouts in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Wait after Ctrl-Alt-Del before the VMM `stop`.
    #[serde(default = "default_graceful")]
    pub graceful_stop_secs: u64,
    /// Wait after `stop` before SIGKILL.
    #[serde(default = "default_hard")]
    pub hard_stop_secs: u64,
    /// Wait for the VMM to report running after spawn.
    #[serde(default = "default_start")]
    pub start_secs: u64,
    /// Heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Longest back-off between reconnects to the control plane.
    #[serde(default = "default_backoff")]
    pub reconnect_max_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            graceful_stop_secs: default_graceful(),
            hard_stop_secs: default_hard(),
            start_secs: default_start(),
            heartbeat_secs: default_heartbeat(),
            reconnect_max_secs: default_backoff(),
        }
    }
}

impl Timeouts {
    /// Graceful stop timeout.
    pub fn graceful_stop(&self) -> Duration {
        Duration::from_secs(self.graceful_stop_secs)
    }
    /// Hard stop timeout.
    pub fn hard_stop(&self) -> Duration {
        Duration::from_secs(self.hard_stop_secs)
    }
    /// Start timeout.
    pub fn start(&self) -> Duration {
        Duration::from_secs(self.start_secs)
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/nubis-agent")
}
fn default_image_dir() -> PathBuf {
    PathBuf::from("/var/lib/nubis/images")
}
fn default_vmm_binary() -> PathBuf {
    PathBuf::from("/usr/local/bin/nubis-vmm")
}
fn default_bridge() -> String {
    "nbbr0".into()
}
fn default_instance_range() -> String {
    "10.200.0.10-10.200.0.250".into()
}
fn default_tap_prefix() -> String {
    "nbt".into()
}
fn default_cgroup_parent() -> String {
    "nubis".into()
}
fn default_true() -> bool {
    true
}
fn default_disk_mib() -> u64 {
    8
}
fn default_vmm_overhead_mib() -> u64 {
    64
}
fn default_console_max() -> u64 {
    1024 * 1024
}
fn default_parallel_launches() -> usize {
    8
}
fn default_graceful() -> u64 {
    30
}
fn default_hard() -> u64 {
    10
}
fn default_start() -> u64 {
    60
}
fn default_heartbeat() -> u64 {
    5
}
fn default_backoff() -> u64 {
    30
}

fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses `a.b.c.d/p`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::ConfigInvalid(format!("{s:?} is not an IPv4 address/prefix"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = p.trim().parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(Error::ConfigInvalid(format!(
            "prefix /{prefix} in {s:?} must be between 8 and 30"
        )));
    }
    Ok((addr, prefix))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX << (32 - u32::from(prefix));
    u32::from(a) & mask == u32::from(b) & mask
}

impl NetworkConfig {
    /// The validated `underlay_address`: a unicast IPv4 address.
    pub fn underlay(&self) -> Result<Option<Ipv4Addr>> {
        let Some(s) = &self.underlay_address else {
            return Ok(None);
        };
        let a: Ipv4Addr = s.trim().parse().map_err(|_| {
            Error::ConfigInvalid(format!(
                "network.underlay_address {s:?} is not an IPv4 address (a.b.c.d, no prefix)"
            ))
        })?;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return Err(Error::ConfigInvalid(format!(
                "network.underlay_address {a} must be a unicast address of a host interface"
            )));
        }
        if let Some(d) = &self.underlay_device {
            if !is_ifname(d) {
                return Err(Error::ConfigInvalid(format!(
                    "network.underlay_device {d:?} is not a valid interface name"
                )));
            }
        }
        Ok(Some(a))
    }

    /// The validated `edge_gateway`: a unicast IPv4 address other than the
    /// underlay address (which it needs).
    pub fn edge_gateway(&self) -> Result<Option<Ipv4Addr>> {
        let Some(s) = &self.edge_gateway else {
            return Ok(None);
        };
        let g: Ipv4Addr = s.trim().parse().map_err(|_| {
            Error::ConfigInvalid(format!(
                "network.edge_gateway {s:?} is not an IPv4 address (a.b.c.d, no prefix)"
            ))
        })?;
        if g.is_unspecified() || g.is_broadcast() || g.is_multicast() || g.is_loopback() {
            return Err(Error::ConfigInvalid(format!(
                "network.edge_gateway {g} must be a unicast address on the underlay"
            )));
        }
        match self.underlay()? {
            None => Err(Error::ConfigInvalid(
                "network.edge_gateway needs network.underlay_address".into(),
            )),
            Some(u) if u == g => Err(Error::ConfigInvalid(format!(
                "network.edge_gateway {g} is this host's underlay address"
            ))),
            Some(_) => Ok(Some(g)),
        }
    }

    /// Validates and returns the default addressing plan (`None` without a
    /// `bridge_address`).
    pub fn addressing(&self) -> Result<Option<Addressing>> {
        let Some(bridge_address) = &self.bridge_address else {
            return Ok(None);
        };
        let (gateway, prefix) = parse_cidr(bridge_address)?;
        let bad = || {
            Error::ConfigInvalid(format!(
                "network.instance_range {:?} must be FIRST-LAST",
                self.instance_range
            ))
        };
        let (f, l) = self.instance_range.split_once('-').ok_or_else(bad)?;
        let first: Ipv4Addr = f.trim().parse().map_err(|_| bad())?;
        let last: Ipv4Addr = l.trim().parse().map_err(|_| bad())?;
        if u32::from(first) > u32::from(last) {
            return Err(bad());
        }
        if !same_subnet(first, gateway, prefix) || !same_subnet(last, gateway, prefix) {
            return Err(Error::ConfigInvalid(format!(
                "network.instance_range {:?} is outside {}",
                self.instance_range, bridge_address
            )));
        }
        if (u32::from(first)..=u32::from(last)).contains(&u32::from(gateway)) {
            return Err(Error::ConfigInvalid(
                "network.instance_range contains the bridge address".into(),
            ));
        }
        Ok(Some(Addressing {
            gateway,
            prefix,
            first,
            last,
        }))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        let az = &self.availability_zone;
        if az.is_empty()
            || az.len() > 64
            || !az
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::ConfigInvalid(format!(
                "availability_zone {az:?} must be 1-64 of [A-Za-z0-9_-]"
            )));
        }
        match (&self.control_plane, self.standalone) {
            (None, false) => {
                return Err(Error::ConfigInvalid(
                    "control_plane is required unless standalone = true".into(),
                ))
            }
            (Some(_), false) if self.enrolment.is_none() => {
                return Err(Error::ConfigInvalid(
                    "[enrolment] is required with control_plane".into(),
                ))
            }
            (Some(_), _) => {
                for ep in self.control_plane_endpoints() {
                    let ok = ep
                        .strip_prefix("unix://")
                        .is_some_and(|p| p.starts_with('/'))
                        || ep.starts_with("http://")
                        || ep.starts_with("https://");
                    if !ok {
                        return Err(Error::ConfigInvalid(format!(
                            "control-plane endpoint {ep:?} must be unix:///PATH or http(s)://HOST:PORT"
                        )));
                    }
                }
            }
            (None, true) => {}
        }
        if self.control_plane.is_none() && !self.control_planes.is_empty() {
            return Err(Error::ConfigInvalid(
                "control_planes needs control_plane (the first endpoint)".into(),
            ));
        }
        if let Some(t) = &self.tls {
            if self.control_plane.is_none()
                || !self
                    .control_plane_endpoints()
                    .iter()
                    .all(|ep| ep.starts_with("https://"))
            {
                return Err(Error::ConfigInvalid(
                    "[tls] needs https:// control-plane endpoints".into(),
                ));
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(Error::ConfigInvalid(
                    "[tls] cert_file and key_file go together".into(),
                ));
            }
        }
        if !is_ifname(&self.network.bridge) {
            return Err(Error::ConfigInvalid(format!(
                "network.bridge {:?} is not a valid interface name",
                self.network.bridge
            )));
        }
        let tp = &self.network.tap_prefix;
        if tp.is_empty() || tp.len() > 4 || !is_ifname(tp) {
            return Err(Error::ConfigInvalid(format!(
                "network.tap_prefix {tp:?} must be 1-4 interface-name characters"
            )));
        }
        self.network.addressing()?;
        if self.network.underlay()?.is_none() && self.network.underlay_device.is_some() {
            return Err(Error::ConfigInvalid(
                "network.underlay_device needs network.underlay_address".into(),
            ));
        }
        self.network.edge_gateway()?;
        let parent = &self.cgroup.parent;
        if parent.is_empty()
            || parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Error::ConfigInvalid(format!(
                "cgroup.parent {parent:?} must be a relative path without . or .."
            )));
        }
        if self.instances.blank_disk_mib == 0 || self.instances.blank_disk_mib > 1 << 20 {
            return Err(Error::ConfigInvalid(
                "instances.blank_disk_mib must be 1..=1048576".into(),
            ));
        }
        if self.instances.console_max_bytes < 64 * 1024 {
            return Err(Error::ConfigInvalid(
                "instances.console_max_bytes must be at least 65536".into(),
            ));
        }
        if !(1..=256).contains(&self.instances.max_parallel_launches) {
            return Err(Error::ConfigInvalid(
                "instances.max_parallel_launches must be 1..=256".into(),
            ));
        }
        if self.capacity.vcpus == Some(0) || self.capacity.memory_mib == Some(0) {
            return Err(Error::ConfigInvalid(
                "capacity overrides must be positive".into(),
            ));
        }
        if !self.state_dir.is_absolute() || !self.image_dir.is_absolute() {
            return Err(Error::ConfigInvalid(
                "state_dir and image_dir must be absolute paths".into(),
            ));
        }
        Ok(())
    }

    /// Every control-plane endpoint in the order the agent tries them:
    /// `control_plane`, then `control_planes`, without repeats.
    pub fn control_plane_endpoints(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ep in self.control_plane.iter().chain(&self.control_planes) {
            if !out.contains(ep) {
                out.push(ep.clone());
            }
        }
        out
    }

    /// TLS settings for the control-plane connection, with the PEM files
    /// read (an unreadable one is an error naming it); `None` without `[tls]`.
    pub fn client_tls(&self) -> Result<Option<nubis_proto::transport::ClientTls>> {
        let Some(t) = &self.tls else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|err| Error::io(format!("reading {}", p.display()), err))
        };
        let identity = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        Ok(Some(nubis_proto::transport::ClientTls {
            ca_pem: t.ca_file.as_ref().map(read).transpose()?,
            identity,
            server_name: t.server_name.clone(),
        }))
    }

    /// The enrolment credential (key id, secret), reading the secret file
    /// when configured.
    pub fn enrolment_credential(&self) -> Result<(String, String)> {
        let Some(e) = &self.enrolment else {
            return Err(Error::ConfigInvalid(
                "[enrolment] key_id and secret are required with a control plane".into(),
            ));
        };
        if let Some(s) = &e.secret {
            return Ok((e.key_id.clone(), s.clone()));
        }
        if let Some(p) = &e.secret_file {
            let t = std::fs::read_to_string(p)
                .map_err(|err| Error::io(format!("reading {}", p.display()), err))?;
            return Ok((e.key_id.clone(), t.trim().to_string()));
        }
        Err(Error::ConfigInvalid(
            "[enrolment] needs secret or secret_file".into(),
        ))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
