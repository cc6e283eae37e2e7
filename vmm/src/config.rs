//! The microVM configuration: command-line flags, the equivalent `--config`
//! JSON file, and validation of both (everything from outside is checked
//! here before any resource is created).

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::devices::ratelimit::RateLimitConfig;
use crate::error::{Error, Result};

/// Most vCPUs we start (MP table and IOAPIC routing stay simple).
pub const MAX_VCPUS: u8 = 32;
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "reboot=k panic=1 pci=off";
/// Most disks and network devices together (virtio IRQs 5..=23).
pub const MAX_VIRTIO_DEVICES: usize = 16;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file, created or appended to.
    File(PathBuf),
}

impl Serialize for SerialOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            SerialOutput::Stdout => s.serialize_str("stdout"),
            SerialOutput::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

impl<'de> Deserialize<'de> for SerialOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(SerialOutput::parse(&s))
    }
}

impl SerialOutput {
    fn parse(s: &str) -> Self {
        if s == "stdout" {
            SerialOutput::Stdout
        } else {
            SerialOutput::File(PathBuf::from(s))
        }
    }
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Backing file.
    pub path: PathBuf,
    /// Guest cannot write.
    #[serde(default)]
    pub read_only: bool,
    /// Serial/ID reported to the guest (at most 20 bytes).
    #[serde(default)]
    pub id: Option<String>,
    /// Bandwidth (bytes/s read + written) and request limits.
    #[serde(default, skip_serializing_if = "RateLimitConfig::is_unlimited")]
    pub rate_limit: RateLimitConfig,
}

/// One virtio-net device backed by a TAP device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Existing TAP device name.
    pub tap: String,
    /// Guest MAC address; a locally administered one is derived when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// An inherited fd already attached to the TAP `tap` (the jailed VMM cannot
    /// open `/dev/net/tun` itself).
    #[serde(default)]
    pub fd: Option<i32>,
    /// Bandwidth (bytes/s sent) and frame limits of the guest's transmissions.
    #[serde(default, skip_serializing_if = "RateLimitConfig::is_unlimited")]
    pub rate_limit: RateLimitConfig,
    /// Bandwidth (bytes/s) and frame limits of what the guest receives from
    /// the TAP.
    #[serde(default, skip_serializing_if = "RateLimitConfig::is_unlimited")]
    pub rx_rate_limit: RateLimitConfig,
}

/// The whole microVM configuration: what `--config FILE` holds and what the
/// API's `describe` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Guest kernel (ELF vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (the VMM appends console and virtio-mmio entries).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// virtio-blk disks, in guest order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices, in guest order.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Serial console destination.
    #[serde(default)]
    pub serial: SerialOutput,
    /// Cap on the console log file (keeps the newest half when exceeded).
    #[serde(default)]
    pub serial_max_bytes: Option<u64>,
    /// Unix socket for the control API.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Where the exit-status record is written when the VMM exits
    /// (see [`crate::exit_status`]).
    #[serde(default)]
    pub exit_status_file: Option<PathBuf>,
    /// Per-thread seccomp filters (see [`crate::seccomp`]); turning them off
    /// is for debugging only and leaves the host exposed to device-model bugs.
    #[serde(default = "default_true")]
    pub seccomp: bool,
    /// An inherited, open `/dev/kvm` fd to use instead of opening the device
    /// (a jailed VMM has no access to it).
    #[serde(default)]
    pub kvm_fd: Option<i32>,
    /// Instance metadata (JSON `nubis_imds::ImdsConfig`) served at
    /// 169.254.169.254 on the first network device; reread on the API's
    /// `reload_metadata` (see docs/imds.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_vcpus() -> u8 {
    1
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY_MIB
}

