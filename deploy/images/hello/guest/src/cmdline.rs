//! Kernel command line of the hello guest: parsing and validation.
//!
//! Owns the meaning of every argument the guest reads (`nubis.id=`, `ip=`,
//! `gw=`, `nubis.net<N>=`, `nubis.disk_write=`, `nubis.reset=`, `nubis.spoof=`, `virtio_mmio.device=`). Bad
//! values never abort: they become [`Problem`]s (printed as `NUBIS-ERROR`
//! lines) and the feature they belong to stays off.

use alloc::vec::Vec;
use core::fmt;

/// Longest accepted instance id.
pub const MAX_ID_LEN: usize = 64;
/// Most virtio-mmio devices the guest drives.
pub const MAX_DEVICES: usize = 16;

/// Most secondary network interfaces (`nubis.net1=` .. `nubis.net7=`).
pub const MAX_EXTRA_NETS: usize = 7;

/// A secondary network interface's address (`nubis.net<N>=a.b.c.d/p[,gw]`):
/// the N-th virtio-net device after the first (N from 1, in device order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraNet {
    /// N: which virtio-net device after the first.
    pub n: u8,
    pub ip: Ipv4Cidr,
    /// Its subnet's router (in the subnet, not the address itself).
    pub gw: Option<[u8; 4]>,
}

/// A virtio-mmio device announced as `virtio_mmio.device=<size>@<addr>:<irq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    pub size: u64,
    pub addr: u64,
    pub irq: u32,
}

/// An IPv4 address with its prefix length (`ip=a.b.c.d/p`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: [u8; 4],
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Whether `other` lies in this address's subnet.
    pub fn contains(&self, other: [u8; 4]) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from_be_bytes(self.addr) & mask == u32::from_be_bytes(other) & mask
    }
}

/// Why an argument was ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem<'a> {
    /// The argument's key, e.g. `ip`.
    pub key: &'a str,
    /// The raw value as given.
    pub value: &'a str,
    /// What was expected.
    pub expected: &'static str,
}

impl fmt::Display for Problem<'_> {
    /// `bad ip=10.0.0.300/24 (expected a.b.c.d/prefix)`, non-printable bytes
    /// shown as `?` and long values cut.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad {}=", self.key)?;
        for (i, c) in self.value.chars().enumerate() {
            if i == 64 {
                f.write_str("...")?;
                break;
            }
            let c = if c.is_ascii_graphic() { c } else { '?' };
            write!(f, "{c}")?;
        }
        write!(f, " (expected {})", self.expected)
    }
}

/// Everything the guest takes from its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config<'a> {
    /// `nubis.id=`, if present and valid.
    pub id: Option<&'a str>,
    pub ip: Option<Ipv4Cidr>,
    pub gw: Option<[u8; 4]>,
    pub disk_write: bool,
    pub reset: bool,
    /// `nubis.burn=1`: after the ready line, busy-loop at CPL3 (a CPU load
    /// for the metrics tests) instead of serving the network.
    pub burn: bool,
    /// `nubis.spoof=<a.b.c.d>`: a test mode for the host's anti-spoofing:
    /// the guest sends frames with a forged source MAC, a forged source IP
    /// (this address) and a gratuitous ARP claiming this address.
    pub spoof: Option<[u8; 4]>,
    /// `nubis.imds=0` skips the metadata fetch at boot (default on).
    pub imds: Option<bool>,
    /// `nubis.imds_bench=N`: time N token+GET pairs against the metadata
    /// service and print their p50/p99 (1..=100000).
    pub imds_bench: u32,
    pub devices: Vec<MmioDevice>,
    /// `nubis.net<N>=`: secondary interfaces, by N (the last of a repeated
    /// N wins).
    pub extra_nets: Vec<ExtraNet>,
    pub problems: Vec<Problem<'a>>,
}

impl<'a> Config<'a> {
    /// The instance id to print (`unknown` when missing or invalid).
    pub fn id(&self) -> &'a str {
        self.id.unwrap_or("unknown")
    }
}

