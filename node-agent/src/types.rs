//! Typed identifiers and the instance specification the agent receives from
//! the control plane (or the standalone desired-state file). All validation
//! of these outside inputs happens here.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::LimitsConfig;
use crate::error::{Error, Result};

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !s.starts_with('.')
}

/// An instance id such as `i-0123456789abcdef0` (lower-case, digits, `-_.`;
/// safe as a file and cgroup name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Validates an id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if !valid_name(&s, 64) {
            return Err(Error::InvalidId {
                kind: "instance id",
                value: s,
                why: "must be 1-64 of [a-z0-9-_.], not starting with '.'",
            });
        }
        Ok(InstanceId(s))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        InstanceId::new(s)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image name (a directory under the image dir).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);

impl ImageName {
    /// Validates a name.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if !valid_name(&s, 64) {
            return Err(Error::InvalidId {
                kind: "image name",
                value: s,
                why: "must be 1-64 of [a-z0-9-_.], not starting with '.'",
            });
        }
        Ok(ImageName(s))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ImageName::new(s)
    }
}

impl From<ImageName> for String {
    fn from(id: ImageName) -> String {
        id.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest root disk (GiB) a spec may ask for (EC2's gp2/gp3 limit).
pub const MAX_ROOT_VOLUME_GIB: u32 = 16_384;

/// What to run: fixed for the life of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance id.
    pub id: InstanceId,
    /// Image to boot.
    pub image: ImageName,
    /// vCPUs (also the `cpu.max` quota in whole CPUs).
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Extra guest kernel command-line arguments (e.g. `nubis.disk_write=1`).
    #[serde(default)]
    pub cmdline_extra: String,
    /// Address chosen by the control plane (else allocated from the node's range).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Prefix length of the instance's subnet, chosen by the control plane
    /// together with `gateway` (else the node's `network.bridge_address`).
    #[serde(default)]
    pub prefix_len: Option<u32>,
    /// The guest's gateway, chosen by the control plane: the agent puts this
    /// address (with `prefix_len`) on its bridge.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// MAC chosen by the control plane (else derived from the id).
    #[serde(default)]
    pub mac: Option<String>,
    /// When set, the image's manifest.json must have this sha256.
    #[serde(default)]
    pub image_manifest_sha256: Option<String>,
    /// What the instance metadata service serves (its address and MAC are
    /// filled in from the instance's network at launch); `None`: no service.
    /// Unlike the rest of the spec it may change while the instance runs
    /// (ModifyInstanceMetadataOptions): see [`crate::launch::sync_metadata`].
    #[serde(default)]
    pub metadata: Option<nubis_imds::ImdsConfig>,
    /// Root disk size in GiB: the disk made from the image (or the blank
    /// disk) is grown to it, sparsely, and never shrunk. `None`: the image's
    /// own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume_gib: Option<u32>,
    /// The instance type's device rate limits, for the whole instance;
    /// `None` (older control planes, types without limits): the agent's
    /// `[limits]`, per vCPU. See [`DeviceLimits::effective`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<DeviceLimits>,
    /// The instance's VPC (Node API `NetworkSpec.vni` != 0): its TAP is a
    /// routed port of the VPC data plane instead of a bridge port, and
    /// `ip`, `prefix_len` and `gateway` must be set. `None`: the bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<VpcAttachment>,
    /// Secondary network interfaces (Node API `extra_networks`), by device
    /// index: each a routed TAP of the same VPC and one more virtio-net
    /// device after the primary one. Only these may change between two
    /// starts of an instance (interfaces are attached while it is stopped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_networks: Vec<ExtraNetwork>,
}

/// Most interfaces an instance may have here (device indexes
/// `0..MAX_INTERFACES`; the control plane allows fewer).
pub const MAX_INTERFACES: u32 = 8;

/// A secondary network interface of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraNetwork {
    /// Device index (1..[`MAX_INTERFACES`]).
    pub device_index: u32,
    /// The interface's id (`eni-...`), for logs.
    #[serde(default)]
    pub interface_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its subnet's prefix length.
    pub prefix_len: u8,
    /// Its subnet's router.
    pub gateway: Ipv4Addr,
    /// aa:bb:cc:dd:ee:ff
    pub mac: String,
    /// Its VPC (the instance's), subnet and groups at launch.
    pub vpc: VpcAttachment,
}

/// Which VPC an instance's port belongs to (recorded in `net.json` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcAttachment {
    /// The VPC's VXLAN network identifier (1..2^24-1).
    pub vni: u32,
    /// VPC id.
    pub vpc_id: String,
    /// Subnet id.
    pub subnet_id: String,
    /// The subnet, a.b.c.d/n.
    pub subnet_cidr: String,
    /// Security groups at launch (the live set comes with the network view).
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

/// An instance's device rate limits from its type (Node API
/// `DeviceLimits`); 0 = that one is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimits {
    /// Disk bytes per second: virtio-blk `bw=` and io.max `rbps`/`wbps`.
    pub disk_bps: u64,
    /// Disk operations per second: virtio-blk `ops=`, io.max `riops`/`wiops`.
    pub disk_iops: u64,
    /// Bytes per second the guest sends (virtio-net `bw=`).
    pub net_tx_bps: u64,
    /// Frames per second the guest sends (virtio-net `ops=`).
    pub net_tx_pps: u64,
    /// Bytes per second into the guest (virtio-net `rx_bw=`).
    pub net_rx_bps: u64,
    /// Frames per second into the guest (virtio-net `rx_ops=`).
    pub net_rx_pps: u64,
}

