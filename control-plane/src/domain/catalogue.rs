//! Instance types: the record stored per type under `instance-types/<name>`,
//! the two sets a new cluster is seeded with ([`SeedProfile`]), the order
//! types are listed in, what EC2 derives from a type's name (family,
//! burstable, cores), and DescribeInstanceTypes' filtering and paging
//! ([`describe`]), shared by the gRPC and EC2 edges. Storage, seeding and the
//! operator's changes live in [`crate::domain::instance_types`].

use serde::{Deserialize, Serialize};

use crate::domain::filters::{any_matches, check as check_filters, Filter};
use crate::domain::instances::{decode_token, encode_token};
use crate::error::{Error, Result};

/// One instance type (the stored record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceType {
    /// EC2-style name: `<family>.<size>`.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory.
    pub memory_mib: u32,
    /// Device rate limits of its instances; None (records written before
    /// schema 2, or a type put without them): the agents' `[limits]` apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TypeLimits>,
}

/// A type's device rate limits, for the whole instance (not per vCPU);
/// 0 = that one is unlimited. The agent applies them to the VMM's token
/// buckets (virtio-blk, virtio-net both ways) and to cgroup `io.max`
/// (docs/compute-api.md "Instance types", docs/agent.md `[limits]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeLimits {
    /// Disk bytes per second (read + written).
    #[serde(default)]
    pub disk_bps: u64,
    /// Disk operations per second.
    #[serde(default)]
    pub disk_iops: u64,
    /// Network bytes per second the guest sends.
    #[serde(default)]
    pub net_tx_bps: u64,
    /// Network frames per second the guest sends.
    #[serde(default)]
    pub net_tx_pps: u64,
    /// Network bytes per second into the guest.
    #[serde(default)]
    pub net_rx_bps: u64,
    /// Network frames per second into the guest.
    #[serde(default)]
    pub net_rx_pps: u64,
}

/// Seeded limits per vCPU of the fixed-performance families (m5, c5, r5):
/// Nubis' own numbers, modelled on the order of EC2's per-instance EBS and
/// network baselines (docs/compute-api.md): 40 MiB/s and 2,000 disk
/// operations, 50 MiB/s (~420 Mbit/s) and 50,000 frames each way.
const FIXED_PER_VCPU: TypeLimits = TypeLimits {
    disk_bps: 40 << 20,
    disk_iops: 2_000,
    net_tx_bps: 50 << 20,
    net_tx_pps: 50_000,
    net_rx_bps: 50 << 20,
    net_rx_pps: 50_000,
};

impl TypeLimits {
    /// Every field times `n`, saturating.
    pub fn times(&self, n: u32) -> TypeLimits {
        let n = u64::from(n);
        TypeLimits {
            disk_bps: self.disk_bps.saturating_mul(n),
            disk_iops: self.disk_iops.saturating_mul(n),
            net_tx_bps: self.net_tx_bps.saturating_mul(n),
            net_tx_pps: self.net_tx_pps.saturating_mul(n),
            net_rx_bps: self.net_rx_bps.saturating_mul(n),
            net_rx_pps: self.net_rx_pps.saturating_mul(n),
        }
    }

    /// Every field halved (the burstable families' baseline).
    fn half(&self) -> TypeLimits {
        TypeLimits {
            disk_bps: self.disk_bps / 2,
            disk_iops: self.disk_iops / 2,
            net_tx_bps: self.net_tx_bps / 2,
            net_tx_pps: self.net_tx_pps / 2,
            net_rx_bps: self.net_rx_bps / 2,
            net_rx_pps: self.net_rx_pps / 2,
        }
    }
}

impl InstanceType {
    fn new(name: &str, vcpus: u32, memory_mib: u32) -> Self {
        Self {
            name: name.to_string(),
            vcpus,
            memory_mib,
            limits: None,
        }
    }

    /// The seeded limits of a type of this family and size: m5/c5/r5
    /// [`FIXED_PER_VCPU`] times its vCPUs, the burstable families half that.
    fn seeded_limits(&self) -> TypeLimits {
        let per_vcpu = if self.burstable() {
            FIXED_PER_VCPU.half()
        } else {
            FIXED_PER_VCPU
        };
        per_vcpu.times(self.vcpus)
    }

    /// The family (`t3` of `t3.micro`).
    pub fn family(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }

    /// The size (`micro` of `t3.micro`).
    pub fn size(&self) -> &str {
        self.name.split_once('.').map_or("", |(_, s)| s)
    }

    /// Burstable families (EC2's `t*`).
    pub fn burstable(&self) -> bool {
        self.family().starts_with('t')
    }

    /// Threads per core as EC2 reports them: 1 for t2 and single-vCPU
    /// types, otherwise 2.
    pub fn threads_per_core(&self) -> u32 {
        if self.family() == "t2" || self.vcpus < 2 || !self.vcpus.is_multiple_of(2) {
            1
        } else {
            2
        }
    }

