//! The network side: a smoltcp interface over virtio-net (the device
//! adapter, non-blocking, is `netdev.rs`) with a static IPv4
//! address (ARP and ICMP echo are answered by smoltcp itself) and the HTTP
//! server on port 80 (see `nubis_hello_guest::http`), including the server
//! side of the stream and bulk modes (`GET /stream`, `GET /bulk`). The
//! probe, stream and bulk clients live in `prober.rs` and run in the same
//! loop.
//!
//! The loop polls the device; when there is nothing to do it sleeps at CPL0
//! (`hlt`) until the next virtio interrupt (routed through the I/O APIC) or
//! the next smoltcp timer, so an idle guest costs almost no host CPU.

use alloc::vec;
use alloc::vec::Vec;

use nubis_hello_guest::cmdline::{ExtraNet, Ipv4Cidr};
use nubis_hello_guest::http::{self, Parsed};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use crate::console;
use crate::devices::Found;
pub(crate) use crate::netdev::{send_raw, NetDev};
use crate::sys::{self, Idle};

const HTTP_PORT: u16 = 80;
/// Listening sockets: this many connections can be open at once.
const LISTENERS: usize = 8;
const SOCKET_BUF: usize = 4096;
/// Send buffer of the listening sockets: what `GET /bulk` may have in
/// flight (the receive side stays small). The device queue holds 256 frames
/// (`netdev.rs`), more than this window's ~90 segments.
const SEND_BUF: usize = 128 * 1024;
/// A `GET /stream` connection is dropped when the client acknowledges
/// nothing for this long (other connections: 10 s).
const STREAM_TIMEOUT_S: u64 = 60;
/// Keep polling this long after traffic before sleeping (latency of
/// multi-packet exchanges), in microseconds. Longer (2 ms, and spinning
/// throughout bulk transfers) made guest-to-guest transfers slower on a
/// host with two shared cores (README "Network").
const BUSY_WINDOW_US: u64 = 200;
/// Longest sleep between polls, in milliseconds.
const MAX_SLEEP_MS: u64 = 100;

/// `nubis.spoof=`: the forged frames and when to send them next.
struct Spoofer {
    claim: [u8; 4],
    frames: Vec<Vec<u8>>,
    next_tsc: u64,
    rounds_left: u32,
    round: u32,
}

/// Rounds of forged frames (one a second), so a test can look at any time.
const SPOOF_ROUNDS: u32 = 30;

/// One HTTP connection slot.
struct Conn {
    handle: SocketHandle,
    request: Vec<u8>,
    answered: bool,
    /// Response bytes not yet in the socket's send buffer.
    pending: Vec<u8>,
    /// `GET /stream` is being answered.
    stream: Option<StreamOut>,
    /// `GET /bulk`: (body bytes sent, body length).
    bulk: Option<(u64, u64)>,
}

/// The server side of one `GET /stream`.
struct StreamOut {
    /// Lines sent so far.
    seq: u64,
    /// When the next line is due (TSC).
    next_tsc: u64,
    /// When the guest closes the stream (TSC).
    end_tsc: u64,
}

/// A secondary network interface (`nubis.net<N>=`): a device of its own
/// with its own smoltcp interface (ARP and ICMP echo answered) and HTTP
/// listeners, served by the same loop as the primary one. The test modes
/// (metadata, probes, spoofing) use the primary interface only.
struct Port {
    dev: NetDev,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    irq: u32,
}

impl Port {
    /// Whether a received frame waits.
    fn can_recv(&self) -> bool {
        self.dev.can_recv()
    }
}

/// The network stack, ready to serve.
pub struct Server {
    pub(crate) dev: NetDev,
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    irq: u32,
    /// Secondary interfaces, in `nubis.net<N>=` order.
    extra: Vec<Port>,
    /// What the metadata service returned as user data (`GET /user-data`).
    pub(crate) user_data: Option<Vec<u8>>,
    /// Next local port of a metadata request.
    pub(crate) next_port: u16,
    /// The spoofing test mode, when armed.
    spoof: Option<Spoofer>,
    /// TSC ticks per second (set by [`Self::serve`]).
    pub(crate) hz: u64,
    /// The probe and stream test modes, when armed (see `prober.rs`).
    pub(crate) prober: Option<crate::prober::Prober>,
}

