//! The probe, stream and bulk test modes at run time: the guest originates
//! traffic to other addresses as its user data asks
//! (`nubis_hello_guest::probe` parses the lines) and prints `NUBIS-PROBE` /
//! `NUBIS-STREAM` / `NUBIS-BULK` lines.
//!
//! Everything is driven from the server's one poll loop
//! ([`Server::probe_tick`] after each `iface.poll`): nothing here blocks,
//! so the guest's own HTTP server, ICMP echo and other probes keep going
//! while a probe waits for its answer. Each target runs rounds: every check
//! of the target starts together, each ends on its own (answer, reset or
//! [`ATTEMPT_MS`]), and the next round starts `every` ms after the last one
//! started, or when its last check ended if that is later.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use nubis_hello_guest::cmdline::Ipv4Cidr;
use nubis_hello_guest::http::{self, HelloAnswer};
use nubis_hello_guest::probe::{self, dotted, BulkOutcome, Check, Outcome, StreamState, Target};
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address,
};

use crate::console;
use crate::net::{send_raw, Server};
use crate::sys;

/// Longest a probe attempt may take, in milliseconds.
pub const ATTEMPT_MS: u64 = 1_000;
/// Largest HTTP answer a probe reads.
const MAX_ANSWER: usize = 2048;
/// A target's next hop is asked for again after this long without asking,
/// in milliseconds (smoltcp forgets neighbours after 60 s).
const REFRESH_MS: u64 = 20_000;
/// Receive buffer of the bulk client: the window it advertises (smoltcp
/// scales windows beyond 64 KiB; `netdev.rs` caps a window at half the
/// receive queue, 128 segments, which this stays below).
const BULK_WINDOW: usize = 128 * 1024;
/// Payload of the echo requests.
const ECHO_DATA: &[u8] = b"NUBIS-PROBE";

/// The armed probe and stream modes.
pub(crate) struct Prober {
    targets: Vec<TargetRun>,
    stream: Option<StreamRun>,
    bulk: Option<BulkRun>,
    after: After,
    link: Link,
}

/// What a tick leaves for later.
#[derive(Default)]
struct After {
    /// Aborted sockets: removed at the next tick, after a poll sent their reset.
    aborted: Vec<SocketHandle>,
    /// Console lines, printed at the start of the next tick (right after the
    /// next poll): printing takes time (milliseconds under PVM), which must
    /// not count in the checks' times.
    lines: Vec<String>,
    /// TSC ticks per second.
    hz: u64,
}

/// The guest's address, gateway and MAC, for its own ARP requests.
struct Link {
    own: Ipv4Cidr,
    gw: Option<[u8; 4]>,
    mac: [u8; 6],
}

/// One `nubis-probe` line at run time.
struct TargetRun {
    target: Target,
    /// The current round (from 1; 0 before the first).
    seq: u64,
    /// When the current round started (TSC).
    round_tsc: u64,
    /// One entry per check of the target, `None` when it is not in flight.
    attempts: Vec<Option<Attempt>>,
    /// The echo socket (for an `icmp` check) and its ident.
    icmp: Option<(SocketHandle, u16)>,
    /// Sequence number of the next echo request.
    echo_seq: u16,
    /// Ask for the next hop at the next round (first round, after a timeout).
    resolve: bool,
    /// When the next hop was last asked for (TSC).
    resolved_tsc: u64,
}

/// A check in flight.
struct Attempt {
    started: u64,
    kind: AttemptKind,
}

enum AttemptKind {
    /// An echo request with this sequence number is out.
    Echo(u16),
    /// A TCP connection (`tcp:` or `http:`).
    Conn {
        handle: SocketHandle,
        established: bool,
        request_sent: bool,
        answer: Vec<u8>,
    },
}

/// The `nubis-stream` client.
struct StreamRun {
    dst: [u8; 4],
    handle: SocketHandle,
    started: u64,
    established: Option<u64>,
    last_byte: Option<u64>,
    request_sent: bool,
    bytes: u64,
    state: StreamState,
    next_print: u64,
    /// When the next hop was last asked for (TSC).
    resolved_tsc: u64,
}