    /// Cores (vCPUs / threads per core).
    pub fn cores(&self) -> u32 {
        self.vcpus / self.threads_per_core()
    }

    /// EC2's free tier: t2.micro and t3.micro.
    pub fn free_tier_eligible(&self) -> bool {
        self.name == "t2.micro" || self.name == "t3.micro"
    }
}

/// Which set of types a new cluster's catalogue starts with
/// (`[instance_types] seed` in the control plane's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedProfile {
    /// EC2's t2/t3/t3a nano..2xlarge and m5/c5/r5 large..4xlarge with EC2's
    /// vCPUs and memory.
    #[default]
    Ec2,
    /// The same names, but the nine types Nubis offered before the catalogue
    /// moved to etcd (t3.nano..t3.large, c5/m5 large and xlarge) keep their
    /// small sizes (64 MiB..4 GiB): for test clusters and the quickstart,
    /// whose hosts are small and whose guests need a few MiB.
    Compact,
}

const EC2_SIZES: &[&str] = &[
    "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge", "4xlarge",
];

/// The types a new catalogue is seeded with, each with its seeded device
/// rate limits (scaled by its vCPUs).
pub fn seed(profile: SeedProfile) -> Vec<InstanceType> {
    let mut out = Vec::new();
    // (size, vCPUs, MiB) of EC2's burstable families.
    let t2: &[(&str, u32, u32)] = &[
        ("nano", 1, 512),
        ("micro", 1, 1024),
        ("small", 1, 2048),
        ("medium", 2, 4096),
        ("large", 2, 8192),
        ("xlarge", 4, 16384),
        ("2xlarge", 8, 32768),
    ];
    let t3: &[(&str, u32, u32)] = &[
        ("nano", 2, 512),
        ("micro", 2, 1024),
        ("small", 2, 2048),
        ("medium", 2, 4096),
        ("large", 2, 8192),
        ("xlarge", 4, 16384),
        ("2xlarge", 8, 32768),
    ];
    for (fam, sizes) in [("t2", t2), ("t3", t3), ("t3a", t3)] {
        for (size, v, m) in sizes {
            out.push(InstanceType::new(&format!("{fam}.{size}"), *v, *m));
        }
    }
    // GiB per vCPU of the fixed-performance families.
    for (fam, gib_per_vcpu) in [("m5", 4), ("c5", 2), ("r5", 8)] {
        for (size, v) in [("large", 2), ("xlarge", 4), ("2xlarge", 8), ("4xlarge", 16)] {
            out.push(InstanceType::new(
                &format!("{fam}.{size}"),
                v,
                v * gib_per_vcpu * 1024,
            ));
        }
    }
    if profile == SeedProfile::Compact {
        let small: &[(&str, u32, u32)] = &[
            ("t3.nano", 1, 64),
            ("t3.micro", 1, 128),
            ("t3.small", 1, 256),
            ("t3.medium", 2, 512),
            ("t3.large", 2, 1024),
            ("c5.large", 2, 1024),
            ("c5.xlarge", 4, 2048),
            ("m5.large", 2, 2048),
            ("m5.xlarge", 4, 4096),
        ];
        for t in &mut out {
            if let Some((_, v, m)) = small.iter().find(|(n, _, _)| *n == t.name) {
                t.vcpus = *v;
                t.memory_mib = *m;
            }
        }
    }
    for t in &mut out {
        t.limits = Some(t.seeded_limits());
    }
    out
}

/// The order types are listed in: by family name, then by size (EC2's
/// sizes in their order, then `<n>xlarge` by n, then anything else by name).
pub fn sort_key(name: &str) -> (String, u32, String) {
    let (family, size) = name.split_once('.').unwrap_or((name, ""));
    let rank = match EC2_SIZES.iter().position(|s| *s == size) {
        Some(i) => i as u32,
        None => match size.strip_suffix("xlarge").map(str::parse::<u32>) {
            Some(Ok(n)) => 100 + n,
            _ => 10_000,
        },
    };
    (family.to_string(), rank, size.to_string())
}

/// Checks an operator's type definition: a name `<family>.<size>` of
/// lower-case letters, digits and `-` (each part 1..=32 characters, the
/// family starting with a letter), at least one vCPU and 16 MiB, and at
/// most what a node may report (`max_vcpus`, `max_memory_mib`).
pub fn validate(t: &InstanceType, max_vcpus: u32, max_memory_mib: u32) -> Result<()> {
    if !name_ok(&t.name) {
        return Err(Error::invalid(format!(
            "invalid instance type name {:?}: <family>.<size>, each 1 to 32 lower-case letters, digits or -",
            t.name
        )));
    }
    if t.vcpus == 0 || t.vcpus > max_vcpus {
        return Err(Error::invalid(format!(
            "vcpus must be within 1..={max_vcpus} (nodes.max_vcpus)"
        )));
    }
    if t.memory_mib < 16 || t.memory_mib > max_memory_mib {
        return Err(Error::invalid(format!(
            "memory_mib must be within 16..={max_memory_mib} (nodes.max_memory_mib)"
        )));
    }
    Ok(())
}

