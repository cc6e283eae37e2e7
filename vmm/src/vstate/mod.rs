//! KVM state of the machine: the VM ([`vm`]), its memory ([`memory`]) and
//! its vCPUs ([`vcpu`]).

pub mod memory;
pub mod vcpu;
pub mod vm;
