//! The virtio-net device model: moves frames between the TAP and the guest's queues.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use serde_json::json;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;

use super::imds::MetadataPort;
use super::tap::Tap;
use super::{MAX_FRAME_LEN, MIN_FRAME_LEN, VNET_HDR_LEN};
use crate::devices::ratelimit::{RateLimitConfig, RateLimiter};
use crate::devices::virtio::queue::{validate_chain, LogLimiter, QueueContext, QueueCorruption};
use crate::devices::virtio::{Error, VirtioDevice};

/// Receive queue index.
pub const RX_QUEUE: usize = 0;
/// Transmit queue index.
pub const TX_QUEUE: usize = 1;
/// Queue size offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// Bytes of one frame buffer: header plus the largest frame.
const FRAME_BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

#[derive(Debug, Default)]
struct Metrics {
    rx_frames: u64,
    rx_bytes: u64,
    rx_dropped: u64,
    tx_frames: u64,
    tx_bytes: u64,
    tx_dropped: u64,
    errors: u64,
}

/// A virtio-net device attached to a TAP.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    queue_sizes: [u16; 2],
    rx_buf: Vec<u8>,
    /// Length of a frame read from the TAP and not yet delivered (no guest buffer yet).
    rx_pending: Option<usize>,
    tx_buf: Vec<u8>,
    metrics: Metrics,
    /// Host-side TAP errors (e.g. the interface was deleted) are logged rate-limited too.
    tap_log: LogLimiter,
    /// Limits the guest's transmissions (bytes and frames).
    tx_limiter: Option<RateLimiter>,
    /// The instance metadata service, when configured.
    imds: Option<MetadataPort>,
}

