//! Intel MultiProcessor Specification tables: find the floating pointer
//! structure and count the enabled processors in the configuration table.
//! Works on byte slices the caller read from guest memory.

/// Where to look for the floating pointer (in this order), as Linux does:
/// the first KiB of the EBDA, the last KiB of base memory, the BIOS ROM.
pub fn search_ranges(ebda_segment: u16) -> [(u64, usize); 3] {
    let ebda = u64::from(ebda_segment) << 4;
    let ebda = if (0x8_0000..0xa_0000).contains(&ebda) {
        ebda
    } else {
        0x9_fc00
    };
    [(ebda, 1024), (0x9_fc00, 1024), (0xf_0000, 0x1_0000)]
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

/// The floating pointer found in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Floating {
    /// Physical address of the configuration table (0 = none).
    pub config: u32,
    /// MP feature byte 1: a default configuration number when `config` is 0.
    pub default_config: u8,
}

/// Finds a valid `_MP_` floating pointer on a 16-byte boundary of `region`.
pub fn find_floating(region: &[u8]) -> Option<Floating> {
    region.chunks_exact(16).find_map(|c| {
        if &c[..4] != b"_MP_" || c[8] != 1 || !checksum_ok(c) {
            return None;
        }
        Some(Floating {
            config: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            default_config: c[11],
        })
    })
}

/// Length of the configuration table's base part, from its 44-byte header,
/// if the header looks right.
pub fn config_len(header: &[u8]) -> Option<usize> {
    if header.len() < 44 || &header[..4] != b"PCMP" {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([header[4], header[5]]));
    (44..=0x1_0000).contains(&len).then_some(len)
}

/// Counts enabled processor entries of a whole configuration table (base
/// part). `None` if it is malformed.
pub fn count_cpus(table: &[u8]) -> Option<u32> {
    let len = config_len(table)?;
    if table.len() < len || !checksum_ok(&table[..len]) {
        return None;
    }
    // Walk the entries by length, as Linux does: some firmware (qboot)
    // leaves the entry count at 0.
    let mut off = 44;
    let mut cpus = 0;
    while off < len {
        let size = match table[off] {
            0 => 20,
            1..=4 => 8,
            _ => return None,
        };
        if off + size > len {
            return None;
        }
        if table[off] == 0 && table[off + 3] & 1 != 0 {
            cpus += 1;
        }
        off += size;
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn floating(config: u32) -> Vec<u8> {
        let mut f = vec![0u8; 16];
        f[..4].copy_from_slice(b"_MP_");
        f[4..8].copy_from_slice(&config.to_le_bytes());
        f[8] = 1;
        f[9] = 4;
        fix_checksum(&mut f, 10);
        f
    }

    fn table(cpus: &[bool]) -> Vec<u8> {
        let mut t = vec![0u8; 44];
        t[..4].copy_from_slice(b"PCMP");
        t[6] = 4;
        for (i, enabled) in cpus.iter().enumerate() {
            let mut e = vec![0u8; 20];
            e[1] = i as u8;
            e[3] = u8::from(*enabled) | if i == 0 { 2 } else { 0 };
            t.extend(e);
        }
        t.extend([2u8, 1, 0x11, 1, 0, 0, 0xc0, 0xfe]); // an I/O APIC entry
        let len = t.len() as u16;
        t[4..6].copy_from_slice(&len.to_le_bytes());
        t[34..36].copy_from_slice(&(cpus.len() as u16 + 1).to_le_bytes());
        fix_checksum(&mut t, 7);
        t
    }

    #[test]
    fn finds_floating_pointer_on_paragraph() {
        let mut region = vec![0u8; 256];
        region[64..80].copy_from_slice(&floating(0x9fc40));
        assert_eq!(
            find_floating(&region),
            Some(Floating {
                config: 0x9fc40,
                default_config: 0
            })
        );
        region[70] ^= 1; // checksum broken
        assert_eq!(find_floating(&region), None);
        let mut off = vec![0u8; 256];
        off[72..88].copy_from_slice(&floating(1)); // not 16-byte aligned
        assert_eq!(find_floating(&off), None);
    }

    #[test]
    fn counts_enabled_processors() {
        assert_eq!(count_cpus(&table(&[true, true, false, true])), Some(3));
        assert_eq!(count_cpus(&table(&[true])), Some(1));
        let mut bad = table(&[true, true]);
        bad[50] ^= 0x40;
        assert_eq!(count_cpus(&bad), None);
        let mut short = table(&[true, true]);
        short.truncate(50);
        assert_eq!(count_cpus(&short), None);
        assert_eq!(count_cpus(b"PCMX"), None);
        let mut no_count = table(&[true, true]);
        no_count[34] = 0;
        no_count[35] = 0;
        fix_checksum(&mut no_count, 7);
        assert_eq!(count_cpus(&no_count), Some(2));
    }

    #[test]
    fn ebda_sanity() {
        assert_eq!(search_ranges(0x9fc0)[0], (0x9fc00, 1024));
        assert_eq!(search_ranges(0)[0], (0x9fc00, 1024));
        assert_eq!(search_ranges(0x8000)[0], (0x80000, 1024));
    }
}