/// Time for smoltcp, from the TSC.
pub(crate) fn now(hz: u64) -> Instant {
    let per_us = (hz / 1_000_000).max(1);
    Instant::from_micros((sys::rdtsc() / per_us) as i64)
}

/// One virtio-net device with its smoltcp interface (address `ip`, `gw`
/// as default route) and the HTTP listeners; prints `NUBIS-NET<label>`.
/// `None` (after a `NUBIS-ERROR` line) if the device fails.
fn open_port(
    found: Found,
    ip: Ipv4Cidr,
    gw: Option<[u8; 4]>,
    hz: u64,
    label: &str,
) -> Option<Port> {
    let addr = found.at.addr;
    let mut dev = match NetDev::new(found.transport, hz) {
        Ok(dev) => dev,
        Err(e) => {
            console!("NUBIS-ERROR virtio-net at {addr:#x}: {e}");
            return None;
        }
    };
    dev.enable_interrupts();
    let mac = dev.mac_address();
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = sys::rdtsc();
    let mut iface = Interface::new(config, &mut dev, now(hz));
    let [a, b, c, d] = ip.addr;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(Ipv4Address::new(a, b, c, d).into(), ip.prefix));
    });
    if let Some([a, b, c, d]) = gw {
        if iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d))
            .is_err()
        {
            console!("NUBIS-ERROR no room for the default route");
        }
    }
    let mut sockets = SocketSet::new(Vec::new());
    let mut conns = Vec::with_capacity(LISTENERS);
    for _ in 0..LISTENERS {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
            tcp::SocketBuffer::new(vec![0; SEND_BUF]),
        );
        conns.push(Conn {
            handle: sockets.add(socket),
            request: Vec::new(),
            answered: false,
            pending: Vec::new(),
            stream: None,
            bulk: None,
        });
    }
    console!(
        "NUBIS-NET{label} ip={a}.{b}.{c}.{d}/{} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        ip.prefix,
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    Some(Port {
        dev,
        iface,
        sockets,
        conns,
        irq: found.at.irq,
    })
}

/// Brings up virtio-net with `ip` (and `gw` as default route), prints
/// `NUBIS-NET`. `None` (after a `NUBIS-ERROR` line) if the device fails.
pub fn up(found: Found, ip: Ipv4Cidr, gw: Option<[u8; 4]>, hz: u64) -> Option<Server> {
    let Port {
        dev,
        iface,
        sockets,
        conns,
        irq,
    } = open_port(found, ip, gw, hz, "")?;
    Some(Server {
        dev,
        iface,
        sockets,
        conns,
        irq,
        extra: Vec::new(),
        user_data: None,
        next_port: 49152,
        spoof: None,
        hz,
        prober: None,
    })
}

impl Server {
    /// The local port of the next outgoing connection (49153-65000, cycling).
    pub(crate) fn local_port(&mut self) -> u16 {
        self.next_port = if self.next_port >= 65000 {
            49152
        } else {
            self.next_port + 1
        };
        self.next_port
    }

    /// Arms the `nubis.spoof=` test mode: from now on, once a second for
    /// [`SPOOF_ROUNDS`] rounds, send a frame with a forged source MAC, a
    /// gratuitous ARP claiming `claim`, an IPv4 datagram from `claim` and an
    /// ARP request claiming `claim` to every other address of the subnet,
    /// printing `NUBIS-SPOOF sent ...` each round.
    pub fn arm_spoof(&mut self, own: Ipv4Cidr, claim: [u8; 4]) {
        use nubis_hello_guest::spoof;
        let HardwareAddress::Ethernet(EthernetAddress(mac)) = self.iface.hardware_addr();
        let mut frames = alloc::vec![
            spoof::forged_mac_arp(own.addr),
            spoof::gratuitous_claim(mac, claim),
            spoof::forged_ip_udp(mac, claim, [255, 255, 255, 255]),
        ];
        for target in spoof::sweep(own.addr, own.prefix, claim, 1024) {
            frames.push(spoof::arp_claim_to(mac, claim, target));
        }
        self.spoof = Some(Spoofer {
            claim,
            frames,
            next_tsc: 0,
            rounds_left: SPOOF_ROUNDS,
            round: 0,
        });
    }

