//! The responder end to end at the frame level: a guest TCP/IP stack
//! (smoltcp, Ethernet) talks HTTP to a [`Responder`] through frames only.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nubis_imds::{HttpTokens, InstanceMetadata, MetadataOptions, PublicKey, Responder};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, HardwareAddress, IpCidr, Ipv4Packet, Ipv6Address,
};

const GUEST_MAC: [u8; 6] = [0x02, 0, 0x0a, 0, 0, 0x05];

#[derive(Default)]
struct Wire {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);
impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}
impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: NetInstant) -> Option<(Rx, Tx<'_>)> {
        let f = self.to_guest.pop_front()?;
        Some((Rx(f), Tx(&mut self.from_guest)))
    }
    fn transmit(&mut self, _: NetInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.from_guest))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

fn metadata(id: &str) -> InstanceMetadata {
    InstanceMetadata {
        instance_id: id.into(),
        account_id: "123456789012".into(),
        ami_id: "ami-0abcdef1234567890".into(),
        instance_type: "t3.nano".into(),
        hostname: "ip-10-0-0-5.nubis.internal".into(),
        local_ipv4: "10.0.0.5".into(),
        public_ipv4: None,
        mac: "02:00:0a:00:00:05".into(),
        availability_zone: "nubis-1a".into(),
        region: "nubis-1".into(),
        security_groups: vec!["default".into()],
        launch_time: "2026-12-06T05:00:00Z".into(),
        user_data: None,
        public_keys: vec![PublicKey {
            name: "k".into(),
            openssh: "ssh-ed25519 AAAA k".into(),
        }],
        architecture: "x86_64".into(),
        tags: vec![],
        extra_interfaces: vec![],
    }
}

/// A guest with 169.254.7.7/16 (so the metadata address is on-link and it
/// ARPs for it) and fd00:ec2::5/64.
struct Guest {
    wire: Wire,
    iface: Interface,
    sockets: SocketSet<'static>,
    base: Instant,
    /// Every frame the responder sent.
    seen: Vec<Vec<u8>>,
    /// Frames the responder did not intercept.
    passed: Vec<Vec<u8>>,
    /// Simulated time (only moves forward).
    clock: Instant,
    next_port: u16,
}

impl Guest {
    fn new() -> Self {
        let mut wire = Wire::default();
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        cfg.random_seed = 7;
        let mut iface = Interface::new(cfg, &mut wire, NetInstant::from_micros(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(
                std::net::Ipv4Addr::new(169, 254, 7, 7).into(),
                16,
            ))
            .expect("room");
            a.push(IpCidr::new(
                Ipv6Address::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 5).into(),
                64,
            ))
            .expect("room");
        });
        Self {
            wire,
            iface,
            sockets: SocketSet::new(vec![]),
            base: Instant::now(),
            seen: vec![],
            passed: vec![],
            clock: Instant::now(),
            next_port: 40000,
        }
    }

    /// Moves frames both ways until `done` or `limit` of (simulated) time.
    fn run(
        &mut self,
        r: &mut Responder,
        start: Instant,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let mut now = start;
        while now < start + limit {
            let ts = NetInstant::from_micros((now - self.base).as_micros() as i64);
            self.iface.poll(ts, &mut self.wire, &mut self.sockets);
            while let Some(f) = self.wire.from_guest.pop_front() {
                if r.intercepts(&f) {
                    r.receive(&f, now);
                } else {
                    self.passed.push(f);
                }
            }
            while let Some(f) = r.transmit(now) {
                self.seen.push(f.clone());
                self.wire.to_guest.push_back(f);
            }
            if done(self) {
                break;
            }
            now += Duration::from_millis(5);
        }
        self.clock = self.clock.max(now);
    }

    /// One HTTP exchange on a fresh connection; the raw response.
    fn http(
        &mut self,
        r: &mut Responder,
        dst: smoltcp::wire::IpAddress,
        req: &str,
    ) -> Option<Vec<u8>> {
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        );
        let h = self.sockets.add(sock);
        self.next_port += 1;
        let port = self.next_port;
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(self.iface.context(), (dst, 80), port)
            .expect("connect");
        let mut sent = false;
        let mut resp = Vec::new();
        let req = req.as_bytes().to_vec();
        self.run(r, self.clock, Duration::from_secs(5), |g| {
            let s = g.sockets.get_mut::<tcp::Socket>(h);
            if s.may_send() && !sent {
                s.send_slice(&req).expect("send");
                sent = true;
            }
            while s.can_recv() {
                let mut b = [0u8; 4096];
                let n = s.recv_slice(&mut b).expect("recv");
                resp.extend_from_slice(&b[..n]);
            }
            if sent && !s.may_recv() {
                s.close();
                return true;
            }
            false
        });
        self.sockets.remove(h);
        (!resp.is_empty()).then_some(resp)
    }
}