/// Parses a command line. Unknown arguments are ignored; the last of a
/// repeated argument wins (as in Linux), except devices, which accumulate.
pub fn parse(cmdline: &str) -> Config<'_> {
    let mut cfg = Config::default();
    let mut gw_raw = None;
    for arg in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        let bad = |expected| Problem {
            key,
            value,
            expected,
        };
        match key {
            "nubis.id" => {
                if valid_id(value) {
                    cfg.id = Some(value);
                } else {
                    cfg.id = None;
                    cfg.problems
                        .push(bad("1-64 characters of A-Z a-z 0-9 . _ : -"));
                }
            }
            "ip" => match parse_cidr(value) {
                Some(c) => cfg.ip = Some(c),
                None => {
                    cfg.ip = None;
                    cfg.problems.push(bad("a.b.c.d/prefix with prefix 1-32"));
                }
            },
            "gw" => match parse_ipv4(value) {
                Some(a) => {
                    cfg.gw = Some(a);
                    gw_raw = Some(value);
                }
                None => {
                    cfg.gw = None;
                    gw_raw = None;
                    cfg.problems.push(bad("a.b.c.d"));
                }
            },
            "nubis.disk_write" => match parse_flag(value) {
                Some(v) => cfg.disk_write = v,
                None => cfg.problems.push(bad("0 or 1")),
            },
            "nubis.reset" => match parse_flag(value) {
                Some(v) => cfg.reset = v,
                None => cfg.problems.push(bad("0 or 1")),
            },
            "nubis.burn" => match parse_flag(value) {
                Some(v) => cfg.burn = v,
                None => cfg.problems.push(bad("0 or 1")),
            },
            "nubis.spoof" => match parse_ipv4(value) {
                Some(a) if a != [0; 4] => cfg.spoof = Some(a),
                _ => {
                    cfg.spoof = None;
                    cfg.problems.push(bad("a.b.c.d (the address to claim)"));
                }
            },
            "nubis.imds" => match parse_flag(value) {
                Some(v) => cfg.imds = Some(v),
                None => cfg.problems.push(bad("0 or 1")),
            },
            "nubis.imds_bench" => match value.parse::<u32>() {
                Ok(n) if (1..=100_000).contains(&n) && !value.starts_with('+') => {
                    cfg.imds_bench = n
                }
                _ => cfg.problems.push(bad("1..100000")),
            },
            "virtio_mmio.device" => match parse_device(value) {
                Some(_) if cfg.devices.len() == MAX_DEVICES => {
                    cfg.problems.push(bad("at most 16 devices"));
                }
                Some(d) if cfg.devices.iter().any(|o| o.addr == d.addr) => {
                    cfg.problems.push(bad("a device address given once"));
                }
                Some(d) => cfg.devices.push(d),
                None => cfg.problems.push(bad(
                    "<size>@<addr>:<irq>, 512 B-1 MiB at a 512-aligned address below 4 GiB",
                )),
            },
            _ => {
                if let Some(n) = key.strip_prefix("nubis.net") {
                    cfg.extra_nets.retain(|x| Some(x.n) != n.parse().ok());
                    match (parse_net_index(n), parse_extra_net(value)) {
                        (Some(n), Some((ip, gw))) => {
                            cfg.extra_nets.push(ExtraNet { n, ip, gw });
                            cfg.extra_nets.sort_by_key(|x| x.n);
                        }
                        (None, _) => cfg.problems.push(bad("nubis.net1= .. nubis.net7=")),
                        (Some(_), None) => cfg.problems.push(bad(
                            "a.b.c.d/prefix[,gateway] with the gateway another address in the subnet",
                        )),
                    }
                }
            }
        }
    }
    if let (Some(gw), Some(ip)) = (cfg.gw, cfg.ip) {
        if !ip.contains(gw) || gw == ip.addr {
            cfg.gw = None;
            cfg.problems.push(Problem {
                key: "gw",
                value: gw_raw.unwrap_or(""),
                expected: "another address in the ip= subnet",
            });
        }
    }
    cfg
}

/// An instance id: 1-64 characters of `A-Z a-z 0-9 . _ : -`.
pub fn valid_id(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Dotted-quad IPv4: four decimal octets, no leading `+`, no extra parts.
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let (addr, prefix) = s.split_once('/')?;
    let addr = parse_ipv4(addr)?;
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    if !(1..=32).contains(&prefix) || addr == [0; 4] {
        return None;
    }
    Some(Ipv4Cidr { addr, prefix })
}

/// N of `nubis.net<N>`: 1..=[`MAX_EXTRA_NETS`], one digit.
fn parse_net_index(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [d @ b'1'..=b'9'] if usize::from(d - b'0') <= MAX_EXTRA_NETS => Some(d - b'0'),
        _ => None,
    }
}

