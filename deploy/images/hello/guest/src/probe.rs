//! The probe and stream test modes, configured through user data: parsing
//! and validation of the `nubis-probe` and `nubis-stream` lines, and the
//! names the console lines use.
//!
//! `nubis-probe <a.b.c.d> <check>[,<check>...] [every=<ms>]` makes the guest
//! originate traffic to another address every round (ICMP echo, a TCP
//! connect, an HTTP `GET /` that must answer `NUBIS-HELLO <id>`);
//! `nubis-stream <a.b.c.d>[:<port>]` opens one connection to another hello
//! guest's `GET /stream` and watches it; `nubis-bulk <a.b.c.d>[:<port>]
//! bytes=<n>` fetches `GET /bulk?bytes=<n>` once and times it (throughput).
//! Other user-data lines are ignored.
//! A bad line never aborts: it becomes a [`Problem`] (printed as a
//! `NUBIS-ERROR` line) and is ignored.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::cmdline::{parse_ipv4, Ipv4Cidr};

/// Most `nubis-probe` lines (targets) used.
pub const MAX_TARGETS: usize = 8;
/// Most checks on one `nubis-probe` line.
pub const MAX_CHECKS: usize = 8;
/// Round interval without `every=`, in milliseconds.
pub const DEFAULT_EVERY_MS: u32 = 500;
/// Smallest and largest `every=`, in milliseconds.
pub const MIN_EVERY_MS: u32 = 100;
pub const MAX_EVERY_MS: u32 = 60_000;
/// Port of `nubis-stream` without `:<port>`.
pub const DEFAULT_STREAM_PORT: u16 = 80;
/// Largest `bytes=` of a `nubis-bulk` line (1 GiB).
pub const MAX_BULK_BYTES: u64 = 1 << 30;
/// Longest sanitised text of a bad line in a problem.
const MAX_SHOWN: usize = 64;

/// One check of a probe target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// ICMP echo request, expecting the reply.
    Icmp,
    /// TCP connect to the port (the connection is reset once established).
    Tcp(u16),
    /// TCP connect, `GET /`, expecting `200` and a `NUBIS-HELLO <id>` body.
    Http(u16),
}

impl fmt::Display for Check {
    /// `icmp`, `tcp:<port>`, `http:<port>`: the `check=` of console lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Icmp => f.write_str("icmp"),
            Check::Tcp(p) => write!(f, "tcp:{p}"),
            Check::Http(p) => write!(f, "http:{p}"),
        }
    }
}

/// A `nubis-probe` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub dst: [u8; 4],
    /// In the order given, without duplicates.
    pub checks: Vec<Check>,
    pub every_ms: u32,
}

/// The `nubis-stream` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub dst: [u8; 4],
    pub port: u16,
}

/// The `nubis-bulk` line: fetch `GET /bulk?bytes=<bytes>` from `dst:port` once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bulk {
    pub dst: [u8; 4],
    pub port: u16,
    pub bytes: u64,
}

/// Why a line was ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `nubis-probe`, `nubis-stream` or `nubis-bulk`.
    pub keyword: &'static str,
    /// The rest of the line, sanitised (printable ASCII, `?` otherwise) and cut.
    pub shown: String,
    pub expected: &'static str,
}

impl fmt::Display for Problem {
    /// `bad nubis-probe 10.0.0.300 icmp (expected a.b.c.d ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad {} {} (expected {})",
            self.keyword, self.shown, self.expected
        )
    }
}

/// Everything the guest takes from the probe and stream lines of its user data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub stream: Option<Stream>,
    pub bulk: Option<Bulk>,
    pub problems: Vec<Problem>,
}

impl Plan {
    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.stream.is_none() && self.bulk.is_none()
    }
}

const PROBE_SYNTAX: &str = "nubis-probe <a.b.c.d> <check>[,<check>...] [every=<ms>]";
const STREAM_SYNTAX: &str = "nubis-stream <a.b.c.d>[:<port>]";
const BULK_SYNTAX: &str = "nubis-bulk <a.b.c.d>[:<port>] bytes=<n>";

