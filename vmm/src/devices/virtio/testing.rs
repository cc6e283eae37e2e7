//! A minimal guest-side virtio driver over guest memory, for tests and fuzz targets: it
//! negotiates through the MMIO registers, lays out split queues, publishes descriptor
//! chains (well-formed or deliberately broken) and reads the used rings back.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::VirtioMmioDevice;
use super::VIRTIO_F_VERSION_1;

/// Guest memory size used by [`guest_memory`].
pub const MEM_SIZE: usize = 4 << 20;
/// Where test data buffers may start (queues live below).
pub const DATA_START: u64 = 0x10_0000;
/// Descriptor flag: another descriptor follows.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: device-writable.
pub const F_WRITE: u16 = 2;

/// One descriptor as the driver writes it.
#[derive(Debug, Clone, Copy)]
pub struct RawDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `F_NEXT` / `F_WRITE`.
    pub flags: u16,
    /// Index of the next descriptor.
    pub next: u16,
}

/// Fresh guest memory of [`MEM_SIZE`] bytes at address 0.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("test guest memory")
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
}

/// The driver side of a device's queues.
#[derive(Debug)]
pub struct Driver {
    mem: GuestMemoryMmap,
    queues: Vec<Layout>,
    next_desc: Vec<u16>,
}

fn write32(dev: &mut VirtioMmioDevice, offset: u64, value: u32) {
    dev.mmio_write(offset, &value.to_le_bytes());
}

/// Reads a 32-bit register.
pub fn read32(dev: &mut VirtioMmioDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.mmio_read(offset, &mut b);
    u32::from_le_bytes(b)
}

impl Driver {
    /// Negotiates `VERSION_1` plus `extra_features` (only those offered), sets up every queue
    /// with `size` entries and sets `DRIVER_OK`. Panics if the device refuses: tests only.
    pub fn activate(
        dev: &mut VirtioMmioDevice,
        mem: &GuestMemoryMmap,
        extra_features: u64,
        size: u16,
    ) -> Driver {
        write32(dev, 0x70, 0);
        write32(dev, 0x70, 1);
        write32(dev, 0x70, 3);
        write32(dev, 0x14, 0);
        let lo = u64::from(read32(dev, 0x10));
        write32(dev, 0x14, 1);
        let hi = u64::from(read32(dev, 0x10));
        let offered = lo | (hi << 32);
        let want = (VIRTIO_F_VERSION_1 | extra_features) & offered;
        write32(dev, 0x24, 0);
        write32(dev, 0x20, want as u32);
        write32(dev, 0x24, 1);
        write32(dev, 0x20, (want >> 32) as u32);
        write32(dev, 0x70, 0xb);
        assert_eq!(read32(dev, 0x70) & 0x8, 0x8, "FEATURES_OK refused");
        let mut queues = Vec::new();
        for q in 0..dev.queue_evts().len() {
            let base = 0x1_0000 * (q as u64 + 1);
            mem.write_slice(&[0u8; 0x1_0000], GuestAddress(base))
                .expect("clear queue area");
            let l = Layout {
                size,
                desc: base,
                avail: base + 16 * u64::from(size),
                used: base + 0x8000,
                avail_idx: 0,
                used_seen: 0,
            };
            write32(dev, 0x30, q as u32);
            assert!(read32(dev, 0x34) >= u32::from(size));
            write32(dev, 0x38, u32::from(size));
            write32(dev, 0x80, l.desc as u32);
            write32(dev, 0x84, 0);
            write32(dev, 0x90, l.avail as u32);
            write32(dev, 0x94, 0);
            write32(dev, 0xa0, l.used as u32);
            write32(dev, 0xa4, 0);
            write32(dev, 0x44, 1);
            queues.push(l);
        }
        write32(dev, 0x70, 0xf);
        let next_desc = vec![0; queues.len()];
        Driver {
            mem: mem.clone(),
            queues,
            next_desc,
        }
    }

    /// Writes descriptors at table indices `first..` verbatim (no publication).
    pub fn write_descs(&mut self, queue: usize, first: u16, descs: &[RawDesc]) {
        let l = self.queues[queue];
        for (i, d) in descs.iter().enumerate() {
            let idx = (usize::from(first) + i) % usize::from(l.size);
            let at = GuestAddress(l.desc + 16 * idx as u64);
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..16].copy_from_slice(&d.next.to_le_bytes());
            self.mem.write_slice(&raw, at).expect("descriptor write");
        }
    }

    /// Publishes `head` in the available ring.
    pub fn publish(&mut self, queue: usize, head: u16) {
        let l = &mut self.queues[queue];
        let slot = l.avail + 4 + 2 * u64::from(l.avail_idx % l.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .expect("avail write");
        l.avail_idx = l.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(l.avail_idx.to_le(), GuestAddress(l.avail + 2))
            .expect("avail idx write");
    }

    /// Sets the available index directly (to fake a corrupt ring).
    pub fn set_avail_idx(&mut self, queue: usize, idx: u16) {
        let l = &mut self.queues[queue];
        l.avail_idx = idx;
        self.mem
            .write_obj(idx.to_le(), GuestAddress(l.avail + 2))
            .expect("avail idx write");
    }

    /// Writes a chain of `(addr, len, device_writable)` buffers into fresh descriptors,
    /// publishes it and returns its head index.
    pub fn add_chain(&mut self, queue: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let size = self.queues[queue].size;
        let head = self.next_desc[queue];
        let descs: Vec<RawDesc> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let last = i + 1 == bufs.len();
                RawDesc {
                    addr,
                    len,
                    flags: if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT },
                    next: ((usize::from(head) + i + 1) % usize::from(size)) as u16,
                }
            })
            .collect();
        self.write_descs(queue, head, &descs);
        self.next_desc[queue] = ((usize::from(head) + bufs.len()) % usize::from(size)) as u16;
        self.publish(queue, head);
        head
    }

    /// Used-ring entries `(head, len)` added since the last call.
    pub fn take_used(&mut self, queue: usize) -> Vec<(u32, u32)> {
        let l = &mut self.queues[queue];
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(l.used + 2))
            .expect("used idx");
        let mut out = Vec::new();
        while l.used_seen != idx {
            let slot = l.used + 4 + 8 * u64::from(l.used_seen % l.size);
            let id: u32 = self.mem.read_obj(GuestAddress(slot)).expect("used id");
            let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).expect("used len");
            out.push((id, len));
            l.used_seen = l.used_seen.wrapping_add(1);
        }
        out
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}