/// `a.b.c.d/p` or `a.b.c.d/p,gw` (gw in the subnet, not the address).
fn parse_extra_net(s: &str) -> Option<(Ipv4Cidr, Option<[u8; 4]>)> {
    let (cidr, gw) = match s.split_once(',') {
        Some((c, g)) => (c, Some(parse_ipv4(g)?)),
        None => (s, None),
    };
    let ip = parse_cidr(cidr)?;
    if gw.is_some_and(|g| !ip.contains(g) || g == ip.addr) {
        return None;
    }
    Some((ip, gw))
}

/// An unsigned integer, decimal or `0x` hexadecimal.
fn parse_uint(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// A size like Linux's `memparse`: integer with an optional K/M/G suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_uint(num)?.checked_mul(1 << shift)
}

fn parse_device(s: &str) -> Option<MmioDevice> {
    let (size, rest) = s.split_once('@')?;
    let (addr, irq) = rest.split_once(':')?;
    // Linux accepts an optional `:<platform id>` after the irq.
    let irq = irq.split_once(':').map_or(irq, |(irq, _id)| irq);
    let size = parse_size(size)?;
    let addr = parse_uint(addr)?;
    if irq.is_empty() || !irq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let irq: u32 = irq.parse().ok()?;
    let end = addr.checked_add(size)?;
    if !(0x200..=0x10_0000).contains(&size) || addr % 0x200 != 0 || end > 0x1_0000_0000 {
        return None;
    }
    // Below 1 MiB is the guest image and firmware, never a device.
    if addr < 0x10_0000 {
        return None;
    }
    Some(MmioDevice { size, addr, irq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn full_command_line() {
        let c = parse(
            "console=ttyS0 nubis.id=i-0abc ip=10.0.0.2/24 gw=10.0.0.1 nubis.disk_write=1 \
             nubis.reset=0 virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=4K@0xd0001000:6:2",
        );
        assert_eq!(c.id(), "i-0abc");
        assert_eq!(
            c.ip,
            Some(Ipv4Cidr {
                addr: [10, 0, 0, 2],
                prefix: 24
            })
        );
        assert_eq!(c.gw, Some([10, 0, 0, 1]));
        assert!(c.disk_write);
        assert!(!c.reset);
        assert!(!c.burn);
        assert!(parse("nubis.burn=1").burn);
        assert!(!parse("nubis.burn=1 nubis.burn=0").burn);
        assert_eq!(parse("nubis.burn=yes").problems.len(), 1);
        assert_eq!(c.spoof, None);
        assert_eq!(parse("nubis.spoof=10.0.0.7").spoof, Some([10, 0, 0, 7]));
        for bad in [
            "nubis.spoof=1",
            "nubis.spoof=0.0.0.0",
            "nubis.spoof=10.0.0.256",
        ] {
            let c = parse(bad);
            assert_eq!((c.spoof, c.problems.len()), (None, 1), "{bad}");
        }
        assert_eq!(
            c.devices,
            [
                MmioDevice {
                    size: 512,
                    addr: 0xfeb0_0e00,
                    irq: 12
                },
                MmioDevice {
                    size: 4096,
                    addr: 0xd000_1000,
                    irq: 6
                }
            ]
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
    }

    #[test]
    fn missing_id_is_unknown_without_problem() {
        let c = parse("console=ttyS0");
        assert_eq!(c.id(), "unknown");
        assert!(c.problems.is_empty());
    }

    #[test]
    fn garbage_values_become_problems() {
        let c = parse(
            "nubis.id=bad/id ip=10.0.0.300/24 gw=x nubis.disk_write=yes nubis.reset=2 \
             virtio_mmio.device=512@0xfeb00e01:12 virtio_mmio.device=junk",
        );
        assert_eq!(c.id(), "unknown");
        assert_eq!(c.ip, None);
        assert_eq!(c.gw, None);
        assert!(!c.disk_write);
        assert!(!c.reset);
        assert!(c.devices.is_empty());
        let keys: Vec<_> = c.problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "nubis.id",
                "ip",
                "gw",
                "nubis.disk_write",
                "nubis.reset",
                "virtio_mmio.device",
                "virtio_mmio.device"
            ]
        );
        assert_eq!(
            c.problems[1].to_string(),
            "bad ip=10.0.0.300/24 (expected a.b.c.d/prefix with prefix 1-32)"
        );
    }

    #[test]
    fn ip_forms() {
        for bad in [
            "10.0.0.2",
            "10.0.0.2/33",
            "10.0.0.2/0",
            "10.0.0/24",
            "10.0.0.2.1/24",
            "1.2.3.4/",
            "0.0.0.0/8",
            "a.b.c.d/24",
            "10.0.0.2/+4",
            "10..0.2/24",
            "010.0.0.2000/24",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cidr("192.168.1.20/32"),
            Some(Ipv4Cidr {
                addr: [192, 168, 1, 20],
                prefix: 32
            })
        );
    }

    #[test]
    fn gateway_outside_subnet_is_rejected() {
        let c = parse("ip=10.0.0.2/24 gw=10.0.1.1");
        assert!(c.ip.is_some());
        assert_eq!(c.gw, None);
        assert_eq!(c.problems.len(), 1);
        let c = parse("ip=10.0.0.2/24 gw=10.0.0.2");
        assert_eq!(c.gw, None);
    }

    #[test]
    fn problem_display_sanitises() {
        let p = Problem {
            key: "ip",
            value: "a\u{1b}[31mb",
            expected: "x",
        };
        assert_eq!(p.to_string(), "bad ip=a?[31mb (expected x)");
        let long = "9".repeat(100);
        let p = Problem {
            key: "ip",
            value: &long,
            expected: "x",
        };
        assert!(p.to_string().contains("..."));
        assert!(p.to_string().len() < 100);
    }

    #[test]
    fn device_limits() {
        assert_eq!(parse_device("0@0xfeb00000:1"), None);
        assert_eq!(parse_device("512@0x1000:1"), None);
        assert_eq!(parse_device("512@0xfffffe00:1").map(|d| d.irq), Some(1));
        assert_eq!(parse_device("1K@0xffffffe00:1"), None);
        assert_eq!(parse_device("512@0xfeb00000:"), None);
        assert_eq!(parse_device("512@0xfeb00000:-1"), None);
        let many: alloc::string::String = (0..20)
            .map(|i| {
                alloc::format!(
                    "virtio_mmio.device=512@{:#x}:5 ",
                    0xd000_0000u64 + i * 0x1000
                )
            })
            .collect();
        let c = parse(&many);
        assert_eq!(c.devices.len(), MAX_DEVICES);
        assert_eq!(c.problems.len(), 4);
        let dup = parse("virtio_mmio.device=512@0xd0000000:5 virtio_mmio.device=512@0xd0000000:6");
        assert_eq!(dup.devices.len(), 1);
        assert_eq!(dup.problems.len(), 1);
    }

    #[test]
    fn secondary_interfaces() {
        let c = parse(
            "ip=10.0.1.5/24 nubis.net2=10.0.3.7/28 nubis.net1=10.0.2.9/24,10.0.2.1 \
             nubis.net1=10.0.2.10/24,10.0.2.1",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            c.extra_nets,
            [
                ExtraNet {
                    n: 1,
                    ip: Ipv4Cidr {
                        addr: [10, 0, 2, 10],
                        prefix: 24
                    },
                    gw: Some([10, 0, 2, 1]),
                },
                ExtraNet {
                    n: 2,
                    ip: Ipv4Cidr {
                        addr: [10, 0, 3, 7],
                        prefix: 28
                    },
                    gw: None,
                },
            ]
        );
        for bad in [
            "nubis.net0=10.0.2.10/24",
            "nubis.net8=10.0.2.10/24",
            "nubis.net10=10.0.2.10/24",
            "nubis.netx=10.0.2.10/24",
            "nubis.net1=10.0.2.10",
            "nubis.net1=10.0.2.10/24,10.0.3.1",
            "nubis.net1=10.0.2.10/24,10.0.2.10",
            "nubis.net1=10.0.2.10/24,",
            "nubis.net1=0.0.0.0/24",
        ] {
            let c = parse(bad);
            assert!(c.extra_nets.is_empty(), "{bad}");
            assert_eq!(c.problems.len(), 1, "{bad}");
        }
        // A bad repeat drops the earlier value of the same N.
        let c = parse("nubis.net1=10.0.2.10/24 nubis.net1=bad");
        assert!(c.extra_nets.is_empty());
    }

    #[test]
    fn imds_flags() {
        let c = parse("nubis.imds=0 nubis.imds_bench=500");
        assert_eq!(c.imds, Some(false));
        assert_eq!(c.imds_bench, 500);
        assert!(c.problems.is_empty());
        let c =
            parse("nubis.imds=2 nubis.imds_bench=0 nubis.imds_bench=+5 nubis.imds_bench=100001");
        assert_eq!(c.imds, None);
        assert_eq!(c.imds_bench, 0);
        assert_eq!(c.problems.len(), 4);
    }
}
