//! The guest-physical address map of a Nubis microVM (x86_64).
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_6000  PVH hvm_start_info
//! 0x0000_6040  PVH module list          0x0000_6100  PVH memory map
//! 0x0000_7000  zero page (boot_params)  0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, PDPT, PD (64-bit)  0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA)          0x0010_0000  kernel (high memory)
//! ...          initrd at top of RAM     0xd000_0000  MMIO gap (virtio-mmio, IOAPIC, LAPIC)
//! 0x1_0000_0000 RAM above 4 GiB when memory exceeds the gap start
//! ```

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 of the identity map used by the 64-bit boot protocol.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages, identity-maps the first GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we pass (Linux x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table lives.
pub const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory.
pub const LOW_MEMORY_END: u64 = 0xa0000;
/// Where high memory, and the kernel, starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (no RAM between here and 4 GiB).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device slot.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio device slot.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC base address.
pub const APIC_ADDR: u64 = 0xfee0_0000;
/// Legacy IRQ of the first serial port.
pub const SERIAL_IRQ: u32 = 4;
/// Legacy IRQ of the i8042 keyboard.
pub const I8042_KBD_IRQ: u32 = 1;
/// First IRQ handed to virtio-mmio devices.
pub const VIRTIO_IRQ_FIRST: u32 = 5;
/// Number of IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;

/// The guest RAM ranges (start, length) for `mem_size` bytes of memory:
/// one range below the MMIO gap, and the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// Kind of an entry of the guest memory map (E820 / PVH memmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Ram,
    /// Reserved (firmware tables, MMIO).
    Reserved,
}

/// The memory map announced to the guest: (start, length, kind).
pub fn memory_map(mem_size: u64) -> Vec<(u64, u64, MemoryKind)> {
    let mut map = vec![
        (0, EBDA_START, MemoryKind::Ram),
        (
            EBDA_START,
            LOW_MEMORY_END - EBDA_START,
            MemoryKind::Reserved,
        ),
    ];
    for (start, len) in ram_ranges(mem_size) {
        if start == 0 {
            map.push((HIMEM_START, len - HIMEM_START, MemoryKind::Ram));
        } else {
            map.push((start, len, MemoryKind::Ram));
        }
    }
    map
}

/// Guest address of virtio-mmio slot `index`.
pub fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        let map = memory_map(128 << 20);
        assert_eq!(map[0], (0, EBDA_START, MemoryKind::Ram));
        assert_eq!(
            map[2],
            (HIMEM_START, (128 << 20) - HIMEM_START, MemoryKind::Ram)
        );
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(
            ranges,
            vec![(0, MMIO_GAP_START), (1 << 32, (4 << 30) - MMIO_GAP_START)]
        );
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, 4 << 30);
        assert!(memory_map(4 << 30)
            .iter()
            .all(|(s, l, _)| s + l <= MMIO_GAP_START || *s >= MMIO_GAP_END));
    }
}
