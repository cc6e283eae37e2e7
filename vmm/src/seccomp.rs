//! Seccomp filters, one per thread kind (vCPU, event loop, API), built with
//! `seccompiler` and installed by each thread itself once its set-up is done
//! (files opened, KVM objects created, sockets bound). Anything not listed
//! kills the whole process with SIGSYS (`SECCOMP_RET_KILL_PROCESS`): a
//! device-model bug exploited by a guest cannot make a syscall the VMM does
//! not need; the agent reports the death as "killed by SIGSYS".
//!
//! [`init`] compiles the filters (before any thread is spawned) and sets
//! `no_new_privs`; [`apply`] installs the calling thread's filter. Without
//! [`init`] (`--no-seccomp`, or library users such as unit tests) [`apply`]
//! does nothing. Every allowed syscall and why is listed in docs/vmm.md;
//! keep that table and [`rules`] in step.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// Which filter a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread: `KVM_RUN` and the PIO/MMIO devices it drives
    /// (serial console file, i8042, virtio-mmio registers).
    Vcpu,
    /// The main thread's event loop: virtio queues (disk and TAP I/O),
    /// rate-limiter timers, signals, API requests, shutdown and the exit record.
    EventLoop,
    /// The API socket thread: accepting and serving connections.
    Api,
}

struct Filters {
    vcpu: BpfProgram,
    event_loop: BpfProgram,
    api: BpfProgram,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

/// Syscalls every thread makes: memory allocation, locks and channels,
/// logging to stderr, signal return, thread exit and aborting on a panic.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // virtio-rng requests (event loop); std's per-thread HashMap keys.
    libc::SYS_getrandom,
    // The exit-status record (crate::exit_status), written from a fatal
    // signal's handler on whichever thread it hits, or by the main thread
    // at exit: a temporary file renamed over the record, then the saved
    // signal action restored and the signal raised again (or, ignored by a
    // pid namespace's init, the process ended with exit_group).
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_rt_sigaction,
];

/// Device I/O: virtio queues are processed by the event loop, and also by
/// the vCPU thread that activates a device (its DRIVER_OK status write
/// processes buffers made available before it) or resets it.
const DEVICE_IO: &[i64] = &[
    // Disk requests.
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    // TAP frames.
    libc::SYS_readv,
    libc::SYS_writev,
    // Rate-limiter and metadata-responder timers.
    libc::SYS_timerfd_settime,
];

/// The only `openat` flags allowed: creating the exit record's temporary
/// file. Opening anything for reading, or without truncating, is refused.
const OPEN_FLAGS: u64 = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u64;

/// The event loop may also open a file for reading: the instance metadata
/// file, reread on the API's `reload_metadata` (`std::fs::read`'s flags;
/// plain `O_RDONLY` without `O_CLOEXEC` is still refused).
const OPEN_READ_FLAGS: u64 = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;

/// `fcntl` commands allowed: std's debug check that a closed fd was open.
const FCNTL_CMDS: &[u64] = &[libc::F_GETFD as u64];

fn eq(arg: u8, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(|e| Error::Seccomp(e.into()))
}

/// One rule per allowed value of argument `arg`.
fn one_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>> {
    values
        .iter()
        .map(|v| SeccompRule::new(vec![eq(arg, *v)?]).map_err(|e| Error::Seccomp(e.into())))
        .collect()
}

/// The allow-list of `kind`: syscall number -> rules (empty = any arguments).
pub fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for sc in COMMON {
        map.insert(*sc, vec![]);
    }
    map.insert(libc::SYS_fcntl, one_of(1, FCNTL_CMDS)?);
    map.insert(libc::SYS_openat, one_of(2, &[OPEN_FLAGS])?);
    match kind {
        ThreadKind::Vcpu => {
            // KVM_RUN; KVM_GET_REGS and KVM_GET_LAPIC for the debug log on pause.
            map.insert(
                libc::SYS_ioctl,
                one_of(
                    1,
                    &[
                        kvm_ioctls_nr::RUN,
                        kvm_ioctls_nr::GET_REGS,
                        kvm_ioctls_nr::GET_LAPIC,
                    ],
                )?,
            );
            // Serial console file: trimming keeps the newest half.
            for sc in [libc::SYS_lseek, libc::SYS_ftruncate] {
                map.insert(sc, vec![]);
            }
            for sc in DEVICE_IO {
                map.insert(*sc, vec![]);
            }
        }
        ThreadKind::EventLoop => {
            for sc in [
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                // Shutdown: the API socket file is removed.
                libc::SYS_unlink,
                libc::SYS_unlinkat,
                libc::SYS_statx,
                libc::SYS_fstat,
                libc::SYS_newfstatat,
                libc::SYS_lseek,
                libc::SYS_ftruncate,
            ] {
                map.insert(sc, vec![]);
            }
            for sc in DEVICE_IO {
                map.insert(*sc, vec![]);
            }
            map.insert(libc::SYS_openat, one_of(2, &[OPEN_FLAGS, OPEN_READ_FLAGS])?);
        }
        ThreadKind::Api => {
            for sc in [
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                libc::SYS_accept4,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
                libc::SYS_recvmsg,
                libc::SYS_sendmsg,
                libc::SYS_shutdown,
                libc::SYS_setsockopt,
            ] {
                map.insert(sc, vec![]);
            }
            // FIONBIO: accepted connections are made non-blocking.
            map.insert(libc::SYS_ioctl, one_of(1, &[libc::FIONBIO])?);
        }
    }
    Ok(map)
}

