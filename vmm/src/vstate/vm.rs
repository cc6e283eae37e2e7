//! The KVM VM: `/dev/kvm`, the VM file descriptor, the in-kernel irqchip
//! (PIC + IOAPIC + LAPICs) and PIT, guest memory slots, and the irqfd /
//! ioeventfd registrations devices use.

use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use std::os::fd::FromRawFd;

use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::memory::{self, GuestMem};
use crate::error::{Error, Result};

/// Where KVM puts the TSS it needs on Intel hosts (three pages below the BIOS area).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Capabilities the VMM relies on.
const REQUIRED_CAPS: [(Cap, &str); 6] = [
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
];

/// The VM.
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    supported_cpuid: CpuId,
}

impl Vm {
    /// Opens KVM, creates the VM with its irqchip and PIT, and maps `mem`.
    /// `kvm_fd`: an inherited, open `/dev/kvm` to use instead of opening it.
    pub fn new(mem: &GuestMem, kvm_fd: Option<i32>) -> Result<Self> {
        let kvm = match kvm_fd {
            // SAFETY: the fd was handed over by our parent (`--kvm-fd`) for
            // this use only; it is checked to be KVM by the version query below.
            Some(fd) => unsafe { Kvm::from_raw_fd(fd) },
            None => Kvm::new().map_err(Error::KvmUnavailable)?,
        };
        if kvm.get_api_version() != 12 {
            return Err(Error::KvmCapability("KVM API version 12"));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(Error::KvmCapability(name));
            }
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::KvmUnavailable)?;
        let fd = kvm.create_vm().map_err(Error::KvmUnavailable)?;
        let vm_err = |what| move |source| Error::Vm { what, source };
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(vm_err("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip().map_err(vm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(vm_err("KVM_CREATE_PIT2"))?;
        memory::register(&fd, mem)?;
        Ok(Vm {
            kvm,
            fd,
            supported_cpuid,
        })
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// KVM's supported CPUID.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.supported_cpuid
    }

    /// Most vCPUs KVM allows in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// Injects `evt` writes as edge interrupts on `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| Error::Vm {
                what: "KVM_IRQFD",
                source,
            })
    }

    /// Turns guest writes of `datamatch` to MMIO `addr` into `evt` signals.
    pub fn register_mmio_ioevent(&self, evt: &EventFd, addr: u64, datamatch: u32) -> Result<()> {
        self.fd
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| Error::Vm {
                what: "KVM_IOEVENTFD",
                source,
            })
    }
}