impl Net {
    /// Attaches to the existing TAP `tap_name`. `mac` is the guest's MAC address (must be
    /// unicast and not all-zero); by default a random locally administered one.
    pub fn new(tap_name: &str, mac: Option<[u8; 6]>) -> Result<Net, Error> {
        let mac = match mac {
            Some(mac) => mac,
            None => random_mac()?,
        };
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(Error::InvalidMac { mac });
        }
        let tap = Tap::open(tap_name)?;
        Ok(Net::with_tap(tap, mac))
    }

    /// Like [`Net::new`], over a TAP fd already attached by the caller (see
    /// [`Tap::from_attached_fd`]).
    pub fn with_attached_fd(
        fd: std::os::fd::OwnedFd,
        tap_name: &str,
        mac: Option<[u8; 6]>,
    ) -> Result<Net, Error> {
        let mac = match mac {
            Some(mac) => mac,
            None => random_mac()?,
        };
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(Error::InvalidMac { mac });
        }
        Ok(Net::with_tap(Tap::from_attached_fd(fd, tap_name)?, mac))
    }

    /// A device over an already open TAP (or a test double, see [`Tap::from_fd`]).
    pub fn with_tap(tap: Tap, mac: [u8; 6]) -> Net {
        Net {
            tap,
            mac,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            rx_buf: vec![0; FRAME_BUF_LEN],
            rx_pending: None,
            tx_buf: vec![0; FRAME_BUF_LEN],
            metrics: Metrics::default(),
            tap_log: LogLimiter::new(),
            tx_limiter: None,
            imds: None,
        }
    }

    /// Serves instance metadata on this device (see the `imds` module).
    pub fn with_metadata(mut self, port: MetadataPort) -> Net {
        self.imds = Some(port);
        self
    }

    /// Puts the metadata service's next frame for the guest into `rx_buf`.
    fn take_imds_frame(&mut self) -> bool {
        let Some(frame) = self.imds.as_mut().and_then(MetadataPort::next_frame) else {
            return false;
        };
        let len = VNET_HDR_LEN + frame.len();
        if len > self.rx_buf.len() {
            return false;
        }
        self.rx_buf[..VNET_HDR_LEN].fill(0);
        self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
        self.rx_buf[VNET_HDR_LEN..len].copy_from_slice(&frame);
        self.rx_pending = Some(len);
        true
    }

    fn rearm_imds(&mut self) {
        if let Some(p) = &mut self.imds {
            p.rearm();
        }
    }

    /// Limits what the guest sends (frame bytes and frames per second) to `cfg`.
    pub fn set_rate_limit(&mut self, cfg: &RateLimitConfig) -> Result<(), Error> {
        self.tx_limiter = RateLimiter::new(cfg).map_err(|source| Error::RateLimiter { source })?;
        Ok(())
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Reads the next frame from the TAP into `rx_buf`; false when none is queued.
    fn read_tap(&mut self) -> bool {
        loop {
            match self.tap.read_frame(&mut self.rx_buf) {
                Ok(n) if n < VNET_HDR_LEN + MIN_FRAME_LEN => {
                    self.metrics.rx_dropped += 1;
                }
                Ok(n) => {
                    // Without VIRTIO_NET_F_MRG_RXBUF every frame uses one buffer; the TAP
                    // leaves `num_buffers` (bytes 10..12) for us to fill.
                    self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
                    self.rx_pending = Some(n);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.metrics.errors += 1;
                    if let Some(suppressed) = self.tap_log.allow() {
                        tracing::warn!(tap = self.tap.name(), error = %e, suppressed, "TAP read failed");
                    }
                    return false;
                }
            }
        }
    }

    /// Moves frames from the TAP into guest receive buffers until either runs out. While
    /// the guest has no buffer, one frame waits and later ones are dropped (as a NIC with
    /// a full ring does), so the TAP fd never stays readable with nobody reading.
    fn process_rx(&mut self, ctx: &mut QueueContext<'_>) -> Result<(), QueueCorruption> {
        let mem = ctx.mem();
        loop {
            if self.rx_pending.is_none() && !self.take_imds_frame() && !self.read_tap() {
                return Ok(());
            }
            let Some(len) = self.rx_pending else {
                return Ok(());
            };
            let chain = if ctx.is_ready(RX_QUEUE) {
                ctx.pop(RX_QUEUE)?
            } else {
                None
            };
            let Some(chain) = chain else {
                // No guest buffer: keep this frame, drop what else is queued.
                while self.drop_one_from_tap() {}
                return Ok(());
            };
            let head = chain.head_index();
            let frame = &self.rx_buf[..len];
            let written = match validate_chain(chain.clone()) {
                Err(err) => Err(err.to_string()),
                Ok(shape) if shape.readable > 0 => {
                    Err("receive buffer has device-readable descriptors".to_string())
                }
                Ok(shape) if shape.writable < len as u64 => Err(format!(
                    "receive buffer of {} bytes is too small for a {len}-byte frame",
                    shape.writable
                )),
                Ok(_) => chain
                    .writer(mem)
                    .map_err(|e| e.to_string())
                    .and_then(|mut w| w.write_all(frame).map_err(|e| e.to_string()))
                    .map(|()| len),
            };
            // The frame is consumed either way: a buffer it does not fit will not grow.
            self.rx_pending = None;
            let used = match written {
                Ok(n) => {
                    self.metrics.rx_frames += 1;
                    self.metrics.rx_bytes += (n - VNET_HDR_LEN) as u64;
                    n as u32
                }
                Err(what) => {
                    self.metrics.errors += 1;
                    self.metrics.rx_dropped += 1;
                    ctx.guest_error(RX_QUEUE, what);
                    0
                }
            };
            ctx.complete(RX_QUEUE, head, used)?;
        }
    }

    fn drop_one_from_tap(&mut self) -> bool {
        let mut scratch = std::mem::take(&mut self.tx_buf);
        let more = match self.tap.read_frame(&mut scratch) {
            Ok(_) => {
                self.metrics.rx_dropped += 1;
                true
            }
            Err(e) => e.kind() == ErrorKind::Interrupted,
        };
        self.tx_buf = scratch;
        more
    }

    fn process_tx(&mut self, ctx: &mut QueueContext<'_>) -> Result<(), QueueCorruption> {
        let mem = ctx.mem();
        loop {
            if self.tx_limiter.as_mut().is_some_and(|l| l.blocked()) {
                // The limiter's timer resumes transmission (process_extra).
                break;
            }
            let Some(chain) = ctx.pop(TX_QUEUE)? else {
                break;
            };
            let head = chain.head_index();
            if let (Some(l), Ok(shape)) = (&mut self.tx_limiter, validate_chain(chain.clone())) {
                l.consume(shape.readable.saturating_sub(VNET_HDR_LEN as u64));
            }
            let frame = match validate_chain(chain.clone()) {
                Err(err) => Err(err.to_string()),
                Ok(shape) if shape.writable > 0 => {
                    Err("transmit chain has device-writable descriptors".to_string())
                }
                Ok(shape) if shape.readable < (VNET_HDR_LEN + MIN_FRAME_LEN) as u64 => Err(
                    format!("transmit chain of {} bytes is too short", shape.readable),
                ),
                Ok(shape) if shape.readable > FRAME_BUF_LEN as u64 => Err(format!(
                    "transmit chain of {} bytes is too long",
                    shape.readable
                )),
                Ok(shape) => {
                    let len = shape.readable as usize;
                    chain
                        .reader(mem)
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| {
                            r.read_exact(&mut self.tx_buf[..len])
                                .map_err(|e| e.to_string())
                        })
                        .map(|()| len)
                }
            };
            match frame {
                Ok(len)
                    if self
                        .imds
                        .as_ref()
                        .is_some_and(|p| p.intercepts(&self.tx_buf[VNET_HDR_LEN..len])) =>
                {
                    // For the metadata service: never reaches the TAP.
                    if let Some(p) = &mut self.imds {
                        p.receive(&self.tx_buf[VNET_HDR_LEN..len]);
                    }
                }
                Ok(len) => {
                    // No offloads were offered: whatever the guest put in the header
                    // (flags, GSO) is not ours to pass on.
                    self.tx_buf[..VNET_HDR_LEN].fill(0);
                    match self.tap.write_frame(&self.tx_buf[..len]) {
                        Ok(_) => {
                            self.metrics.tx_frames += 1;
                            self.metrics.tx_bytes += (len - VNET_HDR_LEN) as u64;
                        }
                        Err(e) => {
                            self.metrics.tx_dropped += 1;
                            if e.kind() != ErrorKind::WouldBlock {
                                self.metrics.errors += 1;
                                if let Some(suppressed) = self.tap_log.allow() {
                                    tracing::warn!(tap = self.tap.name(), error = %e, suppressed, "TAP write failed");
                                }
                            }
                        }
                    }
                }
                Err(what) => {
                    self.metrics.errors += 1;
                    self.metrics.tx_dropped += 1;
                    ctx.guest_error(TX_QUEUE, what);
                }
            }
            ctx.complete(TX_QUEUE, head, 0)?;
        }
        Ok(())
    }
}