/// Runs one KVM microVM: a Linux or PVH kernel with a 16550 serial console,
/// an i8042 reset controller, and virtio-blk / virtio-net / virtio-rng devices
/// over virtio-mmio.
///
/// Exit status: 0 guest reset or stopped on request; 1 internal error or
/// vCPU fault; 2 bad usage or configuration; 3 kernel missing or malformed;
/// 4 initrd problem; 5 memory too small or too large; 6 network (TAP) problem;
/// 7 disk problem; 8 KVM unavailable; 9 API socket problem. With
/// `--exit-status-file`, each exit also leaves a JSON record of its status.
#[derive(Debug, Parser)]
#[command(name = "nubis-vmm", version, about, long_about)]
pub struct Cli {
    /// JSON file with the whole configuration (same fields as the flags:
    /// kernel, initrd, cmdline, vcpus, memory_mib, disks, nets, serial,
    /// serial_max_bytes, api_socket, exit_status_file). Excludes every other
    /// flag but --exit-status-file.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "kernel", "initrd", "cmdline", "vcpus", "memory_mib", "disk", "net",
        "serial", "serial_max_bytes", "api_socket", "metadata_file"
    ])]
    pub config: Option<PathBuf>,
    /// Guest kernel: ELF vmlinux (PVH entry preferred, else the 64-bit Linux
    /// entry) or bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk loaded at the top of low guest memory.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the VMM appends `console=ttyS0` when no console
    /// is set and one `virtio_mmio.device=` entry per device.
    /// Default: "reboot=k panic=1 pci=off".
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1-32).
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB (16 up to host RAM). Default 128.
    #[arg(long = "memory-mib", value_name = "N")]
    pub memory_mib: Option<u64>,
    /// A virtio-blk disk: backing file, `ro` for read-only, `id=ID` for the
    /// serial the guest sees (<= 20 bytes), `bw=N[/BURST]` bytes/s read +
    /// written and `ops=N[/BURST]` requests/s limits. Repeat for more disks.
    #[arg(long, value_name = "PATH[,ro][,id=ID][,bw=N][,ops=N]")]
    pub disk: Vec<String>,
    /// A virtio-net device on an existing TAP device, with an optional MAC
    /// (aa:bb:cc:dd:ee:ff), an inherited fd already attached to it (`fd=N`),
    /// limits on what the guest sends (`bw=N[/BURST]` bytes/s,
    /// `ops=N[/BURST]` frames/s) and receives (`rx_bw=`, `rx_ops=`).
    /// Repeat for more devices.
    #[arg(
        long,
        value_name = "tap=NAME[,mac=MAC][,fd=N][,bw=N][,ops=N][,rx_bw=N][,rx_ops=N]"
    )]
    pub net: Vec<String>,
    /// Serial console destination: `stdout` (default) or a file path.
    #[arg(long, value_name = "stdout|PATH")]
    pub serial: Option<String>,
    /// Cap for the `--serial PATH` console log: when a write would exceed N
    /// bytes, only the newest half is kept.
    #[arg(long = "serial-max-bytes", value_name = "N")]
    pub serial_max_bytes: Option<u64>,
    /// Unix stream socket for the newline-delimited JSON control API
    /// (describe, pause, resume, ctrl_alt_del, stop, metrics).
    #[arg(long = "api-socket", value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// On exit, write {"exit_code":N,"reason":"..","unix_ms":N,"pid":N} (plus
    /// "signal":N after a fatal signal) to PATH atomically (temporary file,
    /// then rename), also for usage and configuration errors. Allowed with
    /// --config, whose exit_status_file it overrides.
    #[arg(long = "exit-status-file", value_name = "PATH")]
    pub exit_status_file: Option<PathBuf>,
    /// A word (1-64 letters, digits, `-`, `_`) written as "nonce" into every
    /// exit-status record, so that whoever started this VMM can tell its
    /// record from an earlier VMM's (the pid cannot when each VMM is its own
    /// pid namespace's pid 1). Allowed with --config.
    #[arg(long = "exit-status-nonce", value_name = "WORD", value_parser = parse_nonce)]
    pub exit_status_nonce: Option<String>,
    /// UNSAFE, for debugging only: do not install the per-thread seccomp
    /// filters (a device-model bug could then make any syscall). Allowed with
    /// --config, whose `seccomp` field it overrides.
    #[arg(long = "no-seccomp")]
    pub no_seccomp: bool,
    /// An inherited, open /dev/kvm file descriptor (given by the agent's jail).
    #[arg(long = "kvm-fd", value_name = "N")]
    pub kvm_fd: Option<i32>,
    /// Instance metadata JSON ({"metadata":{..},"options":{..}}, see
    /// docs/imds.md) served at 169.254.169.254 on the first --net device;
    /// reread on the API's reload_metadata.
    #[arg(long = "metadata-file", value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
}