/// The `nubis-bulk` client: one fetch of `GET /bulk?bytes=<n>`.
struct BulkRun {
    dst: [u8; 4],
    want: u64,
    handle: SocketHandle,
    started: u64,
    established: bool,
    request_sent: bool,
    /// The response head until it is complete.
    head: Vec<u8>,
    /// The head was complete: whether it was `200` with `Content-Length: want`.
    head_ok: Option<bool>,
    /// Body bytes received.
    body: u64,
    last_byte: u64,
    /// Set once the line is printed.
    done: bool,
}

fn ms(ticks: u64, hz: u64) -> u64 {
    (u128::from(ticks) * 1000 / u128::from(hz.max(1))) as u64
}

/// `1.234`: milliseconds with three decimals.
struct Millis(u64, u64);

impl core::fmt::Display for Millis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let us = (u128::from(self.0) * 1_000_000 / u128::from(self.1.max(1))) as u64;
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

fn ip(a: [u8; 4]) -> IpAddress {
    IpAddress::Ipv4(Ipv4Address::new(a[0], a[1], a[2], a[3]))
}

impl Server {
    /// Reads the `nubis-probe` / `nubis-stream` lines of the user data (read
    /// from the metadata service), prints a `NUBIS-ERROR` line for each bad
    /// one and starts the rest.
    pub fn arm_probes(&mut self, own: Ipv4Cidr, gw: Option<[u8; 4]>, hz: u64) {
        let Some(data) = self.user_data.as_deref() else {
            return;
        };
        let plan = probe::parse(data);
        for problem in &plan.problems {
            console!("NUBIS-ERROR {problem}");
        }
        if plan.is_empty() {
            return;
        }
        self.hz = hz;
        let now = sys::rdtsc();
        let HardwareAddress::Ethernet(EthernetAddress(mac)) = self.iface.hardware_addr();
        let mut prober = Prober {
            targets: Vec::new(),
            stream: None,
            bulk: None,
            after: After {
                hz,
                ..After::default()
            },
            link: Link { own, gw, mac },
        };
        for (i, target) in plan.targets.into_iter().enumerate() {
            let icmp = target.checks.contains(&Check::Icmp).then(|| {
                let ident = (now as u16) ^ (0x4e00 + i as u16);
                (self.echo_socket(ident), ident)
            });
            prober.targets.push(TargetRun {
                attempts: target.checks.iter().map(|_| None).collect(),
                target,
                seq: 0,
                round_tsc: 0,
                icmp,
                echo_seq: 0,
                resolve: true,
                resolved_tsc: 0,
            });
        }
        if let Some(s) = plan.stream {
            prober.link.resolve(&self.dev, s.dst);
            let handle = self.sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 512]),
            ));
            let port = self.local_port();
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let state = match socket.connect(self.iface.context(), (ip(s.dst), s.port), port) {
                Ok(()) => StreamState::Connecting,
                Err(e) => {
                    console!("NUBIS-ERROR nubis-stream {}: {e}", dotted(s.dst));
                    StreamState::Refused
                }
            };
            console!("NUBIS-STREAM dst={} bytes=0 state={state}", dotted(s.dst));
            prober.stream = Some(StreamRun {
                dst: s.dst,
                handle,
                started: now,
                established: None,
                last_byte: None,
                request_sent: false,
                bytes: 0,
                state,
                next_print: now + hz,
                resolved_tsc: now,
            });
        }
        if let Some(b) = plan.bulk {
            prober.link.resolve(&self.dev, b.dst);
            // smoltcp's delayed ACK (10 ms, kept) acknowledges every second
            // full segment at once.
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; BULK_WINDOW]),
                tcp::SocketBuffer::new(vec![0; 512]),
            );
            let handle = self.sockets.add(socket);
            let port = self.local_port();
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            let done = match socket.connect(self.iface.context(), (ip(b.dst), b.port), port) {
                Ok(()) => false,
                Err(e) => {
                    console!("NUBIS-ERROR nubis-bulk {}: {e}", dotted(b.dst));
                    console!(
                        "NUBIS-BULK dst={} bytes=0 ms=0.000 result={}",
                        dotted(b.dst),
                        BulkOutcome::Refused
                    );
                    true
                }
            };
            prober.bulk = Some(BulkRun {
                dst: b.dst,
                want: b.bytes,
                handle,
                started: now,
                established: false,
                request_sent: false,
                head: Vec::new(),
                head_ok: None,
                body: 0,
                last_byte: now,
                done,
            });
        }
        self.prober = Some(prober);
    }

    /// A new ICMP socket bound to echo `ident`.
    fn echo_socket(&mut self, ident: u16) -> SocketHandle {
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; 256]),
        );
        if let Err(e) = socket.bind(icmp::Endpoint::Ident(ident)) {
            console!("NUBIS-ERROR icmp bind: {e}");
        }
        self.sockets.add(socket)
    }

    /// Runs the probe and stream modes one step (after a poll of the
    /// interface). True when anything happened.
    pub(crate) fn probe_tick(&mut self) -> bool {
        let Some(mut prober) = self.prober.take() else {
            return false;
        };
        for handle in prober.after.aborted.drain(..) {
            self.sockets.remove(handle);
        }
        // The lines of the last step: printed before any check starts, so
        // that printing never counts in a check's time.
        let mut active = !prober.after.lines.is_empty();
        for line in prober.after.lines.drain(..) {
            console!("{line}");
        }
        for run in &mut prober.targets {
            active |= self.target_tick(run, &prober.link, &mut prober.after);
        }
        if let Some(stream) = prober.stream.as_mut() {
            let now = sys::rdtsc();
            if stream.state == StreamState::Connecting && now - stream.resolved_tsc >= self.hz {
                stream.resolved_tsc = now;
                prober.link.resolve(&self.dev, stream.dst);
            }
            active |= self.stream_tick(stream);
        }
        if let Some(bulk) = prober.bulk.as_mut() {
            active |= self.bulk_tick(bulk);
        }
        self.prober = Some(prober);
        active
    }

    /// The earliest TSC at which a probe event (round, attempt deadline,
    /// stream line) is due.
    pub(crate) fn probe_wake_tsc(&self) -> Option<u64> {
        let prober = self.prober.as_ref()?;
        if !prober.after.lines.is_empty() {
            return Some(0);
        }
        let hz = self.hz;
        let every = |run: &TargetRun| hz / 1000 * u64::from(run.target.every_ms);
        let targets = prober.targets.iter().map(|run| {
            let deadlines = run
                .attempts
                .iter()
                .flatten()
                .map(|a| a.started + hz / 1000 * ATTEMPT_MS);
            deadlines.min().unwrap_or(run.round_tsc + every(run))
        });
        let stream = prober
            .stream
            .as_ref()
            .filter(|s| !s.state.is_final())
            .map(|s| s.next_print);
        // Traffic wakes a bulk fetch; this only catches its timeouts.
        let bulk = prober
            .bulk
            .as_ref()
            .filter(|b| !b.done)
            .map(|b| b.last_byte.max(b.started) + hz);
        targets.chain(stream).chain(bulk).min()
    }

    fn target_tick(&mut self, run: &mut TargetRun, link: &Link, after: &mut After) -> bool {
        let hz = self.hz;
        let now = sys::rdtsc();
        let mut active = false;
        let every = hz / 1000 * u64::from(run.target.every_ms);
        if run.attempts.iter().all(Option::is_none)
            && (run.seq == 0 || now >= run.round_tsc + every)
        {
            if run.resolve || ms(now - run.resolved_tsc, hz) >= REFRESH_MS {
                run.resolve = false;
                run.resolved_tsc = now;
                link.resolve(&self.dev, run.target.dst);
            }
            run.seq += 1;
            run.round_tsc = now;
            for i in 0..run.attempts.len() {
                let check = run.target.checks[i];
                run.attempts[i] = self.start(run, check, now, after);
            }
            active = true;
        }
        // Echo replies that arrived (any for an older sequence are dropped).
        if let Some((handle, ident)) = run.icmp {
            let socket = self.sockets.get_mut::<icmp::Socket>(handle);
            while let Ok((data, _from)) = socket.recv() {
                let Ok(packet) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                let Ok(Icmpv4Repr::EchoReply {
                    ident: got, seq_no, ..
                }) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default())
                else {
                    continue;
                };
                for (i, slot) in run.attempts.iter_mut().enumerate() {
                    if let Some(a) = slot {
                        if got == ident && matches!(a.kind, AttemptKind::Echo(s) if s == seq_no) {
                            let check = run.target.checks[i];
                            let took = Some(now - a.started);
                            after.report(run.seq, run.target.dst, check, Outcome::Ok, took, None);
                            *slot = None;
                            active = true;
                        }
                    }
                }
            }
        }
        for i in 0..run.attempts.len() {
            let Some(attempt) = run.attempts[i].as_mut() else {
                continue;
            };
            let check = run.target.checks[i];
            let late = now >= attempt.started + hz / 1000 * ATTEMPT_MS;
            let (outcome, peer) = match &mut attempt.kind {
                AttemptKind::Echo(_) if late => (Outcome::Timeout, None),
                AttemptKind::Echo(_) => continue,
                AttemptKind::Conn {
                    handle,
                    established,
                    request_sent,
                    answer,
                } => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
                    match conn_step(socket, check, established, request_sent, answer, late) {
                        Some(done) => {
                            socket.abort();
                            after.aborted.push(*handle);
                            done
                        }
                        None => continue,
                    }
                }
            };
            run.resolve |= outcome == Outcome::Timeout;
            let took = (outcome != Outcome::Timeout).then(|| now - attempt.started);
            after.report(
                run.seq,
                run.target.dst,
                check,
                outcome,
                took,
                peer.as_deref(),
            );
            run.attempts[i] = None;
            active = true;
        }
        active
    }

    /// Starts one check of a round; `None` (after its line) when it could not start.
    fn start(
        &mut self,
        run: &mut TargetRun,
        check: Check,
        now: u64,
        after: &mut After,
    ) -> Option<Attempt> {
        let dst = run.target.dst;
        let kind = match check {
            Check::Icmp => {
                let (mut handle, ident) = run.icmp?;
                run.echo_seq = run.echo_seq.wrapping_add(1);
                let seq_no = run.echo_seq;
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data: ECHO_DATA,
                };
                if !self.sockets.get::<icmp::Socket>(handle).can_send() {
                    // An earlier request still waits for the neighbour: start afresh.
                    self.sockets.remove(handle);
                    handle = self.echo_socket(ident);
                    run.icmp = Some((handle, ident));
                }
                let socket = self.sockets.get_mut::<icmp::Socket>(handle);
                if let Ok(buf) = socket.send(repr.buffer_len(), ip(dst)) {
                    let mut packet = Icmpv4Packet::new_unchecked(buf);
                    repr.emit(&mut packet, &ChecksumCapabilities::default());
                }
                AttemptKind::Echo(seq_no)
            }
            Check::Tcp(port) | Check::Http(port) => {
                let (rx, tx) = match check {
                    Check::Http(_) => (MAX_ANSWER, 256),
                    _ => (64, 64),
                };
                let handle = self.sockets.add(tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; rx]),
                    tcp::SocketBuffer::new(vec![0; tx]),
                ));
                let local = self.local_port();
                let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                if let Err(e) = socket.connect(self.iface.context(), (ip(dst), port), local) {
                    console!("NUBIS-ERROR nubis-probe {} {check}: {e}", dotted(dst));
                    after.aborted.push(handle);
                    after.report(run.seq, dst, check, Outcome::NoRoute, None, None);
                    return None;
                }
                AttemptKind::Conn {
                    handle,
                    established: false,
                    request_sent: false,
                    answer: Vec::new(),
                }
            }
        };
        Some(Attempt { started: now, kind })
    }

    fn stream_tick(&mut self, s: &mut StreamRun) -> bool {
        if s.state.is_final() {
            return false;
        }
        let hz = self.hz;
        let now = sys::rdtsc();
        let socket = self.sockets.get_mut::<tcp::Socket>(s.handle);
        let mut got = 0;
        while socket.can_recv() {
            match socket.recv(|d| (d.len(), d.len())) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got > 0 {
            s.bytes += got as u64;
            s.last_byte = Some(now);
        }
        use tcp::State;
        let state = match socket.state() {
            State::SynSent | State::SynReceived | State::Listen => {
                if ms(now - s.started, hz) >= probe::STREAM_CONNECT_MS {
                    StreamState::Timeout
                } else {
                    StreamState::Connecting
                }
            }
            State::Established | State::FinWait1 | State::FinWait2 => {
                let since = *s.established.get_or_insert(now);
                if !s.request_sent && socket.can_send() {
                    let request = http::stream_request(&dotted(s.dst));
                    s.request_sent = socket.send_slice(&request).ok() == Some(request.len());
                }
                StreamState::established(s.last_byte.map(|t| ms(now - t, hz)), ms(now - since, hz))
            }
            State::Closed if s.established.is_some() => StreamState::Reset,
            State::Closed => StreamState::Refused,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait => {
                StreamState::Closed
            }
        };
        if state.is_final() {
            // Never reopened: the test watches this one flow.
            socket.abort();
        }
        if state == s.state && now < s.next_print {
            return got > 0;
        }
        s.state = state;
        s.next_print = now + hz;
        console!(
            "NUBIS-STREAM dst={} bytes={} state={state}",
            dotted(s.dst),
            s.bytes
        );
        true
    }
}

