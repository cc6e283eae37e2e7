//! Tests of the virtio-net device model (`device.rs`): frames both ways, rate limits
//! both ways, guest misbehaviour, the metadata service's frames.

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

/// A device whose receive direction is limited to `cfg`, 16 receive
/// buffers posted (the k-th at `DATA_START + (k % 16) * 0x1000`); returns
/// it with the driver, memory, the "TAP"'s other end and the TAP and
/// receive-limiter fds.
fn rx_limited(
    cfg: RateLimitConfig,
) -> (
    VirtioMmioDevice,
    Driver,
    GuestMemoryMmap,
    UnixDatagram,
    RawFd,
    RawFd,
) {
    let (dev_end, host) = UnixDatagram::pair().unwrap();
    dev_end.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let mut net = Net::with_tap(Tap::from_fd(OwnedFd::from(dev_end), "pair"), MAC);
    net.set_rx_rate_limit(&cfg).unwrap();
    let fds = net.extra_fds();
    let (tap, timer) = (fds[0], fds[1]);
    let mem = guest_memory();
    let mut dev = VirtioMmioDevice::new(Box::new(net), mem.clone()).unwrap();
    assert!(
        dev.edge_triggered(tap),
        "a throttled TAP must not spin the loop"
    );
    assert!(!dev.edge_triggered(timer));
    let mut drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);
    for k in 0..16u64 {
        let head = drv.add_chain(RX_QUEUE, &[(DATA_START + k * 0x1000, 2048, true)]);
        assert_eq!(u64::from(head), k);
    }
    dev.process_queue(RX_QUEUE);
    (dev, drv, mem, host, tap, timer)
}

fn on_the_wire(f: &[u8]) -> Vec<u8> {
    let mut wire = vec![0u8; VNET_HDR_LEN];
    wire.extend_from_slice(f);
    wire
}

/// Waits up to `ms` for `fd` to be readable.
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

/// The frame the guest received in used entry `(head, len)`.
fn received(mem: &GuestMemoryMmap, (head, len): (u32, u32)) -> Vec<u8> {
    let mut got = vec![0u8; len as usize];
    mem.read_slice(
        &mut got,
        GuestAddress(DATA_START + u64::from(head) * 0x1000),
    )
    .unwrap();
    got.split_off(VNET_HDR_LEN)
}

#[test]
fn receive_frame_limit_holds_and_waiting_frames_stay_in_the_tap() {
    use crate::devices::ratelimit::BucketConfig;
    let (mut dev, mut drv, mem, host, tap, timer) = rx_limited(RateLimitConfig {
        bandwidth: BucketConfig::default(),
        ops: BucketConfig {
            rate: 20,
            burst: Some(2),
        },
    });
    const N: u8 = 8;
    let start = std::time::Instant::now();
    for seed in 0..N {
        host.send(&on_the_wire(&frame(60, seed))).unwrap();
    }
    dev.process_extra(tap);
    let mut used = drv.take_used(RX_QUEUE);
    assert!(
        (2..=3).contains(&used.len()),
        "burst of 2 (+1 of debt): {}",
        used.len()
    );
    // The others wait in the TAP (still readable), nothing is dropped, and
    // more readiness of the TAP does not get them in early.
    assert!(readable(tap, 0));
    dev.process_extra(tap);
    assert!(drv.take_used(RX_QUEUE).is_empty());
    assert_eq!(dev.metrics()["rx_dropped"], 0);
    while used.len() < usize::from(N) {
        assert!(readable(timer, 5000), "{} received", used.len());
        dev.process_extra(timer);
        used.extend(drv.take_used(RX_QUEUE));
    }
    // At least four frames beyond the burst and the one of debt at
    // 20/s: 200 ms; a loaded machine may take longer, never less.
    let elapsed = start.elapsed();
    assert!(elapsed.as_millis() >= 190, "{elapsed:?}");
    assert!(elapsed.as_secs() < 5, "{elapsed:?}");
    // All delivered, in order, intact.
    for (i, u) in used.iter().enumerate() {
        assert_eq!(received(&mem, *u), frame(60, i as u8), "frame {i}");
    }
    let m = dev.metrics();
    assert_eq!(m["rx_frames"], u64::from(N));
    assert_eq!(m["rx_dropped"], 0);
    assert!(m["rx_throttled"].as_u64().unwrap() >= 4, "{m}");
    assert!(!readable(tap, 0), "the TAP was drained");
}

#[test]
fn receive_bandwidth_limit_bounds_throughput_and_loses_nothing() {
    use crate::devices::ratelimit::BucketConfig;
    const RATE: u64 = 40_000;
    const BURST: u64 = 4_000;
    const LEN: usize = 1000;
    const TOTAL: usize = 40;
    let (mut dev, mut drv, mem, host, tap, timer) = rx_limited(RateLimitConfig {
        bandwidth: BucketConfig {
            rate: RATE,
            burst: Some(BURST),
        },
        ops: BucketConfig::default(),
    });
    let (mut sent, mut got, mut posted) = (0usize, 0usize, 16u64);
    let start = std::time::Instant::now();
    while got < TOTAL {
        assert!(
            start.elapsed().as_secs() < 10,
            "{got} of {TOTAL} after 10 s"
        );
        // The "TAP" holds at most a few frames (net.unix.max_dgram_qlen):
        // the sender keeps it full, as a busy peer would.
        while sent < TOTAL && host.send(&on_the_wire(&frame(LEN, sent as u8))).is_ok() {
            sent += 1;
        }
        dev.process_extra(tap);
        for u in drv.take_used(RX_QUEUE) {
            assert_eq!(received(&mem, u), frame(LEN, got as u8), "frame {got}");
            got += 1;
            // The guest posts the buffer again.
            let k = posted % 16;
            drv.add_chain(RX_QUEUE, &[(DATA_START + k * 0x1000, 2048, true)]);
            posted += 1;
        }
        dev.process_queue(RX_QUEUE);
        if got < TOTAL && readable(timer, 50) {
            dev.process_extra(timer);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // 40 kB at 40 kB/s with a 4 kB burst and one frame of debt: at least
    // 0.875 s; throughput within the limit, and at least a third of it
    // on a loaded machine.
    let bytes = (TOTAL * LEN) as f64;
    let floor = (bytes - (BURST + LEN as u64) as f64) / RATE as f64;
    assert!(elapsed >= floor * 0.98, "{elapsed} s < {floor} s");
    assert!(bytes / elapsed > RATE as f64 / 3.0, "{elapsed} s");
    let m = dev.metrics();
    assert_eq!(m["rx_frames"], TOTAL as u64);
    assert_eq!(m["rx_bytes"], (TOTAL * LEN) as u64);
    assert_eq!(m["rx_dropped"], 0, "{m}");
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