fn parse_nonce(s: &str) -> std::result::Result<String, String> {
    if nubis_vmm_api::valid_nonce(s) {
        Ok(s.to_string())
    } else {
        Err("1 to 64 ASCII letters, digits, '-' or '_'".into())
    }
}

impl Cli {
    /// Turns the flags (or the `--config` file) into a validated [`VmConfig`].
    pub fn into_config(self) -> Result<VmConfig> {
        let config = match self.config {
            Some(path) => {
                let mut config = VmConfig::from_file(&path)?;
                if self.exit_status_file.is_some() {
                    config.exit_status_file = self.exit_status_file;
                }
                if self.no_seccomp {
                    config.seccomp = false;
                }
                config
            }
            None => VmConfig {
                kernel: self
                    .kernel
                    .ok_or_else(|| Error::Config("--kernel is required".into()))?,
                initrd: self.initrd,
                cmdline: self.cmdline,
                vcpus: self.vcpus.unwrap_or(1),
                memory_mib: self.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
                disks: self
                    .disk
                    .iter()
                    .map(|s| parse_disk(s))
                    .collect::<Result<_>>()?,
                nets: self
                    .net
                    .iter()
                    .map(|s| parse_net(s))
                    .collect::<Result<_>>()?,
                serial: self
                    .serial
                    .as_deref()
                    .map(SerialOutput::parse)
                    .unwrap_or_default(),
                serial_max_bytes: self.serial_max_bytes,
                api_socket: self.api_socket,
                exit_status_file: self.exit_status_file,
                seccomp: !self.no_seccomp,
                kvm_fd: self.kvm_fd,
                metadata_file: self.metadata_file,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Where the exit-status record goes, as far as it can be known without
    /// a valid configuration: the flag, else the `exit_status_file` field of
    /// a `--config` file that is at least JSON.
    pub fn exit_status_file(&self) -> Option<PathBuf> {
        if let Some(p) = &self.exit_status_file {
            return Some(p.clone());
        }
        let text = std::fs::read_to_string(self.config.as_ref()?).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        let path = value.get("exit_status_file")?.as_str()?;
        (!path.is_empty()).then(|| PathBuf::from(path))
    }
}

/// Applies a `bw=N[/BURST]` or `ops=N[/BURST]` option; false when `key` is neither.
fn parse_limit(limit: &mut RateLimitConfig, key: &str, value: &str) -> Option<Result<()>> {
    let bucket = match key {
        "bw" => &mut limit.bandwidth,
        "ops" => &mut limit.ops,
        _ => return None,
    };
    let (rate, burst) = match value.split_once('/') {
        Some((r, b)) => (r, Some(b)),
        None => (value, None),
    };
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| Error::Config(format!("{key}={value}: expected N or N/BURST")))
    };
    Some((|| {
        bucket.rate = num(rate)?;
        bucket.burst = burst.map(num).transpose()?;
        Ok(())
    })())
}

/// Parses `PATH[,ro][,id=ID][,bw=N[/BURST]][,ops=N[/BURST]]`.
pub fn parse_disk(spec: &str) -> Result<DiskConfig> {
    let mut parts = spec.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err(Error::Config(format!("--disk {spec:?}: missing path")));
    }
    let mut disk = DiskConfig {
        path: PathBuf::from(path),
        read_only: false,
        id: None,
        rate_limit: RateLimitConfig::default(),
    };
    for part in parts {
        match part.split_once('=') {
            None if part == "ro" => disk.read_only = true,
            Some(("id", id)) => disk.id = Some(id.to_string()),
            Some((k, v)) if matches!(k, "bw" | "ops") => {
                if let Some(r) = parse_limit(&mut disk.rate_limit, k, v) {
                    r?;
                }
            }
            _ => {
                return Err(Error::Config(format!(
                    "--disk {spec:?}: unknown option {part:?} (expected ro, id=ID, bw=N or ops=N)"
                )))
            }
        }
    }
    Ok(disk)
}