impl DeviceLimits {
    /// The limits an instance runs with: its type's when the spec carries
    /// them (whole-instance values, replacing `[limits]` entirely), else the
    /// agent's `[limits]` scaled to its vCPUs.
    pub fn effective(spec: &InstanceSpec, agent: &LimitsConfig) -> LimitsConfig {
        match &spec.limits {
            Some(l) => LimitsConfig {
                io_read_bps: l.disk_bps,
                io_write_bps: l.disk_bps,
                io_read_iops: l.disk_iops,
                io_write_iops: l.disk_iops,
                disk_bps: l.disk_bps,
                disk_ops: l.disk_iops,
                net_tx_bps: l.net_tx_bps,
                net_tx_pps: l.net_tx_pps,
                net_rx_bps: l.net_rx_bps,
                net_rx_pps: l.net_rx_pps,
            },
            None => agent.for_vcpus(spec.vcpus),
        }
    }
}

impl InstanceSpec {
    /// Checks ranges and characters.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &'static str| Error::InvalidId {
            kind: "instance spec",
            value: self.id.to_string(),
            why,
        };
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(bad("vcpus must be 1..=64"));
        }
        if self.memory_mib < 1 || self.memory_mib > 1 << 20 {
            return Err(bad("memory_mib must be 1..=1048576"));
        }
        if self
            .root_volume_gib
            .is_some_and(|g| g == 0 || g > MAX_ROOT_VOLUME_GIB)
        {
            return Err(bad("root_volume_gib must be 1..=16384"));
        }
        if self.cmdline_extra.len() > 1024
            || !self
                .cmdline_extra
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(bad(
                "cmdline_extra must be at most 1024 printable ASCII bytes",
            ));
        }
        if self.mac.as_deref().is_some_and(|m| !valid_mac(m)) {
            return Err(bad("mac must be aa:bb:cc:dd:ee:ff"));
        }
        if let Some(v) = &self.vpc {
            if v.vni == 0 || v.vni > crate::host::vpc::model::MAX_VNI {
                return Err(bad("vpc vni must be 1..=16777215"));
            }
            if self.ip.is_none() || self.gateway.is_none() || self.prefix_len.is_none() {
                return Err(bad("a VPC instance needs ip, prefix_len and gateway"));
            }
        }
        let mut last = 0;
        for x in &self.extra_networks {
            if self.vpc.as_ref().map(|v| v.vni) != Some(x.vpc.vni) {
                return Err(bad("a secondary interface must be in the instance's VPC"));
            }
            if x.device_index <= last || x.device_index >= MAX_INTERFACES {
                return Err(bad(
                    "secondary interfaces need ascending device indexes 1..=7",
                ));
            }
            last = x.device_index;
            if !valid_mac(&x.mac) || x.prefix_len == 0 || x.prefix_len > 30 {
                return Err(bad(
                    "a secondary interface needs a MAC and a /1../30 subnet",
                ));
            }
        }
        if let Some(h) = &self.image_manifest_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("image_manifest_sha256 must be 64 hex digits"));
            }
        }
        Ok(())
    }
}