fn body(resp: &[u8]) -> (&str, &[u8]) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let status = std::str::from_utf8(&resp[9..12]).expect("status");
    (status, &resp[end..])
}

const V4: smoltcp::wire::IpAddress =
    smoltcp::wire::IpAddress::Ipv4(std::net::Ipv4Addr::new(169, 254, 169, 254));

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n{extra}\r\n")
}

#[test]
fn guest_reads_its_own_metadata_over_tcp_with_a_token() {
    let opts = MetadataOptions {
        http_tokens: HttpTokens::Required,
        http_put_response_hop_limit: 3,
        ..Default::default()
    };
    let mut r = Responder::new(metadata("i-0aaaaaaaaaaaaaaaa"), opts, Some(GUEST_MAC));
    let mut g = Guest::new();
    let put = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n";
    let resp = g.http(&mut r, V4, put).expect("token answer");
    let (status, token) = body(&resp);
    assert_eq!(status, "200");
    let token = String::from_utf8(token.to_vec()).expect("token");
    let resp = g
        .http(
            &mut r,
            V4,
            &get(
                "/latest/meta-data/instance-id",
                &format!("X-aws-ec2-metadata-token: {token}\r\n"),
            ),
        )
        .expect("answer");
    assert_eq!(body(&resp), ("200", &b"i-0aaaaaaaaaaaaaaaa"[..]));
    let resp = g
        .http(&mut r, V4, &get("/latest/meta-data/instance-id", ""))
        .expect("answer");
    assert_eq!(body(&resp).0, "401");
    // Every IPv4 packet of the responder carries the hop limit as TTL; its
    // ARP reply came first, from its own MAC.
    let ipv4: Vec<_> = g.seen.iter().filter(|f| f[12..14] == [8, 0]).collect();
    assert!(!ipv4.is_empty());
    for f in ipv4 {
        let frame = EthernetFrame::new_checked(&f[..]).expect("frame");
        assert_eq!(frame.dst_addr().0, GUEST_MAC);
        assert_eq!(
            Ipv4Packet::new_checked(frame.payload())
                .expect("ip")
                .hop_limit(),
            3
        );
    }
    assert!(g.seen.iter().any(|f| f[12..14] == [8, 6]), "ARP answered");
    assert!(
        g.passed.is_empty(),
        "nothing for the metadata address reached the host"
    );
}

#[test]
fn large_user_data_round_trips_and_keepalive_pipelining_works() {
    let mut md = metadata("i-0bbbbbbbbbbbbbbbb");
    let data: Vec<u8> = (0..16 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    md.user_data = Some(data.clone());
    let mut r = Responder::new(md, MetadataOptions::default(), None);
    let mut g = Guest::new();
    let resp = g
        .http(&mut r, V4, &get("/latest/user-data", ""))
        .expect("answer");
    let (status, got) = body(&resp);
    assert_eq!(status, "200");
    assert_eq!(got, &data[..]);
    let two = "GET /latest/meta-data/instance-type HTTP/1.1\r\n\r\nGET /latest/meta-data/local-ipv4 HTTP/1.1\r\nConnection: close\r\n\r\n";
    let resp = String::from_utf8(g.http(&mut r, V4, two).expect("answer")).expect("text");
    assert!(
        resp.contains("\r\n\r\nt3.nano") && resp.ends_with("10.0.0.5"),
        "{resp}"
    );
}

#[test]
fn oversized_request_gets_400() {
    let mut r = Responder::new(metadata("i-0c"), MetadataOptions::default(), None);
    let mut g = Guest::new();
    let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20 * 1024));
    let resp = g.http(&mut r, V4, &big).expect("answer");
    assert_eq!(body(&resp).0, "400");
}

