//! The fixed instance-type catalogue. Names follow EC2; sizes are Nubis' own
//! and deliberately small (the hello guest needs a few MiB). Documented in
//! docs/compute-api.md.

/// One instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// EC2-style name.
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory.
    pub memory_mib: u32,
}

/// Every type Nubis offers.
pub const CATALOGUE: &[InstanceType] = &[
    InstanceType {
        name: "t3.nano",
        vcpus: 1,
        memory_mib: 64,
    },
    InstanceType {
        name: "t3.micro",
        vcpus: 1,
        memory_mib: 128,
    },
    InstanceType {
        name: "t3.small",
        vcpus: 1,
        memory_mib: 256,
    },
    InstanceType {
        name: "t3.medium",
        vcpus: 2,
        memory_mib: 512,
    },
    InstanceType {
        name: "t3.large",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "c5.large",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "c5.xlarge",
        vcpus: 4,
        memory_mib: 2048,
    },
    InstanceType {
        name: "m5.large",
        vcpus: 2,
        memory_mib: 2048,
    },
    InstanceType {
        name: "m5.xlarge",
        vcpus: 4,
        memory_mib: 4096,
    },
];

/// Looks a type up by name.
pub fn find(name: &str) -> Option<&'static InstanceType> {
    CATALOGUE.iter().find(|t| t.name == name)
}