/// True for `aa:bb:cc:dd:ee:ff`.
fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The subnet an instance is attached to: its address (`None`: allocate one
/// from the node's range), the gateway the bridge carries, the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceNetwork {
    /// Instance address, when chosen by the control plane.
    pub ip: Option<Ipv4Addr>,
    /// Gateway: an address of the agent's bridge.
    pub gateway: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
}

impl InstanceSpec {
    /// The instance's network: the spec's gateway and prefix when it names
    /// them, else `default` (the node's configured bridge address). Returns
    /// why the network is unusable (for the instance's failure reason).
    pub fn network(
        &self,
        default: Option<(Ipv4Addr, u8)>,
    ) -> std::result::Result<InstanceNetwork, String> {
        let (gateway, prefix) = match (self.gateway, self.prefix_len) {
            (Some(g), Some(p)) => {
                if self.ip.is_none() {
                    return Err(format!(
                        "network spec names gateway {g}/{p} but no instance address"
                    ));
                }
                (g, p)
            }
            (None, None) => match default {
                Some((g, p)) => (g, u32::from(p)),
                None => {
                    return Err("network spec names no gateway and prefix, and the node \
                                has no network.bridge_address"
                        .into())
                }
            },
            (Some(g), None) => {
                return Err(format!(
                    "network spec names gateway {g} but no prefix length"
                ))
            }
            (None, Some(p)) => {
                return Err(format!("network spec names prefix /{p} but no gateway"))
            }
        };
        let prefix = check_subnet(self.ip, gateway, prefix)?;
        Ok(InstanceNetwork {
            ip: self.ip,
            gateway,
            prefix,
        })
    }
}

/// Checks that `gateway/prefix` is a subnet with room for a gateway and an
/// instance, that the gateway is a host address in it, and that `ip` (when
/// given) is another host address in it. Returns the prefix as `u8`.
pub fn check_subnet(
    ip: Option<Ipv4Addr>,
    gateway: Ipv4Addr,
    prefix: u32,
) -> std::result::Result<u8, String> {
    let p = match u8::try_from(prefix) {
        Ok(p) if (1..=30).contains(&p) => p,
        _ => return Err(format!("prefix length /{prefix} must be 1..=30")),
    };
    let mask = u32::MAX << (32 - u32::from(p));
    let net = u32::from(gateway) & mask;
    let broadcast = net | !mask;
    let subnet = format!("{}/{p}", Ipv4Addr::from(net));
    let host = |a: Ipv4Addr| {
        let a = u32::from(a);
        a & mask == net && a != net && a != broadcast
    };
    if !host(gateway) {
        return Err(format!(
            "gateway {gateway} is the network or broadcast address of {subnet}"
        ));
    }
    if let Some(ip) = ip {
        if !host(ip) {
            return Err(format!(
                "instance address {ip} is not a host address in {subnet} (gateway {gateway})"
            ));
        }
        if ip == gateway {
            return Err(format!("instance address {ip} is the gateway of {subnet}"));
        }
    }
    Ok(p)
}

