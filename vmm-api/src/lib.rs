//! The contract between `nubis-vmm` and the programs that drive it (the node
//! agent, tests), owned in one place so both sides agree by construction:
//!
//! - [`exit_code`]: the process exit statuses of the command-line contract;
//! - [`ExitRecord`]: the exit-status record `--exit-status-file` writes;
//! - the control API's newline-delimited JSON messages ([`Request`],
//!   [`Response`], [`ApiError`], and the typed [`Describe`] result).
//!
//! Wire format (see `docs/vmm.md`):
//!
//! ```text
//! -> {"op":"pause"}
//! <- {"ok":true,"result":{}}
//! <- {"error":{"kind":"invalid_state","message":"cannot pause while paused"},"ok":false}
//! ```
//!
//! Types only: no I/O. Kept to serde so the VMM binary stays small.

use serde::{Deserialize, Serialize};

/// `nubis-vmm` exit statuses. A fatal signal ends the process with the
/// shell convention 128 + signal number (and [`ExitRecord::signal`] set).
pub mod exit_code {
    /// The VM ended normally: guest reset, `stop` request, SIGTERM/SIGINT.
    pub const OK: i32 = 0;
    /// Internal error or vCPU fault.
    pub const INTERNAL: i32 = 1;
    /// Invalid command line or configuration.
    pub const CONFIG: i32 = 2;
    /// The kernel cannot be read or loaded.
    pub const KERNEL: i32 = 3;
    /// The initrd cannot be read or does not fit.
    pub const INITRD: i32 = 4;
    /// Guest memory cannot be set up (size, allocation).
    pub const MEMORY: i32 = 5;
    /// The network device (TAP) cannot be set up.
    pub const NETWORK: i32 = 6;
    /// The disk cannot be opened or used.
    pub const DISK: i32 = 7;
    /// KVM is missing or lacks a capability.
    pub const KVM: i32 = 8;
    /// The API socket cannot be bound.
    pub const API_SOCKET: i32 = 9;
}

/// The exit-status record, as the VMM writes it and readers parse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The process exit status (128 + signal number when a signal ended it).
    pub exit_code: i32,
    /// Why, in words.
    #[serde(default)]
    pub reason: String,
    /// When it was written (milliseconds since the Unix epoch).
    #[serde(default)]
    pub unix_ms: u64,
    /// The VMM's process id as the VMM sees it (1 when it runs as its own
    /// pid namespace's init; logs only then).
    pub pid: u32,
    /// The fatal signal that ended the process, if one did (the process
    /// itself may then have exited with `128 + signal`: a pid namespace's
    /// init cannot be killed by a signal it raises).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The `--exit-status-nonce` the VMM was started with: lets a reader
    /// tell this launch's record from an earlier VMM's when the pid cannot
    /// (every VMM in its own pid namespace is pid 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Whether `nonce` may be an exit-status nonce: 1 to 64 ASCII letters,
/// digits, `-` or `_` (written into JSON unescaped, from a signal handler).
pub fn valid_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An action requested over the API socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report state and configuration ([`Describe`]).
    Describe,
    /// Park all vCPUs.
    Pause,
    /// Let parked vCPUs run again.
    Resume,
    /// Inject Ctrl-Alt-Del through the i8042 (the guest decides what to do).
    CtrlAltDel,
    /// Stop the VM gracefully (the VMM exits 0).
    Stop,
    /// Report counters.
    Metrics,
    /// Reread the instance metadata file and serve it (options included).
    ReloadMetadata,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Describe => "describe",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::CtrlAltDel => "ctrl_alt_del",
            Action::Stop => "stop",
            Action::Metrics => "metrics",
            Action::ReloadMetadata => "reload_metadata",
        }
    }
}

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// What to do.
    pub op: Action,
}

/// Machine-readable kinds of [`ApiError`].
pub mod error_kind {
    /// The action makes no sense in the VM's current state.
    pub const INVALID_STATE: &str = "invalid_state";
    /// The request could not be understood.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The VMM failed while performing the action.
    pub const INTERNAL: &str = "internal";
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// One of [`error_kind`].
    #[serde(default)]
    pub kind: String,
    /// In words.
    #[serde(default)]
    pub message: String,
}