    /// Sends a round of forged frames when one is due.
    fn spoof_tick(&mut self) {
        let Some(sp) = self.spoof.as_mut() else {
            return;
        };
        let now = sys::rdtsc();
        if sp.rounds_left == 0 || now < sp.next_tsc {
            return;
        }
        let sent = sp.frames.iter().filter(|f| send_raw(&self.dev, f)).count();
        sp.rounds_left -= 1;
        sp.round += 1;
        sp.next_tsc = now + self.hz;
        let [a, b, c, d] = sp.claim;
        console!(
            "NUBIS-SPOOF sent round={} frames={sent} forged-mac={} claim={a}.{b}.{c}.{d}",
            sp.round,
            nubis_hello_guest::hex(&nubis_hello_guest::spoof::FORGED_MAC)
        );
    }

    /// Brings up a secondary interface (`nubis.net<N>=`) on device
    /// `found`; prints `NUBIS-NET<N>` (or a `NUBIS-ERROR` line).
    pub fn add_port(&mut self, found: Found, net: ExtraNet, hz: u64) {
        let label = alloc::format!("{}", net.n);
        if let Some(p) = open_port(found, net.ip, net.gw, hz, &label) {
            self.extra.push(p);
        }
    }

    /// Puts every idle HTTP slot into listening state (before the metadata
    /// fetch, so that connections opened meanwhile are accepted and served
    /// once [`Self::serve`] runs, instead of being reset).
    pub fn listen_all(&mut self) {
        listen(&self.conns, &mut self.sockets);
        for p in &mut self.extra {
            listen(&p.conns, &mut p.sockets);
        }
    }

    /// Serves until `GET /reset` was answered or Ctrl-Alt-Del was pressed.
    ///
    /// Takes `&mut self`: the caller keeps the server (never dropped, see
    /// `blk::Disk`) until the reset.
    pub fn serve(&mut self, id: &str, hz: u64, idle: Idle, keyboard: &mut sys::Keyboard) -> Stop {
        let woken_by_irq = idle != Idle::Spin
            && sys::route_irq(self.irq)
            && self.extra.iter().all(|p| sys::route_irq(p.irq));
        let mut last_activity = sys::rdtsc();
        let busy_ticks = hz / 1_000_000 * BUSY_WINDOW_US;
        let mut reset_at: Option<u64> = None;
        self.hz = hz;
        let stream_ticks = hz / 1000 * http::STREAM_INTERVAL_MS;
        let stream_max = hz / 1000 * http::STREAM_MAX_MS;
        self.mask_irqs(woken_by_irq, true);
        loop {
            self.spoof_tick();
            let t = now(hz);
            let changed = self.iface.poll(t, &mut self.dev, &mut self.sockets);
            let mut active = changed != smoltcp::iface::PollResult::None;
            active |= self.probe_tick();
            let user_data = self.user_data.as_deref();
            let tsc = sys::rdtsc();
            for conn in &mut self.conns {
                let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                let clock = StreamClock {
                    tsc,
                    interval: stream_ticks,
                    max: stream_max,
                };
                match serve_conn(socket, conn, id, user_data, clock) {
                    ConnEvent::Idle => {}
                    ConnEvent::Progress => active = true,
                    ConnEvent::ResetRequested => {
                        active = true;
                        reset_at.get_or_insert(sys::rdtsc());
                    }
                }
            }
            for p in &mut self.extra {
                let changed = p.iface.poll(t, &mut p.dev, &mut p.sockets);
                active |= changed != smoltcp::iface::PollResult::None;
                for conn in &mut p.conns {
                    let socket = p.sockets.get_mut::<tcp::Socket>(conn.handle);
                    let clock = StreamClock {
                        tsc,
                        interval: stream_ticks,
                        max: stream_max,
                    };
                    match serve_conn(socket, conn, id, user_data, clock) {
                        ConnEvent::Idle => {}
                        ConnEvent::Progress => active = true,
                        ConnEvent::ResetRequested => {
                            active = true;
                            reset_at.get_or_insert(sys::rdtsc());
                        }
                    }
                }
            }
            if let Some(since) = reset_at {
                // Let the response (and FIN) go out, but never wait long.
                let flushed = flushed(&self.conns, &self.sockets)
                    && self.extra.iter().all(|p| flushed(&p.conns, &p.sockets));
                if (flushed && sys::rdtsc() - since > hz / 20) || sys::rdtsc() - since > hz {
                    return Stop::HttpReset;
                }
            }
            if active {
                last_activity = sys::rdtsc();
                continue;
            }
            if self.dev.can_recv() || self.extra.iter().any(Port::can_recv) {
                continue;
            }
            // Even a bulk transfer (either side) sleeps when there is
            // nothing to do for a moment: on a host short of CPU, a spinning
            // vCPU takes the time the VMMs need to move the frames (the
            // device queues are deep enough that a wake-up finds a batch).
            if sys::rdtsc().wrapping_sub(last_activity) < busy_ticks {
                core::hint::spin_loop();
                continue;
            }
            let wake_ms = self.next_wake_tsc().map_or(MAX_SLEEP_MS, |at| {
                at.saturating_sub(sys::rdtsc()) / (hz / 1000).max(1)
            });
            let delay_ms = self
                .iface
                .poll_delay(now(hz), &self.sockets)
                .map_or(MAX_SLEEP_MS, |d: Duration| d.total_millis())
                .min(if woken_by_irq { MAX_SLEEP_MS } else { 5 })
                .min(wake_ms);
            if delay_ms > 0 {
                // Interrupts only while asleep; a frame that arrived before
                // the unmasking raised no edge, so look once more.
                self.mask_irqs(woken_by_irq, false);
                if self.dev.can_recv() || self.extra.iter().any(Port::can_recv) {
                    self.mask_irqs(woken_by_irq, true);
                    continue;
                }
                sys::sleep(idle, hz / 1000 * delay_ms, hz);
                if woken_by_irq {
                    // Edge-triggered: acknowledge so the next event raises a new edge.
                    self.dev.ack_interrupt();
                    for p in &self.extra {
                        p.dev.ack_interrupt();
                    }
                }
                self.mask_irqs(woken_by_irq, true);
                if keyboard.poll() {
                    return Stop::CtrlAltDel;
                }
            }
        }
    }
}

