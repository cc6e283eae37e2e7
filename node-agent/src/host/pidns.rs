//! Starting a program as the first process (pid 1) of a new pid namespace:
//! `clone3(CLONE_NEWPID | CLONE_PIDFD)` with `SIGCHLD` as exit signal, then,
//! in the child, a new session, the given stdio, the caller's pre-exec steps
//! (the cgroup move and the jail) and `execve`. The process is created in the
//! namespace directly: `unshare(CLONE_NEWPID)` before exec would move only
//! its future children, and then forbid it threads (docs/vmm.md, "The pid
//! namespace").
//!
//! Everything the child touches (program path, argv, envp, stdio fds) is
//! prepared before the clone, so the child makes raw syscalls only and
//! allocates nothing (the agent is multi-threaded: another thread may hold
//! the allocator's lock at the moment of the clone). A failure before exec
//! travels back as its errno over a close-on-exec pipe, as std's spawn does:
//! the caller gets the error and the failed child has already been reaped.
//! Its pidfd comes with the child (no pid-reuse window) and is how the agent
//! signals it and learns its exit status (`waitid(P_PIDFD)`).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::Path;

/// A program and its arguments and environment as the C strings `execve`
/// takes, built before the clone.
pub struct Program {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    // Own the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// `path` run with `args` (argv[0] is `path`) in the agent's environment.
    pub fn new(path: &Path, args: &[String]) -> io::Result<Program> {
        let c = |s: Vec<u8>| {
            CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let path = c(path.as_os_str().as_encoded_bytes().to_vec())?;
        let mut argv_s = vec![path.clone()];
        for a in args {
            argv_s.push(c(a.clone().into_bytes())?);
        }
        let mut env_s = Vec::new();
        for (k, v) in std::env::vars_os() {
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            env_s.push(c(kv.into_vec())?);
        }
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = ptrs(&argv_s);
        let envp = ptrs(&env_s);
        argv_s.extend(env_s);
        Ok(Program {
            path,
            argv,
            envp,
            _strings: argv_s,
        })
    }
}

/// The child's standard input, output and error.
#[derive(Debug)]
pub struct Stdio {
    /// Becomes fd 0.
    pub stdin: OwnedFd,
    /// Becomes fd 1.
    pub stdout: OwnedFd,
    /// Becomes fd 2.
    pub stderr: OwnedFd,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the agent's pid namespace.
    pub pid: i32,
    /// Its pidfd (close-on-exec).
    pub pidfd: OwnedFd,
}

/// Starts `program` as pid 1 of a new pid namespace (`new_pid_ns`; else in
/// the agent's), in a new session, with `stdio`, after `pre_exec` (which runs
/// in the child and must make async-signal-safe raw syscalls only, and fail
/// with OS errors). Returns once the program is exec'ed; any failure before
/// (the clone, a pre-exec step, the exec itself) is returned with the child
/// already reaped.
pub fn spawn(
    program: &Program,
    stdio: &Stdio,
    new_pid_ns: bool,
    pre_exec: &dyn Fn() -> io::Result<()>,
) -> io::Result<Spawned> {
    let mut ends = [-1 as libc::c_int; 2];
    // SAFETY: `ends` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by nobody else.
    let (report_rd, report_wr) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: all-zero is a valid clone_args (no flags, no pointers).
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_PIDFD as u64;
    if new_pid_ns {
        args.flags |= libc::CLONE_NEWPID as u64;
    }
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork: the
    // child gets a copy of this thread's stack and of memory, and never
    // returns from here (`child` execs or _exits). `args` is a valid
    // clone_args whose `pidfd` points at a live int.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child(program, stdio, report_wr.as_raw_fd(), pre_exec);
    }
    // SAFETY: CLONE_PIDFD stored a fresh (close-on-exec) pidfd in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("clone3 returned a bad pid"))?;
    drop(report_wr);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(&report_rd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                got = usize::MAX;
                tracing::warn!(error = %e, "reading the spawn report");
                break;
            }
        }
    }
    if got == 0 {
        // The write end closed on exec: the program runs.
        return Ok(Spawned { pid, pidfd });
    }
    // The child failed and _exits: reap it so that nothing is left.
    while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    ) {}
    if got == buf.len() {
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))
    } else {
        Err(io::Error::other("the child failed before exec"))
    }
}