#[test]
fn disabled_endpoint_swallows_frames_and_answers_nothing() {
    let opts = MetadataOptions {
        http_endpoint_enabled: false,
        ..Default::default()
    };
    let mut r = Responder::new(metadata("i-0d"), opts, None);
    let mut g = Guest::new();
    assert!(g
        .http(&mut r, V4, &get("/latest/meta-data/instance-id", ""))
        .is_none());
    assert!(g.seen.is_empty(), "not even an ARP reply");
    assert!(g.passed.is_empty(), "and nothing reached the host");
    // Enabling it at run time (ModifyInstanceMetadataOptions) takes effect.
    r.update(metadata("i-0d"), MetadataOptions::default());
    let resp = g
        .http(&mut r, V4, &get("/latest/meta-data/instance-id", ""))
        .expect("answer");
    assert_eq!(body(&resp), ("200", &b"i-0d"[..]));
}

#[test]
fn frames_from_another_mac_get_no_answer_and_other_traffic_is_not_intercepted() {
    let mut r = Responder::new(
        metadata("i-0e"),
        MetadataOptions::default(),
        Some([2, 0, 0, 0, 0, 9]),
    );
    let mut g = Guest::new();
    assert!(g.http(&mut r, V4, &get("/", "")).is_none());
    assert!(g.seen.is_empty());
    let r2 = Responder::new(metadata("i-0e"), MetadataOptions::default(), None);
    let mut g2 = Guest::new();
    // TCP to another address leaves the guest for the host (ARP for it).
    let mut r3 = Responder::new(metadata("i-0e"), MetadataOptions::default(), None);
    assert!(g2
        .http(
            &mut r3,
            std::net::Ipv4Addr::new(169, 254, 1, 1).into(),
            &get("/", "")
        )
        .is_none());
    assert!(!g2.passed.is_empty());
    assert!(g2.passed.iter().all(|f| !r2.intercepts(f)));
    assert!(!r2.intercepts(&[0u8; 10]), "runt frame");
}

#[test]
fn ipv6_is_served_only_when_enabled() {
    let v6 = Ipv6Address::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    let mut r = Responder::new(metadata("i-0f"), MetadataOptions::default(), None);
    let mut g = Guest::new();
    assert!(g
        .http(&mut r, v6.into(), &get("/latest/meta-data/instance-id", ""))
        .is_none());
    assert!(g.passed.is_empty(), "swallowed, not sent to the host");
    let opts = MetadataOptions {
        http_protocol_ipv6_enabled: true,
        http_put_response_hop_limit: 2,
        ..Default::default()
    };
    r.update(metadata("i-0f"), opts);
    let resp = g
        .http(&mut r, v6.into(), &get("/latest/meta-data/instance-id", ""))
        .expect("answer");
    assert_eq!(body(&resp), ("200", &b"i-0f"[..]));
}

#[test]
fn slow_request_times_out() {
    let mut r = Responder::new(metadata("i-10"), MetadataOptions::default(), None);
    let mut g = Guest::new();
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    let h = g.sockets.add(sock);
    g.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(g.iface.context(), (V4, 80), 41000)
        .expect("connect");
    let start = g.clock;
    let mut sent = false;
    g.run(&mut r, start, Duration::from_secs(3), |g| {
        let s = g.sockets.get_mut::<tcp::Socket>(h);
        if s.may_send() && !sent {
            s.send_slice(b"GET / HTTP/1.1\r\n").expect("send");
            sent = true;
        }
        false
    });
    assert!(sent);
    assert!(
        r.poll_at(start + Duration::from_secs(3)).is_some(),
        "a deadline is pending"
    );
    g.run(
        &mut r,
        start + Duration::from_secs(3),
        Duration::from_secs(9),
        |g| !g.sockets.get_mut::<tcp::Socket>(h).is_open(),
    );
    assert!(
        !g.sockets.get_mut::<tcp::Socket>(h).is_open(),
        "responder reset the connection"
    );
}
