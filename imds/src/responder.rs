//! The frame-level metadata responder a VMM puts on one guest NIC.
//!
//! The VMM asks [`Responder::intercepts`] about every frame the guest
//! transmits; frames for the metadata address (ARP requests and neighbour
//! solicitations for it, IPv4/IPv6 packets to it) are handed to
//! [`Responder::receive`] instead of the host, and whatever
//! [`Responder::transmit`] returns is written into the guest's receive
//! queue. ARP and NDP are answered here by hand; IP packets go to a small
//! smoltcp interface (medium IP, so it needs no neighbour resolution) with a
//! pool of TCP sockets listening on port 80, whose requests [`handle_http`]
//! answers. Every IP packet it sends carries the instance's hop limit as its
//! TTL / hop limit.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpCidr, IpProtocol, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::http::{handle_http, parse_request, ParseError, Response, TokenStore};
use crate::metadata::{InstanceMetadata, MetadataOptions};

/// The metadata service's IPv4 address.
pub const METADATA_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The metadata service's IPv6 address (`fd00:ec2::254`).
pub const METADATA_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The responder's own MAC (locally administered, unicast).
pub const RESPONDER_MAC: [u8; 6] = [0x06, 0x00, 0xa9, 0xfe, 0xa9, 0xfe];

/// TCP connections served at once.
const SOCKETS: usize = 8;
const RX_BUF: usize = 8 * 1024;
const TX_BUF: usize = 24 * 1024;
/// A connection must deliver each complete request within this time of
/// opening or of its previous response, else it is reset.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting for the guest are bounded; beyond this they are dropped
/// (TCP retransmits).
const MAX_QUEUED: usize = 256;
const MTU: usize = 1500;

const ETH_HDR: usize = 14;

/// IP packets between the responder's smoltcp interface and the frame layer.
#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(buf);
        }
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: NetInstant) -> Option<(RxToken, TxToken<'_>)> {
        let pkt = self.rx.pop_front()?;
        Some((RxToken(pkt), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: NetInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        // Guests with checksum offload send partial checksums; the frames
        // never crossed a wire, so only compute ours.
        let mut sums = ChecksumCapabilities::default();
        sums.ipv4 = Checksum::Tx;
        sums.tcp = Checksum::Tx;
        sums.udp = Checksum::Tx;
        sums.icmpv4 = Checksum::Tx;
        sums.icmpv6 = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}

/// One TCP connection slot.
#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// When the current request must be complete.
    deadline: Option<Instant>,
    closing: bool,
}

/// The metadata service of one guest NIC.
pub struct Responder {
    md: InstanceMetadata,
    opts: MetadataOptions,
    tokens: TokenStore,
    guest_mac: Option<[u8; 6]>,
    /// Where replies go: the guest's MAC (given, or learnt from its frames).
    reply_mac: Option<[u8; 6]>,
    iface: Interface,
    queues: Queues,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    /// Frames for the guest, ready.
    out: VecDeque<Vec<u8>>,
    base: Instant,
    next_poll: Option<Instant>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("instance_id", &self.md.instance_id)
            .field("opts", &self.opts)
            .field("guest_mac", &self.guest_mac)
            .field("queued", &self.out.len())
            .finish()
    }
}