impl Server {
    /// Masks (or unmasks) the interrupts of every interface, when they are
    /// `routed` to the wake-up vector.
    fn mask_irqs(&self, routed: bool, masked: bool) {
        if routed {
            sys::mask_irq(self.irq, masked);
            for p in &self.extra {
                sys::mask_irq(p.irq, masked);
            }
        }
    }

    /// The earliest TSC at which a stream line or a probe event is due.
    fn next_wake_tsc(&self) -> Option<u64> {
        let extra = self
            .extra
            .iter()
            .filter_map(|p| stream_wake_tsc(&p.conns, &p.sockets));
        stream_wake_tsc(&self.conns, &self.sockets)
            .into_iter()
            .chain(extra)
            .chain(self.probe_wake_tsc())
            .min()
    }
}

/// The earliest TSC at which a stream line of `conns` is due.
fn stream_wake_tsc(conns: &[Conn], sockets: &SocketSet<'static>) -> Option<u64> {
    conns
        .iter()
        .filter_map(|c| {
            let socket = sockets.get::<tcp::Socket>(c.handle);
            // Unacknowledged data waits for acknowledgements (traffic), not time.
            let st = c.stream.as_ref()?;
            (c.pending.is_empty() && socket.send_queue() == 0)
                .then_some(st.next_tsc.min(st.end_tsc))
        })
        .min()
}

/// Puts every idle slot of `conns` into listening state.
fn listen(conns: &[Conn], sockets: &mut SocketSet<'static>) {
    for conn in conns {
        let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
        if socket.state() == tcp::State::Closed && socket.listen(HTTP_PORT).is_ok() {
            socket.set_timeout(Some(Duration::from_secs(10)));
        }
    }
}

/// Whether every response of `conns` left the send buffers.
fn flushed(conns: &[Conn], sockets: &SocketSet<'static>) -> bool {
    conns
        .iter()
        .all(|c| sockets.get::<tcp::Socket>(c.handle).send_queue() == 0)
}

/// Time for the server side of `GET /stream`, in TSC ticks.
#[derive(Clone, Copy)]
struct StreamClock {
    tsc: u64,
    interval: u64,
    max: u64,
}

/// Why [`Server::serve`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `GET /reset` was answered.
    HttpReset,
    /// Ctrl-Alt-Del arrived on the i8042.
    CtrlAltDel,
}

enum ConnEvent {
    Idle,
    Progress,
    ResetRequested,
}

