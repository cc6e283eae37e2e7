//! The exit-status record (`--exit-status-file PATH`): on every exit whose
//! path is known, the VMM writes `{"exit_code":N,"reason":"..","unix_ms":N,
//! "pid":N}` (plus `"signal":N` when a fatal signal ended it, and
//! `"nonce":".."` when started with `--exit-status-nonce`) to a temporary
//! file next to PATH and renames it over PATH, so a reader sees either no
//! record or a whole one. An agent that is not the VMM's parent (it restarted
//! while the VM ran) cannot `waitpid`; it reads this record instead, and
//! tells this launch's record from an earlier one's by the nonce (the pid is
//! 1 for every VMM started in its own pid namespace).
//!
//! Fatal signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGHUP, SIGQUIT,
//! ...) are caught by a handler that writes the record with async-signal-safe
//! calls only (open, write, rename, clock_gettime, all on pre-built paths and a
//! stack buffer). A fault the kernel raised (a bad memory access...) then
//! repeats with the previous action restored, which the kernel forces even on
//! a pid namespace's init: the process dies of the signal. A signal sent by a
//! process (`kill`) is raised again with the default action, which kills an
//! ordinary process; a pid namespace's init ignores a default action it is
//! sent, so the handler then ends the process with `_exit(128 + signal)` and
//! the record's `signal` says which one it was. SIGKILL cannot be caught: no
//! record.

use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The record as written (and as readers parse it): nubis-vmm-api's.
pub use nubis_vmm_api::ExitRecord;

/// The temporary file the record is written to before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes the record for a normal exit with `exit_code` (write to the
/// temporary file, then rename over `path`).
pub fn write(path: &Path, exit_code: i32, reason: &str) -> std::io::Result<()> {
    let record = ExitRecord {
        exit_code,
        reason: reason.to_string(),
        unix_ms: unix_ms(),
        pid: std::process::id(),
        signal: None,
        nonce: NONCE.get().cloned(),
    };
    let mut text = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Writes the record and logs (never fails the exit) when that is impossible.
pub fn record(path: Option<&Path>, exit_code: i32, reason: &str) {
    if let Some(path) = path {
        if let Err(e) = write(path, exit_code, reason) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the exit-status file");
        }
    }
}

/// The nonce every record of this process carries (`--exit-status-nonce`).
static NONCE: OnceLock<String> = OnceLock::new();

/// Sets the nonce written into every record; call before
/// [`install_signal_handlers`]. A nonce that is not
/// [`nubis_vmm_api::valid_nonce`] is refused (`false`), as is a second one.
pub fn set_nonce(nonce: &str) -> bool {
    nubis_vmm_api::valid_nonce(nonce) && NONCE.set(nonce.to_string()).is_ok()
}

/// The value of `FLAG VALUE` (or `FLAG=VALUE`) among raw arguments.
fn flag_from_args<I: IntoIterator<Item = std::ffi::OsString>>(
    flag: &[u8],
    args: I,
) -> Option<std::ffi::OsString> {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let bytes = a.as_bytes();
        if bytes == flag {
            return args.next().filter(|p| !p.is_empty());
        }
        if let Some(rest) = bytes.strip_prefix(flag).and_then(|r| r.strip_prefix(b"=")) {
            if !rest.is_empty() {
                return Some(std::ffi::OsStr::from_bytes(rest).to_os_string());
            }
        }
        if bytes == b"--" {
            break;
        }
    }
    None
}

/// Finds `--exit-status-file PATH` (or `--exit-status-file=PATH`) among raw
/// arguments: used when the command line as a whole does not parse.
pub fn path_from_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Option<PathBuf> {
    flag_from_args(b"--exit-status-file", args).map(PathBuf::from)
}

/// Finds `--exit-status-nonce N` among raw arguments (as
/// [`path_from_args`]).
pub fn nonce_from_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Option<String> {
    flag_from_args(b"--exit-status-nonce", args).and_then(|n| n.into_string().ok())
}

/// Paths the signal handler writes, prepared before it is installed.
struct SignalPaths {
    tmp: CString,
    path: CString,
}

static SIGNAL_PATHS: OnceLock<SignalPaths> = OnceLock::new();