/// The child's side: never returns.
fn child(
    program: &Program,
    stdio: &Stdio,
    report: RawFd,
    pre_exec: &dyn Fn() -> io::Result<()>,
) -> ! {
    let run = || -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: async-signal-safe syscalls on integers and on pointers into
        // `program`, which outlives the call (built before the clone); a
        // zeroed sigset_t is a valid empty set.
        unsafe {
            // As std's spawn: no signal blocked, SIGPIPE to its default (the
            // Rust runtime ignores it, and an ignored disposition survives
            // exec).
            let empty: libc::sigset_t = std::mem::zeroed();
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &empty,
                std::ptr::null_mut(),
            ))?;
            if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            check(libc::setsid())?;
            for (fd, target) in [
                (stdio.stdin.as_raw_fd(), 0),
                (stdio.stdout.as_raw_fd(), 1),
                (stdio.stderr.as_raw_fd(), 2),
            ] {
                if fd == target {
                    // dup2 onto itself would keep close-on-exec.
                    check(libc::fcntl(fd, libc::F_SETFD, 0))?;
                } else {
                    check(libc::dup2(fd, target))?;
                }
            }
            pre_exec()?;
            libc::execve(
                program.path.as_ptr(),
                program.argv.as_ptr(),
                program.envp.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    };
    let errno = match run() {
        Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        Ok(()) => libc::EINVAL,
    };
    let bytes = errno.to_ne_bytes();
    // SAFETY: write and _exit are async-signal-safe; `bytes` is a live
    // 4-byte buffer.
    unsafe {
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> Stdio {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        Stdio {
            stdin: null(),
            stdout: null(),
            stderr: null(),
        }
    }

    fn status(pidfd: &OwnedFd) -> rustix::process::WaitIdStatus {
        rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_failing_pre_exec_step_returns_its_errno_and_leaves_no_child() {
        let p = Program::new(Path::new("/bin/true"), &[]).unwrap();
        // The child tells its pid over a pipe, then fails.
        let (rd, wr) = std::io::pipe().unwrap();
        let err = spawn(&p, &stdio(), false, &|| {
            let pid = rustix::process::getpid()
                .as_raw_nonzero()
                .get()
                .to_ne_bytes();
            rustix::io::write(&wr, &pid)?;
            Err(io::Error::from_raw_os_error(libc::EPERM))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        drop(wr);
        let mut pid = [0u8; 4];
        assert_eq!(rustix::io::read(&rd, &mut pid).unwrap(), 4);
        let pid = i32::from_ne_bytes(pid);
        // Reaped already: not even a zombie is left.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still there"
        );
    }

    #[test]
    fn a_missing_program_is_enoent() {
        let p = Program::new(Path::new("/nonexistent/nubis-vmm"), &[]).unwrap();
        let err = spawn(&p, &stdio(), false, &|| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn the_exit_status_comes_through_the_pidfd() {
        let p = Program::new(Path::new("/bin/sh"), &["-c".into(), "exit 7".into()]).unwrap();
        let s = spawn(&p, &stdio(), false, &|| Ok(())).unwrap();
        assert!(s.pid > 0);
        assert_eq!(status(&s.pidfd).exit_status(), Some(7));
    }

    #[test]
    fn a_new_pid_namespace_makes_the_program_its_pid_1() {
        // Needs CAP_SYS_ADMIN (the agent runs as root).
        if !nubis_testsupport::prerequisite(rustix::process::geteuid().is_root(), "root") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let p = Program::new(Path::new("/bin/sh"), &["-c".into(), "echo $$".into()]).unwrap();
        let file = std::fs::File::create(&out).unwrap();
        let mut io = stdio();
        io.stdout = file.into();
        let s = spawn(&p, &io, true, &|| Ok(())).unwrap();
        assert_eq!(status(&s.pidfd).exit_status(), Some(0));
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "1");
    }
}
