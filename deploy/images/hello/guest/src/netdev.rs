//! smoltcp's view of one virtio-net device, on virtio-drivers' non-blocking
//! [`VirtIONetRaw`]: nothing here waits for the VMM.
//!
//! - Receive: every descriptor of the receive queue carries a buffer posted
//!   at start-up; a completed one is handed to smoltcp and posted again as
//!   soon as smoltcp has read it.
//! - Transmit: a frame is written into a buffer (reused from earlier frames
//!   when one is free), made available to the device and kept until the
//!   device puts its descriptor in the used ring. Completed buffers are
//!   reclaimed whenever smoltcp asks for a token, so up to [`QUEUE_SIZE`]
//!   frames can be in flight.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::MmioTransport;

use crate::console;
use crate::heap::HelloHal;
use crate::sys;

/// Descriptors per queue (the most nubis-vmm offers).
pub(crate) const QUEUE_SIZE: usize = 256;
/// Largest Ethernet frame (no VLAN tag, no FCS).
const MAX_FRAME: usize = 1514;
/// One buffer: a virtio-net header (10 or 12 bytes) and a whole frame; at
/// least virtio-drivers' minimum receive buffer (1526 bytes).
const BUF_LEN: usize = 1536;
/// The larger of the two virtio-net headers (modern; legacy: 10 bytes).
const HDR_MAX: usize = 12;

type Raw = VirtIONetRaw<HelloHal, MmioTransport<'static>, QUEUE_SIZE>;

/// The device and the buffers it holds.
struct Queues {
    raw: Raw,
    /// Posted receive buffers, by descriptor token.
    rx: Vec<Option<Box<[u8]>>>,
    /// Transmit buffers the device holds, by token, with the length handed
    /// to the device (needed again to complete it).
    tx: Vec<Option<(Box<[u8]>, usize)>>,
    /// Transmit buffers the device gave back, for the next frames.
    spare: Vec<Box<[u8]>>,
}

/// One virtio-net device, as a smoltcp [`Device`].
pub(crate) struct NetDev {
    q: RefCell<Queues>,
    /// How long [`send_raw`] waits for room in a full transmit queue (TSC).
    wait_ticks: u64,
}

impl NetDev {
    /// Initialises the device behind `transport` and posts a receive buffer
    /// on every descriptor. `hz`: TSC ticks per second.
    pub(crate) fn new(
        transport: MmioTransport<'static>,
        hz: u64,
    ) -> Result<NetDev, virtio_drivers::Error> {
        let raw = Raw::new(transport)?;
        let mut q = Queues {
            raw,
            rx: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx: (0..QUEUE_SIZE).map(|_| None).collect(),
            spare: Vec::new(),
        };
        for _ in 0..QUEUE_SIZE {
            q.post_rx(vec![0; BUF_LEN].into_boxed_slice())?;
        }
        Ok(NetDev {
            q: RefCell::new(q),
            wait_ticks: hz / 10,
        })
    }

    pub(crate) fn mac_address(&self) -> [u8; 6] {
        self.q.borrow().raw.mac_address()
    }

    pub(crate) fn enable_interrupts(&self) {
        self.q.borrow_mut().raw.enable_interrupts();
    }

    /// Acknowledges the device's interrupt (edge-triggered: the next event
    /// raises a new edge).
    pub(crate) fn ack_interrupt(&self) {
        self.q.borrow_mut().raw.ack_interrupt();
    }

    /// Whether a received frame waits.
    pub(crate) fn can_recv(&self) -> bool {
        self.q.borrow().raw.poll_receive().is_some()
    }
}

impl Queues {
    /// Makes `buf` available to the device for a received frame.
    fn post_rx(&mut self, mut buf: Box<[u8]>) -> Result<(), virtio_drivers::Error> {
        // SAFETY: the buffer is stored in `self.rx` under its token right
        // below and neither read, written nor freed until the device has
        // returned that token (`NetDev::receive`), or the device is gone.
        let token = unsafe { self.raw.receive_begin(&mut buf) }?;
        let slot = self
            .rx
            .get_mut(usize::from(token))
            .ok_or(virtio_drivers::Error::WrongToken)?;
        if slot.is_some() {
            return Err(virtio_drivers::Error::WrongToken);
        }
        *slot = Some(buf);
        Ok(())
    }

    /// Posts `buf` again, reporting (not propagating) a failure: the queue
    /// then has one buffer less.
    fn repost_rx(&mut self, buf: Box<[u8]>) {
        if let Err(e) = self.post_rx(buf) {
            console!("NUBIS-ERROR virtio-net: posting a receive buffer: {e}");
        }
    }