/// One response line: `ok` with a `result` object, or not `ok` with an
/// `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the action was performed.
    pub ok: bool,
    /// The action's result (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why not (when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A success carrying `result`.
    pub fn success(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure of `kind` (one of [`error_kind`]).
    pub fn failure(kind: &str, message: String) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(ApiError {
                kind: kind.to_string(),
                message,
            }),
        }
    }
}

/// VM states as [`Describe::state`] names them.
pub mod vm_state {
    /// Built, vCPUs not started yet.
    pub const BOOTING: &str = "booting";
    /// vCPUs running.
    pub const RUNNING: &str = "running";
    /// vCPUs parked.
    pub const PAUSED: &str = "paused";
    /// On its way out.
    pub const STOPPING: &str = "stopping";
    /// Stopped; the process is about to exit.
    pub const STOPPED: &str = "stopped";
}

/// The result of [`Action::Describe`]. `C` is the VMM's configuration as
/// it reports it; readers that do not need it use
/// [`serde::de::IgnoredAny`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Describe<C> {
    /// One of [`vm_state`].
    pub state: String,
    /// The VMM's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The configuration the VMM runs with.
    #[serde(default)]
    pub config: C,
    /// Whether the vCPU threads have started.
    #[serde(default)]
    pub vcpus_started: bool,
    /// When the vCPUs started (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_unix_ms: Option<u64>,
}

/// The guest-visible I/O counters of a VMM, summed over its devices, as
/// read from the result of [`Action::Metrics`] (`devices.virtio[]`: `net`
/// devices' `rx_*`/`tx_*`, `block` devices' `bytes_*`, `reads`, `writes`).
/// Directions are the guest's: `net_in` is what the guest received.
/// Counters only grow while the VMM runs; they restart at 0 with the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestCounters {
    /// Bytes delivered to the guest (virtio-net rx).
    pub net_in_bytes: u64,
    /// Bytes the guest sent (virtio-net tx).
    pub net_out_bytes: u64,
    /// Frames delivered to the guest.
    pub net_in_packets: u64,
    /// Frames the guest sent.
    pub net_out_packets: u64,
    /// Bytes the guest read from its disks.
    pub disk_read_bytes: u64,
    /// Bytes the guest wrote to its disks.
    pub disk_write_bytes: u64,
    /// Read requests.
    pub disk_read_ops: u64,
    /// Write requests.
    pub disk_write_ops: u64,
}

