//! The control API: a Unix stream socket speaking newline-delimited JSON,
//! served by one thread. Each request line becomes a typed
//! [`VmmAction`] sent to the VMM event loop; its outcome is written back
//! as one response line. Wire format (see `docs/vmm.md`):
//!
//! ```text
//! -> {"op":"pause"}
//! <- {"ok":true,"result":{}}
//! <- {"ok":false,"error":{"kind":"invalid_state","message":"cannot pause while paused"}}
//! ```
//!
//! The message types are nubis-vmm-api's, shared with the node agent.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nubis_vmm_api::Response;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::rpc::{Request, VmmAction, VmmActionError, VmmOutcome};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;
/// How long the API thread waits for the VMM loop to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const TOKEN_LISTENER: u64 = 0;
const TOKEN_SHUTDOWN: u64 = 1;
const TOKEN_FIRST_CONN: u64 = 2;

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> std::result::Result<VmmAction, VmmActionError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| VmmActionError::BadRequest("request is not UTF-8".into()))?;
    serde_json::from_str::<nubis_vmm_api::Request>(text.trim())
        .map(|r| r.op)
        .map_err(|e| VmmActionError::BadRequest(e.to_string()))
}

/// Encodes one response line (with its newline).
pub fn encode_response(outcome: &VmmOutcome) -> Vec<u8> {
    let response = match outcome {
        Ok(result) => Response::success(result.clone()),
        Err(e) => Response::failure(e.kind(), e.to_string()),
    };
    // Through a `Value`: its map orders keys as before the message types
    // were shared (wire bytes unchanged).
    let value = serde_json::to_value(&response).unwrap_or_default();
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Binds `path`, replacing a stale socket file nobody listens on.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(e);
            }
            let meta = std::fs::symlink_metadata(path)?;
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                return Err(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "path exists and is not a socket",
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// The running API thread; dropping it does not stop it, call [`ApiServer::shutdown`].
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    shutdown: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds the socket (errors map to exit status 9) and starts the thread.
    /// Requests go to `requests`; `wake` is written after each send.
    pub fn start(path: &Path, requests: mpsc::Sender<Request>, wake: EventFd) -> Result<Self> {
        let api_err = |source| Error::ApiSocket {
            path: path.to_path_buf(),
            source,
        };
        let listener = bind(path).map_err(api_err)?;
        listener.set_nonblocking(true).map_err(api_err)?;
        let shutdown = EventFd::new(EFD_NONBLOCK).map_err(api_err)?;
        let epoll = Epoll::new().map_err(api_err)?;
        let add = |fd: RawFd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(listener.as_raw_fd(), TOKEN_LISTENER).map_err(api_err)?;
        add(shutdown.as_raw_fd(), TOKEN_SHUTDOWN).map_err(api_err)?;
        let worker = Worker {
            epoll,
            listener,
            conns: HashMap::new(),
            next_token: TOKEN_FIRST_CONN,
            requests,
            wake,
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                let filtered = crate::seccomp::apply(crate::seccomp::ThreadKind::Api);
                let ok = filtered.is_ok();
                let _ = ready_tx.send(filtered);
                if ok {
                    worker.run();
                }
            })
            .map_err(api_err)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(api_err(std::io::Error::other("API thread ended early"))),
        }
        Ok(ApiServer {
            path: path.to_path_buf(),
            shutdown,
            thread: Some(thread),
        })
    }

    /// Stops the thread after it has written any reply in progress, and
    /// removes the socket file.
    pub fn shutdown(mut self) {
        let _ = self.shutdown.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

struct Worker {
    epoll: Epoll,
    listener: UnixListener,
    conns: HashMap<u64, Conn>,
    next_token: u64,
    requests: mpsc::Sender<Request>,
    wake: EventFd,
}

impl Worker {
    fn run(mut self) {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "API epoll failed; API thread ends");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_SHUTDOWN => return,
                    TOKEN_LISTENER => self.accept(),
                    token => self.serve(token),
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let token = self.next_token;
                    self.next_token += 1;
                    let ok = stream.set_nonblocking(true).is_ok()
                        && self
                            .epoll
                            .ctl(
                                ControlOperation::Add,
                                stream.as_raw_fd(),
                                EpollEvent::new(EventSet::IN | EventSet::READ_HANG_UP, token),
                            )
                            .is_ok();
                    if ok {
                        self.conns.insert(
                            token,
                            Conn {
                                stream,
                                buf: Vec::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    return;
                }
            }
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    fn serve(&mut self, token: u64) {
        let mut closed = false;
        let mut lines = Vec::new();
        if let Some(conn) = self.conns.get_mut(&token) {
            let mut chunk = [0u8; 4096];
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            while let Some(pos) = conn.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = conn.buf.drain(..=pos).collect();
                lines.push(line);
            }
            if conn.buf.len() > MAX_LINE {
                lines.push(Vec::new());
                conn.buf.clear();
                closed = true;
            }
        }
        for line in lines {
            let outcome = if line.is_empty() {
                Err(VmmActionError::BadRequest("request line too long".into()))
            } else if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            } else {
                match parse_request(&line) {
                    Ok(action) => self.dispatch(action),
                    Err(e) => Err(e),
                }
            };
            if let Some(conn) = self.conns.get_mut(&token) {
                if write_all_blocking(&mut conn.stream, &encode_response(&outcome)).is_err() {
                    closed = true;
                }
            }
        }
        if closed {
            self.close(token);
        }
    }

    fn dispatch(&self, action: VmmAction) -> VmmOutcome {
        let (tx, rx) = mpsc::channel();
        let gone = || VmmActionError::Internal("the VMM is shutting down".into());
        self.requests
            .send(Request { action, reply: tx })
            .map_err(|_| gone())?;
        let _ = self.wake.write(1);
        rx.recv_timeout(REPLY_TIMEOUT).map_err(|_| gone())?
    }
}

