//! SIGTERM and SIGINT as a file descriptor: the signals are blocked in every
//! thread (call [`SignalFd::new`] before spawning any) and read by the
//! event loop, so a graceful stop runs in one place.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// A signalfd for SIGTERM and SIGINT.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks SIGTERM and SIGINT in the calling thread (and threads it
    /// spawns later) and opens a non-blocking signalfd for them.
    pub fn new() -> Result<Self> {
        let set = vmm_sys_util::signal::create_sigset(&[libc::SIGTERM, libc::SIGINT])
            .map_err(|e| Error::host("signal set", e.into()))?;
        // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(Error::host(
                "blocking signals",
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        // SAFETY: `set` is initialised; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::host("signalfd", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor we own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// Reads one pending signal number, if any.
    pub fn read(&self) -> Option<i32> {
        let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is a writable buffer of exactly `size` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if n != size as isize {
            return None;
        }
        // SAFETY: the kernel filled all `size` bytes; the struct is plain data.
        let info = unsafe { info.assume_init() };
        Some(info.ssi_signo as i32)
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
