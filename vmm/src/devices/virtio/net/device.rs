//! The virtio-net device model: moves frames between the TAP and the guest's queues,
//! each direction optionally rate-limited (token buckets, `crate::devices::ratelimit`).
//! A throttled receive direction leaves frames in the TAP's own queue (read later, not
//! dropped; the kernel drops only when that queue overflows), so the TAP is then watched
//! edge-triggered and the limiter's timer resumes reading.

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
    /// Limits what the guest receives from the TAP (bytes and frames); frames
    /// the metadata service answers inside the VMM are not counted.
    rx_limiter: Option<RateLimiter>,
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
            rx_limiter: None,
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

    /// Limits what the guest receives from the TAP (frame bytes and frames per
    /// second) to `cfg`.
    pub fn set_rx_rate_limit(&mut self, cfg: &RateLimitConfig) -> Result<(), Error> {
        self.rx_limiter = RateLimiter::new(cfg).map_err(|source| Error::RateLimiter { source })?;
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
                    if let Some(l) = &mut self.rx_limiter {
                        l.consume((n - VNET_HDR_LEN) as u64);
                    }
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
    /// a full ring does), so the TAP fd never stays readable with nobody reading. While
    /// the receive limiter is throttled, frames stay in the TAP (its limiter's timer
    /// resumes this); the metadata service's replies are not limited.
    fn process_rx(&mut self, ctx: &mut QueueContext<'_>) -> Result<(), QueueCorruption> {
        let mem = ctx.mem();
        loop {
            if self.rx_pending.is_none()
                && !self.take_imds_frame()
                && (self.rx_limiter.as_mut().is_some_and(|l| l.blocked()) || !self.read_tap())
            {
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
        fds.extend(self.rx_limiter.iter().map(|l| l.fd()));
        if let Some(p) = &self.imds {
            fds.extend(p.fds());
        }
        fds
    }

    fn edge_triggered(&self, fd: RawFd) -> bool {
        // Throttled, the TAP stays readable while its frames wait.
        fd == self.tap.as_raw_fd() && self.rx_limiter.is_some()
    }

    fn process_extra(
        &mut self,
        ctx: &mut QueueContext<'_>,
        fd: RawFd,
    ) -> Result<(), QueueCorruption> {
        if fd == self.tap.as_raw_fd() || self.imds.as_mut().is_some_and(|p| p.on_fd(fd)) {
            self.process_rx(ctx)?;
        } else if let Some(l) = self.rx_limiter.as_mut().filter(|l| l.fd() == fd) {
            l.on_timer();
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
            "rx_throttled": self.rx_limiter.as_ref().map_or(0, |l| l.throttled()),
            "imds_frames_in": self.imds.as_ref().map_or(0, |p| p.frames_in),
            "imds_frames_out": self.imds.as_ref().map_or(0, |p| p.frames_out),
        })
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
