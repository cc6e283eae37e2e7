//! Initial vCPU register state for each boot protocol: GDT, identity page
//! tables (64-bit protocol), segment/control registers, general registers,
//! FPU and the local APIC's LINT0/LINT1 wiring.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::layout;
use super::{BootProtocol, EntryPoint};
use crate::error::{Error, Result};
use crate::vstate::memory::GuestMem;

/// GDT: null, 64-bit code, data, 32-bit code, TSS.
const GDT: [u64; 5] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_9b00_0000_ffff,
    0x0000_8b00_0000_0067,
];
const CODE64: usize = 1;
const DATA: usize = 2;
const CODE32: usize = 3;
const TSS: usize = 4;

const X86_CR0_PE: u64 = 1;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn segment(index: usize) -> kvm_segment {
    let entry = GDT[index];
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let mut limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    kvm_segment {
        base,
        limit,
        selector: (index * 8) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(((entry >> 47) & 1) == 0),
        padding: 0,
    }
}

fn write_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> Error {
    move |e| Error::BootSetup {
        what,
        source: Box::new(e),
    }
}

/// Writes the GDT and, for the 64-bit protocol, identity page tables for the
/// first GiB (2 MiB pages).
pub fn write_tables(mem: &GuestMem, protocol: BootProtocol) -> Result<()> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT_START + 8 * i as u64))
            .map_err(write_err("GDT"))?;
    }
    if protocol == BootProtocol::Linux64 {
        mem.write_obj(layout::PDPTE_START | 0x03, GuestAddress(layout::PML4_START))
            .map_err(write_err("PML4"))?;
        mem.write_obj(layout::PDE_START | 0x03, GuestAddress(layout::PDPTE_START))
            .map_err(write_err("PDPT"))?;
        for i in 0..512u64 {
            mem.write_obj((i << 21) | 0x83, GuestAddress(layout::PDE_START + i * 8))
                .map_err(write_err("page directory"))?;
        }
    }
    Ok(())
}

/// Segment and control registers for the boot vCPU, starting from the
/// vCPU's reset state `sregs`.
pub fn boot_sregs(mut sregs: kvm_sregs, protocol: BootProtocol) -> kvm_sregs {
    let code = segment(if protocol == BootProtocol::Pvh {
        CODE32
    } else {
        CODE64
    });
    let data = segment(DATA);
    sregs.gdt.base = layout::GDT_START;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(TSS);
    sregs.cr0 |= X86_CR0_PE;
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 &= !X86_CR0_PG;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// General registers for the boot vCPU.
pub fn boot_regs(entry: EntryPoint) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.addr,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Pvh => regs.rbx = layout::PVH_INFO_START,
        BootProtocol::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START;
        }
    }
    regs
}

/// FPU state Linux expects at entry.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = lapic.regs[offset + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *byte as _;
    }
}

/// Vectors set in the 256-bit LAPIC register array at `base` (ISR 0x100,
/// TMR 0x180, IRR 0x200), for diagnostics.
pub fn pending_vectors(lapic: &kvm_lapic_state, base: usize) -> String {
    let mut out = Vec::new();
    for word in 0..8 {
        let bits = lapic_reg(lapic, base + word * 0x10);
        for bit in 0..32 {
            if bits & (1 << bit) != 0 {
                out.push(format!("{:#x}", word * 32 + bit));
            }
        }
    }
    out.join(",")
}

/// Wires LINT0 as ExtINT (the legacy PIC path) and LINT1 as NMI, as an MP
/// system's BIOS would.
pub fn wire_lints(mut lapic: kvm_lapic_state) -> kvm_lapic_state {
    let lvt0 = lapic_reg(&lapic, APIC_LVT0);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT0,
        (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8),
    );
    let lvt1 = lapic_reg(&lapic, APIC_LVT1);
    set_lapic_reg(
        &mut lapic,
        APIC_LVT1,
        (lvt1 & !0x700) | (APIC_MODE_NMI << 8),
    );
    lapic
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory;

    #[test]
    fn gdt_segments_decode() {
        let cs = segment(CODE64);
        assert_eq!((cs.l, cs.db, cs.type_, cs.present), (1, 0, 0xb, 1));
        assert_eq!(cs.limit, 0xffff_ffff);
        let cs32 = segment(CODE32);
        assert_eq!((cs32.l, cs32.db, cs32.selector), (0, 1, 0x18));
        assert_eq!(segment(0).unusable, 1);
    }

    #[test]
    fn long_mode_state() {
        let s = boot_sregs(kvm_sregs::default(), BootProtocol::Linux64);
        assert_eq!(s.cr3, layout::PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.efer & EFER_LMA, 0);
        let p = boot_sregs(kvm_sregs::default(), BootProtocol::Pvh);
        assert_eq!(p.cr0 & X86_CR0_PG, 0);
        assert_eq!(p.cr0 & X86_CR0_PE, 1);
    }

    #[test]
    fn page_tables_identity_map() {
        let mem = memory::create(16).unwrap();
        write_tables(&mem, BootProtocol::Linux64).unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress(layout::PDE_START + 8 * 3))
            .unwrap();
        assert_eq!(pde, (3 << 21) | 0x83);
    }

    #[test]
    fn lints_wired() {
        let l = wire_lints(kvm_lapic_state::default());
        assert_eq!((lapic_reg(&l, APIC_LVT0) >> 8) & 7, APIC_MODE_EXTINT);
        assert_eq!((lapic_reg(&l, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }

    #[test]
    fn regs_per_protocol() {
        let r = boot_regs(EntryPoint {
            addr: 0x1000,
            protocol: BootProtocol::Pvh,
        });
        assert_eq!((r.rip, r.rbx), (0x1000, layout::PVH_INFO_START));
        let r = boot_regs(EntryPoint {
            addr: 0x2000,
            protocol: BootProtocol::Linux64,
        });
        assert_eq!(r.rsi, layout::ZERO_PAGE_START);
    }
}