/// Reads the probe and stream lines of `user_data` (any bytes; lines end at
/// `\n`, an optional `\r` before it and surrounding blanks are dropped).
pub fn parse(user_data: &[u8]) -> Plan {
    let mut plan = Plan::default();
    for line in user_data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let keyword = match words.next() {
            Some(b"nubis-probe") => "nubis-probe",
            Some(b"nubis-stream") => "nubis-stream",
            Some(b"nubis-bulk") => "nubis-bulk",
            _ => continue,
        };
        let rest = trim(&line[keyword_end(line, keyword)..]);
        let problem = |expected| Problem {
            keyword,
            shown: sanitise(rest),
            expected,
        };
        let Ok(rest_str) = core::str::from_utf8(rest) else {
            plan.problems.push(problem("printable ASCII"));
            continue;
        };
        if keyword == "nubis-probe" {
            match parse_probe(rest_str) {
                Ok(_) if plan.targets.len() == MAX_TARGETS => {
                    plan.problems.push(problem("at most 8 nubis-probe lines"))
                }
                Ok(target) => plan.targets.push(target),
                Err(expected) => plan.problems.push(problem(expected)),
            }
        } else if keyword == "nubis-bulk" {
            match parse_bulk(rest_str) {
                Ok(_) if plan.bulk.is_some() => {
                    plan.problems.push(problem("at most one nubis-bulk line"))
                }
                Ok(bulk) => plan.bulk = Some(bulk),
                Err(expected) => plan.problems.push(problem(expected)),
            }
        } else {
            match parse_stream(rest_str) {
                Ok(_) if plan.stream.is_some() => {
                    plan.problems.push(problem("at most one nubis-stream line"))
                }
                Ok(stream) => plan.stream = Some(stream),
                Err(expected) => plan.problems.push(problem(expected)),
            }
        }
    }
    plan
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Index just after the keyword (the first word of `line`).
fn keyword_end(line: &[u8], keyword: &str) -> usize {
    let start = line
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(0);
    start + keyword.len()
}

/// Printable ASCII (others as `?`), cut at [`MAX_SHOWN`] characters.
fn sanitise(b: &[u8]) -> String {
    let mut s: String = b
        .iter()
        .take(MAX_SHOWN)
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    if b.len() > MAX_SHOWN {
        s.push_str("...");
    }
    s
}

/// A destination a probe may aim at: not 0.x, loopback, multicast or
/// broadcast.
fn parse_dst(s: &str) -> Option<[u8; 4]> {
    let a = parse_ipv4(s)?;
    (a[0] != 0 && a[0] != 127 && a[0] < 224).then_some(a)
}

/// A port 1-65535, decimal without sign or leading zeros beyond one digit.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

fn parse_check(s: &str) -> Option<Check> {
    if s == "icmp" {
        return Some(Check::Icmp);
    }
    let (kind, port) = s.split_once(':')?;
    let port = parse_port(port)?;
    match kind {
        "tcp" => Some(Check::Tcp(port)),
        "http" => Some(Check::Http(port)),
        _ => None,
    }
}

fn parse_probe(rest: &str) -> Result<Target, &'static str> {
    let mut words = rest.split_ascii_whitespace();
    let (Some(dst), Some(checks)) = (words.next(), words.next()) else {
        return Err(PROBE_SYNTAX);
    };
    let dst = parse_dst(dst).ok_or("a unicast a.b.c.d (not 0.x, 127.x, 224.x and above)")?;
    let mut list = Vec::new();
    for c in checks.split(',') {
        let check = parse_check(c).ok_or("checks icmp, tcp:<port>, http:<port> (port 1-65535)")?;
        if !list.contains(&check) {
            list.push(check);
        }
    }
    if list.len() > MAX_CHECKS {
        return Err("at most 8 checks on a line");
    }
    let mut every_ms = DEFAULT_EVERY_MS;
    if let Some(w) = words.next() {
        let ms = w
            .strip_prefix("every=")
            .filter(|v| !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|ms| (MIN_EVERY_MS..=MAX_EVERY_MS).contains(ms))
            .ok_or("every=<ms> with ms 100-60000")?;
        every_ms = ms;
    }
    if words.next().is_some() {
        return Err(PROBE_SYNTAX);
    }
    Ok(Target {
        dst,
        checks: list,
        every_ms,
    })
}