impl Server {
    /// One step of the bulk fetch; true when anything happened.
    fn bulk_tick(&mut self, b: &mut BulkRun) -> bool {
        if b.done {
            return false;
        }
        let hz = self.hz;
        let now = sys::rdtsc();
        let socket = self.sockets.get_mut::<tcp::Socket>(b.handle);
        use tcp::State;
        let state = socket.state();
        if matches!(state, State::Established | State::CloseWait) {
            b.established = true;
        }
        if b.established && !b.request_sent && socket.can_send() {
            let request = http::bulk_request(&dotted(b.dst), b.want);
            b.request_sent = socket.send_slice(&request).ok() == Some(request.len());
        }
        let mut got = 0usize;
        loop {
            if b.head_ok.is_none() {
                let head = &mut b.head;
                let room = http::MAX_REQUEST.saturating_sub(head.len());
                let n = socket
                    .recv(|d| {
                        let take = d.len().min(room);
                        head.extend_from_slice(&d[..take]);
                        (take, take)
                    })
                    .unwrap_or(0);
                got += n;
                match http::response_head(&b.head) {
                    http::Head::Incomplete if n > 0 => continue,
                    http::Head::Incomplete => break,
                    http::Head::Bad => {
                        b.head_ok = Some(false);
                        break;
                    }
                    http::Head::Done {
                        len,
                        ok,
                        content_length,
                    } => {
                        b.head_ok = Some(ok && content_length == Some(b.want));
                        // What came with the head is body already.
                        b.body = (b.head.len() - len) as u64;
                        got = got.max(1);
                    }
                }
            } else {
                let n = socket.recv(|d| (d.len(), d.len())).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got += n;
                b.body += n as u64;
            }
        }
        if got > 0 {
            b.last_byte = now;
        }
        let outcome = match (b.head_ok, state) {
            (Some(false), _) => Some(BulkOutcome::BadResponse),
            (Some(true), _) if b.body >= b.want => Some(BulkOutcome::Ok),
            (_, State::CloseWait | State::LastAck | State::Closing | State::TimeWait) => {
                Some(if b.head_ok.is_none() {
                    BulkOutcome::BadResponse
                } else {
                    BulkOutcome::Short
                })
            }
            (_, State::Closed) if b.established => Some(BulkOutcome::Reset),
            (_, State::Closed) => Some(BulkOutcome::Refused),
            (_, State::SynSent | State::SynReceived | State::Listen)
                if ms(now - b.started, hz) >= probe::STREAM_CONNECT_MS =>
            {
                Some(BulkOutcome::Timeout)
            }
            _ if b.established && ms(now - b.last_byte, hz) >= probe::BULK_IDLE_MS => {
                Some(BulkOutcome::Timeout)
            }
            _ => None,
        };
        let Some(outcome) = outcome else {
            return got > 0;
        };
        socket.abort();
        b.done = true;
        console!(
            "NUBIS-BULK dst={} bytes={} ms={} result={outcome}",
            dotted(b.dst),
            b.body,
            Millis(b.last_byte - b.started, hz)
        );
        true
    }
}

