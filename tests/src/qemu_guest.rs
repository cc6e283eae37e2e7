//! A QEMU `microvm` guest for image tests (TCG): the machine model nubis-vmm offers
//! (PVH ELF kernel, no ACPI, virtio-mmio devices on the command line, an i8042), a
//! console collected line by line, and the process killed on drop (also when a
//! test panics).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `qemu-system-x86_64` from `PATH`, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    })
}

/// How to start the guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub kernel: PathBuf,
    pub cmdline: String,
    /// Root disk (raw); opened with `snapshot=on`: the file is never written.
    pub disk: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub mac: String,
    /// `(qemu's own socket, the peer's socket)` of a `-netdev dgram` over unix
    /// datagram sockets (see [`crate::frame_bridge`]).
    pub net_sockets: (PathBuf, PathBuf),
}

/// A running QEMU; killed on drop.
#[derive(Debug)]
pub struct QemuGuest {
    child: Child,
    console: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

impl QemuGuest {
    pub fn start(qemu: &Path, spec: &GuestSpec) -> std::io::Result<Self> {
        let mut cmd = Command::new(qemu);
        cmd.args(["-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max"])
            .args(["-smp", &spec.vcpus.to_string()])
            .args(["-m", &spec.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-kernel")
            .arg(&spec.kernel)
            .args(["-append", &spec.cmdline])
            .arg("-drive")
            .arg(format!(
                "id=d0,file={},format=raw,if=none,snapshot=on,cache=unsafe",
                spec.disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=d0"])
            .arg("-netdev")
            .arg(format!(
                "dgram,id=n0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                spec.net_sockets.0.display(),
                spec.net_sockets.1.display()
            ))
            .args([
                "-device",
                &format!("virtio-net-device,netdev=n0,mac={}", spec.mac),
            ])
            .args(["-device", "virtio-rng-device"])
            .args(["-device", "i8042"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let console = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let console = console.clone();
            thread::spawn(move || {
                for line in BufReader::new(out).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned();
                    if let Ok(mut c) = console.lock() {
                        c.push(text);
                    }
                }
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let stderr = stderr.clone();
            thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                if let Ok(mut e) = stderr.lock() {
                    e.push_str(&s);
                }
            });
        }
        Ok(QemuGuest {
            child,
            console,
            stderr,
            started: Instant::now(),
        })
    }

    /// The console so far, one entry a line.
    pub fn console(&self) -> Vec<String> {
        self.console.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Console, QEMU's stderr and exit status, for failure messages.
    pub fn report(&mut self) -> String {
        let status = self.child.try_wait().ok().flatten();
        format!(
            "after {:?}, qemu status {status:?}\n--- console\n{}\n--- qemu stderr\n{}",
            self.started.elapsed(),
            self.console().join("\n"),
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }

    /// Waits until a console line contains `needle`; returns that line, or `None`
    /// on timeout or when QEMU exited.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.console().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if Instant::now() >= end || self.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
