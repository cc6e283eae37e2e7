//! The virtio-rng device model.

use std::io::Write;

use serde_json::json;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use crate::devices::virtio::queue::{validate_chain, QueueContext, QueueCorruption};
use crate::devices::virtio::{Error, VirtioDevice};

/// Queue size offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// At most this many bytes are produced for one request (the driver asks again for more).
const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;
/// Entropy is drawn and copied in pieces of this size through a stack
/// buffer: a request-sized heap buffer would stay resident for the VM's life.
const CHUNK: usize = 4096;

/// The entropy device.
#[derive(Debug)]
pub struct Rng {
    queue_sizes: [u16; 1],
    requests: u64,
    bytes: u64,
    errors: u64,
}

impl Rng {
    /// Creates the device after checking that the host entropy source works.
    pub fn new() -> Result<Rng, Error> {
        let mut probe = [0u8; 16];
        getrandom::fill(&mut probe).map_err(Error::Entropy)?;
        Ok(Rng {
            queue_sizes: [QUEUE_SIZE],
            requests: 0,
            bytes: 0,
            errors: 0,
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn name(&self) -> &'static str {
        "rng"
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn activate(&mut self, _acked_features: u64) {}

    fn process_queue(
        &mut self,
        ctx: &mut QueueContext<'_>,
        queue_index: usize,
    ) -> Result<(), QueueCorruption> {
        let mem = ctx.mem();
        while let Some(chain) = ctx.pop(queue_index)? {
            let head = chain.head_index();
            self.requests += 1;
            let written = match validate_chain(chain.clone()) {
                Err(err) => {
                    self.errors += 1;
                    ctx.guest_error(queue_index, err);
                    0
                }
                Ok(shape) if shape.readable > 0 => {
                    self.errors += 1;
                    ctx.guest_error(queue_index, "rng request has device-readable buffers");
                    0
                }
                Ok(shape) => {
                    let want = usize::try_from(shape.writable)
                        .unwrap_or(usize::MAX)
                        .min(MAX_BYTES_PER_REQUEST);
                    match fill(want, chain, mem) {
                        Ok(n) => {
                            self.bytes += n as u64;
                            n
                        }
                        Err(what) => {
                            self.errors += 1;
                            ctx.guest_error(queue_index, what);
                            0
                        }
                    }
                }
            };
            ctx.complete(queue_index, head, written as u32)?;
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn metrics(&self) -> serde_json::Value {
        json!({
            "requests": self.requests,
            "bytes_written": self.bytes,
            "bytes_read": 0,
            "errors": self.errors,
        })
    }
}

/// Writes `want` random bytes into the chain's writable buffers.
fn fill(
    want: usize,
    chain: crate::devices::virtio::queue::Chain<'_>,
    mem: &vm_memory::GuestMemoryMmap,
) -> Result<usize, String> {
    let mut writer = chain
        .writer(mem)
        .map_err(|e| format!("bad rng buffer: {e}"))?;
    let mut chunk = [0u8; CHUNK];
    let mut left = want;
    while left > 0 {
        let piece = &mut chunk[..left.min(CHUNK)];
        getrandom::fill(piece).map_err(|e| format!("getrandom failed: {e}"))?;
        writer
            .write_all(piece)
            .map_err(|e| format!("cannot write rng buffer: {e}"))?;
        left -= piece.len();
    }
    Ok(writer.bytes_written())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{guest_memory, Driver, DATA_START};
    use crate::devices::virtio::VirtioMmioDevice;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_guest_buffers_with_random_bytes() {
        let mem = guest_memory();
        let rng = Rng::new().unwrap();
        let mut dev = VirtioMmioDevice::new(Box::new(rng), mem.clone()).unwrap();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 16);
        // Two buffers in one chain, 64 + 100 bytes.
        let head = drv.add_chain(
            0,
            &[(DATA_START, 64, true), (DATA_START + 0x1000, 100, true)],
        );
        dev.process_queue(0);
        assert_eq!(drv.take_used(0), vec![(u32::from(head), 164)]);
        let mut a = [0u8; 64];
        let mut b = [0u8; 100];
        mem.read_slice(&mut a, GuestAddress(DATA_START)).unwrap();
        mem.read_slice(&mut b, GuestAddress(DATA_START + 0x1000))
            .unwrap();
        // 164 zero bytes from getrandom has probability 2^-1312.
        assert!(a.iter().chain(b.iter()).any(|&x| x != 0));
        assert_ne!(a[..32], b[..32]);
        // Interrupt raised.
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
        let m = dev.metrics();
        assert_eq!(m["requests"], 1);
        assert_eq!(m["bytes_written"], 164);
        assert_eq!(m["type"], "rng");
    }

    #[test]
    fn readable_buffer_is_rejected_without_writing() {
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(Rng::new().unwrap()), mem.clone()).unwrap();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 16);
        let head = drv.add_chain(0, &[(DATA_START, 64, false)]);
        dev.process_queue(0);
        assert_eq!(drv.take_used(0), vec![(u32::from(head), 0)]);
        assert_eq!(dev.metrics()["errors"], 1);
    }

    #[test]
    fn huge_request_is_capped() {
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(Rng::new().unwrap()), mem.clone()).unwrap();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 16);
        let head = drv.add_chain(0, &[(DATA_START, 1 << 20, true)]);
        dev.process_queue(0);
        assert_eq!(
            drv.take_used(0),
            vec![(u32::from(head), MAX_BYTES_PER_REQUEST as u32)]
        );
    }
}
