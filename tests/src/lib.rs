//! Shared harness for Nubis' end-to-end tests: the cluster harness, plus
//! locating binaries and images and the `NUBIS_REQUIRE_KVM` policy (a missing
//! prerequisite fails loudly in CI instead of silently skipping), both from
//! nubis-testsupport.

pub mod cluster;
pub mod frame_bridge;
pub mod qemu_guest;

pub use nubis_testsupport::{image_dir, prerequisite, require_prereqs, workspace_root};