impl Responder {
    /// A responder serving `md` under `opts`; if `guest_mac` is given, frames
    /// from any other source MAC are ignored.
    pub fn new(md: InstanceMetadata, opts: MetadataOptions, guest_mac: Option<[u8; 6]>) -> Self {
        let base = Instant::now();
        let mut queues = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        let mut seed = [0u8; 8];
        // The seed only spreads TCP sequence numbers; a fixed one on failure
        // is harmless.
        let _ = getrandom::fill(&mut seed);
        config.random_seed = u64::from_le_bytes(seed);
        let mut iface = Interface::new(config, &mut queues, NetInstant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(METADATA_IPV4.into(), 16));
            let _ = addrs.push(IpCidr::new(METADATA_IPV6.into(), 64));
        });
        // Medium IP has no neighbours: any gateway makes every guest address
        // routable, and replies go out on the only link there is.
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(169, 254, 0, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 1));
        let mut sockets = SocketSet::new(Vec::with_capacity(SOCKETS));
        let mut conns = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUF]),
                tcp::SocketBuffer::new(vec![0; TX_BUF]),
            );
            conns.push(Conn {
                handle: sockets.add(socket),
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                deadline: None,
                closing: false,
            });
        }
        let mut r = Self {
            md,
            opts,
            tokens: TokenStore::new(),
            guest_mac,
            reply_mac: guest_mac,
            iface,
            queues,
            sockets,
            conns,
            out: VecDeque::new(),
            base,
            next_poll: None,
        };
        r.relisten_all();
        r
    }

    /// Replaces the data and options (ModifyInstanceMetadataOptions, a new
    /// public address). Disabling the endpoint resets open connections.
    pub fn update(&mut self, md: InstanceMetadata, opts: MetadataOptions) {
        let was_enabled = self.opts.http_endpoint_enabled;
        self.md = md;
        self.opts = opts;
        if was_enabled && !opts.http_endpoint_enabled {
            for c in &mut self.conns {
                self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
                c.inbuf.clear();
                c.outbuf.clear();
                c.deadline = None;
                c.closing = false;
            }
            self.out.clear();
            self.queues.rx.clear();
        }
        let hop = Some(self.opts.hop_limit());
        for c in &self.conns {
            self.sockets
                .get_mut::<tcp::Socket>(c.handle)
                .set_hop_limit(hop);
        }
    }

    /// The data served.
    pub fn metadata(&self) -> &InstanceMetadata {
        &self.md
    }

    /// The options applied.
    pub fn options(&self) -> &MetadataOptions {
        &self.opts
    }

    /// Whether `frame` (Ethernet) is for the metadata service: an ARP
    /// request for its IPv4 address, an IPv4 or IPv6 packet to it, or a
    /// neighbour solicitation for its IPv6 address. Such frames must not
    /// reach the host, whether or not the service answers them.
    pub fn intercepts(&self, frame: &[u8]) -> bool {
        if frame.len() < ETH_HDR {
            return false;
        }
        let v4 = METADATA_IPV4.octets();
        let v6 = METADATA_IPV6.octets();
        match [frame[12], frame[13]] {
            // ARP: operation request, target protocol address.
            [0x08, 0x06] => frame.len() >= 42 && frame[20..22] == [0, 1] && frame[38..42] == v4,
            [0x08, 0x00] => frame.len() >= 34 && frame[30..34] == v4,
            [0x86, 0xdd] => {
                if frame.len() < 54 {
                    return false;
                }
                if frame[38..54] == v6 {
                    return true;
                }
                // ICMPv6 (no extension headers) neighbour solicitation
                // whose target is the metadata address.
                frame[20] == 58 && frame.len() >= 78 && frame[54] == 135 && frame[62..78] == v6
            }
            _ => false,
        }
    }

    /// Takes one frame the guest sent (one for which [`Self::intercepts`]
    /// holds; others are ignored).
    pub fn receive(&mut self, frame: &[u8], now: Instant) {
        if !self.intercepts(frame) || !self.opts.http_endpoint_enabled {
            return;
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        let src = eth.src_addr().0;
        if self.guest_mac.is_some_and(|m| m != src) || !eth.src_addr().is_unicast() {
            return;
        }
        self.reply_mac = Some(src);
        match eth.ethertype() {
            EthernetProtocol::Arp => self.answer_arp(eth.payload()),
            EthernetProtocol::Ipv4 => {
                self.queues.rx.push_back(eth.payload().to_vec());
                self.poll(now);
            }
            EthernetProtocol::Ipv6 => {
                if !self.opts.http_protocol_ipv6_enabled {
                    return;
                }
                if !self.answer_ndp(eth.payload()) {
                    self.queues.rx.push_back(eth.payload().to_vec());
                    self.poll(now);
                }
            }
            _ => {}
        }
    }

    /// The next frame for the guest's receive queue, if any.
    pub fn transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.out.is_empty() && self.poll_at(now).is_some_and(|t| t <= now) {
            self.poll(now);
        }
        self.out.pop_front()
    }

    /// When the responder next needs [`Self::transmit`] called (its TCP
    /// timers, request deadlines); `Some(now)` if frames are waiting.
    pub fn poll_at(&self, now: Instant) -> Option<Instant> {
        if !self.out.is_empty() {
            return Some(now);
        }
        let deadlines = self.conns.iter().filter_map(|c| c.deadline);
        self.next_poll.into_iter().chain(deadlines).min()
    }

    fn net_now(&self, now: Instant) -> NetInstant {
        NetInstant::from_micros(now.saturating_duration_since(self.base).as_micros() as i64)
    }

    fn relisten_all(&mut self) {
        let hop = Some(self.opts.hop_limit());
        for c in &self.conns {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            s.set_hop_limit(hop);
            if !s.is_open() {
                let _ = s.listen(80);
            }
        }
    }

    /// Runs the TCP/IP stack and the HTTP connections, queues frames.
    fn poll(&mut self, now: Instant) {
        let ts = self.net_now(now);
        // Sockets closed (or aborted, their reset sent) by the last poll
        // listen again.
        self.relisten_all();
        self.iface.poll(ts, &mut self.queues, &mut self.sockets);
        for i in 0..self.conns.len() {
            self.service(i, now);
        }
        self.iface.poll(ts, &mut self.queues, &mut self.sockets);
        while let Some(pkt) = self.queues.tx.pop_front() {
            self.frame_ip(&pkt);
        }
        self.next_poll = self
            .iface
            .poll_at(ts, &self.sockets)
            .map(|t| self.base + Duration::from_micros(t.total_micros().max(0) as u64));
    }

    fn service(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        if !s.is_active() {
            c.inbuf.clear();
            c.outbuf.clear();
            c.deadline = None;
            c.closing = false;
            return;
        }
        if c.deadline.is_some_and(|d| d <= now) {
            s.abort();
            c.inbuf.clear();
            c.outbuf.clear();
            c.deadline = None;
            c.closing = false;
            return;
        }
        c.deadline.get_or_insert(now + REQUEST_TIMEOUT);
        while s.can_recv() && !c.closing && c.inbuf.len() <= crate::http::MAX_REQUEST {
            let mut chunk = [0u8; 2048];
            match s.recv_slice(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
            }
        }
        while !c.closing {
            match parse_request(&c.inbuf) {
                Ok(None) => break,
                Ok(Some((req, used))) => {
                    c.inbuf.drain(..used);
                    let resp = handle_http(&req, &self.md, &self.opts, &mut self.tokens, now);
                    c.outbuf
                        .extend(resp.to_bytes(req.method == "HEAD", req.keep_alive));
                    c.deadline = Some(now + REQUEST_TIMEOUT);
                    if !req.keep_alive {
                        c.closing = true;
                    }
                }
                Err(ParseError::TooLarge | ParseError::Malformed) => {
                    let resp = Response {
                        status: 400,
                        headers: vec![("Content-Type".to_owned(), "text/plain".to_owned())],
                        body: b"Bad Request".to_vec(),
                    };
                    c.outbuf.extend(resp.to_bytes(false, false));
                    c.inbuf.clear();
                    c.closing = true;
                }
            }
        }
        while !c.outbuf.is_empty() && s.can_send() {
            match s.send_slice(&c.outbuf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.outbuf.drain(..n);
                }
            }
        }
        // The guest closed its side and sent no complete request.
        let peer_done = s.state() == tcp::State::CloseWait && c.inbuf.is_empty();
        if c.outbuf.is_empty() && (c.closing || peer_done) {
            s.close();
        }
    }

    fn push_frame(&mut self, frame: Vec<u8>) {
        if self.out.len() < MAX_QUEUED {
            self.out.push_back(frame);
        }
    }

    /// Wraps an IP packet of the stack in Ethernet, to the guest.
    fn frame_ip(&mut self, pkt: &[u8]) {
        let Some(dst) = self.reply_mac else {
            return;
        };
        let ethertype = match pkt.first().map(|b| b >> 4) {
            Some(4) => EthernetProtocol::Ipv4,
            Some(6) => EthernetProtocol::Ipv6,
            _ => return,
        };
        let repr = EthernetRepr {
            src_addr: EthernetAddress(RESPONDER_MAC),
            dst_addr: EthernetAddress(dst),
            ethertype,
        };
        let mut buf = vec![0; repr.buffer_len() + pkt.len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(pkt);
        self.push_frame(buf);
    }

    fn answer_arp(&mut self, payload: &[u8]) {
        let Ok(pkt) = ArpPacket::new_checked(payload) else {
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&pkt)
        else {
            return;
        };
        if target_protocol_addr != METADATA_IPV4 {
            return;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(RESPONDER_MAC),
            source_protocol_addr: METADATA_IPV4,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(RESPONDER_MAC),
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        };
        let mut buf = vec![0; eth.buffer_len() + reply.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        self.push_frame(buf);
    }

    /// Answers a neighbour solicitation for the metadata address; false if
    /// `payload` is not one.
    fn answer_ndp(&mut self, payload: &[u8]) -> bool {
        let Ok(ip) = Ipv6Packet::new_checked(payload) else {
            return false;
        };
        if ip.next_header() != IpProtocol::Icmpv6 {
            return false;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
            return false;
        };
        let caps = ChecksumCapabilities::ignored();
        let Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr,
            lladdr,
        })) = Icmpv6Repr::parse(&src, &dst, &icmp, &caps)
        else {
            return false;
        };
        if target_addr != METADATA_IPV6 {
            return true; // intercepted yet not ours: drop
        }
        // Duplicate address detection (unspecified source) gets no answer.
        if src.is_unspecified() {
            return true;
        }
        let Some(dst_mac) = lladdr
            .and_then(|l| <[u8; 6]>::try_from(l.as_bytes()).ok())
            .or(self.reply_mac)
        else {
            return true;
        };
        let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
            target_addr: METADATA_IPV6,
            lladdr: Some(RawHardwareAddress::from_bytes(&RESPONDER_MAC)),
        });
        let ip_repr = Ipv6Repr {
            src_addr: METADATA_IPV6,
            dst_addr: src,
            next_header: IpProtocol::Icmpv6,
            payload_len: na.buffer_len(),
            hop_limit: 255,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(RESPONDER_MAC),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: EthernetProtocol::Ipv6,
        };
        let mut buf = vec![0; eth.buffer_len() + ip_repr.buffer_len() + na.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        let mut ip6 = Ipv6Packet::new_unchecked(frame.payload_mut());
        ip_repr.emit(&mut ip6);
        let mut icmp_out = Icmpv6Packet::new_unchecked(ip6.payload_mut());
        na.emit(
            &METADATA_IPV6,
            &src,
            &mut icmp_out,
            &ChecksumCapabilities::default(),
        );
        self.push_frame(buf);
        true
    }
}