    /// Takes back every transmit buffer the device has completed.
    fn reclaim(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some((buf, len)) = self.tx.get_mut(usize::from(token)).and_then(Option::take)
            else {
                console!("NUBIS-ERROR virtio-net: completed unknown transmit token {token}");
                return;
            };
            // SAFETY: `buf[..len]` is exactly what `transmit_begin` got for
            // this token; the device is done with it.
            if let Err(e) = unsafe { self.raw.transmit_complete(token, &buf[..len]) } {
                // Cannot happen (the token is the one just peeked); if it
                // did, the device might still read the buffer: never free it.
                console!("NUBIS-ERROR virtio-net: completing a transmission: {e}");
                core::mem::forget(buf);
                return;
            }
            self.spare.push(buf);
        }
    }

    /// Whether a frame can be queued now (after reclaiming).
    fn room(&mut self) -> bool {
        self.reclaim();
        self.raw.can_send()
    }

    /// A transmit buffer with room for a `len`-byte frame and where the
    /// frame starts in it; `None` when the queue is full.
    fn tx_buffer(&mut self, len: usize) -> Option<(Box<[u8]>, usize)> {
        if !self.room() {
            return None;
        }
        let mut buf = self
            .spare
            .pop()
            .unwrap_or_else(|| vec![0; BUF_LEN].into_boxed_slice());
        if len + HDR_MAX > buf.len() {
            // Only raw frames can be larger than the MTU (the device refuses them).
            self.spare.push(buf);
            buf = vec![0; len + HDR_MAX].into_boxed_slice();
        }
        match self.raw.fill_buffer_header(&mut buf) {
            Ok(hdr) => Some((buf, hdr)),
            Err(e) => {
                console!("NUBIS-ERROR virtio-net: header: {e}");
                self.spare.push(buf);
                None
            }
        }
    }

    /// Hands the first `used` bytes of `buf` (header and frame) to the
    /// device, without waiting; [`Self::reclaim`] takes the buffer back.
    fn queue_tx(&mut self, buf: Box<[u8]>, used: usize) {
        // SAFETY: the buffer is stored in `self.tx` under its token below
        // and not touched until `reclaim` sees the device complete it.
        match unsafe { self.raw.transmit_begin(&buf[..used]) } {
            Ok(token) => match self.tx.get_mut(usize::from(token)) {
                Some(slot) if slot.is_none() => *slot = Some((buf, used)),
                _ => {
                    // Cannot happen (a token is a descriptor index, completed
                    // before reuse); the device may still read the buffer, so
                    // it must never be freed.
                    console!("NUBIS-ERROR virtio-net: transmit token {token} in use");
                    core::mem::forget(buf);
                }
            },
            Err(e) => {
                console!("NUBIS-ERROR virtio-net: send: {e}");
                self.spare.push(buf);
            }
        }
    }

    /// Lets `f` write a `len`-byte frame and queues it; `None` (and `f` not
    /// called) when the queue is full.
    fn send<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let (mut buf, hdr) = self.tx_buffer(len)?;
        let result = f(&mut buf[hdr..hdr + len]);
        self.queue_tx(buf, hdr + len);
        Some(result)
    }
}

pub(crate) struct Rx<'a> {
    q: &'a RefCell<Queues>,
    buf: Option<Box<[u8]>>,
    /// The frame within `buf`.
    start: usize,
    end: usize,
}

pub(crate) struct Tx<'a> {
    q: &'a RefCell<Queues>,
}

impl Device for NetDev {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let q = self.q.get_mut();
        q.reclaim();
        let token = q.raw.poll_receive()?;
        let Some(mut buf) = q.rx.get_mut(usize::from(token)).and_then(Option::take) else {
            console!("NUBIS-ERROR virtio-net: received on unknown token {token}");
            return None;
        };
        // SAFETY: `buf` is the buffer posted under `token`, which the device
        // has just returned.
        let (start, end) = match unsafe { q.raw.receive_complete(token, &mut buf) } {
            Ok((hdr, len)) => (hdr, (hdr + len).min(buf.len())),
            Err(e) => {
                console!("NUBIS-ERROR virtio-net: receive: {e}");
                q.repost_rx(buf);
                return None;
            }
        };
        Some((
            Rx {
                q: &self.q,
                buf: Some(buf),
                start,
                end,
            },
            Tx { q: &self.q },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.q.get_mut().room().then_some(Tx { q: &self.q })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        // smoltcp caps every TCP window it advertises at max_burst_size
        // segments, so that a peer never sends more than the receive queue
        // holds: half the queue leaves room for other traffic.
        caps.max_burst_size = Some(QUEUE_SIZE / 2);
        caps
    }
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let buf = self.buf.take();
        let result = f(buf.as_ref().map_or(&[][..], |b| &b[self.start..self.end]));
        if let Some(buf) = buf {
            self.q.borrow_mut().repost_rx(buf);
        }
        result
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        // A token smoltcp did not consume still owns a buffer of the queue.
        if let Some(buf) = self.buf.take() {
            self.q.borrow_mut().repost_rx(buf);
        }
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut q = self.q.borrow_mut();
        match q.tx_buffer(len) {
            Some((mut buf, hdr)) => {
                let result = f(&mut buf[hdr..hdr + len]);
                q.queue_tx(buf, hdr + len);
                result
            }
            None => {
                // Queue full (a reply to a received frame, the queue having
                // filled meanwhile): the frame is lost, as on a busy NIC.
                drop(q);
                f(&mut vec![0; len])
            }
        }
    }
}

/// Sends one raw Ethernet frame. When the transmit queue is full it waits
/// (at most a tenth of a second) for the device to complete a frame; false
/// when there was no room or it failed.
pub(crate) fn send_raw(dev: &NetDev, frame: &[u8]) -> bool {
    let mut q = dev.q.borrow_mut();
    let deadline = sys::rdtsc().saturating_add(dev.wait_ticks);
    loop {
        if q.send(frame.len(), |buf| buf.copy_from_slice(frame))
            .is_some()
        {
            return true;
        }
        if sys::rdtsc() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}
