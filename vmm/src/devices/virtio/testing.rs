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

/// Bytes-to-structure helper for fuzz inputs: yields zeros once the input is exhausted.
#[derive(Debug)]
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const FUZZ_SECTORS: u64 = 16;
const FUZZ_QUEUE: u16 = 16;

fn fuzz_block(read_only: bool) -> (VirtioMmioDevice, GuestMemoryMmap, Driver) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "nubis-virtio-fuzz-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, vec![0x5au8; (FUZZ_SECTORS * 512) as usize]).expect("scratch disk");
    let block = super::block::Block::new(&path, read_only, None);
    let _ = std::fs::remove_file(&path);
    let block = block.expect("scratch disk opens");
    let mem = guest_memory();
    let mut dev = VirtioMmioDevice::new(Box::new(block), mem.clone()).expect("transport");
    let drv = Driver::activate(&mut dev, &mem, u64::MAX, FUZZ_QUEUE);
    (dev, mem, drv)
}

/// Checks the invariants that hold whatever the guest did: every completion names a head
/// below the queue size (or the device gave up with `NEEDS_RESET`), and no more chains
/// completed than were published.
fn check_used(dev: &VirtioMmioDevice, used: &[(u32, u32)], published: usize) {
    if dev.status() & 0x40 != 0 {
        return;
    }
    assert!(
        used.len() <= published,
        "{} completions for {published} chains",
        used.len()
    );
    for &(id, _) in used {
        assert!(id < u32::from(FUZZ_QUEUE), "completion for head {id}");
    }
}

/// Fuzz entry point: arbitrary descriptor tables and available rings fed to a
/// virtio-block device. Must never panic, hang or touch memory outside the guest's.
pub fn fuzz_descriptor_chain(data: &[u8]) {
    let mut input = Input(data);
    let (mut dev, mem, mut drv) = fuzz_block(input.u8() & 1 == 1);
    let mem_size = MEM_SIZE as u64;
    let descs: Vec<RawDesc> = (0..FUZZ_QUEUE)
        .map(|_| {
            let selector = input.u8();
            let addr = input.u64();
            let len = input.u32();
            RawDesc {
                // Mostly inside guest memory (including the queues themselves), sometimes
                // anywhere, sometimes straddling the end.
                addr: match selector & 3 {
                    0 => addr,
                    1 => mem_size - (addr % 0x2000),
                    _ => addr % mem_size,
                },
                len: if selector & 4 != 0 { len } else { len % 0x4000 },
                flags: u16::from(selector >> 3) & 0x7,
                next: input.u16() % (FUZZ_QUEUE + 4),
            }
        })
        .collect();
    drv.write_descs(0, 0, &descs);
    // Header-like content in the buffers the descriptors may point at.
    let fill = input.bytes::<64>();
    for d in &descs {
        let _ = mem.write_slice(
            &fill[..usize::try_from(d.len).unwrap_or(64).min(64)],
            GuestAddress(d.addr),
        );
    }
    let mut published: usize = 0;
    let rounds = input.u8() % 4 + 1;
    for _ in 0..rounds {
        let heads = input.u8() % 20;
        for _ in 0..heads {
            drv.publish(0, input.u16() % (FUZZ_QUEUE + 2));
            published = published.saturating_add(1);
        }
        if input.u8() & 0x80 != 0 {
            drv.set_avail_idx(0, input.u16());
            published = usize::MAX;
        }
        dev.process_queue(0);
        let used = drv.take_used(0);
        check_used(&dev, &used, published);
        if input.is_empty() {
            break;
        }
    }
}

/// Fuzz entry point: well-framed virtio-block requests with arbitrary header, sector,
/// lengths and directions. Checks the reported status and used length.
pub fn fuzz_block_request(data: &[u8]) {
    let mut input = Input(data);
    let (mut dev, mem, mut drv) = fuzz_block(input.u8() & 1 == 1);
    let hdr = DATA_START;
    let status = DATA_START + 0x100;
    for _ in 0..4 {
        let shape = input.u8();
        let kind = u32::from(input.u8() % 16);
        let sector = match input.u8() % 3 {
            0 => u64::from(input.u8()) % (FUZZ_SECTORS + 2),
            1 => input.u64(),
            _ => FUZZ_SECTORS - 1,
        };
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(hdr)).expect("header");
        mem.write_obj(0xeeu8, GuestAddress(status)).expect("status");
        let mut bufs = vec![(
            hdr,
            if shape & 1 != 0 {
                u32::from(input.u8() % 17)
            } else {
                16
            },
            shape & 2 != 0,
        )];
        let data_descs = (shape >> 2) & 3;
        let mut writable_total = 0u64;
        for i in 0..data_descs {
            let len = match input.u8() % 4 {
                0 => 512,
                1 => 1024,
                2 => u32::from(input.u16()),
                _ => input.u32() % (1 << 21),
            };
            let write = input.u8() & 1 == 1;
            bufs.push((
                DATA_START + 0x1000 + u64::from(i) * 0x10_0000,
                len.min(0x10_0000),
                write,
            ));
        }
        let with_status = shape & 0x10 == 0;
        if with_status {
            bufs.push((status, 1 + u32::from(shape >> 5 & 1), true));
        }
        for &(_, len, write) in &bufs {
            if write {
                writable_total += u64::from(len);
            }
        }
        let head = drv.add_chain(0, &bufs);
        dev.process_queue(0);
        let used = drv.take_used(0);
        assert_eq!(used.len(), 1, "every well-framed request completes");
        assert_eq!(used[0].0, u32::from(head));
        assert!(
            u64::from(used[0].1) <= writable_total,
            "used {} > writable {writable_total}",
            used[0].1
        );
        let st: u8 = mem.read_obj(GuestAddress(status)).expect("status");
        let last_is_status = bufs.last().is_some_and(|b| b.0 == status);
        if last_is_status && used[0].1 > 0 {
            // The status descriptor may be 2 bytes long: the status is its last byte.
            let len = bufs.last().map_or(1, |b| b.1);
            let st: u8 = mem
                .read_obj(GuestAddress(status + u64::from(len) - 1))
                .expect("status");
            assert!(st <= 2, "status {st}");
        } else if !last_is_status {
            assert_eq!(st, 0xee, "status written without a status descriptor");
        }
        assert_eq!(
            dev.status() & 0x40,
            0,
            "well-framed requests never need a reset"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic per seed, so a failing case can be replayed.
    fn random_input(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    fn seeds() -> impl Iterator<Item = u64> {
        let mut base = [0u8; 8];
        getrandom::fill(&mut base).expect("getrandom");
        let base = u64::from_le_bytes(base);
        (0..300u64).map(move |i| if i < 100 { i } else { base.wrapping_add(i) })
    }

    #[test]
    fn descriptor_chain_fuzz_target_survives_random_input() {
        for seed in seeds() {
            let len = (seed % 700) as usize;
            let input = random_input(seed, len);
            let result = std::panic::catch_unwind(|| fuzz_descriptor_chain(&input));
            assert!(result.is_ok(), "seed {seed} len {len}");
        }
    }

    #[test]
    fn block_request_fuzz_target_survives_random_input() {
        for seed in seeds() {
            let len = (seed % 200) as usize;
            let input = random_input(seed, len);
            let result = std::panic::catch_unwind(|| fuzz_block_request(&input));
            assert!(result.is_ok(), "seed {seed} len {len}");
        }
    }
}