impl Link {
    /// Sends our own ARP request for the next hop towards `dst`.
    fn resolve(&self, dev: &crate::net::NetDev, dst: [u8; 4]) {
        if let Some(hop) = probe::next_hop(self.own, self.gw, dst) {
            send_raw(
                dev,
                &nubis_hello_guest::spoof::arp_request(self.mac, self.own.addr, hop),
            );
        }
    }
}

/// One step of a `tcp:` / `http:` attempt; `Some` when it is over.
fn conn_step(
    socket: &mut tcp::Socket<'_>,
    check: Check,
    established: &mut bool,
    request_sent: &mut bool,
    answer: &mut Vec<u8>,
    late: bool,
) -> Option<(Outcome, Option<alloc::string::String>)> {
    use tcp::State;
    let state = socket.state();
    if matches!(state, State::Established | State::CloseWait) {
        *established = true;
    }
    if *established && matches!(check, Check::Tcp(_)) {
        return Some((Outcome::Ok, None));
    }
    if *established && !*request_sent && socket.can_send() {
        let host = socket
            .remote_endpoint()
            .map(|e| alloc::format!("{}", e.addr))
            .unwrap_or_default();
        let request = http::probe_request(&host);
        *request_sent = socket.send_slice(&request).ok() == Some(request.len());
    }
    while socket.can_recv() && answer.len() < MAX_ANSWER {
        let room = MAX_ANSWER - answer.len();
        let _ = socket.recv(|d| {
            let n = d.len().min(room);
            answer.extend_from_slice(&d[..n]);
            (n, ())
        });
    }
    match state {
        // The server closed: the answer is complete.
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait => {
            return Some(match http::hello_peer(answer) {
                HelloAnswer::Hello(id) => (Outcome::Ok, Some(id.into())),
                HelloAnswer::Other => (Outcome::BadResponse, None),
            });
        }
        State::Closed if *established => return Some((Outcome::Reset, None)),
        State::Closed => return Some((Outcome::Refused, None)),
        _ => {}
    }
    late.then_some((Outcome::Timeout, None))
}

impl After {
    /// Queues one `NUBIS-PROBE` line.
    fn report(
        &mut self,
        seq: u64,
        dst: [u8; 4],
        check: Check,
        outcome: Outcome,
        took: Option<u64>,
        peer: Option<&str>,
    ) {
        let dst = dotted(dst);
        let mut line = format!("NUBIS-PROBE seq={seq} dst={dst} check={check} result={outcome}");
        if let Some(t) = took {
            line.push_str(&format!(" ms={}", Millis(t, self.hz)));
        }
        if let Some(p) = peer {
            line.push_str(&format!(" peer={p}"));
        }
        self.lines.push(line);
    }
}
