//! The disk check: hash sector 0 of the first virtio-blk device and, on
//! request, write the `NUBIS-DISK-WRITE` pattern to sector 1 and flush.

use sha2::{Digest, Sha256};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::mmio::MmioTransport;

use crate::console;
use crate::devices::Found;
use crate::heap::HelloHal;

/// The driven disk. Never dropped: dropping unsets the queue while the device
/// is live (virtio-drivers then waits for `QueueReady` to read 0, which not
/// every VMM reports), and nothing needs the disk torn down before a reset.
pub type Disk = VirtIOBlk<HelloHal, MmioTransport<'static>>;

/// Runs the disk check, printing the contract's console lines; returns the
/// device for the caller to keep.
pub fn check(found: Found, disk_write: bool, id: &str) -> Option<Disk> {
    let mut blk = match VirtIOBlk::<HelloHal, _>::new(found.transport) {
        Ok(blk) => blk,
        Err(e) => {
            console!("NUBIS-ERROR virtio-blk at {:#x}: {e}", found.at.addr);
            return None;
        }
    };
    run(&mut blk, found.at.addr, disk_write, id);
    Some(blk)
}

fn run(blk: &mut Disk, addr: u64, disk_write: bool, id: &str) {
    let capacity = blk.capacity();
    let mut sector = [0u8; SECTOR_SIZE];
    if capacity == 0 {
        console!("NUBIS-ERROR virtio-blk at {addr:#x} is empty");
        return;
    }
    if let Err(e) = blk.read_blocks(0, &mut sector) {
        console!("NUBIS-ERROR virtio-blk at {addr:#x}: reading sector 0: {e}");
        return;
    }
    let digest = Sha256::digest(sector);
    console!(
        "NUBIS-DISK sector0-sha256={} capacity-sectors={capacity}",
        nubis_hello_guest::hex(&digest)
    );
    if !disk_write {
        return;
    }
    if blk.readonly() {
        console!("NUBIS-ERROR nubis.disk_write=1 but the disk is read-only");
        return;
    }
    if capacity < 2 {
        console!("NUBIS-ERROR nubis.disk_write=1 but the disk has no sector 1");
        return;
    }
    let pattern = nubis_hello_guest::disk_write_pattern(id);
    if let Err(e) = blk.write_blocks(1, &pattern) {
        console!("NUBIS-ERROR virtio-blk at {addr:#x}: writing sector 1: {e}");
        return;
    }
    if let Err(e) = blk.flush() {
        console!("NUBIS-ERROR virtio-blk at {addr:#x}: flush: {e}");
        return;
    }
    console!("NUBIS-DISK-WRITTEN sector=1");
}
