//! The VMM's one error type and its mapping to the process exit status
//! fixed by the `nubis-vmm` command-line contract (see `docs/vmm.md`).
//!
//! Messages are short and never repeat their cause: the cause sits in
//! `#[source]` and `main` prints the whole chain.

use std::path::PathBuf;

/// Boxed cause for errors of assorted library types.
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can make `nubis-vmm` fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A seccomp filter could not be built or installed.
    #[error("seccomp filter")]
    Seccomp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A setting is invalid (bad flag value, contradictory settings).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The `--config` file cannot be read.
    #[error("cannot read config file {}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `--config` file is not valid JSON for [`crate::config::VmConfig`].
    #[error("cannot parse config file {}", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The kernel command line cannot be built (too long, bad characters).
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),

    /// The kernel image cannot be opened or read.
    #[error("cannot read kernel {}", path.display())]
    KernelRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel image is neither an ELF vmlinux nor a bzImage.
    #[error("kernel {} is not an ELF vmlinux or a bzImage", path.display())]
    KernelFormat { path: PathBuf },
    /// The kernel image is recognised but cannot be loaded.
    #[error("cannot load kernel {}", path.display())]
    KernelLoad {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    /// A bzImage that does not support the 64-bit boot protocol.
    #[error("kernel {} does not support the 64-bit boot protocol", path.display())]
    KernelNot64Bit { path: PathBuf },

    /// The initrd cannot be opened or read.
    #[error("cannot read initrd {}", path.display())]
    InitrdRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The initrd does not fit in guest memory next to the kernel.
    #[error(
        "initrd {} ({size} bytes) does not fit in guest memory ({available} bytes free above the kernel)",
        path.display()
    )]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        available: u64,
    },

    /// Requested guest memory outside the supported range.
    #[error("memory size {mib} MiB is outside the supported range {min}..={max} MiB")]
    MemorySize { mib: u64, min: u64, max: u64 },
    /// The kernel does not fit into the configured guest memory.
    #[error("kernel needs guest memory up to {needed:#x} but the guest has {available:#x} bytes")]
    KernelTooBig { needed: u64, available: u64 },
    /// Guest memory cannot be allocated.
    #[error("cannot allocate guest memory")]
    GuestMemory(#[source] vm_memory::mmap::FromRangesError),

    /// A virtio device (disk, TAP, entropy) cannot be set up.
    #[error("cannot set up virtio device {device}")]
    Device {
        device: String,
        #[source]
        source: crate::devices::virtio::Error,
    },

    /// `/dev/kvm` cannot be opened or lacks a capability we need.
    #[error("KVM unavailable")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// KVM lacks a capability the VMM relies on.
    #[error("KVM lacks capability {0}")]
    KvmCapability(&'static str),
    /// A VM-level KVM ioctl failed.
    #[error("KVM VM set-up failed: {what}")]
    Vm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A vCPU-level KVM ioctl failed.
    #[error("vCPU {id} set-up failed: {what}")]
    Vcpu {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Writing boot structures into guest memory failed.
    #[error("cannot write boot structure: {what}")]
    BootSetup {
        what: &'static str,
        #[source]
        source: BoxedCause,
    },
    /// A vCPU stopped on an error the guest cannot recover from.
    #[error("vCPU {id} fault: {reason}")]
    VcpuFault { id: u8, reason: String },

    /// The API socket cannot be created.
    #[error("cannot serve API socket {}", path.display())]
    ApiSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The console log cannot be opened.
    #[error("cannot open serial output {}", path.display())]
    SerialOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A host resource (eventfd, epoll, thread, signal) failed.
    #[error("host resource failure: {what}")]
    Host {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit status for this error, as fixed by the command-line contract.
    pub fn exit_code(&self) -> i32 {
        use nubis_vmm_api::exit_code;
        match self {
            Error::Config(_)
            | Error::ConfigRead { .. }
            | Error::ConfigParse { .. }
            | Error::Cmdline(_)
            | Error::SerialOutput { .. } => exit_code::CONFIG,
            Error::KernelRead { .. }
            | Error::KernelFormat { .. }
            | Error::KernelLoad { .. }
            | Error::KernelNot64Bit { .. } => exit_code::KERNEL,
            Error::InitrdRead { .. } | Error::InitrdTooLarge { .. } => exit_code::INITRD,
            Error::MemorySize { .. } | Error::KernelTooBig { .. } | Error::GuestMemory(_) => {
                exit_code::MEMORY
            }
            Error::Device { source, .. } => source.exit_status(),
            Error::KvmUnavailable(_) | Error::KvmCapability(_) => exit_code::KVM,
            Error::ApiSocket { .. } => exit_code::API_SOCKET,
            Error::Vm { .. }
            | Error::Vcpu { .. }
            | Error::BootSetup { .. }
            | Error::VcpuFault { .. }
            | Error::Seccomp(_)
            | Error::Host { .. } => exit_code::INTERNAL,
        }
    }

    /// Shorthand for [`Error::Host`].
    pub fn host(what: &'static str, source: std::io::Error) -> Self {
        Error::Host { what, source }
    }
}

/// Result with the VMM error.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Error::Config("x".into()).exit_code(), 2);
        assert_eq!(Error::KernelFormat { path: "/k".into() }.exit_code(), 3);
        let initrd = Error::InitrdTooLarge {
            path: "/i".into(),
            size: 2,
            available: 1,
        };
        assert_eq!(initrd.exit_code(), 4);
        let mem = Error::MemorySize {
            mib: 1,
            min: 16,
            max: 32,
        };
        assert_eq!(mem.exit_code(), 5);
        let net = Error::Device {
            device: "net0".into(),
            source: crate::devices::virtio::Error::TapNotFound { name: "t".into() },
        };
        assert_eq!(net.exit_code(), 6);
        let disk = Error::Device {
            device: "block0".into(),
            source: crate::devices::virtio::Error::DiskUnusable {
                path: "/d".into(),
                reason: "empty",
            },
        };
        assert_eq!(disk.exit_code(), 7);
        assert_eq!(Error::KvmCapability("irqchip").exit_code(), 8);
        let api = Error::ApiSocket {
            path: "/s".into(),
            source: std::io::Error::other("x"),
        };
        assert_eq!(api.exit_code(), 9);
        let fault = Error::VcpuFault {
            id: 0,
            reason: "x".into(),
        };
        assert_eq!(fault.exit_code(), 1);
    }
}
