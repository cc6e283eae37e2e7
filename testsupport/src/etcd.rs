//! A throw-away single-member etcd for tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, prerequisite};

/// How often [`Etcd::start`] tries fresh ports when etcd exits at once
/// (another process took a port between picking and binding).
const ATTEMPTS: usize = 5;
/// How long one start may take to report a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary: `$NUBIS_ETCD`, else `/usr/bin/etcd` (Debian
/// `etcd-server`); `None` when it does not exist.
pub fn etcd_binary() -> Option<PathBuf> {
    let p = std::env::var_os("NUBIS_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into());
    p.exists().then_some(p)
}

/// Whether the etcd serving clients on loopback `port` answers `/health`
/// with `"health":"true"`, which it does only once it has a leader (an open
/// client port alone is not enough: a require-leader read would still fail).
pub fn etcd_healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// PEM files of a TLS etcd ([`Etcd::start_tls`]): its server certificate
/// (for `127.0.0.1`) and key, and the CA of the clients it accepts.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// CA that signed the client certificates etcd accepts.
    pub ca: std::path::PathBuf,
    /// Server certificate.
    pub cert: std::path::PathBuf,
    /// Server key.
    pub key: std::path::PathBuf,
}

/// A single-member etcd on free loopback ports with its data in a temporary
/// directory. Killed, reaped and its directory removed on drop (also when
/// the owning test panics).
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    /// Client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub endpoint: String,
    client_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it has a leader. Returns `None` (after
    /// printing SKIPPED) when etcd is not installed, unless
    /// `NUBIS_REQUIRE_KVM=1`, where that fails the test; panics when an
    /// installed etcd does not come up.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// [`Etcd::start`] serving clients over TLS (`https://`) and requiring a
    /// client certificate that `tls.ca` signed (`--client-cert-auth`).
    pub fn start_tls(tls: &EtcdTlsFiles) -> Option<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&EtcdTlsFiles>) -> Option<Self> {
        let Some(bin) = etcd_binary() else {
            prerequisite(false, "etcd at /usr/bin/etcd (Debian etcd-server)");
            return None;
        };
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(&bin, tls) {
                Ok(etcd) => return Some(etcd),
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start after {ATTEMPTS} attempts: {last}");
    }

    fn try_start(bin: &Path, tls: Option<&EtcdTlsFiles>) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let client_port = free_port().map_err(|e| format!("free port: {e}"))?;
        let peer_port = free_port().map_err(|e| format!("free port: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("etcd log: {e}"))?;
        let mut cmd = Command::new(bin);
        // Health over plain HTTP: with TLS, /health moves to a metrics port.
        let health_port = match tls {
            None => client_port,
            Some(t) => {
                let port = free_port().map_err(|e| format!("free port: {e}"))?;
                cmd.arg(format!("--listen-metrics-urls=http://127.0.0.1:{port}"))
                    .arg(format!("--cert-file={}", t.cert.display()))
                    .arg(format!("--key-file={}", t.key.display()))
                    .arg(format!("--trusted-ca-file={}", t.ca.display()))
                    .arg("--client-cert-auth");
                port
            }
        };
        let child = cmd
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        // From here on, dropping `etcd` kills the child.
        let mut etcd = Etcd {
            child,
            endpoint: client,
            client_port,
            dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("etcd exited ({status}): {log}"));
            }
            if etcd_healthy(health_port) {
                return Ok(etcd);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("etcd had no leader after {READY_TIMEOUT:?}"))
    }

    /// The loopback port serving clients.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The temporary directory holding etcd's data and log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_starts_healthy_and_is_killed_on_drop() {
        let Some(etcd) = Etcd::start() else {
            return;
        };
        let port = etcd.client_port();
        assert!(etcd_healthy(port));
        assert_eq!(etcd.endpoint, format!("http://127.0.0.1:{port}"));
        let dir = etcd.data_dir().to_path_buf();
        assert!(dir.join("data").is_dir());
        drop(etcd);
        assert!(!etcd_healthy(port), "etcd still answers after drop");
        assert!(!dir.exists(), "data dir left behind");
    }

    #[test]
    fn etcd_is_killed_when_the_test_panics() {
        let Some(etcd) = Etcd::start() else {
            return;
        };
        let port = etcd.client_port();
        let r = std::panic::catch_unwind(move || {
            let _held = etcd;
            panic!("test failure while etcd runs");
        });
        assert!(r.is_err());
        assert!(!etcd_healthy(port), "etcd survived the panic");
    }

    #[test]
    fn nothing_listens_on_a_closed_port() {
        let p = free_port().expect("free port");
        assert!(!etcd_healthy(p));
    }
}
