//! CPUID a vCPU reports: KVM's supported set, with the APIC ID and topology
//! (leaves 0x1, 0x4, 0xb, 0x1f) made consistent with the vCPU count, the
//! hypervisor bit set, and the PMU (leaf 0xa) hidden.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

use crate::error::{Error, Result};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to encode `n` distinct IDs.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn topology_leaf(function: u32, index: u32, apic_id: u32, vcpus: u32) -> kvm_cpuid_entry2 {
    let (eax, ebx, level) = match index {
        0 => (0, 1, LEVEL_SMT),
        1 => (bits_for(vcpus), vcpus, LEVEL_CORE),
        _ => (0, 0, 0),
    };
    kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level << 8) | index,
        edx: apic_id,
        ..Default::default()
    }
}

/// Adapts KVM's supported CPUID for vCPU `id` of `vcpus`.
pub fn filter(supported: &CpuId, id: u8, vcpus: u8) -> Result<CpuId> {
    let apic_id = u32::from(id);
    let count = u32::from(vcpus);
    let mut entries: Vec<kvm_cpuid_entry2> = Vec::new();
    let mut had_v2 = false;
    for entry in supported.as_slice() {
        let mut e = *entry;
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.max(1) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // Cores per package - 1 in EAX[31:26]; only the last-level
                // (type != 0, level 3) cache is shared by all cores.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
            }
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY => continue,
            LEAF_TOPOLOGY_V2 => {
                had_v2 = true;
                continue;
            }
            _ => {}
        }
        entries.push(e);
    }
    for index in 0..3 {
        entries.push(topology_leaf(LEAF_TOPOLOGY, index, apic_id, count));
        if had_v2 {
            entries.push(topology_leaf(LEAF_TOPOLOGY_V2, index, apic_id, count));
        }
    }
    CpuId::from_entries(&entries).map_err(|_| Error::BootSetup {
        what: "CPUID table",
        source: "too many CPUID entries".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn sets_apic_id_topology_and_hypervisor_bit() {
        let supported = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ebx: 99,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xa,
                eax: 0x0703_0805,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 4,
                index: 3,
                eax: 3 << 5 | 1,
                ..Default::default()
            },
        ])
        .unwrap();
        let c = filter(&supported, 3, 4).unwrap();
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let smt = find(&c, 0xb, 0);
        assert_eq!((smt.ebx, smt.edx, smt.ecx >> 8), (1, 3, LEVEL_SMT));
        let core = find(&c, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, LEVEL_CORE));
        assert_eq!(find(&c, 0xb, 2).ebx, 0);
        assert_eq!(find(&c, 0xa, 0).eax, 0);
        assert_eq!(find(&c, 4, 3).eax >> 26, 3);
        assert_eq!(c.as_slice().iter().filter(|e| e.function == 0xb).count(), 3);
    }

    #[test]
    fn bits() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
    }
}