fn parse_stream(rest: &str) -> Result<Stream, &'static str> {
    let mut words = rest.split_ascii_whitespace();
    let (Some(target), None) = (words.next(), words.next()) else {
        return Err(STREAM_SYNTAX);
    };
    let (dst, port) = parse_endpoint(target)?;
    Ok(Stream { dst, port })
}

/// `<a.b.c.d>[:<port>]` (port 80 without one).
fn parse_endpoint(target: &str) -> Result<([u8; 4], u16), &'static str> {
    let (addr, port) = match target.split_once(':') {
        Some((addr, port)) => (addr, parse_port(port).ok_or("a port 1-65535")?),
        None => (target, DEFAULT_STREAM_PORT),
    };
    let dst = parse_dst(addr).ok_or("a unicast a.b.c.d (not 0.x, 127.x, 224.x and above)")?;
    Ok((dst, port))
}

fn parse_bulk(rest: &str) -> Result<Bulk, &'static str> {
    let mut words = rest.split_ascii_whitespace();
    let (Some(target), Some(bytes), None) = (words.next(), words.next(), words.next()) else {
        return Err(BULK_SYNTAX);
    };
    let (dst, port) = parse_endpoint(target)?;
    let bytes = bytes
        .strip_prefix("bytes=")
        .and_then(parse_bulk_bytes)
        .ok_or("bytes=<n> with n 1-1073741824")?;
    Ok(Bulk { dst, port, bytes })
}

/// A byte count 1..=[`MAX_BULK_BYTES`], decimal digits only (also the
/// `bytes=` of `GET /bulk`).
pub fn parse_bulk_bytes(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (1..=MAX_BULK_BYTES).contains(n))
}

/// The neighbour a packet to `dst` goes to: `dst` itself in the own subnet,
/// else the gateway (`None` without one).
pub fn next_hop(own: Ipv4Cidr, gw: Option<[u8; 4]>, dst: [u8; 4]) -> Option<[u8; 4]> {
    if own.contains(dst) {
        Some(dst)
    } else {
        gw
    }
}

/// How a probe attempt ended: the `result=` of `NUBIS-PROBE` lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Echo reply / connection established / `NUBIS-HELLO` answer.
    Ok,
    /// Nothing within the attempt's time.
    Timeout,
    /// The SYN was answered with a reset.
    Refused,
    /// An established connection was reset before the answer was complete.
    Reset,
    /// HTTP: an answer that is not `200` with a `NUBIS-HELLO <id>` body.
    BadResponse,
    /// TCP: the connection could not even start (no route to the address).
    NoRoute,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::BadResponse => "bad-response",
            Outcome::NoRoute => "no-route",
        })
    }
}

/// How the `nubis-bulk` fetch ended: the `result=` of the `NUBIS-BULK` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Status 200 and exactly the `Content-Length` asked for arrived.
    Ok,
    /// The server closed before the whole body arrived.
    Short,
    /// An answer that is not `200` with `Content-Length: <bytes>`.
    BadResponse,
    /// The established connection was reset.
    Reset,
    /// The SYN was answered with a reset.
    Refused,
    /// Not established within [`STREAM_CONNECT_MS`], or no byte for
    /// [`BULK_IDLE_MS`].
    Timeout,
}

/// A bulk fetch with no byte for this long ends as `timeout`.
pub const BULK_IDLE_MS: u64 = 10_000;

impl fmt::Display for BulkOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BulkOutcome::Ok => "ok",
            BulkOutcome::Short => "short",
            BulkOutcome::BadResponse => "bad-response",
            BulkOutcome::Reset => "reset",
            BulkOutcome::Refused => "refused",
            BulkOutcome::Timeout => "timeout",
        })
    }
}