/// Parses `tap=NAME[,mac=MAC][,fd=N][,bw=N[/BURST]][,ops=N[/BURST]][,rx_bw=N[/BURST]][,rx_ops=N[/BURST]]`
/// (`bw`/`ops` limit what the guest sends, `rx_bw`/`rx_ops` what it receives).
pub fn parse_net(spec: &str) -> Result<NetConfig> {
    let mut tap = None;
    let mut mac = None;
    let mut rate_limit = RateLimitConfig::default();
    let mut rx_rate_limit = RateLimitConfig::default();
    let mut fd = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("tap", name)) => tap = Some(name.to_string()),
            Some(("fd", n)) => {
                fd = Some(n.parse::<i32>().ok().filter(|n| *n > 2).ok_or_else(|| {
                    Error::Config(format!(
                        "--net {spec:?}: fd={n} is not a file descriptor > 2"
                    ))
                })?)
            }
            Some(("mac", m)) => mac = Some(m.to_string()),
            Some((k, v)) if matches!(k, "bw" | "ops") => {
                if let Some(r) = parse_limit(&mut rate_limit, k, v) {
                    r?;
                }
            }
            Some((k, v)) if matches!(k, "rx_bw" | "rx_ops") => {
                if let Some(r) = parse_limit(&mut rx_rate_limit, &k[3..], v) {
                    r?;
                }
            }
            _ => {
                return Err(Error::Config(format!(
                    "--net {spec:?}: unknown option {part:?} (expected tap=NAME, mac=MAC, fd=N, \
                     bw=N, ops=N, rx_bw=N or rx_ops=N)"
                )))
            }
        }
    }
    let tap = tap.ok_or_else(|| Error::Config(format!("--net {spec:?}: missing tap=NAME")))?;
    Ok(NetConfig {
        tap,
        mac,
        fd,
        rate_limit,
        rx_rate_limit,
    })
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Reads and checks an instance metadata file (`--metadata-file`).
pub fn load_metadata(path: &Path) -> Result<nubis_imds::ImdsConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    let config: nubis_imds::ImdsConfig =
        serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
    let hop = config.options.http_put_response_hop_limit;
    if !(1..=64).contains(&hop) {
        return Err(Error::Config(format!(
            "metadata hop limit {hop} outside 1..=64"
        )));
    }
    Ok(config)
}

