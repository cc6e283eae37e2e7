//! Packet helpers of the VPC data-plane tests: TCP echo and reachability,
//! one-stream throughput, UDP arrival and raw ARP requests, each run on a
//! thread inside a network namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::in_netns;

/// A TCP echo server in `ns` until `for_` has passed.
pub fn echo(ns: &str, addr: SocketAddr, for_: Duration) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        ready_tx.send(()).expect("ready");
        l.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + for_;
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, _)) => {
                    std::thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let mut b = [0u8; 64];
                        while let Ok(n) = s.read(&mut b) {
                            if n == 0 || s.write_all(&b[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("echo up");
}

pub fn tcp_ok(ns: &str, to: SocketAddr) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(800)).is_ok()
    })
    .join()
    .expect("client")
}

/// Bytes per second of one TCP stream from `from_ns` to a sink at `to` in
/// `to_ns`, sending for about a second.
pub fn throughput(from_ns: &str, to_ns: &str, to: SocketAddr) -> f64 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = in_netns(to_ns, move || {
        let l = TcpListener::bind(to).expect("bind sink");
        ready_tx.send(()).expect("ready");
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sink up");
    let started = Instant::now();
    in_netns(from_ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
        let buf = vec![7u8; 1 << 16];
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            s.write_all(&buf).expect("send");
        }
    })
    .join()
    .expect("sender");
    let bytes = sink.join().expect("sink");
    bytes as f64 / started.elapsed().as_secs_f64()
}

/// True when a datagram sent from `from_ns` to `to` (a socket in `to_ns`)
/// arrives.
pub fn udp_arrives(from_ns: &str, to_ns: &str, to: SocketAddr) -> bool {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx = in_netns(to_ns, move || {
        let s = UdpSocket::bind(to).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok();
        ready_tx.send(()).ok();
        let mut buf = [0u8; 16];
        s.recv_from(&mut buf).is_ok()
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("udp up");
    in_netns(from_ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
        for _ in 0..5 {
            let _ = s.send_to(b"hello", to);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .expect("sender");
    rx.join().expect("receiver")
}

/// Sends, from `eth0` in `ns` (MAC `mac`), an ARP request for `target`
/// claiming `sender` as its address; true when an ARP reply comes back.
pub fn arp_answered(ns: &str, mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> bool {
    in_netns(ns, move || {
        let proto = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened by this thread and is owned from here.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let ifindex = nubis_agent::host::tap::ioctl::index_of("eth0")
            .expect("index")
            .expect("eth0");
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&sender.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&target.octets());
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = proto;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        use std::os::fd::AsRawFd;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: setsockopt reads `tv` (a live timeval of the given size);
        // sendto reads `frame` and `to` (live, sizes given). Results checked.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let sent = libc::sendto(
                sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                sent,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
        let end = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 128];
        while Instant::now() < end {
            // SAFETY: recv writes at most buf.len() bytes into the live buf.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            // An ARP reply (op 2) for `target` sent to `sender`.
            if n >= 42
                && buf[12..14] == [0x08, 0x06]
                && buf[20..22] == [0, 2]
                && buf[28..32] == target.octets()
                && buf[38..42] == sender.octets()
            {
                return true;
            }
        }
        false
    })
    .join()
    .expect("arp thread")
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
