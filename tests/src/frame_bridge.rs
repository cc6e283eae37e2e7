//! A frame bridge for guest-image tests under QEMU: QEMU's `-netdev dgram` (a unix
//! datagram socket, one Ethernet frame per datagram) on one side, a TAP device in a
//! private network namespace on the other, and between them a frame [`Interceptor`]
//! that answers some frames itself — in the image tests, Nubis's metadata responder
//! (`nubis-imds`), the same code nubis-vmm runs on an instance's virtio-net.
//!
//! Owns: the namespace ([`NetNs`], deleted on drop), the TAP (it lives as long as
//! the bridge thread holds its descriptor) and the bridge thread (stopped and joined
//! on drop, also when a test panics).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What sits in the middle of the bridge: frames it [`intercepts`](Self::intercepts)
/// are given to it instead of the TAP, and what it transmits goes to the guest.
pub trait Interceptor: Send + 'static {
    /// True when `frame` (from the guest) is for the interceptor.
    fn intercepts(&mut self, frame: &[u8]) -> bool;
    /// Takes a frame from the guest for which [`intercepts`](Self::intercepts) held.
    fn receive(&mut self, frame: &[u8], now: Instant);
    /// The next frame for the guest, if any.
    fn transmit(&mut self, now: Instant) -> Option<Vec<u8>>;
    /// When the interceptor next needs [`transmit`](Self::transmit) called
    /// (timers), if ever.
    fn poll_at(&mut self, now: Instant) -> Option<Instant>;
}

/// A network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetNs {
    /// Creates namespace `<prefix>-<pid>` with its loopback up.
    pub fn create(prefix: &str) -> io::Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        // A namespace of a dead run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Frame counters of a running bridge.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames from the guest given to the interceptor.
    pub intercepted: AtomicU64,
    /// Frames the interceptor sent to the guest.
    pub answered: AtomicU64,
    /// Frames from the guest forwarded to the TAP.
    pub to_tap: AtomicU64,
    /// Frames from the TAP forwarded to the guest.
    pub from_tap: AtomicU64,
}

/// The running bridge; stopped on drop.
#[derive(Debug)]
pub struct Bridge {
    qemu_socket: PathBuf,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens a new TAP `name` in the calling thread's network namespace.
fn open_tap(name: &str) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TAP name too long",
        ));
    }
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is (40 bytes).
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = OwnedFd::from(file);
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(fd)
}

/// Moves the calling thread into namespace `ns`.
fn enter_netns(ns: &str) -> io::Result<()> {
    let f = File::open(Path::new("/run/netns").join(ns))?;
    // SAFETY: setns with a namespace descriptor; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Bridge {
    /// Starts the bridge: a TAP `tap` in `ns` carrying `host_cidr` (e.g.
    /// `10.0.0.1/24`, the guest's gateway), and the guest side at
    /// `dir/bridge.sock`, sending to QEMU at [`qemu_socket`](Self::qemu_socket).
    pub fn start(
        ns: &NetNs,
        tap: &str,
        host_cidr: &str,
        dir: &Path,
        interceptor: Box<dyn Interceptor>,
    ) -> io::Result<Bridge> {
        let ours = dir.join("bridge.sock");
        let qemu_socket = dir.join("qemu.sock");
        let sock = UnixDatagram::bind(&ours)?;
        sock.set_nonblocking(true)?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let (ns_name, tap_name) = (ns.name().to_owned(), tap.to_owned());
        let (st, sp, peer) = (stats.clone(), stop.clone(), qemu_socket.clone());
        let thread = thread::Builder::new()
            .name("frame-bridge".into())
            .spawn(move || {
                let tap_fd = match enter_netns(&ns_name).and_then(|()| open_tap(&tap_name)) {
                    Ok(fd) => {
                        let _ = ready_tx.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                pump(&sock, &peer, &tap_fd, interceptor, &st, &sp)
            })?;
        let mut bridge = Bridge {
            qemu_socket,
            stats,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("bridge thread did not start")),
        }
        ns.ip(&["addr", "add", host_cidr, "dev", tap])?;
        ns.ip(&["link", "set", tap, "up"])?;
        // Surface an early failure of the thread.
        if bridge.thread.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(t) = bridge.thread.take() {
                t.join()
                    .map_err(|_| io::Error::other("bridge thread panicked"))??;
            }
        }
        Ok(bridge)
    }

    /// Where QEMU must bind its end (`-netdev dgram,local.type=unix,local.path=...`).
    pub fn qemu_socket(&self) -> &Path {
        &self.qemu_socket
    }

    /// Our end, QEMU's `remote.path`.
    pub fn bridge_socket(&self) -> PathBuf {
        self.qemu_socket.with_file_name("bridge.sock")
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The bridge loop: until `stop`, moves frames guest <-> TAP, through the interceptor.
fn pump(
    sock: &UnixDatagram,
    qemu: &Path,
    tap: &OwnedFd,
    mut icpt: Box<dyn Interceptor>,
    stats: &Stats,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    // Sending to QEMU before it bound its socket fails: the frame is dropped, as
    // a wire would.
    let send_guest = |frame: &[u8]| {
        let _ = sock.send_to(frame, qemu);
    };
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let mut timeout = Duration::from_millis(50);
        if let Some(at) = icpt.poll_at(now) {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: tap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(50) as libc::c_int;
        // SAFETY: poll on two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Guest -> interceptor or TAP.
        loop {
            match sock.recv(&mut buf) {
                Ok(len) => {
                    let frame = &buf[..len];
                    if icpt.intercepts(frame) {
                        stats.intercepted.fetch_add(1, Ordering::Relaxed);
                        icpt.receive(frame, Instant::now());
                    } else {
                        stats.to_tap.fetch_add(1, Ordering::Relaxed);
                        // SAFETY: write of an initialised buffer to our TAP descriptor.
                        unsafe { libc::write(tap.as_raw_fd(), frame.as_ptr().cast(), len) };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // TAP -> guest.
        loop {
            // SAFETY: read into our buffer, at most its length.
            let len = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if len <= 0 {
                break;
            }
            stats.from_tap.fetch_add(1, Ordering::Relaxed);
            send_guest(&buf[..len as usize]);
        }
        // Interceptor -> guest.
        while let Some(frame) = icpt.transmit(Instant::now()) {
            stats.answered.fetch_add(1, Ordering::Relaxed);
            send_guest(&frame);
        }
    }
    Ok(())
}