impl VmConfig {
    /// Reads and parses a `--config` JSON file (not yet validated).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the settings that need no host resources: counts, names and
    /// formats. Files are checked when they are opened.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.kernel.as_os_str().is_empty() {
            return bad("kernel path is empty".into());
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus {} outside 1..={MAX_VCPUS}", self.vcpus));
        }
        if let Some(cmdline) = &self.cmdline {
            if !cmdline.is_ascii() || cmdline.bytes().any(|b| b.is_ascii_control()) {
                return bad("cmdline must be printable ASCII".into());
            }
        }
        let devices = self.disks.len() + self.nets.len();
        if devices > MAX_VIRTIO_DEVICES {
            return bad(format!(
                "{devices} disks and network devices, at most {MAX_VIRTIO_DEVICES}"
            ));
        }
        for disk in &self.disks {
            if disk.path.as_os_str().is_empty() {
                return bad("disk path is empty".into());
            }
            if let Some(id) = &disk.id {
                if id.is_empty() || id.len() > 20 || !id.is_ascii() {
                    return bad(format!("disk id {id:?} must be 1-20 ASCII bytes"));
                }
            }
        }
        for (i, net) in self.nets.iter().enumerate() {
            if net.tap.is_empty() || net.tap.len() >= libc::IFNAMSIZ || net.tap.contains('/') {
                return bad(format!(
                    "tap name {:?} is not a valid interface name",
                    net.tap
                ));
            }
            if self.nets[..i].iter().any(|n| n.tap == net.tap) {
                return bad(format!("tap {} used twice", net.tap));
            }
            if let Some(mac) = &net.mac {
                match parse_mac(mac) {
                    None => return bad(format!("mac {mac:?} is not aa:bb:cc:dd:ee:ff")),
                    Some(m) if m[0] & 1 == 1 => {
                        return bad(format!("mac {mac} is a multicast address"))
                    }
                    Some(_) => {}
                }
            }
        }
        match (&self.serial, self.serial_max_bytes) {
            (SerialOutput::Stdout, Some(_)) => {
                return bad("serial_max_bytes needs a serial file path".into())
            }
            (_, Some(n)) if n < 1024 => return bad(format!("serial_max_bytes {n} below 1024")),
            _ => {}
        }
        if let SerialOutput::File(p) = &self.serial {
            if p.as_os_str().is_empty() {
                return bad("serial path is empty".into());
            }
        }
        if let Some(p) = &self.exit_status_file {
            if p.as_os_str().is_empty() || p.file_name().is_none() {
                return bad(format!(
                    "exit status file {} is not a file path",
                    p.display()
                ));
            }
        }
        if let Some(p) = &self.metadata_file {
            if self.nets.is_empty() {
                return bad("metadata_file needs a network device".into());
            }
            if p.as_os_str().is_empty() {
                return bad("metadata file path is empty".into());
            }
        }
        if let Some(p) = &self.api_socket {
            // sun_path holds 108 bytes including the terminating NUL.
            if p.as_os_str().is_empty() || p.as_os_str().len() > 107 {
                return bad(format!("api socket path {} empty or too long", p.display()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> VmConfig {
        serde_json::from_str(r#"{"kernel":"/k"}"#).unwrap()
    }

    #[test]
    fn json_defaults() {
        let c = base();
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, DEFAULT_MEMORY_MIB);
        assert_eq!(c.serial, SerialOutput::Stdout);
        c.validate().unwrap();
    }

    #[test]
    fn json_roundtrip_and_unknown_fields() {
        let c: VmConfig = serde_json::from_str(
            r#"{"kernel":"/k","vcpus":2,"disks":[{"path":"/d","read_only":true,"id":"x"}],
                "nets":[{"tap":"nbtap0","mac":"02:00:00:00:00:01"}],"serial":"/tmp/log",
                "serial_max_bytes":4096}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let back: VmConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel":"/k","bogus":1}"#).is_err());
    }

    #[test]
    fn disk_and_net_specs() {
        let d = parse_disk("/img,ro,id=root").unwrap();
        assert_eq!(d.path, PathBuf::from("/img"));
        assert!(d.read_only);
        assert_eq!(d.id.as_deref(), Some("root"));
        assert!(parse_disk("").is_err());
        assert!(parse_disk("/img,rw").is_err());
        let n = parse_net("tap=nb0,mac=02:00:00:00:00:01").unwrap();
        assert_eq!(n.tap, "nb0");
        assert!(parse_net("mac=02:00:00:00:00:01").is_err());
        assert!(parse_net("tap=x,foo=1").is_err());
        let d = parse_disk("/img,bw=1048576/2097152,ops=100").unwrap();
        assert_eq!(d.rate_limit.bandwidth.rate, 1 << 20);
        assert_eq!(d.rate_limit.bandwidth.burst, Some(2 << 20));
        assert_eq!(d.rate_limit.ops.rate, 100);
        assert_eq!(d.rate_limit.ops.burst, None);
        let n = parse_net("tap=nb0,rx_bw=2048/4096,fd=7,rx_ops=50,ops=1000").unwrap();
        assert_eq!(n.rx_rate_limit.bandwidth.rate, 2048);
        assert_eq!(n.rx_rate_limit.bandwidth.burst, Some(4096));
        assert_eq!(n.rx_rate_limit.ops.rate, 50);
        assert!(parse_net("tap=nb0,rx_ops=fast").is_err());
        assert!(parse_net("tap=nb0,rx_iops=1").is_err());
        assert_eq!(n.fd, Some(7));
        assert!(parse_net("tap=nb0,fd=1").is_err());
        assert_eq!(n.rate_limit.ops.rate, 1000);
        assert!(parse_disk("/img,bw=fast").is_err());
        assert!(parse_net("tap=nb0,ops=1/x").is_err());
        assert!(base().seccomp, "seccomp is on unless turned off");
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:0a:ff:00:01:02"), Some([2, 10, 255, 0, 1, 2]));
        assert_eq!(parse_mac("02:0a:ff:00:01"), None);
        assert_eq!(parse_mac("02:0a:ff:00:01:02:03"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:01:02"), None);
    }

    #[test]
    fn rejects_bad_values() {
        type Mutation = Box<dyn Fn(&mut VmConfig)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|c| c.vcpus = 0),
            Box::new(|c| c.vcpus = MAX_VCPUS + 1),
            Box::new(|c| c.cmdline = Some("a\nb".into())),
            Box::new(|c| c.serial_max_bytes = Some(4096)),
            Box::new(|c| {
                c.serial = SerialOutput::File("/x".into());
                c.serial_max_bytes = Some(10)
            }),
            Box::new(|c| {
                c.nets.push(NetConfig {
                    tap: "a-very-long-interface-name".into(),
                    mac: None,
                    fd: None,
                    rate_limit: RateLimitConfig::default(),
                    rx_rate_limit: RateLimitConfig::default(),
                })
            }),
            Box::new(|c| {
                c.nets.push(NetConfig {
                    tap: "nb0".into(),
                    mac: Some("01:00:00:00:00:00".into()),
                    fd: None,
                    rate_limit: RateLimitConfig::default(),
                    rx_rate_limit: RateLimitConfig::default(),
                })
            }),
            Box::new(|c| {
                c.disks.push(DiskConfig {
                    path: "/d".into(),
                    read_only: false,
                    id: Some("x".repeat(21)),
                    rate_limit: RateLimitConfig::default(),
                })
            }),
            Box::new(|c| c.api_socket = Some(PathBuf::from("/".repeat(200)))),
            Box::new(|c| c.exit_status_file = Some(PathBuf::from("/tmp/.."))),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = base();
            mutate(&mut c);
            let err = c.validate().expect_err(&format!("case {i} accepted"));
            assert_eq!(err.exit_code(), 2, "case {i}");
        }
    }

    #[test]
    fn cli_builds_config() {
        let cli = Cli::try_parse_from([
            "nubis-vmm",
            "--kernel",
            "/k",
            "--vcpus",
            "2",
            "--memory-mib",
            "64",
            "--disk",
            "/d,ro",
            "--net",
            "tap=nb1",
            "--serial",
            "/tmp/c.log",
            "--serial-max-bytes",
            "65536",
        ])
        .unwrap();
        let c = cli.into_config().unwrap();
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_mib, 64);
        assert!(c.disks[0].read_only);
        assert_eq!(c.serial, SerialOutput::File("/tmp/c.log".into()));
        assert!(Cli::try_parse_from(["nubis-vmm", "--config", "/c", "--kernel", "/k"]).is_err());
        let with_status =
            Cli::try_parse_from(["nubis-vmm", "--config", "/c", "--exit-status-file", "/e"]);
        assert_eq!(
            with_status.unwrap().exit_status_file(),
            Some(PathBuf::from("/e"))
        );
        assert!(Cli::try_parse_from(["nubis-vmm"]).is_err());
    }
}