/// Signals whose default action ends the process and that we can catch.
/// SIGTERM and SIGINT are not here: they are blocked and read by the event
/// loop (graceful stop, exit 0); SIGPIPE is ignored by the Rust runtime.
const FATAL_SIGNALS: [i32; 12] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGXCPU,
];

/// The action each fatal signal had before ours (same order as
/// [`FATAL_SIGNALS`]), restored by the handler before a fault repeats. Set once, before the handlers are installed.
static PREVIOUS: OnceLock<[libc::sigaction; FATAL_SIGNALS.len()]> = OnceLock::new();

/// Installs the fatal-signal handlers that write the record to `path`. Call
/// once, early; later calls change nothing.
pub fn install_signal_handlers(path: &Path) -> std::io::Result<()> {
    let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let paths = SignalPaths {
        tmp: cstr(&temp_path(path))?,
        path: cstr(path)?,
    };
    // SAFETY: a zeroed sigaction is a valid "SIG_DFL, no flags" value.
    let mut previous = [unsafe { std::mem::zeroed::<libc::sigaction>() }; FATAL_SIGNALS.len()];
    for (old, &sig) in previous.iter_mut().zip(&FATAL_SIGNALS) {
        // SAFETY: a null new action only queries; `old` is a valid sigaction.
        if unsafe { libc::sigaction(sig, std::ptr::null(), old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if SIGNAL_PATHS.set(paths).is_err() || PREVIOUS.set(previous).is_err() {
        return Ok(());
    }
    for (old, &sig) in previous.iter().zip(&FATAL_SIGNALS) {
        if old.sa_sigaction == libc::SIG_IGN {
            // Ignored by whoever started us (e.g. SIGHUP under nohup): not fatal.
            continue;
        }
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_fatal_signal as *const () as usize;
        // SA_ONSTACK: a stack overflow (SIGSEGV on the guard page) must run
        // the handler on the alternate stack the Rust runtime sets up.
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act` is a valid sigaction; the handler only makes
        // async-signal-safe calls.
        if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A fixed buffer filled without allocating (usable in a signal handler).
struct StackBuf {
    out: [u8; 256],
    len: usize,
}

impl StackBuf {
    fn put(&mut self, s: &[u8]) {
        let n = s.len().min(self.out.len() - self.len);
        self.out[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }
}

/// Builds the record for a fatal signal without allocating (`nonce` is
/// empty or a [`nubis_vmm_api::valid_nonce`], which needs no escaping).
fn signal_record(sig: i32, unix_ms: u64, pid: u32, nonce: &[u8]) -> StackBuf {
    let sig = sig.max(0) as u64;
    let mut b = StackBuf {
        out: [0; 256],
        len: 0,
    };
    b.put(b"{\"exit_code\":");
    b.number(128 + sig);
    b.put(b",\"reason\":\"killed by signal ");
    b.number(sig);
    b.put(b"\",\"unix_ms\":");
    b.number(unix_ms);
    b.put(b",\"pid\":");
    b.number(u64::from(pid));
    b.put(b",\"signal\":");
    b.number(sig);
    if !nonce.is_empty() {
        b.put(b",\"nonce\":\"");
        b.put(nonce);
        b.put(b"\"");
    }
    b.put(b"}\n");
    b
}

extern "C" fn on_fatal_signal(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if let Some(paths) = SIGNAL_PATHS.get() {
        // SAFETY: only async-signal-safe calls (clock_gettime, getpid, open,
        // write, close, rename) on NUL-terminated paths built before the
        // handler was installed and on stack buffers.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
            let ms = (ts.tv_sec.max(0) as u64) * 1000 + (ts.tv_nsec.max(0) as u64) / 1_000_000;
            let nonce = NONCE.get().map_or(&b""[..], |n| n.as_bytes());
            let rec = signal_record(sig, ms, libc::getpid() as u32, nonce);
            let fd = libc::open(
                paths.tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 {
                let ok = libc::write(fd, rec.out.as_ptr().cast(), rec.len) == rec.len as isize;
                libc::close(fd);
                if ok {
                    libc::rename(paths.tmp.as_ptr(), paths.path.as_ptr());
                }
            }
        }
    }
    // SAFETY: sigaction, sigprocmask, raise and _exit are async-signal-safe
    // (sigemptyset/sigaddset only fill the stack value `set`); the actions
    // are valid sigactions (the one saved at installation, or SIG_DFL);
    // `info` is the kernel's siginfo for this delivery (SA_SIGINFO), or null.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        // A fault the kernel raised (SIGSEGV from an instruction: si_code
        // > 0) repeats when we return and then meets the previous action
        // (the Rust runtime's stack-overflow report, or the default: death
        // by the signal, which the kernel forces even on a pid namespace's
        // init).
        let from_kernel = !info.is_null() && (*info).si_code > 0;
        if from_kernel
            && matches!(
                sig,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
            )
        {
            let previous = FATAL_SIGNALS
                .iter()
                .position(|&s| s == sig)
                .and_then(|i| PREVIOUS.get().map(|p| p[i]));
            libc::sigaction(sig, &previous.unwrap_or(dfl), std::ptr::null_mut());
            return;
        }
        // Anything else (sent by a process) is raised again with the
        // default action (not a previous handler: nested on this alternate
        // signal stack it could overflow it), unblocked first, so that it
        // is delivered now, not after a return that never comes. A pid
        // namespace's init ignores a signal whose action is the default
        // (unless the kernel forces it), so raise returns: end the process
        // with the status a shell gives a signal's death; the record says
        // which signal it was.
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_written_whole_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        write(&path, 6, "network: tap \"x\" missing").unwrap();
        let r: ExitRecord = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(r.exit_code, 6);
        assert_eq!(r.reason, "network: tap \"x\" missing");
        assert_eq!(r.pid, std::process::id());
        assert_eq!(r.signal, None);
        assert!(r.unix_ms > 1_600_000_000_000);
        assert!(!temp_path(&path).exists());
        // A second exit replaces the record.
        write(&path, 0, "guest reset").unwrap();
        let r: ExitRecord = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(r.exit_code, 0);
    }

    #[test]
    fn signal_record_is_valid_json() {
        let b = signal_record(libc::SIGSEGV, 1_700_000_000_123, 4242, b"");
        let r: ExitRecord = serde_json::from_slice(&b.out[..b.len]).unwrap();
        assert_eq!(r.exit_code, 128 + libc::SIGSEGV);
        assert_eq!(r.signal, Some(libc::SIGSEGV));
        assert_eq!(r.unix_ms, 1_700_000_000_123);
        assert_eq!(r.pid, 4242);
        assert_eq!(r.nonce, None);
        assert_eq!(r.reason, format!("killed by signal {}", libc::SIGSEGV));
        let b = signal_record(0, 0, 0, b"");
        let r: ExitRecord = serde_json::from_slice(&b.out[..b.len]).unwrap();
        assert_eq!((r.exit_code, r.unix_ms, r.pid), (128, 0, 0));
        // The longest nonce still fits the buffer.
        let long = "n".repeat(64);
        let b = signal_record(libc::SIGSYS, u64::MAX, u32::MAX, long.as_bytes());
        let r: ExitRecord = serde_json::from_slice(&b.out[..b.len]).unwrap();
        assert_eq!(r.nonce.as_deref(), Some(long.as_str()));
        assert_eq!(r.signal, Some(libc::SIGSYS));
    }

    #[test]
    fn path_is_found_in_raw_arguments() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            path_from_args(args(&["vmm", "--bogus", "--exit-status-file", "/d/e.json"])),
            Some(PathBuf::from("/d/e.json"))
        );
        assert_eq!(
            path_from_args(args(&["vmm", "--exit-status-file=/d/e.json", "--x"])),
            Some(PathBuf::from("/d/e.json"))
        );
        assert_eq!(path_from_args(args(&["vmm", "--exit-status-file"])), None);
        assert_eq!(path_from_args(args(&["vmm", "--exit-status-file="])), None);
        assert_eq!(path_from_args(args(&["vmm", "--kernel", "/k"])), None);
        assert_eq!(
            nonce_from_args(args(&["vmm", "--exit-status-nonce", "ab12", "--x"])),
            Some("ab12".into())
        );
        assert_eq!(
            nonce_from_args(args(&["vmm", "--exit-status-nonce=cd"])),
            Some("cd".into())
        );
        assert_eq!(
            nonce_from_args(args(&["vmm", "--", "--exit-status-nonce", "x"])),
            None
        );
        assert_eq!(
            temp_path(Path::new("/d/exit.json")),
            PathBuf::from("/d/.exit.json.tmp")
        );
    }
}