/// Writes all of `data` to a non-blocking stream, waiting at most a second
/// for a slow reader.
fn write_all_blocking(stream: &mut UnixStream, data: &[u8]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let result = stream.write_all(data);
    stream.set_nonblocking(true)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{InvalidTransition, VmState};
    use std::io::{BufRead, BufReader};

    #[test]
    fn request_parsing() {
        assert_eq!(parse_request(b"{\"op\":\"pause\"}\n"), Ok(VmmAction::Pause));
        for bad in [
            &b"{}"[..],
            b"{\"op\":\"fly\"}",
            b"nope",
            b"{\"op\":\"stop\",\"x\":1}",
            b"\xff",
        ] {
            let err = parse_request(bad).unwrap_err();
            assert_eq!(err.kind(), "bad_request");
        }
    }

    #[test]
    fn response_encoding() {
        let ok: serde_json::Value =
            serde_json::from_slice(&encode_response(&Ok(serde_json::json!({"a": 1})))).unwrap();
        assert_eq!(ok, serde_json::json!({"ok": true, "result": {"a": 1}}));
        let err = encode_response(&Err(VmmActionError::InvalidState(InvalidTransition {
            state: VmState::Running,
            event: "resume",
        })));
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["kind"], "invalid_state");
        assert_eq!(v["error"]["message"], "cannot resume while running");
    }

    #[test]
    fn serves_requests_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (tx, rx) = mpsc::channel::<Request>();
        let wake = EventFd::new(EFD_NONBLOCK).unwrap();
        let server = ApiServer::start(&path, tx, wake.try_clone().unwrap()).unwrap();
        // A fake VMM loop answering describe and refusing the rest.
        let vmm = std::thread::spawn(move || {
            for req in rx {
                let out = match req.action {
                    VmmAction::Describe => Ok(serde_json::json!({"state": "running"})),
                    _ => Err(VmmActionError::Internal("no".into())),
                };
                req.reply.send(out).unwrap();
            }
        });
        let stream = UnixStream::connect(&path).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        w.write_all(b"{\"op\":\"describe\"}\n\ngarbage\n{\"op\":\"pause\"}\n")
            .unwrap();
        let mut lines = Vec::new();
        for _ in 0..3 {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            lines.push(serde_json::from_str::<serde_json::Value>(&l).unwrap());
        }
        assert_eq!(lines[0]["result"]["state"], "running");
        assert_eq!(lines[1]["error"]["kind"], "bad_request");
        assert_eq!(lines[2]["error"]["kind"], "internal");
        assert!(wake.read().unwrap() >= 1);
        // A second server on the same live path is refused.
        let (tx2, _rx2) = mpsc::channel::<Request>();
        let err = ApiServer::start(&path, tx2, EventFd::new(0).unwrap()).unwrap_err();
        assert_eq!(err.exit_code(), 9);
        drop(w);
        drop(reader);
        server.shutdown();
        assert!(!path.exists());
        vmm.join().unwrap();
    }

    #[test]
    fn replaces_stale_socket_but_not_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (tx, _rx) = mpsc::channel::<Request>();
        let server = ApiServer::start(&path, tx, EventFd::new(0).unwrap()).unwrap();
        server.shutdown();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let (tx, _rx) = mpsc::channel::<Request>();
        assert!(ApiServer::start(&file, tx, EventFd::new(0).unwrap()).is_err());
        let (tx, _rx) = mpsc::channel::<Request>();
        let missing_dir = dir.path().join("no/such/dir.sock");
        assert_eq!(
            ApiServer::start(&missing_dir, tx, EventFd::new(0).unwrap())
                .unwrap_err()
                .exit_code(),
            9
        );
    }
}
