//! The instance metadata client: at boot the guest fetches an IMDSv2 token
//! (`PUT /latest/api/token`), then its instance id, user data and first
//! public key from 169.254.169.254, and prints them as `NUBIS-IMDS` lines;
//! `nubis.imds_bench=N` then times N token+GET pairs (`NUBIS-IMDS-BENCH`).
//!
//! The metadata address is made on-link with a link-local address
//! (169.254.0.2/16) so no gateway is needed: the VMM answers ARP for it.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};

use crate::console;
use crate::net::{now, Server};
use crate::sys;

const METADATA: Ipv4Address = Ipv4Address::new(169, 254, 169, 254);
const LINK_LOCAL: Ipv4Address = Ipv4Address::new(169, 254, 0, 2);
/// Largest response read (16 KiB user data plus headers, with room).
const MAX_RESPONSE: usize = 24 * 1024;
const TIMEOUT_MS: u64 = 2_000;

/// A response: status and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// Printable form of `b` for one console line (at most `max` characters).
fn printable(b: &[u8], max: usize) -> String {
    b.iter()
        .take(max)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Server {
    /// Makes 169.254.169.254 reachable without a gateway.
    fn imds_route(&mut self) {
        let present = self
            .iface
            .ip_addrs()
            .iter()
            .any(|a| a.address() == IpAddress::Ipv4(LINK_LOCAL));
        if !present {
            self.iface.update_ip_addrs(|addrs| {
                if addrs.push(IpCidr::new(LINK_LOCAL.into(), 16)).is_err() {
                    console!("NUBIS-ERROR no room for the link-local address");
                }
            });
        }
    }

    /// One request on a fresh connection; `None` on timeout or reset.
    fn imds_request(&mut self, request: &[u8], hz: u64) -> Option<Reply> {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; MAX_RESPONSE]),
            tcp::SocketBuffer::new(vec![0; 2048]),
        );
        let handle = self.sockets.add(socket);
        let port = self.local_port();
        let connected = self.sockets.get_mut::<tcp::Socket>(handle).connect(
            self.iface.context(),
            (IpAddress::Ipv4(METADATA), 80),
            port,
        );
        if connected.is_err() {
            self.sockets.remove(handle);
            return None;
        }
        let deadline = sys::rdtsc() + hz / 1000 * TIMEOUT_MS;
        let mut sent = false;
        let mut response = Vec::new();
        let mut done = false;
        while sys::rdtsc() < deadline {
            self.iface.poll(now(hz), &mut self.dev, &mut self.sockets);
            let s = self.sockets.get_mut::<tcp::Socket>(handle);
            if !sent && s.can_send() {
                sent = s
                    .send_slice(request)
                    .map(|n| n == request.len())
                    .unwrap_or(false);
            }
            while s.can_recv() && response.len() < MAX_RESPONSE {
                let _ = s.recv(|d| {
                    response.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            use tcp::State;
            match s.state() {
                State::CloseWait | State::TimeWait | State::Closing | State::LastAck if sent => {
                    done = true;
                    break;
                }
                State::Closed => break,
                _ => {}
            }
        }
        // The responder already closed its side: a reset ends ours at once.
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        self.iface.poll(now(hz), &mut self.dev, &mut self.sockets);
        self.sockets.remove(handle);
        if !done {
            return None;
        }
        let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = core::str::from_utf8(response.get(9..12)?)
            .ok()?
            .parse()
            .ok()?;
        Some(Reply {
            status,
            body: response[end + 4..].to_vec(),
        })
    }

    fn imds_token(&mut self, hz: u64) -> Option<Reply> {
        self.imds_request(
            b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nConnection: close\r\n\r\n",
            hz,
        )
    }

    fn imds_get(&mut self, path: &str, token: Option<&str>, hz: u64) -> Option<Reply> {
        let auth = token
            .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{auth}Connection: close\r\n\r\n"
        );
        self.imds_request(req.as_bytes(), hz)
    }

    /// Reads and prints the instance's metadata; keeps the user data for
    /// `GET /user-data`.
    pub fn imds_boot(&mut self, hz: u64) {
        self.imds_route();
        let token = match self.imds_token(hz) {
            None => {
                console!("NUBIS-IMDS unavailable");
                return;
            }
            Some(r) if r.status == 200 => Some(String::from_utf8_lossy(&r.body).into_owned()),
            Some(r) => {
                console!("NUBIS-IMDS token-status={}", r.status);
                None
            }
        };
        let token = token.as_deref();
        match self.imds_get("/latest/meta-data/instance-id", token, hz) {
            Some(r) if r.status == 200 => {
                console!("NUBIS-IMDS instance-id={}", printable(&r.body, 64))
            }
            Some(r) => console!("NUBIS-IMDS instance-id-status={}", r.status),
            None => console!("NUBIS-IMDS instance-id-status=timeout"),
        }
        match self.imds_get("/latest/user-data", token, hz) {
            Some(r) if r.status == 200 => {
                console!(
                    "NUBIS-IMDS user-data-bytes={} sha256={}",
                    r.body.len(),
                    hex(&Sha256::digest(&r.body))
                );
                let text = r.body.strip_suffix(b"\n").unwrap_or(&r.body);
                if text.len() <= 200 && text.iter().all(|c| (0x20..0x7f).contains(c) || *c == b'\n')
                {
                    console!("NUBIS-IMDS user-data={}", printable(text, 200));
                }
                self.user_data = Some(r.body);
            }
            Some(r) if r.status == 404 => console!("NUBIS-IMDS user-data-bytes=0"),
            Some(r) => console!("NUBIS-IMDS user-data-status={}", r.status),
            None => console!("NUBIS-IMDS user-data-status=timeout"),
        }
        match self.imds_get("/latest/meta-data/public-keys/0/openssh-key", token, hz) {
            Some(r) if r.status == 200 => {
                let key = r.body.strip_suffix(b"\n").unwrap_or(&r.body);
                console!("NUBIS-IMDS public-key={}", printable(key, 800));
            }
            Some(r) if r.status == 404 => console!("NUBIS-IMDS public-key=none"),
            Some(r) => console!("NUBIS-IMDS public-key-status={}", r.status),
            None => console!("NUBIS-IMDS public-key-status=timeout"),
        }
    }

    /// Times `n` (token PUT + instance-id GET) pairs; prints p50/p99/max.
    pub fn imds_bench(&mut self, n: u32, hz: u64) {
        self.imds_route();
        let per_us = (hz / 1_000_000).max(1);
        let mut samples = Vec::with_capacity(n as usize);
        let mut failed = 0u32;
        for _ in 0..n {
            let t0 = sys::rdtsc();
            let ok = match self.imds_token(hz) {
                Some(t) if t.status == 200 => {
                    let token = String::from_utf8_lossy(&t.body).into_owned();
                    matches!(
                        self.imds_get("/latest/meta-data/instance-id", Some(&token), hz),
                        Some(r) if r.status == 200
                    )
                }
                _ => false,
            };
            if ok {
                samples.push((sys::rdtsc() - t0) / per_us);
            } else {
                failed += 1;
            }
        }
        samples.sort_unstable();
        let pick = |q: usize| {
            samples
                .get((samples.len() * q / 100).min(samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        console!(
            "NUBIS-IMDS-BENCH n={} failed={failed} p50_us={} p99_us={} max_us={}",
            samples.len(),
            pick(50),
            pick(99),
            samples.last().copied().unwrap_or(0)
        );
    }
}