fn serve_conn(
    socket: &mut tcp::Socket<'_>,
    conn: &mut Conn,
    id: &str,
    user_data: Option<&[u8]>,
    clock: StreamClock,
) -> ConnEvent {
    use tcp::State;
    match socket.state() {
        State::Closed | State::TimeWait => {
            if socket.state() == State::TimeWait {
                socket.abort();
            }
            conn.request.clear();
            conn.answered = false;
            conn.pending.clear();
            conn.stream = None;
            conn.bulk = None;
            if let Err(e) = socket.listen(HTTP_PORT) {
                console!("NUBIS-ERROR listen on port {HTTP_PORT}: {e}");
                return ConnEvent::Idle;
            }
            socket.set_timeout(Some(Duration::from_secs(10)));
            return ConnEvent::Progress;
        }
        State::CloseWait
            if conn.pending.is_empty() && (conn.answered || conn.request.is_empty()) =>
        {
            conn.stream = None;
            socket.close();
            return ConnEvent::Progress;
        }
        _ => {}
    }
    if !conn.pending.is_empty() {
        if !socket.can_send() {
            return ConnEvent::Idle;
        }
        if let Ok(n) = socket.send_slice(&conn.pending) {
            conn.pending.drain(..n);
        }
        if conn.pending.is_empty() && conn.stream.is_none() && conn.bulk.is_none() {
            socket.close();
        }
        return ConnEvent::Progress;
    }
    if let Some((sent, total)) = conn.bulk.as_mut() {
        // Fill the send buffer straight from the pattern: as fast as the
        // peer's window and the stack allow.
        if !socket.can_send() {
            return ConnEvent::Idle;
        }
        let at = *sent;
        let left = *total - at;
        let n = socket
            .send(|buf| {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                http::bulk_fill(at, &mut buf[..n]);
                (n, n)
            })
            .unwrap_or(0);
        *sent += n as u64;
        if *sent == *total {
            conn.bulk = None;
            socket.close();
        }
        return ConnEvent::Progress;
    }
    if let Some(st) = conn.stream.as_mut() {
        if clock.tsc >= st.end_tsc {
            conn.stream = None;
            socket.close();
            return ConnEvent::Progress;
        }
        // A new line only once the last one is acknowledged: when the
        // client's packets stop arriving (a firewall cut the flow), the
        // stream stops at once instead of filling the send buffer.
        if clock.tsc < st.next_tsc || socket.send_queue() > 0 {
            return ConnEvent::Idle;
        }
        st.seq += 1;
        st.next_tsc = clock.tsc + clock.interval;
        let line = http::stream_line(id, st.seq);
        let sent = socket.send_slice(&line).unwrap_or(0);
        conn.pending = line[sent..].to_vec();
        return ConnEvent::Progress;
    }
    if conn.answered || !socket.can_recv() {
        return ConnEvent::Idle;
    }
    let room = http::MAX_REQUEST.saturating_sub(conn.request.len());
    let request = &mut conn.request;
    let _ = socket.recv(|data| {
        let n = data.len().min(room);
        request.extend_from_slice(&data[..n]);
        (data.len(), ())
    });
    let parsed = match http::parse(&conn.request) {
        Parsed::Incomplete if socket.state() == tcp::State::CloseWait => None,
        Parsed::Incomplete => return ConnEvent::Progress,
        Parsed::Request { route, head_only } => Some((route, head_only)),
        Parsed::Bad => None,
    };
    let response = http::respond(parsed, id, user_data);
    if parsed == Some((http::Route::Stream, false)) {
        socket.set_timeout(Some(Duration::from_secs(STREAM_TIMEOUT_S)));
        conn.stream = Some(StreamOut {
            seq: 0,
            next_tsc: clock.tsc,
            end_tsc: clock.tsc + clock.max,
        });
    }
    if let Some((http::Route::Bulk(n), false)) = parsed {
        conn.bulk = Some((0, n));
    }
    // What does not fit the send buffer goes out over the next polls.
    let sent = socket.send_slice(&response).unwrap_or(0);
    conn.pending = response[sent..].to_vec();
    if conn.pending.is_empty() && conn.stream.is_none() && conn.bulk.is_none() {
        socket.close();
    }
    conn.answered = true;
    if matches!(parsed, Some((http::Route::Reset, _))) {
        ConnEvent::ResetRequested
    } else {
        ConnEvent::Progress
    }
}