/// Desired lifecycle of an instance, as the control plane wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Should be running.
    Running,
    /// Should exist, stopped.
    Stopped,
    /// Should be gone.
    Terminated,
    /// Reboot once when the generation is new, then keep running.
    Rebooting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(InstanceId::new("i-0123456789abcdef0").is_ok());
        for bad in [
            "",
            "I-UPPER",
            "a/b",
            "..",
            ".hidden",
            "x y",
            &"a".repeat(65),
        ] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
        let r: std::result::Result<InstanceId, _> = serde_json::from_str("\"../../etc\"");
        assert!(r.is_err());
    }

    #[test]
    fn type_limits_replace_the_agents_per_vcpu_limits() {
        let agent = LimitsConfig {
            io_read_iops: 10,
            disk_ops: 100,
            net_rx_pps: 7,
            ..LimitsConfig::default()
        };
        let mut s = net_spec(None, None, None);
        s.vcpus = 3;
        // No type limits: [limits] times the vCPUs.
        assert_eq!(DeviceLimits::effective(&s, &agent), agent.for_vcpus(3));
        s.limits = Some(DeviceLimits {
            disk_bps: 4096,
            disk_iops: 50,
            net_tx_bps: 1,
            ..DeviceLimits::default()
        });
        let l = DeviceLimits::effective(&s, &agent);
        assert_eq!(
            (l.io_read_bps, l.io_write_bps, l.disk_bps),
            (4096, 4096, 4096)
        );
        assert_eq!((l.io_read_iops, l.io_write_iops, l.disk_ops), (50, 50, 50));
        assert_eq!((l.net_tx_bps, l.net_tx_pps, l.net_rx_pps), (1, 0, 0));
        // A spec written by an older agent (no `limits`) still reads, and
        // one without limits is written without the field.
        let json = serde_json::to_string(&net_spec(None, None, None)).unwrap();
        assert!(!json.contains("limits"), "{json}");
        let back: InstanceSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.limits, None);
    }

    #[test]
    fn spec_ranges_are_validated() {
        let mut s = InstanceSpec {
            id: InstanceId::new("i-1").unwrap(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: "nubis.disk_write=1".into(),
            ip: None,
            prefix_len: None,
            gateway: None,
            mac: None,
            image_manifest_sha256: None,
            metadata: None,
            root_volume_gib: None,
            limits: None,
            vpc: None,
            extra_networks: Vec::new(),
        };
        assert!(s.validate().is_ok());
        s.vcpus = 0;
        assert!(s.validate().is_err());
        s.vcpus = 1;
        s.cmdline_extra = "a\nb".into();
        assert!(s.validate().is_err());
        s.cmdline_extra = String::new();
        s.mac = Some("02:00:00:00:00".into());
        assert!(s.validate().is_err());
        s.mac = None;
        for (gib, ok) in [(Some(0), false), (Some(1), true), (Some(16_385), false)] {
            s.root_volume_gib = gib;
            assert_eq!(s.validate().is_ok(), ok, "{gib:?}");
        }
    }

    #[test]
    fn secondary_interfaces_are_validated() {
        let vpc = |vni| VpcAttachment {
            vni,
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-2".into(),
            subnet_cidr: "10.0.2.0/24".into(),
            security_group_ids: vec![],
        };
        let extra = |index, vni| ExtraNetwork {
            device_index: index,
            interface_id: "eni-1".into(),
            ip: "10.0.2.10".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.2.1".parse().unwrap(),
            mac: "02:4e:0a:00:02:0a".into(),
            vpc: vpc(vni),
        };
        let mut s = net_spec(Some("10.0.1.10"), Some("10.0.1.1"), Some(24));
        s.vpc = Some(vpc(7));
        s.extra_networks = vec![extra(1, 7), extra(3, 7)];
        assert!(s.validate().is_ok());
        for bad in [
            vec![extra(1, 8)],
            vec![extra(0, 7)],
            vec![extra(8, 7)],
            vec![extra(2, 7), extra(1, 7)],
            vec![extra(1, 7), extra(1, 7)],
            vec![ExtraNetwork {
                mac: "bad".into(),
                ..extra(1, 7)
            }],
        ] {
            s.extra_networks = bad;
            assert!(s.validate().is_err(), "{:?}", s.extra_networks);
        }
        // Without a VPC there are no secondary interfaces.
        s.vpc = None;
        s.extra_networks = vec![extra(1, 7)];
        assert!(s.validate().is_err());
    }

    fn net_spec(ip: Option<&str>, gw: Option<&str>, p: Option<u32>) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new("i-1").unwrap(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: String::new(),
            ip: ip.map(|s| s.parse().unwrap()),
            prefix_len: p,
            gateway: gw.map(|s| s.parse().unwrap()),
            mac: None,
            image_manifest_sha256: None,
            metadata: None,
            root_volume_gib: None,
            limits: None,
            vpc: None,
            extra_networks: Vec::new(),
        }
    }

    #[test]
    fn spec_network_wins_over_the_node_default() {
        let node: (Ipv4Addr, u8) = ("10.200.0.1".parse().unwrap(), 24);
        let default = Some(node);
        let n = net_spec(Some("10.77.3.9"), Some("10.77.0.1"), Some(16))
            .network(default)
            .unwrap();
        assert_eq!(n.gateway, "10.77.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.prefix, 16);
        assert_eq!(n.ip, Some("10.77.3.9".parse().unwrap()));
        // Without gateway and prefix the node's bridge address applies.
        let n = net_spec(Some("10.200.0.7"), None, None)
            .network(default)
            .unwrap();
        assert_eq!((n.gateway, n.prefix), node);
        let n = net_spec(None, None, None).network(default).unwrap();
        assert_eq!(n.ip, None);
    }

    #[test]
    fn bad_spec_networks_are_refused_with_a_reason() {
        let default = Some(("10.200.0.1".parse().unwrap(), 24));
        let cases = [
            // instance address outside the prefix
            (
                net_spec(Some("10.78.0.5"), Some("10.77.0.1"), Some(16)),
                "not a host address",
            ),
            // instance address = gateway
            (
                net_spec(Some("10.77.0.1"), Some("10.77.0.1"), Some(16)),
                "is the gateway",
            ),
            // instance address = network / broadcast address
            (
                net_spec(Some("10.77.0.0"), Some("10.77.0.1"), Some(16)),
                "not a host address",
            ),
            (
                net_spec(Some("10.77.255.255"), Some("10.77.0.1"), Some(16)),
                "not a host address",
            ),
            // gateway = network / broadcast address
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.0"), Some(16)),
                "gateway 10.77.0.0",
            ),
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.7"), Some(29)),
                "broadcast",
            ),
            // prefix out of range
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.1"), Some(31)),
                "/31",
            ),
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.1"), Some(0)),
                "/0",
            ),
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.1"), Some(300)),
                "/300",
            ),
            // incomplete
            (
                net_spec(Some("10.77.0.5"), Some("10.77.0.1"), None),
                "no prefix",
            ),
            (net_spec(Some("10.77.0.5"), None, Some(16)), "no gateway"),
            (
                net_spec(None, Some("10.77.0.1"), Some(16)),
                "no instance address",
            ),
            // no spec network: the address must fit the node default
            (net_spec(Some("10.77.0.5"), None, None), "10.200.0.0/24"),
        ];
        for (spec, want) in cases {
            let e = spec.network(default).unwrap_err();
            assert!(e.contains(want), "{spec:?}: {e:?} lacks {want:?}");
        }
        let e = net_spec(Some("10.77.0.5"), None, None)
            .network(None)
            .unwrap_err();
        assert!(e.contains("bridge_address"), "{e}");
        // The smallest usable subnet works.
        assert_eq!(
            check_subnet(
                Some("10.0.0.2".parse().unwrap()),
                "10.0.0.1".parse().unwrap(),
                30
            ),
            Ok(30)
        );
    }
}