/// State of the `nubis-stream` connection: the `state=` of `NUBIS-STREAM`
/// lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Not yet established, or established less than a second ago without
    /// a byte yet.
    Connecting,
    /// Established; a byte arrived less than a second ago.
    Flowing,
    /// Established; no byte for a second or more.
    Stalled,
    /// The peer closed (FIN). Final.
    Closed,
    /// The established connection was reset. Final.
    Reset,
    /// The SYN was answered with a reset. Final.
    Refused,
    /// Not established within [`STREAM_CONNECT_MS`]. Final.
    Timeout,
}

/// How long the stream connection may take to be established.
pub const STREAM_CONNECT_MS: u64 = 10_000;
/// No byte for this long makes a flowing stream `stalled`.
pub const STALL_MS: u64 = 1_000;

impl StreamState {
    /// A final state: the connection is over and never opened again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StreamState::Closed | StreamState::Reset | StreamState::Refused | StreamState::Timeout
        )
    }

    /// The state of an established stream whose last byte arrived
    /// `since_byte_ms` ago (`None`: no byte yet, established
    /// `since_established_ms` ago).
    pub fn established(since_byte_ms: Option<u64>, since_established_ms: u64) -> StreamState {
        match since_byte_ms {
            None if since_established_ms < STALL_MS => StreamState::Connecting,
            Some(ms) if ms < STALL_MS => StreamState::Flowing,
            _ => StreamState::Stalled,
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamState::Connecting => "connecting",
            StreamState::Flowing => "flowing",
            StreamState::Stalled => "stalled",
            StreamState::Closed => "closed",
            StreamState::Reset => "reset",
            StreamState::Refused => "refused",
            StreamState::Timeout => "timeout",
        })
    }
}

