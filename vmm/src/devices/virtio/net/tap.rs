//! A host TAP device opened through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`,
//! non-blocking). The ioctls here are the only `unsafe` code of the virtio module.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::VNET_HDR_LEN;
use crate::devices::virtio::Error;

/// Linux `IFNAMSIZ`: interface names are at most 15 bytes plus NUL.
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as far as `TUNSETIFF` uses it: the name and the flags (`ifr_flags`),
/// padded to the kernel's 40-byte size.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

impl Tap {
    /// Attaches to the existing TAP interface `name` in the calling thread's network
    /// namespace. Never creates one: a missing interface is [`Error::TapNotFound`].
    pub fn open(name: &str) -> Result<Tap, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidTapName {
                name: name.to_string(),
            });
        }
        let tap_err = |operation, source| Error::Tap {
            name: name.to_string(),
            operation,
            source,
        };
        let probe = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(|e| tap_err("socket", e.into()))?;
        match rustix::net::netdevice::name_to_index(&probe, name) {
            Ok(_) => {}
            Err(rustix::io::Errno::NODEV) => {
                return Err(Error::TapNotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(tap_err("SIOCGIFINDEX", e.into())),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| tap_err("open /dev/net/tun", e))?;

        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `file` is an open /dev/net/tun fd; TUNSETIFF reads and may write back a
        // `struct ifreq`, and `req` is a live, exclusively borrowed 40-byte `#[repr(C)]`
        // value with that layout. The return value is checked.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL/EBUSY: an interface of that name exists but is not a free TAP.
            return Err(tap_err("TUNSETIFF", err));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `hdr_len` is a live
        // `c_int` borrowed for the call. The return value is checked.
        let ret = unsafe { ioctl_with_ref(&file, libc::TUNSETVNETHDRSZ, &hdr_len) };
        if ret < 0 {
            return Err(tap_err("TUNSETVNETHDRSZ", std::io::Error::last_os_error()));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value (0: no offloads); no memory is
        // passed. The return value is checked.
        let ret = unsafe { ioctl_with_val(&file, libc::TUNSETOFFLOAD, 0) };
        if ret < 0 {
            return Err(tap_err("TUNSETOFFLOAD", std::io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// Takes over a TAP fd the caller (the agent) has already attached to the interface
    /// `name` with `TUNSETIFF` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) and passed on: the VMM
    /// then needs neither `/dev/net/tun` nor CAP_NET_ADMIN. Sets the header size, no
    /// offloads, and non-blocking mode.
    pub fn from_attached_fd(fd: OwnedFd, name: &str) -> Result<Tap, Error> {
        let tap_err = |operation, source| Error::Tap {
            name: name.to_string(),
            operation,
            source,
        };
        let file = File::from(fd);
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `hdr_len` is a live
        // `c_int` borrowed for the call. The return value is checked.
        let ret = unsafe { ioctl_with_ref(&file, libc::TUNSETVNETHDRSZ, &hdr_len) };
        if ret < 0 {
            return Err(tap_err("TUNSETVNETHDRSZ", std::io::Error::last_os_error()));
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let ret = unsafe { ioctl_with_val(&file, libc::TUNSETOFFLOAD, 0) };
        if ret < 0 {
            return Err(tap_err("TUNSETOFFLOAD", std::io::Error::last_os_error()));
        }
        let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| tap_err("F_GETFL", e.into()))?;
        rustix::fs::fcntl_setfl(&file, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| tap_err("F_SETFL", e.into()))?;
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| tap_err("F_SETFD", e.into()))?;
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// Wraps any non-blocking, message-preserving fd (e.g. one end of a datagram socket
    /// pair) as a TAP: for tests of the frame path.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            file: File::from(fd),
            name: name.to_string(),
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its virtio-net header); `WouldBlock` when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame (with its virtio-net header).
    pub fn write_frame(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            "a/b",
            "has space",
            "sixteen-chars-xx",
            ".",
            "..",
            "a:b",
            "tåp",
        ] {
            let err = Tap::open(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidTapName { .. }),
                "{bad}: {err:?}"
            );
            assert_eq!(err.exit_status(), 6);
        }
        assert!(valid_name("nbtap0"));
        assert!(valid_name("fifteen-chars-x"));
    }

    #[test]
    fn missing_tap_is_a_typed_error() {
        let err = Tap::open("nbnosuchtap9").unwrap_err();
        assert!(matches!(err, Error::TapNotFound { .. }), "{err:?}");
        assert_eq!(err.exit_status(), 6);
        assert!(!std::path::Path::new("/sys/class/net/nbnosuchtap9").exists());
    }

    #[test]
    fn non_tap_interface_is_refused() {
        // `lo` exists in every namespace and is not a TAP.
        let err = Tap::open("lo").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Tap {
                    operation: "TUNSETIFF",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.exit_status(), 6);
    }

    /// A network namespace created for one test and deleted on drop (also on panic).
    struct NetNs {
        name: String,
    }

    impl NetNs {
        fn ip(args: &[&str]) -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        }

        fn create() -> Result<NetNs, String> {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("nbvirtio{}x{n}", std::process::id());
            NetNs::ip(&["netns", "add", &name])?;
            Ok(NetNs { name })
        }
    }

    impl Drop for NetNs {
        fn drop(&mut self) {
            let _ = NetNs::ip(&["netns", "del", &self.name]);
        }
    }

    fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(60, 0);
        f
    }

    /// The guest sends an ARP request through a real TAP in a private network namespace;
    /// the host kernel's ARP reply comes back into a guest receive buffer.
    #[test]
    fn arp_round_trip_through_a_real_tap() {
        use crate::devices::virtio::net::device::{RX_QUEUE, TX_QUEUE};
        use crate::devices::virtio::net::Net;
        use crate::devices::virtio::testing::{guest_memory, Driver, RawDesc, DATA_START, F_WRITE};
        use crate::devices::virtio::VirtioDevice;
        use crate::devices::virtio::VirtioMmioDevice;
        use std::os::fd::AsFd;
        use vm_memory::{Bytes, GuestAddress};

        let ns = match NetNs::create() {
            Ok(ns) => ns,
            Err(e) if std::env::var("NUBIS_REQUIRE_KVM").as_deref() != Ok("1") => {
                eprintln!("SKIPPED: cannot create a network namespace (needs root): {e}");
                return;
            }
            Err(e) => panic!("cannot create a network namespace: {e}"),
        };
        let n = ns.name.as_str();
        // Less noise on the link (router solicitations, MLD): IPv6 off in this namespace.
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .status();
        NetNs::ip(&["-n", n, "tuntap", "add", "dev", "nbtap0", "mode", "tap"]).unwrap();
        NetNs::ip(&["-n", n, "addr", "add", "10.213.0.1/24", "dev", "nbtap0"]).unwrap();
        NetNs::ip(&["-n", n, "link", "set", "nbtap0", "up"]).unwrap();
        let ns_path = format!("/run/netns/{n}");

        // Namespaces are per thread: do the device work on a thread that joined it.
        let result = std::thread::spawn(move || {
            let ns_file = File::open(&ns_path).unwrap();
            rustix::thread::move_into_link_name_space(
                ns_file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let mac = [0x02, 0x4e, 0x42, 0, 0, 2];
            // A name that does not exist in this namespace is refused, not created.
            assert!(matches!(
                Net::new("nbtap1", Some(mac)),
                Err(Error::TapNotFound { .. })
            ));
            let net = Net::new("nbtap0", Some(mac)).unwrap();
            let tap_fd = net.extra_fds()[0];
            let mem = guest_memory();
            let mut dev = VirtioMmioDevice::new(Box::new(net), mem.clone()).unwrap();
            let mut drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);
            for i in 0..8 {
                drv.add_chain(RX_QUEUE, &[(DATA_START + 0x1000 * (i + 1), 2048, true)]);
            }
            dev.process_queue(RX_QUEUE);

            let frame = arp_request(mac, [10, 213, 0, 2], [10, 213, 0, 1]);
            let tx = DATA_START + 0x10_0000;
            mem.write_slice(&[0; VNET_HDR_LEN], GuestAddress(tx))
                .unwrap();
            mem.write_slice(&frame, GuestAddress(tx + VNET_HDR_LEN as u64))
                .unwrap();
            // The kernel only transmits once link-watch has activated the TAP's queueing
            // discipline after we attached (up to a second later): resend like a guest's
            // ARP would until the reply arrives.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut next_send = std::time::Instant::now();
            while std::time::Instant::now() < deadline {
                if std::time::Instant::now() >= next_send {
                    drv.add_chain(
                        TX_QUEUE,
                        &[(tx, (VNET_HDR_LEN + frame.len()) as u32, false)],
                    );
                    dev.process_queue(TX_QUEUE);
                    assert_eq!(drv.take_used(TX_QUEUE).len(), 1);
                    next_send += std::time::Duration::from_millis(300);
                }
                dev.process_extra(tap_fd);
                for (id, len) in drv.take_used(RX_QUEUE) {
                    let mut got = vec![0u8; len as usize];
                    let at = GuestAddress(DATA_START + 0x1000 * (u64::from(id) + 1));
                    mem.read_slice(&mut got, at).unwrap();
                    // Give the buffer back (descriptor `id` again), as a driver would.
                    drv.write_descs(
                        RX_QUEUE,
                        id as u16,
                        &[RawDesc {
                            addr: at.0,
                            len: 2048,
                            flags: F_WRITE,
                            next: 0,
                        }],
                    );
                    drv.publish(RX_QUEUE, id as u16);
                    let eth = &got[VNET_HDR_LEN..];
                    // ARP reply (oper 2) from 10.213.0.1 addressed to our MAC.
                    if eth.len() >= 42
                        && eth[..6] == mac
                        && eth[12..14] == [0x08, 0x06]
                        && eth[20..22] == [0, 2]
                        && eth[28..32] == [10, 213, 0, 1]
                    {
                        return dev.metrics();
                    }
                }
                dev.process_queue(RX_QUEUE);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            panic!("no ARP reply from the host within 20 s: {}", dev.metrics());
        })
        .join();
        drop(ns);
        let metrics = result.expect("device thread");
        assert!(metrics["rx_frames"].as_u64().unwrap() >= 1);
    }
}
