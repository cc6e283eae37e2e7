//! `nubis-vmm` as a library: the VMM's building blocks, used by its binary and tests.

pub mod devices;