/// True for a well-formed type name (see [`validate`]).
pub fn name_ok(name: &str) -> bool {
    let part_ok = |p: &str| {
        (1..=32).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    match name.split_once('.') {
        Some((fam, size)) => {
            part_ok(fam)
                && part_ok(size)
                && fam.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        }
        None => false,
    }
}

/// Filter names DescribeInstanceTypes understands.
pub const FILTERS: &[&str] = &[
    "instance-type",
    "vcpu-info.default-vcpus",
    "vcpu-info.default-cores",
    "vcpu-info.default-threads-per-core",
    "memory-info.size-in-mib",
    "current-generation",
    "burstable-performance-supported",
    "free-tier-eligible",
    "bare-metal",
    "hypervisor",
    "instance-storage-supported",
    "processor-info.supported-architecture",
    "supported-root-device-type",
    "supported-usage-class",
    "supported-virtualization-type",
];

/// The error EC2 gives for unknown names in `InstanceTypes.N`.
pub fn unknown_types(names: &[&str]) -> Error {
    Error::invalid_code(
        "InvalidInstanceType",
        format!(
            "The following supplied instance types do not exist: [{}]",
            names.join(", ")
        ),
    )
}

/// One page of DescribeInstanceTypes over `all` (the catalogue, any order):
/// the types named in `names` (all when empty) that pass every filter, in
/// [`sort_key`] order, at most `max_results` (0 = all; otherwise 5..=100,
/// as EC2) after the type `next_token` names. Returns the page and the
/// token for the next one (None on the last page).
pub fn describe(
    all: &[InstanceType],
    names: &[String],
    filters: &[Filter],
    max_results: u32,
    next_token: Option<&str>,
) -> Result<(Vec<InstanceType>, Option<String>)> {
    check_filters(filters, FILTERS)?;
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !all.iter().any(|t| &t.name == *n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(unknown_types(&missing));
    }
    if max_results != 0 && !(5..=100).contains(&max_results) {
        return Err(Error::invalid("MaxResults must be between 5 and 100"));
    }
    if max_results == 0 && next_token.is_some() {
        return Err(Error::invalid("NextToken requires MaxResults"));
    }
    let mut matching: Vec<&InstanceType> = all
        .iter()
        .filter(|t| names.is_empty() || names.contains(&t.name))
        .filter(|t| filters.iter().all(|f| type_matches(t, f)))
        .collect();
    matching.sort_by_key(|t| sort_key(&t.name));
    let start = match next_token {
        None => 0,
        Some(tok) => {
            let last = decode_token(tok)?;
            if !name_ok(&last) {
                return Err(Error::invalid_code(
                    "InvalidNextToken",
                    "the NextToken is not valid",
                ));
            }
            // Resume after the last type handed out, even if it is gone now.
            let last = sort_key(&last);
            matching
                .iter()
                .position(|t| sort_key(&t.name) > last)
                .unwrap_or(matching.len())
        }
    };
    let rest = &matching[start..];
    if max_results == 0 || rest.len() <= max_results as usize {
        return Ok((rest.iter().map(|t| (*t).clone()).collect(), None));
    }
    let page: Vec<InstanceType> = rest[..max_results as usize]
        .iter()
        .map(|t| (*t).clone())
        .collect();
    let token = page.last().map(|t| encode_token(&t.name));
    Ok((page, token))
}

fn type_matches(t: &InstanceType, f: &Filter) -> bool {
    let b = |v: bool| if v { "true" } else { "false" };
    let s = |v: u32| v.to_string();
    match f.name.as_str() {
        "instance-type" => any_matches(&f.values, &[&t.name]),
        "vcpu-info.default-vcpus" => any_matches(&f.values, &[&s(t.vcpus)]),
        "vcpu-info.default-cores" => any_matches(&f.values, &[&s(t.cores())]),
        "vcpu-info.default-threads-per-core" => any_matches(&f.values, &[&s(t.threads_per_core())]),
        "memory-info.size-in-mib" => any_matches(&f.values, &[&s(t.memory_mib)]),
        "current-generation" => any_matches(&f.values, &["true"]),
        "burstable-performance-supported" => any_matches(&f.values, &[b(t.burstable())]),
        "free-tier-eligible" => any_matches(&f.values, &[b(t.free_tier_eligible())]),
        "bare-metal" | "instance-storage-supported" => any_matches(&f.values, &["false"]),
        "hypervisor" => any_matches(&f.values, &["nitro"]),
        "processor-info.supported-architecture" => any_matches(&f.values, &["x86_64"]),
        "supported-root-device-type" => any_matches(&f.values, &["ebs"]),
        "supported-usage-class" => any_matches(&f.values, &["on-demand"]),
        "supported-virtualization-type" => any_matches(&f.values, &["hvm"]),
        _ => false,
    }
}

#[cfg(test)]
#[path = "catalogue_tests.rs"]
mod tests;
