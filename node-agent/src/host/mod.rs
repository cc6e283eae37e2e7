//! Host resources an instance uses, one module each: images and root disks,
//! TAP networking, the nftables firewall, cgroups, the VMM jail, the `nubis-vmm` process with its API client, and
//! change notification for instance directories.

pub mod cgroup;
pub mod dirwatch;
pub mod disk;
pub mod firewall;
pub mod image;
pub mod jail;
pub mod tap;
pub mod vmm_process;
