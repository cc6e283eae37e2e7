//! Test support: the prerequisite policy (nubis-testsupport), a
//! tiny x86 assembler and ELF writer for hand-made guests, and a guard
//! that kills `nubis-vmm` processes when a test ends.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary uses both
pub use nubis_testsupport::{image_dir, prerequisite};

/// /dev/kvm can be opened read-write.
pub fn kvm() -> bool {
    prerequisite(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok(),
        "/dev/kvm",
    )
}

/// Running on the nested PVM backend (guest ring 0 is interpreted).
pub fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Guest load address of hand-made kernels.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// A minimal assembler for 32/64-bit x86 flat code (only the encodings our
/// guests need; those shared by both modes unless noted).
#[derive(Default)]
pub struct Asm {
    pub code: Vec<u8>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn here(&self) -> usize {
        self.code.len()
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }
    /// mov dx, imm16
    pub fn mov_dx(&mut self, v: u16) -> &mut Self {
        let [lo, hi] = v.to_le_bytes();
        self.bytes(&[0x66, 0xba, lo, hi])
    }
    /// mov al, imm8
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.bytes(&[0xb0, v])
    }
    /// out dx, al
    pub fn out_dx_al(&mut self) -> &mut Self {
        self.bytes(&[0xee])
    }
    /// in al, dx
    pub fn in_al_dx(&mut self) -> &mut Self {
        self.bytes(&[0xec])
    }
    /// in al, imm8
    pub fn in_al_imm(&mut self, port: u8) -> &mut Self {
        self.bytes(&[0xe4, port])
    }
    /// Prints `s` on COM1.
    pub fn print(&mut self, s: &str) -> &mut Self {
        self.mov_dx(0x3f8);
        for b in s.bytes() {
            self.mov_al(b).out_dx_al();
        }
        self
    }
    /// i8042 CPU reset, then spin.
    pub fn reset(&mut self) -> &mut Self {
        self.mov_al(0xfe).bytes(&[0xe6, 0x64]).spin()
    }
    /// jmp $
    pub fn spin(&mut self) -> &mut Self {
        self.bytes(&[0xeb, 0xfe])
    }
    /// Short jump with condition `opcode` (0xeb jmp, 0x74 je, 0x75 jne) back to `target`.
    pub fn jump_back(&mut self, opcode: u8, target: usize) -> &mut Self {
        let rel = target as isize - (self.here() as isize + 2);
        assert!((-128..0).contains(&rel), "jump too far");
        self.bytes(&[opcode, rel as i8 as u8])
    }
    /// Busy-waits about 2^26 TSC cycles (tens of ms on any host).
    pub fn tsc_delay(&mut self) -> &mut Self {
        // rdtsc; shr eax, 26; mov ebx, eax
        self.bytes(&[0x0f, 0x31, 0xc1, 0xe8, 0x1a, 0x89, 0xc3]);
        let wait = self.here();
        // rdtsc; shr eax, 26; cmp eax, ebx; je wait
        self.bytes(&[0x0f, 0x31, 0xc1, 0xe8, 0x1a, 0x39, 0xd8]);
        self.jump_back(0x74, wait)
    }
}

/// Writes an ELF64 executable whose single segment holds `code` at
/// [`LOAD_ADDR`]; with `pvh` it also carries the Xen PVH entry note (the
/// VMM then enters in 32-bit protected mode, else in 64-bit long mode).
pub fn write_elf(path: &Path, code: &[u8], pvh: bool) {
    let phnum: u16 = if pvh { 2 } else { 1 };
    let code_off: u64 = 0x1000;
    let note_off: u64 = 0x200;
    let mut f = vec![0u8; code_off as usize];
    // ELF header.
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    f[56..58].copy_from_slice(&phnum.to_le_bytes());
    let phdr = |f: &mut Vec<u8>, at: usize, ty: u32, off: u64, addr: u64, size: u64| {
        f[at..at + 4].copy_from_slice(&ty.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        f[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        f[at + 48..at + 56].copy_from_slice(&4u64.to_le_bytes());
    };
    phdr(&mut f, 64, 1, code_off, LOAD_ADDR, code.len() as u64);
    if pvh {
        phdr(&mut f, 64 + 56, 4, note_off, 0, 20);
        let n = note_off as usize;
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes()); // namesz
        f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes()); // descsz
        f[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes()); // PHYS32_ENTRY
        f[n + 12..n + 16].copy_from_slice(b"Xen\0");
        f[n + 16..n + 20].copy_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
    }
    f.extend_from_slice(code);
    std::fs::write(path, f).unwrap();
}

/// The `nubis-vmm` binary under test.
pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nubis-vmm")
}

/// A `nubis-vmm` command with stdin closed.
pub fn vmm_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(vmm_bin());
    c.args(args).stdin(Stdio::null());
    c
}

/// Kills the child on drop (also when a test panics).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command) -> Self {
        ChildGuard(cmd.spawn().expect("spawn nubis-vmm"))
    }

    /// Waits for the exit status, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    pub fn stdout_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Generous timeout for anything involving a guest (the machine is loaded,
/// and guest ring 0 is interpreted under PVM).
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A network namespace with a TAP device, removed on drop.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    pub fn create() -> Option<NetNs> {
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let ns = NetNs {
            name: format!("nbvmm{id}"),
            tap: format!("nbt{id}"),
        };
        let ok = ip(&["netns", "add", &ns.name])
            && ip(&[
                "-n", &ns.name, "tuntap", "add", "dev", &ns.tap, "mode", "tap",
            ])
            && ip(&["-n", &ns.name, "addr", "add", "10.0.0.1/24", "dev", &ns.tap])
            && ip(&["-n", &ns.name, "link", "set", &ns.tap, "up"])
            && ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        prerequisite(ok, "network namespaces and TAP devices (root, iproute2)").then_some(ns)
    }

    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.name]);
    }
}