/// Dotted-quad text of an address.
pub fn dotted(a: [u8; 4]) -> String {
    alloc::format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn probe_and_stream_lines() {
        let p = parse(
            b"#!/bin/sh\necho hi\nnubis-probe 10.0.1.5 icmp,tcp:80,http:8080 every=250\r\n  \
              nubis-probe 192.168.9.1 tcp:22\nnubis-stream 10.0.1.5\n",
        );
        assert_eq!(p.problems, vec![]);
        assert_eq!(
            p.targets,
            vec![
                Target {
                    dst: [10, 0, 1, 5],
                    checks: vec![Check::Icmp, Check::Tcp(80), Check::Http(8080)],
                    every_ms: 250,
                },
                Target {
                    dst: [192, 168, 9, 1],
                    checks: vec![Check::Tcp(22)],
                    every_ms: DEFAULT_EVERY_MS,
                },
            ]
        );
        assert_eq!(
            p.stream,
            Some(Stream {
                dst: [10, 0, 1, 5],
                port: 80
            })
        );
        assert_eq!(
            parse(b"nubis-stream 10.0.0.2:8081").stream,
            Some(Stream {
                dst: [10, 0, 0, 2],
                port: 8081
            })
        );
        let dup = parse(b"nubis-probe 10.0.0.2 icmp,icmp,tcp:1,tcp:1 every=100");
        assert_eq!(dup.targets[0].checks, vec![Check::Icmp, Check::Tcp(1)]);
        assert_eq!(dup.targets[0].every_ms, 100);
        assert_eq!(
            parse(b"nubis-probe 10.0.0.2 icmp every=60000").targets[0].every_ms,
            60_000
        );
    }

    #[test]
    fn bulk_lines() {
        let p = parse(b"echo x\nnubis-bulk 10.0.1.5 bytes=1000000\r\n");
        assert_eq!(p.problems, vec![]);
        assert!(!p.is_empty());
        assert_eq!(
            p.bulk,
            Some(Bulk {
                dst: [10, 0, 1, 5],
                port: 80,
                bytes: 1_000_000
            })
        );
        assert_eq!(
            parse(b"nubis-bulk 10.0.0.2:8080 bytes=1073741824").bulk,
            Some(Bulk {
                dst: [10, 0, 0, 2],
                port: 8080,
                bytes: MAX_BULK_BYTES
            })
        );
        for bad in [
            &b"nubis-bulk"[..],
            b"nubis-bulk 10.0.0.2",
            b"nubis-bulk 10.0.0.2 bytes=",
            b"nubis-bulk 10.0.0.2 bytes=0",
            b"nubis-bulk 10.0.0.2 bytes=-1",
            b"nubis-bulk 10.0.0.2 bytes=1073741825",
            b"nubis-bulk 10.0.0.2 bytes=99999999999999999999",
            b"nubis-bulk 10.0.0.2 bytes=1k",
            b"nubis-bulk 10.0.0.2 size=10",
            b"nubis-bulk 10.0.0.2 bytes=10 extra",
            b"nubis-bulk 10.0.0.2:0 bytes=10",
            b"nubis-bulk 127.0.0.1 bytes=10",
        ] {
            let p = parse(bad);
            assert!(p.is_empty(), "{bad:?}");
            assert_eq!(p.problems.len(), 1, "{bad:?}");
            assert!(p.problems[0].to_string().starts_with("bad nubis-bulk"));
        }
        let two = parse(b"nubis-bulk 10.0.0.2 bytes=1\nnubis-bulk 10.0.0.3 bytes=2\n");
        assert_eq!(two.bulk.map(|b| b.dst), Some([10, 0, 0, 2]));
        assert_eq!(
            two.problems[0].to_string(),
            "bad nubis-bulk 10.0.0.3 bytes=2 (expected at most one nubis-bulk line)"
        );
        assert_eq!(BulkOutcome::Short.to_string(), "short");
        assert_eq!(BulkOutcome::BadResponse.to_string(), "bad-response");
    }

    #[test]
    fn other_lines_and_nothing() {
        for data in [
            &b""[..],
            b"\n\n",
            b"nubis-probes 10.0.0.2 icmp",
            b"# nubis-probe 10.0.0.2 icmp",
            b"\xff\xfe\x00",
            b"hello=world",
        ] {
            let p = parse(data);
            assert!(p.is_empty() && p.problems.is_empty(), "{data:?}");
        }
    }

    #[test]
    fn bad_lines_become_problems() {
        let bad: &[&[u8]] = &[
            b"nubis-probe",
            b"nubis-probe 10.0.0.2",
            b"nubis-probe 10.0.0.256 icmp",
            b"nubis-probe 0.0.0.0 icmp",
            b"nubis-probe 127.0.0.1 icmp",
            b"nubis-probe 224.0.0.1 icmp",
            b"nubis-probe 255.255.255.255 icmp",
            b"nubis-probe 10.0.0.2 udp:53",
            b"nubis-probe 10.0.0.2 tcp:0",
            b"nubis-probe 10.0.0.2 tcp:65536",
            b"nubis-probe 10.0.0.2 tcp:+80",
            b"nubis-probe 10.0.0.2 tcp:",
            b"nubis-probe 10.0.0.2 icmp,",
            b"nubis-probe 10.0.0.2 http",
            b"nubis-probe 10.0.0.2 icmp every=99",
            b"nubis-probe 10.0.0.2 icmp every=60001",
            b"nubis-probe 10.0.0.2 icmp every=",
            b"nubis-probe 10.0.0.2 icmp every=-5",
            b"nubis-probe 10.0.0.2 icmp every=99999999999999999999",
            b"nubis-probe 10.0.0.2 icmp every=100 extra",
            b"nubis-probe 10.0.0.2 icmp extra",
            b"nubis-probe 10.0.0.2 tcp:1,tcp:2,tcp:3,tcp:4,tcp:5,tcp:6,tcp:7,tcp:8,tcp:9",
            b"nubis-probe 10.0.0.2 \xff\xfe",
            b"nubis-stream",
            b"nubis-stream 10.0.0.2:0",
            b"nubis-stream 10.0.0.2:x",
            b"nubis-stream 10.0.0.2:80 extra",
            b"nubis-stream 10.0.0",
        ];
        for line in bad {
            let p = parse(line);
            assert!(p.is_empty(), "{line:?}");
            assert_eq!(p.problems.len(), 1, "{line:?}");
        }
        // A bad line does not hide the good ones around it.
        let p = parse(b"nubis-probe 10.0.0.2 icmp\nnubis-probe junk\nnubis-stream 10.0.0.3\n");
        assert_eq!(
            (p.targets.len(), p.stream.is_some(), p.problems.len()),
            (1, true, 1)
        );
    }

    #[test]
    fn limits() {
        let mut data = Vec::new();
        for i in 1..=10 {
            data.extend_from_slice(alloc::format!("nubis-probe 10.0.0.{i} icmp\n").as_bytes());
        }
        data.extend_from_slice(b"nubis-stream 10.0.0.1\nnubis-stream 10.0.0.2\n");
        let p = parse(&data);
        assert_eq!(p.targets.len(), MAX_TARGETS);
        assert_eq!(p.targets[7].dst, [10, 0, 0, 8]);
        assert_eq!(p.stream.map(|s| s.dst), Some([10, 0, 0, 1]));
        let text: Vec<String> = p.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "bad nubis-probe 10.0.0.9 icmp (expected at most 8 nubis-probe lines)",
                "bad nubis-probe 10.0.0.10 icmp (expected at most 8 nubis-probe lines)",
                "bad nubis-stream 10.0.0.2 (expected at most one nubis-stream line)",
            ]
        );
    }

    #[test]
    fn problem_display_sanitises() {
        let p = parse(b"nubis-probe 10.0.0.2 \x1b[31m\xffred");
        assert_eq!(
            p.problems[0].to_string(),
            "bad nubis-probe 10.0.0.2 ?[31m?red (expected printable ASCII)"
        );
        let long = [b'a'; 300];
        let mut line = b"nubis-stream ".to_vec();
        line.extend_from_slice(&long);
        let shown = parse(&line).problems[0].to_string();
        assert!(shown.starts_with("bad nubis-stream aaaa"));
        assert!(shown.contains("a... (expected"));
        assert!(shown.len() < 17 + 67 + 70, "{shown}");
    }

    #[test]
    fn next_hops() {
        let own = Ipv4Cidr {
            addr: [10, 0, 1, 5],
            prefix: 24,
        };
        let gw = Some([10, 0, 1, 1]);
        assert_eq!(next_hop(own, gw, [10, 0, 1, 9]), Some([10, 0, 1, 9]));
        assert_eq!(next_hop(own, gw, [10, 0, 2, 9]), gw);
        assert_eq!(next_hop(own, None, [192, 168, 0, 1]), None);
    }

    #[test]
    fn names() {
        assert_eq!(Check::Icmp.to_string(), "icmp");
        assert_eq!(Check::Tcp(81).to_string(), "tcp:81");
        assert_eq!(Check::Http(80).to_string(), "http:80");
        assert_eq!(Outcome::BadResponse.to_string(), "bad-response");
        assert_eq!(Outcome::Refused.to_string(), "refused");
        assert_eq!(StreamState::Stalled.to_string(), "stalled");
        assert_eq!(dotted([10, 0, 0, 2]), "10.0.0.2");
    }

    #[test]
    fn stream_states() {
        assert_eq!(StreamState::established(None, 10), StreamState::Connecting);
        assert_eq!(StreamState::established(None, 1_000), StreamState::Stalled);
        assert_eq!(
            StreamState::established(Some(999), 60_000),
            StreamState::Flowing
        );
        assert_eq!(
            StreamState::established(Some(1_000), 60_000),
            StreamState::Stalled
        );
        assert!(StreamState::Reset.is_final() && StreamState::Closed.is_final());
        assert!(!StreamState::Stalled.is_final() && !StreamState::Connecting.is_final());
    }
}
