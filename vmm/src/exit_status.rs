//! The exit-status record (`--exit-status-file PATH`): on every exit whose
//! path is known, the VMM writes `{"exit_code":N,"reason":"..","unix_ms":N,
//! "pid":N}` (plus `"signal":N` when a fatal signal ended it) to a temporary
//! file next to PATH and renames it over PATH, so a reader sees either no
//! record or a whole one. An agent that is not the VMM's parent (it restarted
//! while the VM ran) cannot `waitpid`; it reads this record instead.
//!
//! Fatal signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGHUP, SIGQUIT,
//! ...) are caught by a handler that writes the record with async-signal-safe
//! calls only (open, write, rename, clock_gettime, all on pre-built paths and a
//! stack buffer) and then lets the signal take its default course, so the
//! process still dies of that signal. SIGKILL cannot be caught: no record.

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

/// Finds `--exit-status-file PATH` (or `--exit-status-file=PATH`) among raw
/// arguments: used when the command line as a whole does not parse.
pub fn path_from_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Option<PathBuf> {
    const FLAG: &[u8] = b"--exit-status-file";
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let bytes = a.as_bytes();
        if bytes == FLAG {
            return args.next().filter(|p| !p.is_empty()).map(PathBuf::from);
        }
        if let Some(rest) = bytes.strip_prefix(FLAG).and_then(|r| r.strip_prefix(b"=")) {
            if !rest.is_empty() {
                return Some(PathBuf::from(std::ffi::OsStr::from_bytes(rest)));
            }
        }
        if bytes == b"--" {
            break;
        }
    }
    None
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
/// [`FATAL_SIGNALS`]), restored by the handler before the signal takes its
/// course. Set once, before the handlers are installed.
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

/// Builds the record for a fatal signal without allocating.
fn signal_record(sig: i32, unix_ms: u64, pid: u32) -> StackBuf {
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
    b.put(b"}\n");
    b
}

extern "C" fn on_fatal_signal(sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if let Some(paths) = SIGNAL_PATHS.get() {
        // SAFETY: only async-signal-safe calls (clock_gettime, getpid, open,
        // write, close, rename) on NUL-terminated paths built before the
        // handler was installed and on stack buffers.
        unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
            let ms = (ts.tv_sec.max(0) as u64) * 1000 + (ts.tv_nsec.max(0) as u64) / 1_000_000;
            let rec = signal_record(sig, ms, libc::getpid() as u32);
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
    let previous = FATAL_SIGNALS
        .iter()
        .position(|&s| s == sig)
        .and_then(|i| PREVIOUS.get().map(|p| p[i]));
    // SAFETY: sigaction and raise are async-signal-safe; `act` is a valid
    // sigaction (the one saved at installation, or SIG_DFL).
    unsafe {
        let act = previous.unwrap_or_else(|| {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            dfl
        });
        libc::sigaction(sig, &act, std::ptr::null_mut());
        // A fault (SIGSEGV from an instruction) repeats when we return and
        // then meets the restored action (the Rust runtime's stack-overflow
        // report, or the default: death by the signal). An asynchronous
        // signal is raised again for the same effect.
        if !matches!(
            sig,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
        ) {
            libc::raise(sig);
        }
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
        let b = signal_record(libc::SIGSEGV, 1_700_000_000_123, 4242);
        let r: ExitRecord = serde_json::from_slice(&b.out[..b.len]).unwrap();
        assert_eq!(r.exit_code, 128 + libc::SIGSEGV);
        assert_eq!(r.signal, Some(libc::SIGSEGV));
        assert_eq!(r.unix_ms, 1_700_000_000_123);
        assert_eq!(r.pid, 4242);
        assert_eq!(r.reason, format!("killed by signal {}", libc::SIGSEGV));
        let b = signal_record(0, 0, 0);
        let r: ExitRecord = serde_json::from_slice(&b.out[..b.len]).unwrap();
        assert_eq!((r.exit_code, r.unix_ms, r.pid), (128, 0, 0));
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
            temp_path(Path::new("/d/exit.json")),
            PathBuf::from("/d/.exit.json.tmp")
        );
    }
}
