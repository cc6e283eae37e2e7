//! virtio-mmio discovery: turns the `virtio_mmio.device=` entries of the
//! command line into transports, sorted by device type.

use alloc::vec::Vec;
use core::ptr::NonNull;

use nubis_hello_guest::cmdline::MmioDevice;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::console;

/// A probed device with the transport that reaches it.
pub struct Found {
    pub at: MmioDevice,
    pub transport: MmioTransport<'static>,
}

/// Probed devices by type (in command-line order).
#[derive(Default)]
pub struct Devices {
    pub block: Vec<Found>,
    pub net: Vec<Found>,
}

/// Probes every announced device; problems are printed, never fatal.
pub fn probe(list: &[MmioDevice]) -> Devices {
    let mut found = Devices::default();
    for &at in list {
        let Some(header) = NonNull::new(at.addr as usize as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the command line announced a virtio-mmio region of `size`
        // bytes at `addr` (validated: below 4 GiB, so identity mapped, and not
        // in the image's first MiB); nothing else in the guest maps it.
        match unsafe { MmioTransport::new(header, at.size as usize) } {
            Ok(transport) => match transport.device_type() {
                DeviceType::Block => found.block.push(Found { at, transport }),
                DeviceType::Network => found.net.push(Found { at, transport }),
                other => console!("hello: virtio {other:?} at {:#x} not used", at.addr),
            },
            Err(e) => console!(
                "NUBIS-ERROR no usable virtio-mmio device at {:#x}: {e}",
                at.addr
            ),
        }
    }
    found
}
