//! `nubis-vmm` as a library: a minimal KVM virtual machine monitor running
//! one microVM per process. The binary (`main.rs`) parses the command line
//! and calls [`run`].
//!
//! Threads: the main thread builds the VM ([`builder`]) and then runs the
//! event loop ([`vmm`]); one thread serves the API socket ([`api`]); one
//! thread per vCPU ([`vstate::vcpu`]). Each installs its own seccomp filter
//! ([`seccomp`]) once its set-up is done.

pub mod api;
pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod error;
pub mod exit_status;
pub mod logger;
pub mod rpc;
pub mod seccomp;
pub mod signals;
pub mod state;
pub mod vmm;
pub mod vstate;

pub use error::{Error, Result};

/// Builds and runs the microVM described by `config`; returns why it ended
/// once it has (its [`state::StopReason::exit_code`] is the process exit
/// status: 0 for reset, stop, SIGTERM; 1 for a vCPU fault).
pub fn run(config: config::VmConfig) -> Result<state::StopReason> {
    if config.seccomp {
        seccomp::init()?;
    }
    let vmm = builder::build(config)?;
    let reason = vmm.run()?;
    if let state::StopReason::VcpuFault(msg) = &reason {
        tracing::error!(fault = %msg, "microVM stopped on a vCPU fault");
    }
    Ok(reason)
}