impl GuestCounters {
    /// Sums the counters of a `metrics` result; absent or malformed fields
    /// count as 0 (an older VMM, a device without the counter).
    pub fn from_metrics(metrics: &serde_json::Value) -> Self {
        let mut c = GuestCounters::default();
        let devices = metrics
            .pointer("/devices/virtio")
            .and_then(|v| v.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for d in devices {
            let n = |k: &str| {
                d.pointer(&format!("/metrics/{k}"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            };
            match d.get("type").and_then(|t| t.as_str()) {
                Some("net") => {
                    c.net_in_bytes = c.net_in_bytes.saturating_add(n("rx_bytes"));
                    c.net_out_bytes = c.net_out_bytes.saturating_add(n("tx_bytes"));
                    c.net_in_packets = c.net_in_packets.saturating_add(n("rx_frames"));
                    c.net_out_packets = c.net_out_packets.saturating_add(n("tx_frames"));
                }
                Some("block") => {
                    c.disk_read_bytes = c.disk_read_bytes.saturating_add(n("bytes_read"));
                    c.disk_write_bytes = c.disk_write_bytes.saturating_add(n("bytes_written"));
                    c.disk_read_ops = c.disk_read_ops.saturating_add(n("reads"));
                    c.disk_write_ops = c.disk_write_ops.saturating_add(n("writes"));
                }
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_use_their_wire_names() {
        for a in [
            Action::Describe,
            Action::Pause,
            Action::Resume,
            Action::CtrlAltDel,
            Action::Stop,
            Action::Metrics,
            Action::ReloadMetadata,
        ] {
            let wire = serde_json::to_string(&Request { op: a }).expect("encode");
            assert_eq!(wire, format!("{{\"op\":\"{}\"}}", a.as_str()));
            let back: Request = serde_json::from_str(&wire).expect("decode");
            assert_eq!(back.op, a);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"stop","x":1}"#).is_err());
    }

    #[test]
    fn responses_round_trip_and_tolerate_missing_fields() {
        let ok = Response::success(json!({"a": 1}));
        assert_eq!(
            serde_json::to_value(&ok).expect("encode"),
            json!({"ok": true, "result": {"a": 1}})
        );
        let err = Response::failure(error_kind::BAD_REQUEST, "nope".into());
        assert_eq!(
            serde_json::to_value(&err).expect("encode"),
            json!({"ok": false, "error": {"kind": "bad_request", "message": "nope"}})
        );
        let bare: Response = serde_json::from_str(r#"{"ok":false,"error":{}}"#).expect("decode");
        assert_eq!(bare.error.expect("error").kind, "");
    }

    #[test]
    fn guest_counters_sum_net_and_block_devices_only() {
        let m = json!({"devices": {"serial": {"bytes": 9}, "virtio": [
            {"type": "net", "metrics": {"rx_bytes": 100, "tx_bytes": 40, "rx_frames": 2, "tx_frames": 1,
                                         "bytes_read": 40, "bytes_written": 100}},
            {"type": "net", "metrics": {"rx_bytes": 1, "tx_bytes": 2, "rx_frames": 3, "tx_frames": 4}},
            {"type": "block", "metrics": {"bytes_read": 4096, "bytes_written": 512, "reads": 3, "writes": 1}},
            {"type": "rng", "metrics": {"bytes_read": 77}},
            {"type": "block", "metrics": {"bytes_read": "x"}}
        ]}});
        let c = GuestCounters::from_metrics(&m);
        assert_eq!(
            c,
            GuestCounters {
                net_in_bytes: 101,
                net_out_bytes: 42,
                net_in_packets: 5,
                net_out_packets: 5,
                disk_read_bytes: 4096,
                disk_write_bytes: 512,
                disk_read_ops: 3,
                disk_write_ops: 1,
            }
        );
        assert_eq!(
            GuestCounters::from_metrics(&json!({})),
            GuestCounters::default()
        );
    }

    #[test]
    fn exit_record_wire_format() {
        let r = ExitRecord {
            exit_code: exit_code::OK,
            reason: "guest reset".into(),
            unix_ms: 5,
            pid: 7,
            signal: None,
            nonce: None,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("encode"),
            r#"{"exit_code":0,"reason":"guest reset","unix_ms":5,"pid":7}"#
        );
        let sig: ExitRecord =
            serde_json::from_str(r#"{"exit_code":134,"pid":7,"signal":6}"#).expect("decode");
        assert_eq!((sig.signal, sig.reason.as_str()), (Some(6), ""));
        assert_eq!(sig.nonce, None);
        let n: ExitRecord =
            serde_json::from_str(r#"{"exit_code":0,"pid":1,"nonce":"ab-9_Z"}"#).expect("decode");
        assert_eq!(n.nonce.as_deref(), Some("ab-9_Z"));
    }

    #[test]
    fn nonces_are_plain_ascii_words() {
        assert!(valid_nonce("0123abcdef-_XYZ"));
        assert!(valid_nonce(&"a".repeat(64)));
        for bad in ["", "a\"", "a b", "é", "a\\", &"a".repeat(65)] {
            assert!(!valid_nonce(bad), "{bad:?}");
        }
    }

    #[test]
    fn describe_reads_without_config() {
        let d: Describe<serde::de::IgnoredAny> = serde_json::from_value(json!({
            "state": "running", "pid": 9, "config": {"vcpus": 2},
            "vcpus_started": true, "started_at_unix_ms": 11,
        }))
        .expect("decode");
        assert_eq!(d.state, vm_state::RUNNING);
        assert_eq!((d.pid, d.started_at_unix_ms), (Some(9), Some(11)));
        assert!(d.vcpus_started);
    }
}