/// ioctl numbers kvm-ioctls does not export.
mod kvm_ioctls_nr {
    // _IOR(KVMIO, 0x81, struct kvm_regs) and _IOR(KVMIO, 0x8e, struct kvm_lapic_state).
    const fn ior(nr: u64, size: usize) -> u64 {
        (2u64 << 30) | ((size as u64) << 16) | (0xae << 8) | nr
    }
    /// _IO(KVMIO, 0x80).
    pub const RUN: u64 = 0xae80;
    pub const GET_REGS: u64 = ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
    pub const GET_LAPIC: u64 = ior(0x8e, std::mem::size_of::<kvm_bindings::kvm_lapic_state>());
}

/// Compiles the filter of `kind`.
pub fn compile(kind: ThreadKind) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(
        rules(kind)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| Error::Seccomp(e.into()))?;
    BpfProgram::try_from(filter).map_err(|e| Error::Seccomp(e.into()))
}

/// Compiles every filter; from now on [`apply`] installs them. Call once,
/// before spawning threads.
pub fn init() -> Result<()> {
    let filters = Filters {
        vcpu: compile(ThreadKind::Vcpu)?,
        event_loop: compile(ThreadKind::EventLoop)?,
        api: compile(ThreadKind::Api)?,
    };
    let _ = FILTERS.set(filters);
    Ok(())
}

/// Installs the filter of `kind` on the calling thread (and sets
/// `no_new_privs`, which seccomp requires). Does nothing before [`init`].
pub fn apply(kind: ThreadKind) -> Result<()> {
    let Some(f) = FILTERS.get() else {
        return Ok(());
    };
    let prog = match kind {
        ThreadKind::Vcpu => &f.vcpu,
        ThreadKind::EventLoop => &f.event_loop,
        ThreadKind::Api => &f.api,
    };
    seccompiler::apply_filter(prog).map_err(|e| Error::Seccomp(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks; the child installs `kind`'s filter and runs `f`; returns the
    /// child's wait status.
    fn in_child(kind: ThreadKind, f: fn()) -> i32 {
        let prog = compile(kind).unwrap();
        // SAFETY: the child only calls async-signal-safe functions (prctl,
        // seccomp, raw syscalls, _exit) before exiting.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(99) };
            }
            f();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    fn killed_by_sigsys(status: i32) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    #[test]
    fn forbidden_syscalls_kill_with_sigsys() {
        // SAFETY: raw syscalls with harmless arguments.
        let socket = || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
        };
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let execve = || unsafe {
            libc::syscall(libc::SYS_execve, c"/bin/true".as_ptr(), 0, 0);
        };
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let ptrace = || unsafe {
            libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
        };
        for kind in [ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Api] {
            for f in [socket as fn(), execve, ptrace] {
                let status = in_child(kind, f);
                assert!(killed_by_sigsys(status), "{kind:?}: status {status:#x}");
            }
        }
        // The vCPU thread may not open files nor issue other KVM ioctls.
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let open = || unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/etc/hostname".as_ptr(),
                0,
            );
        };
        assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, open)));
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let create_vm = || unsafe {
            libc::syscall(libc::SYS_ioctl, 0, 0xae01u64, 0); // KVM_CREATE_VM
        };
        assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, create_vm)));
        assert!(killed_by_sigsys(in_child(ThreadKind::Api, open)));
        assert!(killed_by_sigsys(in_child(ThreadKind::EventLoop, open)));
    }

    #[test]
    fn allowed_syscalls_keep_running() {
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let write = || unsafe {
            libc::syscall(libc::SYS_write, 2, c"".as_ptr(), 0);
            libc::syscall(libc::SYS_getpid);
        };
        // SAFETY: raw syscalls on an invalid fd (EBADF), in a throw-away child.
        let device_io = || unsafe {
            libc::syscall(libc::SYS_writev, -1, std::ptr::null::<libc::iovec>(), 0);
            libc::syscall(libc::SYS_preadv, -1, std::ptr::null::<libc::iovec>(), 0, 0);
            libc::syscall(libc::SYS_timerfd_settime, -1, 0, std::ptr::null::<u8>(), 0);
        };
        // SAFETY: a raw syscall with harmless arguments (in a throw-away child).
        let open_read = || unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/etc/hostname".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
        };
        let allowed: &[(ThreadKind, fn())] = &[
            (ThreadKind::Vcpu, write),
            (ThreadKind::EventLoop, write),
            (ThreadKind::Api, write),
            // A vCPU activating a device processes its queues.
            (ThreadKind::Vcpu, device_io),
            (ThreadKind::EventLoop, device_io),
            // reload_metadata rereads the metadata file.
            (ThreadKind::EventLoop, open_read),
        ];
        for (kind, f) in allowed {
            let status = in_child(*kind, *f);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{kind:?}: status {status:#x}"
            );
        }
        assert!(killed_by_sigsys(in_child(ThreadKind::Api, device_io)));
        assert!(killed_by_sigsys(in_child(ThreadKind::Vcpu, open_read)));
    }

    #[test]
    fn kvm_run_number_matches_kvm_ioctls() {
        assert_eq!(kvm_ioctls_nr::RUN, 0xae80);
        assert_eq!(kvm_ioctls_nr::GET_LAPIC, 0x8400_ae8e);
        assert_eq!(kvm_ioctls_nr::GET_REGS, 0x8090_ae81);
    }
}
