//! The Intel MultiProcessor Specification 1.4 table at the start of the
//! EBDA: how a guest without ACPI finds its CPUs, the IOAPIC and the ISA
//! interrupt routing. Built byte by byte (all fields little-endian).

use vm_memory::{Bytes, GuestAddress};

use super::layout;
use crate::error::{Error, Result};
use crate::vstate::memory::GuestMem;

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 signature, with the FPU and APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LINT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const HEADER_LEN: usize = 44;
const FLOATING_LEN: usize = 16;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// The table's bytes for `vcpus` CPUs, to be placed at `base`.
pub fn build(vcpus: u8, base: u64) -> Vec<u8> {
    let ioapic_id = vcpus.saturating_add(1);
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        entries.extend_from_slice(&[
            ENTRY_PROCESSOR,
            cpu,
            APIC_VERSION,
            CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 },
        ]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(layout::IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    for irq in 0..layout::IOAPIC_PINS as u8 {
        entries.extend_from_slice(&[ENTRY_IOINT, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_LINT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LINT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + FLOATING_LEN as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum, patched below
    header.extend_from_slice(b"NUBIS   ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(layout::APIC_ADDR as u32).to_le_bytes());
    header.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_LEN);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);

    let mut out = floating;
    out.extend_from_slice(&table);
    out
}

/// Writes the MP table into the EBDA.
pub fn write(mem: &GuestMem, vcpus: u8) -> Result<()> {
    let bytes = build(vcpus, layout::EBDA_START);
    if layout::EBDA_START + bytes.len() as u64 > layout::LOW_MEMORY_END {
        return Err(Error::BootSetup {
            what: "MP table",
            source: "table larger than the EBDA".into(),
        });
    }
    mem.write_slice(&bytes, GuestAddress(layout::EBDA_START))
        .map_err(|e| Error::BootSetup {
            what: "MP table",
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_cpu_entries() {
        for vcpus in [1u8, 2, 32] {
            let t = build(vcpus, layout::EBDA_START);
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0);
            let len = u16::from_le_bytes([t[20], t[21]]) as usize;
            assert_eq!(&t[16..20], b"PCMP");
            assert_eq!(sum(&t[16..16 + len]), 0);
            assert_eq!(t.len(), 16 + len);
            let count = u16::from_le_bytes([t[16 + 34], t[16 + 35]]);
            assert_eq!(count as usize, vcpus as usize + 2 + 24 + 2);
            // Walk the entries and count processors (as a guest would).
            let mut off = 16 + HEADER_LEN;
            let mut cpus = 0;
            while off < t.len() {
                if t[off] == ENTRY_PROCESSOR {
                    assert_eq!(t[off + 1], cpus);
                    cpus += 1;
                    off += 20;
                } else {
                    off += 8;
                }
            }
            assert_eq!(cpus, vcpus);
            assert!(t.len() <= 1024);
        }
    }

    #[test]
    fn written_into_guest_memory() {
        let mem = crate::vstate::memory::create(16).unwrap();
        write(&mem, 2).unwrap();
        let sig: [u8; 4] = mem.read_obj(GuestAddress(layout::EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
