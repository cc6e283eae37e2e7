//! Guest memory: anonymous mappings laid out per [`crate::boot::layout`],
//! and their registration with KVM.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::boot::layout;
use crate::error::{Error, Result};

/// Smallest guest we boot.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest we boot (further bounded by host RAM).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Guest RAM.
pub type GuestMem = GuestMemoryMmap<()>;

/// The largest guest memory this host can back: its physical RAM, capped
/// at [`MAX_MEMORY_MIB`].
pub fn max_memory_mib() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page_size <= 0 {
        return MAX_MEMORY_MIB;
    }
    ((pages as u64).saturating_mul(page_size as u64) >> 20).min(MAX_MEMORY_MIB)
}

/// Checks `mib` against the supported range.
pub fn check_size(mib: u64) -> Result<()> {
    let max = max_memory_mib();
    if !(MIN_MEMORY_MIB..=max).contains(&mib) {
        return Err(Error::MemorySize {
            mib,
            min: MIN_MEMORY_MIB,
            max,
        });
    }
    Ok(())
}

/// Maps `mib` MiB of anonymous, lazily-populated guest RAM.
pub fn create(mib: u64) -> Result<GuestMem> {
    check_size(mib)?;
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_ranges(mib << 20)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(Error::GuestMemory)
}

/// Registers every region of `mem` as a KVM memory slot.
pub fn register(vm: &VmFd, mem: &GuestMem) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| Error::BootSetup {
                what: "guest memory host address",
                source: Box::new(e),
            })?;
        let kvm_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: `host` points at a live mapping of `region.len()` bytes owned
        // by `mem`, which the VMM keeps alive for as long as the VM exists.
        unsafe { vm.set_user_memory_region(kvm_region) }.map_err(|source| Error::Vm {
            what: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
    }
    Ok(())
}

/// End of guest RAM below the MMIO gap (where the initrd goes).
pub fn low_ram_end(mem: &GuestMem) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|end| *end <= layout::MMIO_GAP_START)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits() {
        assert!(check_size(MIN_MEMORY_MIB - 1).is_err());
        assert!(check_size(MIN_MEMORY_MIB).is_ok());
        assert!(check_size(max_memory_mib() + 1).is_err());
    }

    #[test]
    fn creates_lazily_backed_memory() {
        let mem = create(64).unwrap();
        assert_eq!(low_ram_end(&mem), 64 << 20);
        assert_eq!(mem.iter().count(), 1);
    }
}
