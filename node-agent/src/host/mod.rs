//! Host resources an instance uses, one module each: images and root disks,
//! TAP networking, the nftables firewall, the VPC data plane, running host tools, cgroups, the VMM jail (and its file-system root), starting a process in its own pid namespace, the `nubis-vmm` process with its API client, and
//! change notification for instance directories.

pub mod cgroup;
pub mod command;
pub mod dirwatch;
pub mod disk;
pub mod firewall;
pub mod image;
pub mod jail;
pub mod jail_root;
pub mod pidns;
pub mod tap;
pub mod vmm_process;
pub mod vpc;