fn random_mac() -> Result<[u8; 6], Error> {
    let mut mac = [0u8; 6];
    getrandom::fill(&mut mac).map_err(Error::Entropy)?;
    // Locally administered, unicast.
    mac[0] = (mac[0] & 0xfc) | 0x02;
    Ok(mac)
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn device_features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: only `mac` (offset 0, 6 bytes) is offered.
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.mac.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, _acked_features: u64) {}

    fn process_queue(
        &mut self,
        ctx: &mut QueueContext<'_>,
        queue_index: usize,
    ) -> Result<(), QueueCorruption> {
        let result = match queue_index {
            RX_QUEUE => self.process_rx(ctx),
            TX_QUEUE => {
                self.process_tx(ctx)?;
                // Replies to what we just sent may already be waiting.
                self.process_rx(ctx)
            }
            _ => Ok(()),
        };
        self.rearm_imds();
        result
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.tap.as_raw_fd()];
        fds.extend(self.tx_limiter.iter().map(|l| l.fd()));
        if let Some(p) = &self.imds {
            fds.extend(p.fds());
        }
        fds
    }

    fn process_extra(
        &mut self,
        ctx: &mut QueueContext<'_>,
        fd: RawFd,
    ) -> Result<(), QueueCorruption> {
        if fd == self.tap.as_raw_fd() || self.imds.as_mut().is_some_and(|p| p.on_fd(fd)) {
            self.process_rx(ctx)?;
        } else if let Some(l) = self.tx_limiter.as_mut().filter(|l| l.fd() == fd) {
            l.on_timer();
            if ctx.is_ready(TX_QUEUE) {
                self.process_tx(ctx)?;
                self.process_rx(ctx)?;
            }
        }
        self.rearm_imds();
        Ok(())
    }

    fn reset(&mut self) {
        self.rx_pending = None;
    }

    fn metrics(&self) -> serde_json::Value {
        let m = &self.metrics;
        json!({
            "tap": self.tap.name(),
            "mac": self.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
            "requests": m.rx_frames + m.tx_frames,
            "bytes_read": m.tx_bytes,
            "bytes_written": m.rx_bytes,
            "rx_frames": m.rx_frames,
            "rx_bytes": m.rx_bytes,
            "rx_dropped": m.rx_dropped,
            "tx_frames": m.tx_frames,
            "tx_bytes": m.tx_bytes,
            "tx_dropped": m.tx_dropped,
            "errors": m.errors,
            "tx_throttled": self.tx_limiter.as_ref().map_or(0, |l| l.throttled()),
            "imds_frames_in": self.imds.as_ref().map_or(0, |p| p.frames_in),
            "imds_frames_out": self.imds.as_ref().map_or(0, |p| p.frames_out),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{guest_memory, read32, Driver, DATA_START};
    use crate::devices::virtio::VirtioMmioDevice;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const MAC: [u8; 6] = [0x02, 0x4e, 0x42, 0x00, 0x00, 0x01];

    /// A device whose "TAP" is one end of a datagram socket pair; returns the other end.
    fn setup() -> (
        VirtioMmioDevice,
        Driver,
        GuestMemoryMmap,
        UnixDatagram,
        RawFd,
    ) {
        let (dev_end, host_end) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        host_end.set_nonblocking(true).unwrap();
        let tap = Tap::from_fd(OwnedFd::from(dev_end), "pair");
        let net = Net::with_tap(tap, MAC);
        let fd = net.extra_fds()[0];
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(net), mem.clone()).unwrap();
        let drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);
        (dev, drv, mem, host_end, fd)
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        f[..6].copy_from_slice(&MAC);
        f
    }

    #[test]
    fn transmit_frame_limit_holds_and_the_timer_resumes_sending() {
        use crate::devices::ratelimit::BucketConfig;
        let (dev_end, host) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        host.set_nonblocking(true).unwrap();
        let mut net = Net::with_tap(Tap::from_fd(OwnedFd::from(dev_end), "pair"), MAC);
        net.set_rate_limit(&RateLimitConfig {
            bandwidth: BucketConfig::default(),
            ops: BucketConfig {
                rate: 20,
                burst: Some(2),
            },
        })
        .unwrap();
        let timer = net.extra_fds()[1];
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(net), mem.clone()).unwrap();
        let mut drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);
        mem.write_slice(
            &frame(60, 3),
            GuestAddress(DATA_START + VNET_HDR_LEN as u64),
        )
        .unwrap();
        const N: usize = 6;
        let start = std::time::Instant::now();
        for _ in 0..N {
            drv.add_chain(TX_QUEUE, &[(DATA_START, VNET_HDR_LEN as u32 + 60, false)]);
        }
        dev.process_queue(TX_QUEUE);
        let mut sent = drv.take_used(TX_QUEUE).len();
        assert!((2..=3).contains(&sent), "burst of 2 (+1 of debt): {sent}");
        while sent < N {
            let mut pfd = libc::pollfd {
                fd: timer,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "{sent} sent");
            dev.process_extra(timer);
            sent += drv.take_used(TX_QUEUE).len();
        }
        // Three or four frames beyond the burst at 20/s: at least 150 ms.
        let elapsed = start.elapsed();
        assert!(elapsed.as_millis() >= 140, "{elapsed:?}");
        let mut got = [0u8; 256];
        let mut delivered = 0;
        while host.recv(&mut got).is_ok() {
            delivered += 1;
        }
        assert_eq!(delivered, N);
        assert!(dev.metrics()["tx_throttled"].as_u64().unwrap() >= 3);
    }

    #[test]
    fn config_space_holds_the_mac() {
        let (mut dev, _drv, _mem, _host, _fd) = setup();
        let mut mac = [0u8; 8];
        dev.mmio_read(0x100, &mut mac);
        assert_eq!(&mac[..6], &MAC);
        assert_eq!(&mac[6..], &[0, 0]);
        assert_eq!(read32(&mut dev, 0x08), VIRTIO_ID_NET);
        assert_ne!(dev.acked_features() & (1 << VIRTIO_NET_F_MAC), 0);
        assert_eq!(dev.queue_evts().len(), 2);
    }

    #[test]
    fn transmitted_frames_reach_the_tap() {
        let (mut dev, mut drv, mem, host, _fd) = setup();
        let f = frame(100, 1);
        // Guest header with garbage flags: not passed on (no offloads negotiated).
        mem.write_slice(&[0xee; VNET_HDR_LEN], GuestAddress(DATA_START))
            .unwrap();
        mem.write_slice(&f[..40], GuestAddress(DATA_START + VNET_HDR_LEN as u64))
            .unwrap();
        mem.write_slice(&f[40..], GuestAddress(DATA_START + 0x1000))
            .unwrap();
        let head = drv.add_chain(
            TX_QUEUE,
            &[
                (DATA_START, VNET_HDR_LEN as u32 + 40, false),
                (DATA_START + 0x1000, 60, false),
            ],
        );
        dev.process_queue(TX_QUEUE);
        assert_eq!(drv.take_used(TX_QUEUE), vec![(u32::from(head), 0)]);
        let mut got = [0u8; 2048];
        let n = host.recv(&mut got).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 100);
        assert_eq!(&got[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&got[VNET_HDR_LEN..n], &f[..]);
        let m = dev.metrics();
        assert_eq!(m["tx_frames"], 1);
        assert_eq!(m["tx_bytes"], 100);
        assert_eq!(m["bytes_read"], 100);
    }

    #[test]
    fn received_frames_wait_for_guest_buffers() {
        let (mut dev, mut drv, mem, host, fd) = setup();
        let f = frame(60, 2);
        let mut wire = vec![0u8; VNET_HDR_LEN];
        wire[10] = 0x77; // stale bytes where num_buffers goes
        wire.extend_from_slice(&f);
        host.send(&wire).unwrap();
        // No receive buffer yet: the frame waits.
        dev.process_extra(fd);
        assert!(drv.take_used(RX_QUEUE).is_empty());
        let head = drv.add_chain(RX_QUEUE, &[(DATA_START, 1526, true)]);
        dev.process_queue(RX_QUEUE);
        assert_eq!(
            drv.take_used(RX_QUEUE),
            vec![(u32::from(head), wire.len() as u32)]
        );
        let mut got = vec![0u8; wire.len()];
        mem.read_slice(&mut got, GuestAddress(DATA_START)).unwrap();
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[VNET_HDR_LEN..], &f[..]);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);

        // With buffers posted, frames go straight through on TAP readability.
        let head2 = drv.add_chain(RX_QUEUE, &[(DATA_START + 0x1000, 1526, true)]);
        dev.process_queue(RX_QUEUE);
        let f2 = frame(1514, 3);
        let mut wire2 = vec![0u8; VNET_HDR_LEN];
        wire2.extend_from_slice(&f2);
        host.send(&wire2).unwrap();
        dev.process_extra(fd);
        assert_eq!(
            drv.take_used(RX_QUEUE),
            vec![(u32::from(head2), wire2.len() as u32)]
        );
        let m = dev.metrics();
        assert_eq!(m["rx_frames"], 2);
        assert_eq!(m["rx_bytes"], 60 + 1514);
    }

    #[test]
    fn frames_beyond_the_one_waiting_are_dropped_without_buffers() {
        let (mut dev, mut drv, _mem, host, fd) = setup();
        for seed in 0..3 {
            let mut wire = vec![0u8; VNET_HDR_LEN];
            wire.extend_from_slice(&frame(60, seed));
            host.send(&wire).unwrap();
        }
        dev.process_extra(fd);
        assert_eq!(dev.metrics()["rx_dropped"], 2);
        drv.add_chain(RX_QUEUE, &[(DATA_START, 1526, true)]);
        drv.add_chain(RX_QUEUE, &[(DATA_START + 0x1000, 1526, true)]);
        dev.process_queue(RX_QUEUE);
        assert_eq!(drv.take_used(RX_QUEUE).len(), 1);
    }

    #[test]
    fn malformed_chains_are_contained() {
        let (mut dev, mut drv, _mem, host, fd) = setup();
        // TX: a device-writable descriptor, a too-short chain, one outside guest memory.
        drv.add_chain(TX_QUEUE, &[(DATA_START, 100, true)]);
        drv.add_chain(TX_QUEUE, &[(DATA_START, 20, false)]);
        drv.add_chain(TX_QUEUE, &[(1 << 40, 100, false)]);
        dev.process_queue(TX_QUEUE);
        let used = drv.take_used(TX_QUEUE);
        assert_eq!(used.len(), 3);
        assert!(used.iter().all(|&(_, len)| len == 0));
        let mut buf = [0u8; 64];
        assert_eq!(
            host.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );

        // RX: a buffer too small for the frame and a read-only buffer: both returned empty,
        // the frames dropped; a good buffer then receives the next frame.
        drv.add_chain(RX_QUEUE, &[(DATA_START, 32, true)]);
        drv.add_chain(RX_QUEUE, &[(DATA_START, 2048, false)]);
        for seed in 0..3 {
            let mut wire = vec![0u8; VNET_HDR_LEN];
            wire.extend_from_slice(&frame(200, seed));
            host.send(&wire).unwrap();
            dev.process_extra(fd);
        }
        let used = drv.take_used(RX_QUEUE);
        assert_eq!(used.len(), 2);
        assert!(used.iter().all(|&(_, len)| len == 0));
        let head = drv.add_chain(RX_QUEUE, &[(DATA_START, 2048, true)]);
        dev.process_queue(RX_QUEUE);
        assert_eq!(drv.take_used(RX_QUEUE), vec![(u32::from(head), 212)]);
        let m = dev.metrics();
        assert_eq!(m["errors"], 5);
        assert_eq!(m["needs_reset"], false);
    }

    #[test]
    fn dead_backend_drops_transmits_and_keeps_serving() {
        let (mut dev, mut drv, _mem, host, fd) = setup();
        // The host side goes away (as a deleted TAP does): every transmit is
        // refused by the back-end.
        drop(host);
        for i in 0..3u64 {
            let head = drv.add_chain(TX_QUEUE, &[(DATA_START + i * 0x1000, 100, false)]);
            dev.process_queue(TX_QUEUE);
            assert_eq!(drv.take_used(TX_QUEUE), vec![(u32::from(head), 0)]);
        }
        // Readability checks on the dead fd neither fail nor deliver anything.
        drv.add_chain(RX_QUEUE, &[(DATA_START, 2048, true)]);
        dev.process_extra(fd);
        assert!(drv.take_used(RX_QUEUE).is_empty());
        let m = dev.metrics();
        assert_eq!(m["tx_dropped"], 3, "{m}");
        assert_eq!(m["tx_frames"], 0, "{m}");
        assert_eq!(m["needs_reset"], false, "{m}");
    }

    fn metadata_config(enabled: bool) -> nubis_imds::ImdsConfig {
        let md: nubis_imds::InstanceMetadata = serde_json::from_value(json!({
            "instance_id": "i-0123456789abcdef0", "account_id": "123456789012",
            "ami_id": "ami-1", "instance_type": "t3.nano", "hostname": "h",
            "local_ipv4": "10.0.0.5", "mac": "02:4e:42:00:00:01",
            "availability_zone": "nubis-1a", "region": "nubis-1",
            "launch_time": "2026-12-06T05:00:00Z"
        }))
        .unwrap();
        nubis_imds::ImdsConfig {
            metadata: md,
            options: nubis_imds::MetadataOptions {
                http_endpoint_enabled: enabled,
                ..Default::default()
            },
        }
    }

    /// An ARP request from the guest for 169.254.169.254.
    fn arp_for_metadata() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[169, 254, 7, 7]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[169, 254, 169, 254]);
        f
    }

    #[test]
    fn metadata_frames_are_answered_into_the_guest_and_never_reach_the_tap() {
        let (dev_end, host) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        host.set_nonblocking(true).unwrap();
        let tap = Tap::from_fd(OwnedFd::from(dev_end), "pair");
        let (port, handle) = MetadataPort::new(metadata_config(true), MAC).unwrap();
        let net = Net::with_tap(tap, MAC).with_metadata(port);
        let fds = net.extra_fds();
        assert_eq!(fds.len(), 3, "TAP, timer, update");
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(net), mem.clone()).unwrap();
        let mut drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);

        let send = |dev: &mut VirtioMmioDevice, drv: &mut Driver, f: &[u8]| {
            let mut wire = vec![0u8; VNET_HDR_LEN];
            wire.extend_from_slice(f);
            mem.write_slice(&wire, GuestAddress(DATA_START + 0x8000))
                .unwrap();
            drv.add_chain(TX_QUEUE, &[(DATA_START + 0x8000, wire.len() as u32, false)]);
            dev.process_queue(TX_QUEUE);
            drv.take_used(TX_QUEUE);
        };
        let rx_head = drv.add_chain(RX_QUEUE, &[(DATA_START, 1526, true)]);
        dev.process_queue(RX_QUEUE);
        send(&mut dev, &mut drv, &arp_for_metadata());
        let used = drv.take_used(RX_QUEUE);
        assert_eq!(used.len(), 1, "the ARP reply was delivered");
        assert_eq!(used[0].0, u32::from(rx_head));
        let mut reply = vec![0u8; used[0].1 as usize];
        mem.read_slice(&mut reply, GuestAddress(DATA_START))
            .unwrap();
        let reply = &reply[VNET_HDR_LEN..];
        assert_eq!(&reply[..6], &MAC, "to the guest");
        assert_eq!(&reply[6..12], &nubis_imds::RESPONDER_MAC);
        assert_eq!(&reply[12..14], &[0x08, 0x06]);
        assert_eq!(
            &reply[28..32],
            &[169, 254, 169, 254],
            "sender is the metadata address"
        );
        let mut buf = [0u8; 256];
        assert_eq!(
            host.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );

        // Other traffic still goes to the TAP.
        send(&mut dev, &mut drv, &frame(60, 9));
        assert_eq!(host.recv(&mut buf).unwrap(), VNET_HDR_LEN + 60);

        // A run-time update (endpoint disabled) arrives through the update fd;
        // afterwards the service is silent and still nothing leaks.
        handle.update(metadata_config(false)).unwrap();
        dev.process_extra(fds[2]);
        drv.add_chain(RX_QUEUE, &[(DATA_START + 0x1000, 1526, true)]);
        dev.process_queue(RX_QUEUE);
        send(&mut dev, &mut drv, &arp_for_metadata());
        assert!(drv.take_used(RX_QUEUE).is_empty());
        assert_eq!(
            host.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        let m = dev.metrics();
        assert_eq!(m["imds_frames_in"], 2, "{m}");
        assert_eq!(m["imds_frames_out"], 1, "{m}");
    }

    #[test]
    fn constructor_errors_are_typed() {
        let err = Net::new("nbvtnosuch0", Some(MAC)).unwrap_err();
        assert!(matches!(err, Error::TapNotFound { .. }), "{err:?}");
        assert_eq!(err.exit_status(), 6);
        let err = Net::new("nbvtnosuch0", Some([1, 2, 3, 4, 5, 6])).unwrap_err();
        assert!(matches!(err, Error::InvalidMac { .. }), "{err:?}");
        assert_eq!(err.exit_status(), 2);
        let mac = random_mac().unwrap();
        assert_eq!(mac[0] & 3, 2, "unicast, locally administered");
    }
}
