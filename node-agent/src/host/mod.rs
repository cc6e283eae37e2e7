//! Host resources an instance uses, one module each: images and root disks,
//! TAP networking, cgroups, and the `nubis-vmm` process with its API client.

pub mod cgroup;
pub mod disk;
pub mod image;
pub mod tap;
pub mod vmm_process;
